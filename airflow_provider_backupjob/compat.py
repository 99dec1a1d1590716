"""What differs between the Airflow versions the provider supports (3.2.0 to 3.3.x)."""

from __future__ import annotations

from typing import Any

from airflow.triggers.base import BaseTrigger

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
    states = await sync_to_async(RuntimeTaskInstance.get_task_states)(
        dag_id=ti.dag_id, task_ids=[ti.task_id], run_ids=[ti.run_id], map_index=map_index
    )
    key = ti_state_key(ti.task_id, map_index)
    found = (states or {}).get(ti.run_id, {})
    if key not in found:
        raise LookupError(f"task instance {key} of run {ti.run_id} not found")
    state = found[key]
    return None if state is None else str(getattr(state, "value", state))
