"""Provider metadata, read by Airflow through the ``apache_airflow_provider`` entry point.

Airflow 3.2+ builds the Connections form from ``conn-fields`` and ``ui-field-behaviour`` here
without importing the hook; 3.0 and 3.1 ask the hook's classmethods. Both come from
:mod:`airflow_provider_backupjob.connection_form`.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_backupjob import __version__, connection_form

INTEGRATION = "VMware vCenter Backup"


def get_provider_info() -> dict[str, Any]:
    return {
        "package-name": "airflow-provider-backupjob",
        "name": "VMware vCenter Backup",
        "description": "Start, wait for and cancel VMware vCenter Server Appliance file-based backup jobs.",
        "versions": [__version__],
        "integrations": [
            {
                "integration-name": INTEGRATION,
                "external-doc-url": "https://developer.vmware.com/apis/vsphere-automation/latest/appliance/",
                "tags": ["software"],
            }
        ],
        "hooks": [
            {
                "integration-name": INTEGRATION,
                "python-modules": ["airflow_provider_backupjob.hooks.backup_job"],
            }
        ],
        "sensors": [
            {
                "integration-name": INTEGRATION,
                "python-modules": ["airflow_provider_backupjob.sensors.backup_job"],
            }
        ],
        "triggers": [
            {
                "integration-name": INTEGRATION,
                "python-modules": ["airflow_provider_backupjob.triggers.backup_job"],
            }
        ],
        "operators": [
            {
                "integration-name": INTEGRATION,
                "python-modules": ["airflow_provider_backupjob.operators.backup_job"],
            }
        ],
        "extra-links": ["airflow_provider_backupjob.operators.backup_job.VCenterApplianceLink"],
        "connection-types": [
            {
                "connection-type": "vcenter_backup",
                "hook-class-name": "airflow_provider_backupjob.hooks.backup_job.BackupJobHook",
                "hook-name": "VMware vCenter Backup",
                "conn-fields": connection_form.conn_fields(),
                "ui-field-behaviour": connection_form.ui_field_behaviour(),
            }
        ],
    }
