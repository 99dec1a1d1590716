"""The Connections UI in headless Chromium (Debian's, driven by Playwright for Python).

Logs in through SimpleAuthManager's form, opens Admin -> Connections -> Add Connection, picks "VMware
vCenter Backup", checks the provider's relabelled and extra fields, saves a connection to the simulator,
presses Test (success expected), then edits in a wrong password and presses Test again (failure expected).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from pathlib import Path

import procs
from api import AirflowApi
from playwright.sync_api import Locator, Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout
from procs import E2EError
from stack import SIM_PASSWORD, SIM_USER, UI_USER, Stack

from airflow_provider_backupjob.compat import AIRFLOW_V_3_1_PLUS
from airflow_provider_backupjob.connection_form import EXTRA_FIELDS
from airflow_provider_backupjob.simulator.client import SimulatorClient

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
CONN_ID = "vcenter_ui_test"
# Airflow 3.1+ lists the connection type by the hook's name, 3.0 by the type's id.
CONN_TYPE = re.compile(r"^(VMware vCenter Backup|vcenter_backup)$")
EXTRA_LABELS = tuple(f.label for f in EXTRA_FIELDS)  # what connection_form declares, on every Airflow
TEXTAREAS = tuple(f.label for f in EXTRA_FIELDS if f.kind == "textarea")
WRONG_PASSWORD = "not-the-password"  # noqa: S105 - the point of the test


class ConnectionsUiTest:
    def __init__(
        self, stack: Stack, api: AirflowApi, shots: Path, record: Callable[[str, str, str, bool], None]
    ) -> None:
        self.stack = stack
        self.api = api
        self.shots = shots
        self.record = record
        self.sim = SimulatorClient(stack.sim_url)
        self.page: Page | None = None

    def run(self) -> None:
        profile = self.stack.work / "chromium-profile"
        if procs.REGISTRY is not None:  # Chromium's helpers: own session, clean environment; this path
            procs.REGISTRY.add_needle(f"--user-data-dir={profile}")
        with sync_playwright() as pw:
            ctx = pw.chromium.launch_persistent_context(
                str(profile),
                executable_path=CHROMIUM,
                args=CHROMIUM_ARGS,
                headless=True,
                viewport={"width": 1280, "height": 900},
            )
            try:
                self.page = ctx.pages[0] if ctx.pages else ctx.new_page()
                self.page.set_default_timeout(20_000)  # every action and wait is bounded
                self._steps(self.page)
            except (PlaywrightTimeout, E2EError, AssertionError) as err:
                shot = self.stack.logs / "ui-failure.png"
                with contextlib.suppress(Exception):
                    assert self.page is not None
                    self.page.screenshot(path=str(shot))
                api_log = self.stack.service("api-server").tail(20)
                raise E2EError(
                    f"Connections UI: {err}\n  screenshot at the failure: {shot}\n{api_log}"
                ) from err
            finally:
                ctx.close()

    def _shot(self, page: Page, name: str) -> None:
        page.mouse.move(700, 600)  # no tooltip of a hovered button in the picture
        page.wait_for_timeout(700)  # let a toast finish sliding in
        page.screenshot(path=str(self.shots / name))

    def _steps(self, page: Page) -> None:
        api = self.stack.api_url
        page.goto(f"{api}/")
        page.locator("input[name=username]").fill(UI_USER)
        page.locator("input[name=password]").fill(self.stack.ui_password)
        page.get_by_role("button", name="Sign in").click()
        page.get_by_role("button", name="Admin").click()
        page.get_by_role("menuitem", name="Connections").click()
        page.wait_for_url(f"{api}/connections")
        self.record("UI: log in, Admin -> Connections", "/connections", page.url, True)

        page.get_by_role("button", name="Add Connection").click()
        dialog = page.get_by_role("dialog")
        dialog.get_by_label("Connection ID").fill(CONN_ID)
        dialog.get_by_role("combobox").click()
        page.keyboard.type("vCenter")
        page.get_by_role("option", name=CONN_TYPE).click()
        self._check_fields(dialog)
        _input(dialog, "vCenter host").fill("http://127.0.0.1")
        _input(dialog, "SSO user").fill(SIM_USER)
        _input(dialog, "Password", exact=True).fill(SIM_PASSWORD)
        _input(dialog, "Port").fill(str(self.stack.sim_port))
        _input(dialog, "Port").blur()
        self._shot(page, "connection-form.png")
        dialog.get_by_role("button", name="Extra Fields", exact=True).click()
        timeout = _input(dialog, "Timeout")
        timeout.fill("10")
        timeout.blur()
        self._shot(page, "connection-form-extra.png")
        dialog.get_by_role("button", name="Save").click()
        row = page.get_by_role("row").filter(has_text=CONN_ID)
        row.wait_for()
        self._check_saved()
        self._wait_toasts_gone(page)
        if not AIRFLOW_V_3_1_PLUS:  # Airflow 3.0's Connections page has no Test button
            self._test_by_cli(page, row)
            return

        before = self.sim.stats()
        text = self._test(page, row, "Test Connection Successful")
        after = self.sim.stats()
        self._shot(page, "connection-test-success.png")
        ok = "Connected to vCenter" in text and after["logins"] > before["logins"]
        self.record(
            "UI: Test -> success shown",
            "Test Connection Successful",
            f"{_oneline(text)} (simulator logins +{after['logins'] - before['logins']})",
            ok,
        )
        self._wait_toasts_gone(page)

        row.get_by_role("button", name="Edit Connection").click()
        dialog = page.get_by_role("dialog")
        _input(dialog, "Password", exact=True).fill(WRONG_PASSWORD)
        dialog.get_by_role("button", name="Save").click()
        dialog.wait_for(state="hidden")
        self._wait_toasts_gone(page)
        before = self.sim.stats()
        text = self._test(page, row, "Test Connection Failed")
        after = self.sim.stats()
        self._shot(page, "connection-test-failure.png")
        failures = after["login_failures"] - before["login_failures"]
        ok = "rejected the user name or password" in text and failures > 0
        self.record(
            "UI: wrong password, Test -> failure shown",
            "Test Connection Failed",
            f"{_oneline(text)} (simulator login failures +{failures})",
            ok,
        )

    def _test_by_cli(self, page: Page, row: Locator) -> None:
        """The connection the form saved, tested with `airflow connections test`; then a wrong password."""
        for password, want, name in (
            (None, "Connection success!", "UI-saved connection: CLI test -> success"),
            (WRONG_PASSWORD, "rejected the user name or password", "UI: wrong password, CLI test -> failure"),
        ):
            if password is not None:
                row.get_by_role("button", name="Edit Connection").click()
                dialog = page.get_by_role("dialog")
                _input(dialog, "Password", exact=True).fill(password)
                dialog.get_by_role("button", name="Save").click()
                dialog.wait_for(state="hidden")
            before = self.sim.stats()
            status, output = self.stack.airflow("connections", "test", CONN_ID, timeout=120)
            after = self.sim.stats()
            said = next((line for line in output.splitlines() if want in line), "")
            counter = "logins" if password is None else "login_failures"
            # `airflow connections test` exits 0 after "Connection failed!" too: the words tell.
            ok = bool(said) and status == 0 and after[counter] > before[counter]
            detail = f"exit {status}, {_oneline(said or output[-200:])} (3.0's UI has no Test button)"
            self.record(name, want, detail, ok)

    def _check_saved(self) -> None:
        """What the form saved, read back through the REST API."""
        conn = self.api.connection(CONN_ID)
        extra = json.loads(conn.get("extra") or "{}")
        want = {"conn_type": "vcenter_backup", "host": "http://127.0.0.1", "port": self.stack.sim_port}
        want["login"] = SIM_USER
        wrong = {k: conn.get(k) for k, v in want.items() if conn.get(k) != v}
        if extra.get("timeout") not in (10, "10"):
            wrong["extra.timeout"] = extra.get("timeout")
        detail = f"{conn['conn_type']} {conn['host']}:{conn['port']}, extra {json.dumps(extra)}"
        self.record("UI: Save -> connection stored", "fields + extra timeout 10", detail, not wrong)

    def _check_fields(self, dialog: Locator) -> None:
        missing = [name for name in ("vCenter host", "SSO user", "Port") if not _input(dialog, name).count()]
        relabelled = dialog.get_by_text("Host", exact=True).count() == 0
        hidden = dialog.get_by_label("Schema").count() == 0
        dialog.get_by_role("button", name="Extra Fields", exact=True).click()
        for name in EXTRA_LABELS:
            try:
                dialog.locator("label").filter(has_text=name).first.wait_for(timeout=5_000)
            except PlaywrightTimeout:
                missing.append(name)
        not_textareas = [
            name for name in TEXTAREAS if name not in missing and _control_of(dialog, name) != "TEXTAREA"
        ]
        dialog.get_by_role("button", name="Standard Fields", exact=True).click()
        _input(dialog, "vCenter host").wait_for()
        ok = not missing and not not_textareas and relabelled and hidden
        detail = (
            f"'vCenter host', 'SSO user', {', '.join(EXTRA_LABELS)} shown ({', '.join(TEXTAREAS)}: a "
            "textarea); Host relabelled, Schema hidden"
            if ok
            else f"missing {missing}; not a textarea: {not_textareas}; host relabelled: {relabelled}; "
            f"schema hidden: {hidden}"
        )
        self.record("UI: the form of the connection type", "relabelled + extra fields", detail, ok)

    def _test(self, page: Page, row: Locator, title: str) -> str:
        row.get_by_role("button", name="Test Connection").click()
        toast = page.get_by_role("status").filter(has_text="Test Connection")
        toast.first.wait_for()
        text = toast.first.inner_text()
        if title not in text:
            raise E2EError(f"expected {title!r}, the page shows: {_oneline(text)}")
        return text

    @staticmethod
    def _wait_toasts_gone(page: Page, timeout_ms: int = 15_000) -> None:
        """Toasts go by themselves after a few seconds: one picture, one toast (bounded; not fatal)."""
        page.mouse.move(400, 500)  # a toast under the mouse pointer stays (Save and toasts: bottom right)
        toasts = page.get_by_role("status").filter(has_text="Connection")
        waited = 0
        while toasts.count() and waited < timeout_ms:
            page.wait_for_timeout(250)
            waited += 250


def _input(dialog: Locator, label: str, exact: bool = False) -> Locator:
    """The input of a label; where the form does not tie them (Airflow 3.0's extra fields), the first
    input or textarea of the label's nearest container that has one."""
    by_label = dialog.get_by_label(label, exact=exact)
    if by_label.count():
        return by_label.first
    quoted = json.dumps(label)
    text = f"normalize-space()={quoted}" if exact else f"contains(normalize-space(), {quoted})"
    container = f"//label[{text}]/ancestor::*[.//input or .//textarea][1]"
    return dialog.locator(f"xpath=({container}//*[self::input or self::textarea])[1]")


def _control_of(dialog: Locator, label: str) -> str:
    return str(_input(dialog, label, exact=True).evaluate("e => e.tagName"))


def _oneline(text: str) -> str:
    return " ".join(text.split())[:220]
