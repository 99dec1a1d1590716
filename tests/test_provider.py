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

from airflow_provider_backupjob import __version__, compat, connection_form
from airflow_provider_backupjob.connection_form import FIELD_NAMES
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
    assert tuple(conn["conn-fields"]) == FIELD_NAMES
    # The form offers exactly the extras the connection is read with, the CA as PEM text beside its path.
    assert FIELD_NAMES == EXTRA_FIELDS
    assert FIELD_NAMES.index("ca_cert") == FIELD_NAMES.index("ca_bundle") + 1
    assert conn["ui-field-behaviour"]["hidden-fields"] == ["schema"]
    assert conn["ui-field-behaviour"]["relabeling"]["host"] == "vCenter host"
    ca_cert = conn["conn-fields"]["ca_cert"]
    assert ca_cert["label"] == "CA certificate (PEM text)"
    assert ca_cert["schema"] == {"type": ["string", "null"], "format": "multiline"}  # a textarea


def test_providers_manager_builds_the_connection_form() -> None:
    from airflow.providers_manager import ProvidersManager

    pm = ProvidersManager()
    widgets = pm.connection_form_widgets
    for field in FIELD_NAMES:
        assert f"extra__{CONN_TYPE}__{field}" in widgets
    assert pm.field_behaviours[CONN_TYPE]["relabeling"]["host"] == "vCenter host"
    assert pm.hooks[CONN_TYPE] is not None and pm.hooks[CONN_TYPE].connection_type == CONN_TYPE


def test_both_declarations_of_the_form_carry_the_same_fields() -> None:
    """conn-fields (read by Airflow 3.2+) and the hook's classmethods (3.0/3.1), field by field."""
    from wtforms import BooleanField, IntegerField, StringField
    from wtforms.validators import AnyOf

    from airflow_provider_backupjob.hooks.backup_job import BackupJobHook

    (conn,) = get_provider_info()["connection-types"]
    declared = conn["conn-fields"]
    widgets = BackupJobHook.get_connection_form_widgets()
    assert list(widgets) == list(declared)
    classes = {"boolean": BooleanField, "number": IntegerField, "string": StringField}
    for name, field in declared.items():
        unbound = widgets[name]
        assert unbound.args[0] == field["label"], name
        assert unbound.kwargs["description"] == field["description"], name
        assert unbound.kwargs["default"] == field["schema"].get("default"), name
        assert unbound.field_class is classes[field["schema"]["type"][0]], name
        enums = [v.values for v in unbound.kwargs.get("validators", []) if isinstance(v, AnyOf)]
        assert enums == ([field["schema"]["enum"]] if "enum" in field["schema"] else []), name

    behaviour = BackupJobHook.get_ui_field_behaviour()
    ui = conn["ui-field-behaviour"]
    assert behaviour == {
        "hidden_fields": ui["hidden-fields"],
        "relabeling": ui["relabeling"],
        "placeholders": ui["placeholders"],
    }


def test_the_api_server_serves_the_same_form_on_this_airflow() -> None:
    """What the UI gets (/ui/connections/hook_meta): from conn-fields on 3.2+, the classmethods before.

    In a fresh interpreter, as in the API server: Airflow's providers manager is a process-wide singleton
    that builds the form once, and Airflow 3.0/3.1 build it under stand-ins for WTForms' classes.
    """
    code = (
        "import json\n"
        "from airflow.api_fastapi.core_api.services.ui.connections import HookMetaService\n"
        f"(meta,) = [m for m in HookMetaService.hook_meta_data() if m.connection_type == {CONN_TYPE!r}]\n"
        "print(json.dumps(meta.model_dump(mode='json')))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=180, check=False
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    meta = json.loads(proc.stdout.strip().splitlines()[-1])
    extra = meta["extra_fields"] or {}
    assert list(extra) == list(FIELD_NAMES)
    number = "number" if compat.AIRFLOW_V_3_2_PLUS else "integer"  # 3.0/3.1 forms have no float field
    json_types = {"boolean": "boolean", "number": number}
    for field in connection_form.EXTRA_FIELDS:
        served = extra[field.name]
        assert served["schema"]["title"] == field.label, field.name
        assert served["description"] == field.description, field.name
        assert served["value"] == field.default, field.name
        assert served["schema"]["type"] == [json_types.get(field.kind, "string"), "null"], field.name
        assert served["schema"].get("enum") == (list(field.choices) or None), field.name
    assert extra["ca_cert"]["schema"]["format"] == "multiline"  # rendered as a textarea
    standard = meta["standard_fields"]
    assert standard["host"]["title"] == "vCenter host" and standard["login"]["title"] == "SSO user"
    assert standard["url_schema"]["hidden"] is True


def test_parsing_a_dag_imports_no_form_library() -> None:
    code = (
        "import sys, airflow_provider_backupjob.hooks.backup_job;"
        "import airflow_provider_backupjob.sensors.backup_job;"
        "print(sorted(m for m in ('wtforms', 'flask_appbuilder') if m in sys.modules))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_version_flags_follow_the_installed_airflow() -> None:
    major, minor = (int(part) for part in airflow.__version__.split(".")[:2])
    assert (major, minor) == compat.AIRFLOW_VERSION
    assert ((major, minor) >= (3, 1)) == compat.AIRFLOW_V_3_1_PLUS
    assert ((major, minor) >= (3, 2)) == compat.AIRFLOW_V_3_2_PLUS
    assert ((major, minor) >= (3, 3)) == compat.AIRFLOW_V_3_3_PLUS


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
