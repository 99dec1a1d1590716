"""Gate a downstream task on a vCenter appliance backup job.

Trigger with the job id as a Param or in ``dag_run.conf``::

    airflow dags trigger vcenter_backup_gate --conf '{"job_id": "20170717-132629-5318154"}'

Three DAGs, one for each way of waiting: ``vcenter_backup_gate`` (poke: holds a worker slot),
``vcenter_backup_gate_reschedule`` (frees the slot between pokes) and ``vcenter_backup_gate_deferrable``
(waits in the triggerer). ``VCENTER_BACKUP_POKE_INTERVAL`` (seconds, default 60) sets the poke interval.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, Param, task

from airflow_provider_backupjob.sensors.backup_job import BackupJobSensor

POKE_INTERVAL = float(os.environ.get("VCENTER_BACKUP_POKE_INTERVAL", "60"))

for suffix, mode, deferrable in (
    ("", "poke", False),
    ("_reschedule", "reschedule", False),
    ("_deferrable", "poke", True),
):
    with DAG(
        dag_id=f"vcenter_backup_gate{suffix}",
        description=f"Patch after the vCenter backup succeeded ({'deferrable' if deferrable else mode})",
        schedule=None,
        start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
        catchup=False,
        tags=["vcenter", "backup", "example"],
        params={
            "job_id": Param(
                "",
                type="string",
                description="The backup job id, e.g. 20170717-132629-5318154 (or dag_run.conf['job_id']).",
            )
        },
    ):
        backup_succeeded = BackupJobSensor(
            task_id="wait_for_backup",
            job_id="{{ dag_run.conf.get('job_id') or params.job_id }}",
            vcenter_conn_id="vcenter_backup_default",
            mode=mode,
            deferrable=deferrable,
            poke_interval=POKE_INTERVAL,
            timeout=timedelta(hours=6).total_seconds(),
            max_outage=timedelta(minutes=10),
        )

        @task
        def patch_cluster(status: dict[str, Any]) -> str:
            """Stands for the work that must wait for a good backup."""
            summary = (
                f"backup job {status['id']} {status['state']} at {status['end_time']}: patching can start"
            )
            print(summary)
            return summary

        patch_cluster(backup_succeeded.output)
