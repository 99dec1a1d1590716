"""What differs between the Airflow releases the provider supports (3.0.0 to 3.3.x), in one place.

The version flags come from the installed distribution's metadata (no Airflow import for them), computed
once at import. The rest of the package imports Airflow's names from here, never by version itself.

What moved, by release:

* 3.1: ``BaseHook`` (with ``aget_connection``) in ``airflow.sdk``, ``mask_secret`` in ``airflow.sdk.log``;
  3.0 has ``airflow.hooks.base.BaseHook`` (sync ``get_connection`` only) and the Task SDK's masker;
* 3.2: ``conf`` in ``airflow.sdk``, the task exceptions in ``airflow.sdk.exceptions``,
  ``TaskInstanceKey`` in ``airflow.sdk.types``; 3.0 and 3.1 have them in ``airflow.configuration``,
  ``airflow.exceptions`` and ``airflow.models.taskinstancekey``.

mypy checks the branch of the Airflow it runs against: the Makefile passes ``--always-true`` /
``--always-false`` for each ``AIRFLOW_V_*_PLUS`` flag by the venv's Airflow line.
"""

from __future__ import annotations

import re
import sys
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING


def _airflow_version() -> tuple[int, int]:
    for dist in ("apache-airflow-core", "apache-airflow"):  # core holds the code from 3.0 on
        try:
            text = version(dist)
        except PackageNotFoundError:
            continue
        if match := re.match(r"(\d+)\.(\d+)", text):
            return int(match[1]), int(match[2])
    raise ImportError("airflow-provider-backupjob needs apache-airflow 3.0 or later, and none is installed")


AIRFLOW_VERSION: tuple[int, int] = _airflow_version()
AIRFLOW_V_3_1_PLUS: bool = AIRFLOW_VERSION >= (3, 1)
AIRFLOW_V_3_2_PLUS: bool = AIRFLOW_VERSION >= (3, 2)
AIRFLOW_V_3_3_PLUS: bool = AIRFLOW_VERSION >= (3, 3)

if AIRFLOW_V_3_1_PLUS:
    from airflow.sdk import BaseHook
    from airflow.sdk.log import mask_secret
else:
    from airflow.hooks.base import BaseHook
    from airflow.sdk.execution_time.secrets_masker import mask_secret

if AIRFLOW_V_3_2_PLUS:
    from airflow.sdk import conf
    from airflow.sdk.exceptions import (
        AirflowException,
        AirflowFailException,
        AirflowRescheduleException,
        AirflowSensorTimeout,
        AirflowSkipException,
        AirflowTaskTimeout,
        TaskDeferred,
    )
else:
    from airflow.configuration import conf
    from airflow.exceptions import (
        AirflowException,
        AirflowFailException,
        AirflowRescheduleException,
        AirflowSensorTimeout,
        AirflowSkipException,
        AirflowTaskTimeout,
        TaskDeferred,
    )

if TYPE_CHECKING:
    if AIRFLOW_V_3_1_PLUS:
        from airflow.sdk import Connection
    else:
        from airflow.models.connection import Connection
    if AIRFLOW_V_3_2_PLUS:
        from airflow.sdk.types import TaskInstanceKey
    else:
        from airflow.models.taskinstancekey import TaskInstanceKey


async def aget_connection(conn_id: str) -> Connection:
    """The connection, read without blocking the triggerer's event loop."""
    if AIRFLOW_V_3_2_PLUS or (AIRFLOW_V_3_1_PLUS and _supervised()):
        return await BaseHook.aget_connection(conn_id)
    # 3.0, and 3.1 outside a task or triggerer (whose aget_connection needs the supervisor even for a
    # connection an environment variable defines): the sync lookup, in asgiref's single shared thread
    # (thread_sensitive), as Airflow 3.0's triggerer asks: its supervisor pipe takes one request at a time.
    from asgiref.sync import sync_to_async

    conn: Connection = await sync_to_async(BaseHook.get_connection)(conn_id)
    return conn


def _supervised() -> bool:
    """Whether this process talks to an Airflow supervisor (a task or the triggerer), as Airflow checks it."""
    return hasattr(sys.modules.get("airflow.sdk.execution_time.task_runner"), "SUPERVISOR_COMMS")


__all__ = [
    "AIRFLOW_VERSION",
    "AIRFLOW_V_3_1_PLUS",
    "AIRFLOW_V_3_2_PLUS",
    "AIRFLOW_V_3_3_PLUS",
    "AirflowException",
    "AirflowFailException",
    "AirflowRescheduleException",
    "AirflowSensorTimeout",
    "AirflowSkipException",
    "AirflowTaskTimeout",
    "BaseHook",
    "TaskDeferred",
    "TaskInstanceKey",
    "aget_connection",
    "conf",
    "mask_secret",
]
