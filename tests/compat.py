"""Test-only Airflow names that moved between 3.0 and 3.3 (the provider's own are in its compat module)."""

from __future__ import annotations

from airflow_provider_backupjob.compat import AIRFLOW_V_3_1_PLUS

if AIRFLOW_V_3_1_PLUS:
    from airflow.sdk.execution_time.timeout import timeout
    from airflow.sdk.module_loading import import_string
else:
    from airflow.utils.module_loading import import_string
    from airflow.utils.timeout import timeout

# Airflow's secrets masker, reset between chaos runs (each run's tokens make its pattern longer).
from airflow.sdk.execution_time.secrets_masker import redact, reset_secrets_masker

__all__ = ["import_string", "redact", "reset_secrets_masker", "timeout"]
