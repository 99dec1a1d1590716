"""Provider metadata, read by Airflow through the ``apache_airflow_provider`` entry point.

Airflow 3.2+ builds the Connections form from ``conn-fields`` and ``ui-field-behaviour`` here
without importing the hook. Field names match :mod:`airflow_provider_backupjob.settings`.
"""

from __future__ import annotations

from typing import Any

from airflow_provider_backupjob import __version__

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
                "conn-fields": {
                    "verify_ssl": {
                        "label": "Verify SSL",
                        "schema": {"type": ["boolean", "null"], "default": True},
                        "description": "Verify the appliance's TLS certificate (keep on in production).",
                    },
                    "ca_bundle": {
                        "label": "CA bundle",
                        "schema": {"type": ["string", "null"]},
                        "description": "Path, on the workers and triggerer, of a PEM file with the "
                        "appliance's CA (VMCA) certificates.",
                    },
                    "api_style": {
                        "label": "API style",
                        "schema": {
                            "type": ["string", "null"],
                            "default": "auto",
                            "enum": ["auto", "api", "rest"],
                        },
                        "description": "auto: /api where the appliance has it (7.0 U2+), else /rest.",
                    },
                    "timeout": {
                        "label": "Timeout",
                        "schema": {"type": ["number", "null"], "default": 30},
                        "description": "Seconds to wait for each request.",
                    },
                },
                "ui-field-behaviour": {
                    "hidden-fields": ["schema"],
                    "relabeling": {"host": "vCenter host", "login": "SSO user"},
                    "placeholders": {
                        "host": "vcsa.example.com or https://vcsa.example.com",
                        "port": "443",
                        "login": "administrator@vsphere.local",
                    },
                },
            }
        ],
    }
