"""Results of the e2e run and the summary table."""

from __future__ import annotations

from dataclasses import dataclass, field

from scenarios import Scenario


@dataclass
class Check:
    name: str
    expected: str
    actual: str
    seconds: float | None
    ok: bool
    problems: list[str] = field(default_factory=list)


@dataclass
class Results:
    checks: list[Check] = field(default_factory=list)

    def add(self, name: str, expected: str, actual: str, ok: bool, seconds: float | None = None) -> None:
        self.checks.append(Check(name, expected, actual, seconds, ok))
        print(f"  [{'PASS' if ok else 'FAIL'}] {name}: {actual}", flush=True)

    def add_scenario(self, sc: Scenario) -> None:
        check = Check(f"DAG: {sc.name}", sc.expected, sc.actual, sc.seconds, sc.passed, list(sc.problems))
        self.checks.append(check)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(c.ok for c in self.checks)

    def table(self) -> str:
        heads = ("check", "expected", "actual", "s", "result")
        rows = [
            (
                c.name,
                c.expected,
                c.actual,
                "" if c.seconds is None else f"{c.seconds:.1f}",
                "PASS" if c.ok else "FAIL",
            )
            for c in self.checks
        ]
        limits = (44, 40, 80, 6, 6)
        rows = [tuple(_cut(v, n) for v, n in zip(r, limits, strict=True)) for r in rows]
        widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(heads)]
        line = "+".join("-" * (w + 2) for w in widths)
        out = [_row(heads, widths), line, *(_row(r, widths) for r in rows)]
        problems = [f"  {c.name}: {p}" for c in self.checks for p in c.problems]
        if problems:
            out += ["", "problems:", *problems]
        return "\n".join(out)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _row(values: tuple[str, ...], widths: list[int]) -> str:
    return "|".join(f" {v:<{w}} " for v, w in zip(values, widths, strict=True))
