"""Provider registration: the provider-info dict, the entry point, and what the airflow CLI sees."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import distribution, entry_points
from pathlib import Path

import airflow
import jsonschema
import pytest

from airflow_provider_backupjob import __version__
from airflow_provider_backupjob.get_provider_info import get_provider_info
from airflow_provider_backupjob.settings import CONN_TYPE, DEFAULT_CONN_ID, EXTRA_FIELDS

AIRFLOW = Path(sys.executable).parent / "airflow"


def test_provider_info_matches_airflows_schema() -> None:
    schema = json.loads((Path(airflow.__file__).parent / "provider_info.schema.json").read_text())
    jsonschema.validate(get_provider_info(), schema)


def test_package_name_and_entry_point_match_the_distribution() -> None:
    info = get_provider_info()
    dist = distribution(info["package-name"])
    assert dist.metadata["Name"] == "airflow-provider-backupjob" and dist.version == __version__
    (ep,) = [
        e for e in entry_points(group="apache_airflow_provider") if e.value.startswith("airflow_provider_")
    ]
    assert ep.load() is get_provider_info
    assert (Path(__file__).parent.parent / "airflow_provider_backupjob" / "py.typed").exists()


def test_every_listed_module_and_class_imports() -> None:
    import importlib

    info = get_provider_info()
    for section in ("hooks", "sensors", "triggers", "operators"):
        for entry in info[section]:
            for module in entry["python-modules"]:
                importlib.import_module(module)
    for dotted in [*info["extra-links"], *(c["hook-class-name"] for c in info["connection-types"])]:
        module, _, name = dotted.rpartition(".")
        assert hasattr(importlib.import_module(module), name), dotted


def test_connection_type_fields_match_the_hook_and_settings() -> None:
    from airflow_provider_backupjob.hooks.backup_job import BackupJobHook

    (conn,) = get_provider_info()["connection-types"]
    assert conn["connection-type"] == CONN_TYPE == BackupJobHook.conn_type
    assert conn["hook-name"] == BackupJobHook.hook_name == "VMware vCenter Backup"
    assert BackupJobHook.default_conn_name == DEFAULT_CONN_ID == "vcenter_backup_default"
    assert tuple(conn["conn-fields"]) == EXTRA_FIELDS
    assert conn["ui-field-behaviour"]["hidden-fields"] == ["schema"]
    assert conn["ui-field-behaviour"]["relabeling"]["host"] == "vCenter host"


def test_providers_manager_builds_the_connection_form() -> None:
    from airflow.providers_manager import ProvidersManager

    pm = ProvidersManager()
    widgets = pm.connection_form_widgets
    for field in EXTRA_FIELDS:
        assert f"extra__{CONN_TYPE}__{field}" in widgets
    assert pm.field_behaviours[CONN_TYPE]["relabeling"]["host"] == "vCenter host"
    assert pm.hooks[CONN_TYPE] is not None and pm.hooks[CONN_TYPE].connection_type == CONN_TYPE


@pytest.mark.parametrize("command", [["providers", "hooks"], ["providers", "list"]])
def test_airflow_cli_lists_the_provider(command: list[str], tmp_path: Path) -> None:
    env = {**os.environ, "AIRFLOW_HOME": str(tmp_path)}
    proc = subprocess.run(
        [str(AIRFLOW), *command, "-o", "json"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    if command[1] == "hooks":
        assert CONN_TYPE in proc.stdout and "BackupJobHook" in proc.stdout
    else:
        assert "airflow-provider-backupjob" in proc.stdout
