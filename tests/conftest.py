"""Test set-up: an isolated AIRFLOW_HOME (before Airflow is imported) and the bundled simulator."""

from __future__ import annotations

import json
import os
import tempfile

_HOME = tempfile.mkdtemp(prefix="backupjob-airflow-home-")
os.environ["AIRFLOW_HOME"] = _HOME
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = os.path.join(_HOME, "dags")
os.environ.pop("AIRFLOW_CONN_VCENTER_BACKUP_DEFAULT", None)

from collections.abc import Iterator  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from airflow_provider_backupjob.exceptions import VCenterError  # noqa: E402
from airflow_provider_backupjob.simulator import DEFAULT_PASSWORD, Simulator  # noqa: E402
from airflow_provider_backupjob.triggers.backup_job import BackupJobTrigger  # noqa: E402
from tests.helpers import (  # noqa: E402  (also registers and loads the hypothesis profiles)
    SECRETS,
    SIMULATORS,
    Connect,
    connection_uri_json,
    register_secret,
    track_simulator,
)


def _connection_secrets() -> set[str]:
    found: set[str] = set()
    for key, value in os.environ.items():
        if key.startswith("AIRFLOW_CONN_") and value.startswith("{"):
            conn = json.loads(value)
            extra = conn.get("extra") or {}
            found.update(
                v for v in (conn.get("password"), extra.get("backup_password"), extra.get("ca_cert")) if v
            )
    return found


@pytest.fixture(autouse=True)
def no_secret_leaks(
    request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> Iterator[None]:
    """Fail a test whose logs, output, exception messages or trigger kwargs carry a secret.

    Hook and task logs go through structlog to stdout, so the captured output is read (copies of
    what the test itself reads are kept); exception texts are collected as our errors compose them,
    and trigger kwargs as they are serialized. Operator XCom is checked in the operator tests.
    """
    SECRETS.clear()
    SIMULATORS.clear()
    register_secret(DEFAULT_PASSWORD)
    texts: list[str] = []
    capture = request.getfixturevalue("capfd" if "capfd" in request.fixturenames else "capsys")
    original_read = capture.readouterr

    def readouterr() -> Any:
        result = original_read()
        texts.extend((result.out, result.err))
        return result

    monkeypatch.setattr(capture, "readouterr", readouterr)
    compose = VCenterError._compose

    def recording_compose(self: VCenterError) -> str:
        text = compose(self)
        texts.append(text)
        return text

    monkeypatch.setattr(VCenterError, "_compose", recording_compose)
    serialize = BackupJobTrigger.serialize

    def recording_serialize(self: BackupJobTrigger) -> tuple[str, dict[str, Any]]:
        result = serialize(self)
        texts.append(json.dumps(result[1]))
        return result

    monkeypatch.setattr(BackupJobTrigger, "serialize", recording_serialize)
    yield
    readouterr()
    texts.append(caplog.text)
    secrets = SECRETS | _connection_secrets()
    for simulator in SIMULATORS:
        secrets.update(simulator.state.issued_tokens)
    leaked = sorted({f"{s[:2]}...({len(s)} chars)" for s in secrets for t in texts if s in t})
    if leaked:
        pytest.fail(f"secret(s) leaked into logs, output, exceptions or trigger kwargs: {leaked}")


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator() as simulator:
        yield track_simulator(simulator)


@pytest.fixture
def connect(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> Connect:
    """Point a connection (an ``AIRFLOW_CONN_*`` variable) at the simulator; returns its id."""

    def _connect(conn_id: str = "vcenter_backup_default", *, port: int | None = None, **kwargs: Any) -> str:
        kwargs.setdefault("timeout", 5)
        register_secret(kwargs.get("password"))
        value = connection_uri_json(f"http://{sim.host}", port or sim.port, **kwargs)
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", value)
        return conn_id

    return _connect


pytest_plugins = ["pytester"]
