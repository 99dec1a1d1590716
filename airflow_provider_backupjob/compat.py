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
from typing import TYPE_CHECKING, Any

from airflow.triggers.base import BaseTrigger


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


async def amask_secret(value: str) -> None:
    """``mask_secret`` from an event loop: Airflow 3.3's ``amask_secret`` does not block the loop on
    the supervisor; before 3.3 ``mask_secret`` is safe in async code."""
    if AIRFLOW_V_3_3_PLUS:
        from airflow.sdk.log import amask_secret as amask

        await amask(value)
    else:
        mask_secret(value)


def _supervised() -> bool:
    """Whether this process talks to an Airflow supervisor (a task or the triggerer), as Airflow checks it."""
    return hasattr(sys.modules.get("airflow.sdk.execution_time.task_runner"), "SUPERVISOR_COMMS")


# --------------------------------------------------------------------------------------------------
# Cancel on kill while deferred (issue 11)
#
# Airflow 3.3 calls ``BaseTrigger.on_kill()`` when a user marks a deferred task failed or success or
# clears it, and never on a triggerer restart, a redistribution or a trigger timeout. Before 3.3 the
# trigger is only cancelled (CancelledError), the same way in every case: whether a user acted is read
# from the task instance's state, which stays DEFERRED through a triggerer restart.
# --------------------------------------------------------------------------------------------------

TRIGGER_ON_KILL: bool = "on_kill" in vars(BaseTrigger)
"""True where the triggerer calls ``BaseTrigger.on_kill`` on a user's action (Airflow 3.3+)."""


def ti_state_key(task_id: str, map_index: int | None) -> str:
    """The key of a task in ``get_task_states``' answer: ``{task_id}_{map_index}`` for a mapped task."""
    return task_id if map_index is None or map_index < 0 else f"{task_id}_{map_index}"


async def task_instance_state(ti: Any) -> str | None:
    """The current state of the trigger's task instance ``ti`` (None: it has none, e.g. cleared),
    asked of the API server through the task SDK (the triggerer's supervisor relays it).

    :raises LookupError: the task instance is not in the answer.
    """
    from airflow.sdk.execution_time.task_runner import RuntimeTaskInstance
    from asgiref.sync import sync_to_async

    map_index = getattr(ti, "map_index", None)
    # sync_to_async, not a bare thread: on 3.2 the SDK's call bridges back into this event loop
    query: dict[str, Any] = {"dag_id": ti.dag_id, "task_ids": [ti.task_id], "run_ids": [ti.run_id]}
    if AIRFLOW_V_3_1_PLUS:  # 3.0 has no map_index filter: its answer holds every map index, by key
        query["map_index"] = map_index
    states = await sync_to_async(RuntimeTaskInstance.get_task_states)(**query)
    key = ti_state_key(ti.task_id, map_index)
    found = (states or {}).get(ti.run_id, {})
    if key not in found:
        raise LookupError(f"task instance {key} of run {ti.run_id} not found")
    state = found[key]
    return None if state is None else str(getattr(state, "value", state))


__all__ = [
    "AIRFLOW_VERSION",
    "AIRFLOW_V_3_1_PLUS",
    "AIRFLOW_V_3_2_PLUS",
    "AIRFLOW_V_3_3_PLUS",
    "TRIGGER_ON_KILL",
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
    "amask_secret",
    "conf",
    "mask_secret",
    "task_instance_state",
    "ti_state_key",
]
