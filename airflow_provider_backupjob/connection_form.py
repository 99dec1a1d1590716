"""The ``vcenter_backup`` connection form, declared once.

Airflow builds the Connections form two ways, and this module feeds both from the same field list, so
they cannot drift:

* Airflow 3.2+ reads ``conn-fields`` and ``ui-field-behaviour`` from the provider info without importing
  the hook (:func:`conn_fields`, :func:`ui_field_behaviour`, used by ``get_provider_info``);
* Airflow 3.0 and 3.1 call the hook's ``get_connection_form_widgets`` and ``get_ui_field_behaviour``
  classmethods (:func:`form_widgets`, :func:`field_behaviour`). Those need WTForms, which Airflow imports
  first itself; flask_appbuilder's widgets are used where it is installed. Nothing here imports either
  at module level: DAG parsing never pays for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Kind = Literal["boolean", "text", "textarea", "choice", "number"]


@dataclass(frozen=True)
class ExtraField:
    """One field of the connection's ``extra``: its name, what the form shows, and how it is entered."""

    name: str
    label: str
    description: str
    kind: Kind
    default: Any = None
    choices: tuple[str, ...] = ()


EXTRA_FIELDS: tuple[ExtraField, ...] = (
    ExtraField(
        "verify_ssl",
        "Verify SSL",
        "Verify the appliance's TLS certificate (keep on in production).",
        "boolean",
        default=True,
    ),
    ExtraField(
        "ca_bundle",
        "CA bundle",
        "Path, on the workers and triggerer, of a PEM file with the appliance's CA (VMCA) certificates.",
        "text",
    ),
    ExtraField(
        "ca_cert",
        "CA certificate (PEM text)",
        "The appliance's CA (VMCA) certificates as PEM text: the alternative to CA bundle on managed "
        "Airflow, where no file can be put on every worker and triggerer.",
        "textarea",
    ),
    ExtraField(
        "api_style",
        "API style",
        "auto: /api where the appliance has it (7.0 U2+), else /rest.",
        "choice",
        default="auto",
        choices=("auto", "api", "rest"),
    ),
    ExtraField("timeout", "Timeout", "Seconds to wait for each request.", "number", default=30),
)
FIELD_NAMES: tuple[str, ...] = tuple(f.name for f in EXTRA_FIELDS)

HIDDEN_FIELDS: tuple[str, ...] = ("schema",)
RELABELING: dict[str, str] = {"host": "vCenter host", "login": "SSO user"}
PLACEHOLDERS: dict[str, str] = {
    "host": "vcsa.example.com or https://vcsa.example.com",
    "port": "443",
    "login": "administrator@vsphere.local",
}

_JSON_TYPES: dict[Kind, str] = {
    "boolean": "boolean",
    "text": "string",
    "textarea": "string",
    "choice": "string",
    "number": "number",
}


def field_schema(field: ExtraField) -> dict[str, Any]:
    """The field's JSON schema, as Airflow's form renders it (``multiline`` is a textarea)."""
    schema: dict[str, Any] = {"type": [_JSON_TYPES[field.kind], "null"]}
    if field.default is not None:
        schema["default"] = field.default
    if field.kind == "textarea":
        schema["format"] = "multiline"
    if field.choices:
        schema["enum"] = list(field.choices)
    return schema


# Airflow 3.2+: the provider info -------------------------------------------------------------------------
def conn_fields() -> dict[str, dict[str, Any]]:
    return {
        f.name: {"label": f.label, "schema": field_schema(f), "description": f.description}
        for f in EXTRA_FIELDS
    }


def ui_field_behaviour() -> dict[str, Any]:
    return {
        "hidden-fields": list(HIDDEN_FIELDS),
        "relabeling": dict(RELABELING),
        "placeholders": dict(PLACEHOLDERS),
    }


# Airflow 3.0 and 3.1: the hook's classmethods ------------------------------------------------------------
def field_behaviour() -> dict[str, Any]:
    return {
        "hidden_fields": list(HIDDEN_FIELDS),
        "relabeling": dict(RELABELING),
        "placeholders": dict(PLACEHOLDERS),
    }


def form_widgets() -> dict[str, Any]:
    """WTForms fields of the extras (only String, Integer and Boolean: what Airflow 3.0/3.1 accept)."""
    from wtforms import BooleanField, IntegerField, StringField
    from wtforms.validators import Optional, any_of

    try:
        from flask_appbuilder.fieldwidgets import BS3TextAreaFieldWidget, BS3TextFieldWidget
    except ImportError:  # the API server's form needs neither widget; the labels and types carry it
        text_widget: Any = None
        area_widget: Any = None
    else:
        text_widget, area_widget = BS3TextFieldWidget(), BS3TextAreaFieldWidget()

    widgets: dict[str, Any] = {}
    for f in EXTRA_FIELDS:
        common: dict[str, Any] = {"description": f.description, "default": f.default}
        if f.kind == "boolean":
            widgets[f.name] = BooleanField(f.label, **common)
        elif f.kind == "number":  # 3.0/3.1 know no float field: whole seconds there
            widgets[f.name] = IntegerField(f.label, validators=[Optional()], widget=text_widget, **common)
        elif f.kind == "choice":
            validators = [Optional(), any_of(list(f.choices))]
            widgets[f.name] = StringField(f.label, validators=validators, widget=text_widget, **common)
        else:
            widget = area_widget if f.kind == "textarea" else text_widget
            widgets[f.name] = StringField(f.label, validators=[Optional()], widget=widget, **common)
            if f.kind == "textarea":
                _multiline(widgets[f.name])
    return widgets


def _multiline(field: Any) -> None:
    """Make the API server's form show a textarea, as flask_appbuilder's textarea widget did.

    Airflow 3.0/3.1's API server turns these fields into form parameters (``param``) and reads the kind
    of input from the field class alone, which has no textarea; ``format: multiline`` is how its form
    asks for one. A real WTForms field has no ``param`` and is left alone.
    """
    param = getattr(field, "param", None)
    schema = getattr(param, "schema", None)
    if isinstance(schema, dict):
        schema["format"] = "multiline"
