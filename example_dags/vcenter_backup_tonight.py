"""Gate the nightly patch run on tonight's *scheduled* appliance backup, without knowing its id.

vCenter's own backup schedule starts the job (say at 23:00); this DAG runs at 22:30 and waits for
the newest SCHEDULED backup job that started after its run time (``data_interval_end``), then
hands the job's status (id, state, type, size, duration, location) to the patch task. A FAILED
backup fails the gate without retries; no backup within ``timeout`` times it out.

Against the bundled simulator, start one that runs a schedule (a SCHEDULED job every minute)::

    python -m airflow_provider_backupjob.simulator --port 8443 --schedule 60
    airflow dags test vcenter_backup_tonight

``VCENTER_BACKUP_POKE_INTERVAL`` (seconds, default 60) sets the poke interval.
"""

from __future__ import annotations

import os
from datetime import timedelta
from typing import Any

from airflow.sdk import DAG, task

from airflow_provider_backupjob.sensors.backup_job import BackupJobSensor

POKE_INTERVAL = float(os.environ.get("VCENTER_BACKUP_POKE_INTERVAL", "60"))

with DAG(
    dag_id="vcenter_backup_tonight",
    description="Patch after tonight's scheduled vCenter backup succeeded",
    schedule="30 22 * * *",  # no start_date: the first run is the next 22:30, not last night's
    tags=["vcenter", "backup", "example"],
):
    tonights_backup = BackupJobSensor(
        task_id="wait_for_tonights_backup",
        # a run triggered by hand (API, UI) has no data interval: then the time it was triggered
        started_after="{{ data_interval_end | default(dag_run.run_after, true) }}",
        job_type="SCHEDULED",
        vcenter_conn_id="vcenter_backup_default",
        mode="reschedule",
        poke_interval=POKE_INTERVAL,
        timeout=timedelta(hours=6).total_seconds(),
    )

    @task
    def patch_cluster(status: dict[str, Any]) -> str:
        """Stands for the work that must wait for a good backup."""
        summary = (
            f"{status['type']} backup job {status['id']} {status['state']} at {status['end_time']} "
            f"({status['size']} bytes to {status['location']}): patching can start"
        )
        print(summary)
        return summary

    patch_cluster(tonights_backup.output)
