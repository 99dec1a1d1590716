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

from collections.abc import Callable, Iterator  # noqa: E402
from typing import Any  # noqa: E402

import pytest  # noqa: E402

from airflow_provider_backupjob.simulator import ADMIN_USER, DEFAULT_PASSWORD, Simulator  # noqa: E402

Connect = Callable[..., str]


@pytest.fixture
def sim() -> Iterator[Simulator]:
    with Simulator() as simulator:
        yield simulator


def connection_uri_json(
    host: str, port: int, *, login: str = ADMIN_USER, password: str = DEFAULT_PASSWORD, **extra: Any
) -> str:
    return json.dumps(
        {
            "conn_type": "vcenter_backup",
            "host": host,
            "port": port,
            "login": login,
            "password": password,
            "extra": extra,
        }
    )


@pytest.fixture
def connect(sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> Connect:
    """Point a connection (an ``AIRFLOW_CONN_*`` variable) at the simulator; returns its id."""

    def _connect(conn_id: str = "vcenter_backup_default", *, port: int | None = None, **kwargs: Any) -> str:
        kwargs.setdefault("timeout", 5)
        value = connection_uri_json(f"http://{sim.host}", port or sim.port, **kwargs)
        monkeypatch.setenv(f"AIRFLOW_CONN_{conn_id.upper()}", value)
        return conn_id

    return _connect
