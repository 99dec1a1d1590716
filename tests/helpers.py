"""What the tests share: connection values, the secrets the leak check looks for, hypothesis profiles.

Test modules import from here (``from tests.helpers import ...``), never from ``conftest``: importing
conftest as a module loads it a second time, with its own copy of the state below.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings

from airflow_provider_backupjob.retry import RetryPolicy
from airflow_provider_backupjob.simulator import ADMIN_USER, DEFAULT_PASSWORD, Simulator

Connect = Callable[..., str]

# Secrets in play in the running test: every password a connection was given, every session
# token a simulator issued. conftest's autouse fixture ``no_secret_leaks`` fails a test where any
# of them shows up.
SECRETS: set[str] = set()
SIMULATORS: list[Simulator] = []


def register_secret(*values: str | None) -> None:
    SECRETS.update(v for v in values if v)


def track_simulator(simulator: Simulator) -> Simulator:
    """Add a simulator's session tokens to the leak check (the ``sim`` fixture does it for its own)."""
    SIMULATORS.append(simulator)
    return simulator


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


FAST = RetryPolicy(attempts=3, max_seconds=5, initial_wait=0.01, max_wait=0.05)
FLAVOURS = pytest.mark.parametrize("flavour", ["sync", "async"])
"""Run a test with each hook: the sync ``BackupJobHook`` and the ``AsyncBackupJobHook``."""


def call_hook(flavour: str, method: str, *args: Any, **kwargs: Any) -> Any:
    """``method`` of a fresh hook of either flavour (retrying as FAST), in its ``with`` block."""
    import asyncio

    from airflow_provider_backupjob.hooks.backup_job import BackupJobHook
    from airflow_provider_backupjob.hooks.backup_job_async import AsyncBackupJobHook

    if flavour == "sync":
        with BackupJobHook(retry_policy=FAST) as hook:
            return getattr(hook, method)(*args, **kwargs)

    async def main() -> Any:
        async with AsyncBackupJobHook(retry_policy=FAST) as hook:
            return await getattr(hook, method)(*args, **kwargs)

    return asyncio.run(main())


# Hypothesis profiles. "ci" (the default, `make test`): the same examples on every run, nothing read
# from or written to an example database, so a red CI is a bug and a re-run says the same.
# "fuzz" (`make fuzz`): many more examples from a fresh seed, printing the blob that replays a failure.
_COMMON: dict[str, Any] = {"deadline": None, "suppress_health_check": [HealthCheck.too_slow]}
settings.register_profile("ci", max_examples=300, derandomize=True, database=None, **_COMMON)
settings.register_profile(
    "fuzz",
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "5000")),
    derandomize=False,
    database=None,
    print_blob=True,
    phases=[Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink],
    **_COMMON,
)
settings.load_profile("ci")
