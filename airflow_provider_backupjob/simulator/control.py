"""The simulator's control API, declared once.

Each call is declared here, with its signature (:class:`ControlApi`, the methods) and its route and
effect (:data:`CALLS`). The server answers ``/_sim/<path>`` from the same table, ``Simulator`` runs
a call on its state in-process and ``SimulatorClient`` sends it over HTTP; both return what
``Call.result`` makes of the JSON answer, so the two behave the same.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from .faults import FAULT_KINDS
from .state import SimState

Args = dict[str, Any]


def _none(answer: Any) -> None:
    return None


def _same(args: Args) -> Args:
    return args


@dataclass(frozen=True)
class Call:
    """One control call: ``method /_sim/<path>`` (``{job_id}`` a path parameter)."""

    method: str
    path: str
    run: Callable[[SimState, Args], Any]  # the effect on the state; returns the JSON answer
    result: Callable[[Any], Any] = _none  # the answer -> what the Python method returns
    body: Callable[[Args], Args] = _same  # the method's arguments -> the request's JSON body

    def matches(self, method: str, sub: str) -> Args | None:
        """The path parameters if ``method sub`` is this call's route, else None."""
        if method != self.method:
            return None
        if "{job_id}" not in self.path:
            return {} if sub == self.path else None
        prefix = self.path.split("{job_id}", 1)[0]
        rest = sub[len(prefix) :]
        return {"job_id": unquote(rest)} if sub.startswith(prefix) and rest and "/" not in rest else None


def _job_info(st: SimState, args: Args) -> Any:
    info = st.job_info(args["job_id"])
    if info is None:
        raise LookupError(f"no job {args['job_id']}")
    return {"id": args["job_id"], "state": info["status"]["state"], **info}


def _configure(key: str, arg: str) -> Callable[[Args], Args]:
    return lambda args: {key: args[arg]}


CALLS: dict[str, Call] = {
    "health": Call(
        "GET", "health", lambda st, a: {"ok": True, "fault_kinds": list(FAULT_KINDS)}, lambda r: r
    ),
    "add_job": Call("POST", "jobs", lambda st, a: {"id": st.add_job(**a)}, lambda r: str(r["id"])),
    "list_jobs": Call(
        "GET", "jobs", lambda st, a: {"jobs": st.list_jobs()}, lambda r: [str(j) for j in r["jobs"]]
    ),
    "remove_job": Call(
        "DELETE",
        "jobs/{job_id}",
        lambda st, a: {"removed": st.remove_job(a["job_id"])},
        lambda r: bool(r["removed"]),
    ),
    "job_state": Call("GET", "jobs/{job_id}", _job_info, lambda r: None if r is None else str(r["state"])),
    "job_info": Call(
        "GET",
        "jobs/{job_id}",
        _job_info,
        lambda r: None if r is None else {k: r[k] for k in ("status", "polls", "gets", "request")},
    ),
    "inject": Call("POST", "faults", lambda st, a: {"pending": st.inject(**a)}, lambda r: int(r["pending"])),
    "set_chaos": Call("POST", "chaos", lambda st, a: st.set_chaos(**a)),
    "clear_faults": Call("DELETE", "faults", lambda st, a: st.clear_faults()),
    "expire_all_sessions": Call(
        "POST",
        "expire-sessions",
        lambda st, a: {"expired": st.expire_all_sessions()},
        lambda r: int(r["expired"]),
    ),
    "stats": Call("GET", "stats", lambda st, a: st.stats(), lambda r: r),
    "reset_counters": Call("POST", "reset-counters", lambda st, a: st.reset_counters()),
    "set_api_enabled": Call(
        "POST", "config", lambda st, a: st.configure(**a), body=_configure("api_enabled", "enabled")
    ),
    "set_details_enabled": Call(
        "POST", "config", lambda st, a: st.configure(**a), body=_configure("details_enabled", "enabled")
    ),
    "set_session_cap": Call(
        "POST", "config", lambda st, a: st.configure(**a), body=_configure("session_cap", "cap")
    ),
    "set_idle_timeout": Call(
        "POST", "config", lambda st, a: st.configure(**a), body=_configure("idle_timeout", "seconds")
    ),
    "set_start_script": Call("POST", "start-script", lambda st, a: st.set_start_script(**a)),
    "set_schedule": Call("POST", "schedule", lambda st, a: st.set_schedule(**a)),
    "schedule_info": Call(
        "GET", "schedule", lambda st, a: {"schedule": st.schedule_info()}, lambda r: r["schedule"]
    ),
}


def answer(state: SimState, method: str, sub: str, body: Args) -> Any:
    """The JSON answer to ``method /_sim/<sub>``; LookupError for an unknown route or job."""
    for call in CALLS.values():
        params = call.matches(method, sub)
        if params is not None:
            result = call.run(state, {**body, **params})
            return {"ok": True} if result is None else result
    raise LookupError(f"no control route {method} /_sim/{sub}")


def run_locally(state: SimState, name: str, args: Args) -> Any:
    """A call in-process, answered as over HTTP (the JSON round trip included)."""
    call = CALLS[name]
    try:
        raw = call.run(state, call.body(args))
    except LookupError:
        return call.result(None)
    return call.result(json.loads(json.dumps({"ok": True} if raw is None else raw)))


def _args(frame_locals: dict[str, Any]) -> Args:
    return {k: v for k, v in frame_locals.items() if k != "self"}


class ControlApi:
    """Every control method, once. Subclasses say how a call is carried out (``_call``)."""

    def _call(self, name: str, args: Args) -> Any:
        raise NotImplementedError

    def add_job(
        self,
        job_id: str | None = None,
        outcome: str = "SUCCEEDED",
        none_polls: int = 0,
        inprogress_polls: int = 3,
        end_time_null: bool = False,
        messages: list[dict[str, Any]] | list[str] | None = None,
        job_type: str = "MANUAL",
        started_ago: float = 0.0,
        run_seconds: float | None = None,
    ) -> str:
        """Add a job (MANUAL unless told); ``started_ago`` back-dates it; ``run_seconds``: by the clock."""
        return str(self._call("add_job", _args(locals())))

    def list_jobs(self) -> list[str]:
        """The ids of all jobs, newest first."""
        return list(self._call("list_jobs", {}))

    def remove_job(self, job_id: str) -> bool:
        return bool(self._call("remove_job", _args(locals())))

    def job_state(self, job_id: str) -> str | None:
        result: str | None = self._call("job_state", _args(locals()))
        return result

    def job_info(self, job_id: str) -> dict[str, Any] | None:
        """Status (without counting a poll), ``polls``, ``gets`` and the start request, for tests."""
        result: dict[str, Any] | None = self._call("job_info", _args(locals()))
        return result

    def inject(
        self,
        kind: str,
        *,
        method: str | None = None,
        path_contains: str | None = None,
        times: int = 1,
        delay: float = 0.0,
    ) -> int:
        """Queue a fault; answers the number of pending fault uses."""
        return int(self._call("inject", _args(locals())))

    def set_chaos(
        self, rate: float, seed: int = 0, kinds: list[str] | None = None, delay: float = 0.1
    ) -> None:
        self._call("set_chaos", _args(locals()))

    def clear_faults(self) -> None:
        """Drop pending faults and turn chaos off."""
        self._call("clear_faults", {})

    def expire_all_sessions(self) -> int:
        return int(self._call("expire_all_sessions", {}))

    def stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._call("stats", {})
        return result

    def reset_counters(self) -> None:
        self._call("reset_counters", {})

    def set_api_enabled(self, enabled: bool) -> None:
        """False: every /api path answers 404 (an appliance before 7.0 U2)."""
        self._call("set_api_enabled", _args(locals()))

    def set_details_enabled(self, enabled: bool) -> None:
        """False: the details call answers 404, as on vCenter 6.5 (with ``set_api_enabled(False)``)."""
        self._call("set_details_enabled", _args(locals()))

    def set_session_cap(self, cap: int) -> None:
        self._call("set_session_cap", _args(locals()))

    def set_idle_timeout(self, seconds: float) -> None:
        self._call("set_idle_timeout", _args(locals()))

    def set_start_script(
        self,
        outcome: str = "SUCCEEDED",
        none_polls: int = 0,
        inprogress_polls: int = 3,
        end_time_null: bool = False,
    ) -> None:
        """How jobs started by POST progress."""
        self._call("set_start_script", _args(locals()))

    def set_schedule(
        self,
        interval: float | None,
        outcomes: list[str] | None = None,
        run_seconds: float | None = 2.0,
        first_in: float | None = None,
        count: int | None = None,
    ) -> None:
        """Start a SCHEDULED job every ``interval`` seconds (None: stop); see ``SimState.set_schedule``."""
        self._call("set_schedule", _args(locals()))

    def schedule_info(self) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self._call("schedule_info", {})
        return result
