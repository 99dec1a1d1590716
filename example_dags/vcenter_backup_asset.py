"""Run a DAG whenever a scheduled vCenter appliance backup succeeds: event-driven scheduling.

An asset with a watcher: ``BackupJobEventTrigger`` polls the appliance from the triggerer and
fires once for each backup job that *reaches* SUCCEEDED after the watcher started (never for
the job that had already succeeded, never twice). Each event updates the asset, which runs
``vcenter_backup_asset``; its task reads which backup succeeded from the triggering asset event.

Against the bundled simulator, start one that runs a schedule (a SCHEDULED job every minute)::

    python -m airflow_provider_backupjob.simulator --port 8443 --schedule 60

then run a scheduler and a triggerer. ``VCENTER_BACKUP_POKE_INTERVAL`` (seconds, default 60) sets
how often the watcher polls.
"""

from __future__ import annotations

import os
from typing import Any

import pendulum
from airflow.sdk import DAG, Asset, AssetWatcher, task

from airflow_provider_backupjob.triggers.backup_job import BackupJobEventTrigger

POLL_INTERVAL = float(os.environ.get("VCENTER_BACKUP_POKE_INTERVAL", "60"))

vcenter_backup = Asset(
    "vcenter_backup_succeeded",
    watchers=[
        AssetWatcher(
            name="vcenter_backup_watcher",
            trigger=BackupJobEventTrigger(
                vcenter_conn_id="vcenter_backup_default",
                states=("SUCCEEDED",),
                job_type="SCHEDULED",
                poll_interval=POLL_INTERVAL,
            ),
        )
    ],
)

with DAG(
    dag_id="vcenter_backup_asset",
    description="Patch after every scheduled vCenter backup that succeeds",
    schedule=[vcenter_backup],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    tags=["vcenter", "backup", "example"],
):

    @task
    def patch_after_backup(triggering_asset_events: Any = None) -> list[str]:
        """Read which backup succeeded from the asset event that triggered this run."""
        done = []
        for event in triggering_asset_events[vcenter_backup]:
            job = event.extra["payload"]  # the job's status dict, with its details
            print(
                f"backup job {job['id']} ({job['type']}) {job['state']} at {job['end_time']}: patching starts"
            )
            done.append(job["id"])
        return done

    patch_after_backup()
