"""The vendor's Swagger 2.0 spec as a contract: match a request or a response to its operation and
validate it with jsonschema (Draft 4, the dialect Swagger 2.0 schemas are written in).

The spec is data kept outside the project, at ``../shared/spec/vmware-rest-8.0.2/backup-api.json``
from the repository root, or in the directory ``$BACKUPJOB_SPEC_DIR`` names. It is loaded, patched
with the known deviations (tests/spec_deviations.py, the one list) and registered once per process
(:func:`load_contract`). Every ``$ref`` resolves through a ``referencing`` registry holding the
patched document; schemas are addressed by JSON pointer into it, so nothing is copied or inlined.
"""

from __future__ import annotations

import copy
import datetime as dt
import functools
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

from jsonschema import Draft4Validator, FormatChecker
from referencing import Registry
from referencing.jsonschema import DRAFT4

from airflow_provider_backupjob.protocol import HttpRequest, HttpResponse
from tests.spec_deviations import DEVIATIONS, Deviation, apply

ROOT = Path(__file__).resolve().parents[1]
SPEC_ENV = "BACKUPJOB_SPEC_DIR"
SPEC_FILE = "backup-api.json"
DEFAULT_SPEC_DIR = ROOT.parent / "shared" / "spec" / "vmware-rest-8.0.2"
URI = "urn:backupjob:vmware-rest-8.0.2:backup-api.json"
METHODS = ("get", "put", "post", "delete", "patch", "head", "options")
_RFC3339 = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)", re.IGNORECASE)

# jsonschema checks "date-time" and "uri" only with optional packages this project does not
# install; these two checkers plug the spec's formats into the library's own format mechanism.
FORMATS = FormatChecker(formats=())


@FORMATS.checks("date-time", raises=ValueError)
def _date_time(value: object) -> bool:
    if not isinstance(value, str):
        return True
    if not _RFC3339.fullmatch(value):
        raise ValueError(f"{value!r} is not an RFC 3339 date-time")
    dt.datetime.fromisoformat(value.upper().replace("Z", "+00:00"))  # a real date and time
    return True


@FORMATS.checks("uri")
def _uri(value: object) -> bool:
    if not isinstance(value, str):
        return True
    parts = urlsplit(value)
    return bool(parts.scheme) and bool(parts.netloc or parts.path)


class SpecMissing(Exception):
    """The spec file is not where the contract tests look for it."""


class ContractViolation(AssertionError):
    """A request or response that the spec (with the known deviations) does not allow."""


def spec_path() -> Path:
    base = os.environ.get(SPEC_ENV)
    return (Path(base) if base else DEFAULT_SPEC_DIR) / SPEC_FILE


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


@dataclass(frozen=True)
class Operation:
    method: str  # upper case
    template: str  # the spec's path key, e.g. /api/appliance/recovery/backup/job/{id}
    spec: dict[str, Any]

    @property
    def pointer(self) -> str:
        return f"/paths/{_escape(self.template)}/{self.method.lower()}"

    @property
    def name(self) -> str:
        return f"{self.method} {self.template}"

    @functools.cached_property
    def regex(self) -> re.Pattern[str]:
        pattern = re.sub(r"\\\{[^/]+?\\\}", "[^/]+", re.escape(self.template))
        return re.compile(pattern)

    @property
    def params(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = self.spec.get("parameters", [])
        return found


class Contract:
    """One loaded spec document: find operations, validate requests and responses against them."""

    def __init__(self, raw: Mapping[str, Any], deviations: tuple[Deviation, ...] = DEVIATIONS) -> None:
        self.raw = raw  # the document as read, never patched
        self.deviations = deviations
        self.spec = apply(copy.deepcopy(dict(raw)), deviations)
        self.registry: Registry[Any] = Registry().with_resource(URI, DRAFT4.create_resource(self.spec))
        self.operations = [
            Operation(method.upper(), template, item[method])
            for template, item in self.spec["paths"].items()
            for method in METHODS
            if method in item
        ]
        self._validators: dict[str, Draft4Validator] = {}

    def without(self, key: str) -> Contract:
        """The same spec with one deviation left out (to show that the deviation is needed)."""
        rest = tuple(d for d in self.deviations if d.key != key)
        assert len(rest) == len(self.deviations) - 1, f"no deviation {key!r}"
        return Contract(self.raw, rest)

    # ---- lookup ---------------------------------------------------------------------------------
    def operation(self, method: str, path: str) -> Operation:
        """The operation serving ``method path``; a literal path key wins over a template."""
        found = [op for op in self.operations if op.method == method.upper() and op.regex.fullmatch(path)]
        if not found:
            raise ContractViolation(f"{method} {path}: no operation of the spec has this method and path")
        found.sort(key=lambda op: op.template.count("{"))
        if len(found) > 1 and found[0].template.count("{") == found[1].template.count("{"):
            raise ContractViolation(f"{method} {path} is ambiguous: {[op.name for op in found]}")
        return found[0]

    def validator(self, pointer: str) -> Draft4Validator:
        if pointer not in self._validators:
            schema = {"$ref": f"{URI}#{pointer}"}
            self._validators[pointer] = Draft4Validator(
                schema, registry=self.registry, format_checker=FORMATS
            )
        return self._validators[pointer]

    def _errors(self, pointer: str, instance: Any, what: str) -> list[str]:
        return [
            f"{what} at {'/'.join(map(str, e.absolute_path)) or '(root)'}: {e.message}"
            for e in sorted(self.validator(pointer).iter_errors(instance), key=lambda e: list(e.path))
        ]

    # ---- requests -------------------------------------------------------------------------------
    def check_request(self, req: HttpRequest) -> Operation:
        """Method and path, query, headers (security) and body of ``req`` against its operation."""
        url = urlsplit(req.target)
        op = self.operation(req.method, url.path)
        query = parse_qs(url.query, keep_blank_values=True)
        headers = {k.lower(): v for k, v in req.headers.items()}
        problems: list[str] = []
        for i, param in enumerate(op.params):
            where, name = param["in"], param.get("name", "")
            if where == "query":
                problems += self._check_query(param, query.pop(name, None))
            elif where == "header" and param.get("required") and name.lower() not in headers:
                problems.append(f"required header {name} is missing")
            elif where == "body":
                if req.json_body is None:
                    if param.get("required"):
                        problems.append("the operation requires a body; none is sent")
                else:
                    problems += self._errors(f"{op.pointer}/parameters/{i}/schema", req.json_body, "body")
        problems += [f"query parameter {name!r} is not declared" for name in sorted(query)]
        if req.json_body is not None and not any(p["in"] == "body" for p in op.params):
            problems.append("a body is sent to an operation that takes none")
        problems += self._check_security(op, headers)
        if problems:
            raise ContractViolation(f"request {req.method} {req.target} ({op.name}): " + "; ".join(problems))
        return op

    def _check_query(self, param: dict[str, Any], values: list[str] | None) -> list[str]:
        name = param["name"]
        if values is None:
            return [f"required query parameter {name!r} is missing"] if param.get("required") else []
        schema = {k: v for k, v in param.items() if k in ("type", "enum", "items", "format", "pattern")}
        if param.get("type") == "array" and param.get("collectionFormat") == "multi":
            instance: Any = values
        elif len(values) == 1:
            instance = values[0]
        else:
            return [f"query parameter {name!r} is given {len(values)} times"]
        return [f"query {name}: {e.message}" for e in Draft4Validator(schema).iter_errors(instance)]

    def _check_security(self, op: Operation, headers: dict[str, str]) -> list[str]:
        requirements = op.spec.get("security", self.spec.get("security", []))
        if not requirements:
            return []
        schemes = self.spec.get("securityDefinitions", {})

        def satisfied(name: str) -> bool:
            scheme = schemes[name]
            if scheme["type"] == "basic":
                return headers.get("authorization", "").lower().startswith("basic ")
            if scheme["type"] == "apiKey" and scheme["in"] == "header":
                return bool(headers.get(scheme["name"].lower()))
            raise NotImplementedError(f"security scheme {scheme}")

        if any(all(satisfied(name) for name in req) for req in requirements):
            return []
        wanted = " or ".join(" and ".join(req) for req in requirements)
        return [f"security {wanted} is not satisfied by the headers sent ({sorted(headers)})"]

    # ---- responses ------------------------------------------------------------------------------
    def check_response(self, method: str, target: str, resp: HttpResponse) -> Operation:
        """The answer to ``method target`` against the operation's response for its status."""
        op = self.operation(method, urlsplit(target).path)
        declared = op.spec["responses"].get(str(resp.status))
        where = f"response HTTP {resp.status} to {method} {target} ({op.name})"
        if declared is None:
            raise ContractViolation(
                f"{where}: status not declared (declared: {sorted(op.spec['responses'])})"
            )
        if "schema" not in declared:
            if resp.body.strip():
                raise ContractViolation(f"{where}: the spec declares no body, got {resp.body[:80]!r}")
            return op
        if resp.content_type.split(";")[0].strip().lower() not in self.spec["produces"]:
            raise ContractViolation(
                f"{where}: content type {resp.content_type!r} is not one the spec produces"
            )
        try:
            body = json.loads(resp.body)
        except ValueError as err:
            raise ContractViolation(f"{where}: body is not JSON ({err})") from None
        problems = self._errors(f"{op.pointer}/responses/{resp.status}/schema", body, "body")
        if problems:
            raise ContractViolation(f"{where}: " + "; ".join(problems))
        return op


@functools.cache
def load_contract() -> Contract:
    """The patched spec, loaded and registered once per process; :class:`SpecMissing` if absent."""
    path = spec_path()
    if not path.is_file():
        raise SpecMissing(
            f"the vendor spec {path} is absent: the contract tests read it from ../shared/spec/ "
            f"beside the repository (or from ${SPEC_ENV}); CI always has it"
        )
    return Contract(json.loads(path.read_text(encoding="utf-8")))
