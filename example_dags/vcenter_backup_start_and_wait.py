"""Start an appliance backup, wait for it in the triggerer, then read its final status.

The backup target's user and password come from the connection ``vcenter_backup_target`` (its
login and password; the extra ``backup_password`` encrypts the backup), never from this file.
``VCENTER_BACKUP_LOCATION`` and ``VCENTER_BACKUP_POKE_INTERVAL`` set the target URL and the poll interval.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

import pendulum
from airflow.sdk import DAG, XComArg, task

from airflow_provider_backupjob.operators.backup_job import StartBackupJobOperator

with DAG(
    dag_id="vcenter_backup_start_and_wait",
    description="Start a vCenter appliance backup, wait for it (deferrable), then report",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["vcenter", "backup", "example"],
):
    backup = StartBackupJobOperator(
        task_id="start_backup",
        vcenter_conn_id="vcenter_backup_default",
        location=os.environ.get("VCENTER_BACKUP_LOCATION", "sftp://backup.example.com/vcsa/{{ ds_nodash }}"),
        parts=["common"],
        location_conn_id="vcenter_backup_target",
        comment="Airflow run {{ run_id }}",
        wait_for_completion=True,
        deferrable=True,
        poll_interval=float(os.environ.get("VCENTER_BACKUP_POKE_INTERVAL", "60")),
        timeout=timedelta(hours=6),
        execution_timeout=timedelta(hours=8),
    )

    @task
    def report(status: dict[str, Any], job_id: str) -> str:
        """Downstream: read the final status (return_value) and the job id pushed at start."""
        if status["id"] != job_id or status["state"] != "SUCCEEDED":
            raise ValueError(f"unexpected final status {status}")
        summary = f"backup job {job_id} {status['state']} ({status['progress']}%), ended {status['end_time']}"
        print(summary)
        return summary

    report(backup.output, XComArg(backup, key="job_id"))
