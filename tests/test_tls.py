"""TLS against the simulator over HTTPS, with a CA and a certificate for 127.0.0.1 made at test time.

Default verification refuses the unknown CA with a message that says how to fix it (``ca_bundle``,
``verify_ssl``), in the hook, its connection test, the async hook, the trigger and the sensor; the CA
in ``ca_bundle`` makes it work; ``verify_ssl`` false works and says so once per hook, not per request.
"""

from __future__ import annotations

import asyncio
import re
import ssl
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import requests
import trustme
from airflow.sdk.exceptions import AirflowFailException
from urllib3.exceptions import InsecureRequestWarning

from airflow_provider_backupjob.exceptions import VCenterConfigError, VCenterTLSError
from airflow_provider_backupjob.hooks.backup_job import BackupJobHook
from airflow_provider_backupjob.hooks.backup_job_async import AsyncBackupJobHook
from airflow_provider_backupjob.outcome import event_outcome
from airflow_provider_backupjob.sensors.backup_job import BackupJobSensor
from airflow_provider_backupjob.simulator import Simulator
from airflow_provider_backupjob.triggers.backup_job import BackupJobTrigger
from tests.helpers import FAST, FLAVOURS, call_hook, connection_uri_json, register_secret, track_simulator

VERIFY_OFF = re.compile(r"(?i)verification.{0,20}\boff\b|verify_ssl.{0,20}false|not verif")


def server_context(ca: trustme.CA, *hostnames: str) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert(*hostnames).configure_cert(ctx)
    return ctx


def start_simulator(ctx: ssl.SSLContext) -> Simulator:
    return track_simulator(Simulator(ssl_context=ctx).start())  # its session tokens join the leak check


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture
def tls_sim(ca: trustme.CA) -> Iterator[Simulator]:
    sim = start_simulator(server_context(ca, "127.0.0.1"))
    try:
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def ca_file(ca: trustme.CA, tmp_path: Path) -> str:
    path = tmp_path / "vmca-root.pem"
    ca.cert_pem.write_to_path(str(path))
    return str(path)


def use(monkeypatch: pytest.MonkeyPatch, sim: Simulator, **extra: Any) -> None:
    extra.setdefault("timeout", 5)
    value = connection_uri_json("https://127.0.0.1", sim.port, **extra)
    monkeypatch.setenv("AIRFLOW_CONN_VCENTER_BACKUP_DEFAULT", value)


def trigger_event(job: str) -> dict[str, Any]:
    trigger = BackupJobTrigger(job_id=job, poll_interval=0.01, deadline=time.time() + 30, max_outage=2)

    async def collect() -> list[dict[str, Any]]:
        return [dict(event.payload) async for event in trigger.run()]

    events = asyncio.run(asyncio.wait_for(collect(), timeout=60))
    assert len(events) == 1, events
    return events[0]


def assert_says_how_to_fix(message: str, port: int) -> None:
    assert "certificate" in message and "could not be verified" in message
    assert "ca_bundle" in message and "verify_ssl" in message
    assert f"127.0.0.1:{port}" in message


# --------------------------------------------------------------------------------------------------
# (a) default verification against an unknown CA
# --------------------------------------------------------------------------------------------------
def test_hook_refuses_an_unknown_ca_and_says_how_to_fix_it(
    tls_sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = tls_sim.add_job()
    use(monkeypatch, tls_sim)
    with BackupJobHook(retry_policy=FAST) as hook, pytest.raises(VCenterTLSError) as info:
        hook.get_job(job)
    assert_says_how_to_fix(str(info.value), tls_sim.port)
    stats = tls_sim.stats()
    assert stats["requests"] == 0 and stats["open_sessions"] == 0  # refused at the handshake, not retried


def test_connection_test_reports_the_fix(tls_sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    use(monkeypatch, tls_sim)
    ok, message = BackupJobHook().test_connection()
    assert not ok
    assert_says_how_to_fix(message, tls_sim.port)


def test_async_hook_and_trigger_refuse_an_unknown_ca(
    tls_sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = tls_sim.add_job()
    use(monkeypatch, tls_sim)

    async def get() -> None:
        async with AsyncBackupJobHook(retry_policy=FAST) as hook:
            await hook.get_job(job)

    with pytest.raises(VCenterTLSError) as info:
        asyncio.run(get())
    assert_says_how_to_fix(str(info.value), tls_sim.port)
    event = trigger_event(job)
    assert event["status"] == "error" and event["error"]["kind"] == "VCenterTLSError"
    with pytest.raises(AirflowFailException) as failed:
        event_outcome(job, event)
    assert_says_how_to_fix(str(failed.value), tls_sim.port)
    assert tls_sim.stats()["requests"] == 0


@pytest.mark.parametrize("mode", ["poke", "reschedule", "deferrable"])
def test_sensor_fails_without_retries_on_an_unknown_ca(
    tls_sim: Simulator, monkeypatch: pytest.MonkeyPatch, mode: str
) -> None:
    job = tls_sim.add_job()
    use(monkeypatch, tls_sim)
    sensor = BackupJobSensor(
        task_id="wait",
        job_id=job,
        poke_interval=0.01,
        timeout=30,
        max_outage=5,
        mode="reschedule" if mode == "reschedule" else "poke",
        deferrable=mode == "deferrable",
    )
    # deferrable: the first poke runs in the worker before deferring, and fails there
    with pytest.raises(AirflowFailException) as info:
        sensor.execute({"ti": SimpleNamespace(get_first_reschedule_date=lambda context: None)})
    assert_says_how_to_fix(str(info.value), tls_sim.port)
    with pytest.raises(AirflowFailException):  # and the trigger's error event, resumed
        sensor.execute_complete({}, trigger_event(job))


def test_a_certificate_for_another_name_is_refused_even_with_the_ca(
    ca: trustme.CA, ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sim = start_simulator(server_context(ca, "vcsa.example.com"))
    try:
        job = sim.add_job()
        use(monkeypatch, sim, ca_bundle=ca_file)
        with BackupJobHook(retry_policy=FAST) as hook, pytest.raises(VCenterTLSError, match="ca_bundle"):
            hook.get_job(job)
        event = trigger_event(job)
        assert event["error"]["kind"] == "VCenterTLSError"
    finally:
        sim.stop()


def test_a_bundle_of_another_ca_is_refused(
    tls_sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    job = tls_sim.add_job()
    use(monkeypatch, tls_sim, ca_bundle=str(other))
    with BackupJobHook(retry_policy=FAST) as hook, pytest.raises(VCenterTLSError):
        hook.get_job(job)
    assert trigger_event(job)["error"]["kind"] == "VCenterTLSError"


# --------------------------------------------------------------------------------------------------
# (b) the appliance's CA in ca_bundle
# --------------------------------------------------------------------------------------------------
def test_ca_bundle_makes_hook_trigger_and_sensor_work(
    tls_sim: Simulator, ca_file: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = tls_sim.add_job(inprogress_polls=1)
    use(monkeypatch, tls_sim, ca_bundle=ca_file)
    with BackupJobHook(retry_policy=FAST) as hook:
        assert hook.settings.verify == ca_file
        assert hook.get_job(job).state.value == "INPROGRESS"
        assert hook.get_job(job).succeeded
    ok, message = BackupJobHook().test_connection()
    assert ok, message
    event = trigger_event(job)
    assert event["status"] == "terminal"
    assert event_outcome(job, event).xcom_value["state"] == "SUCCEEDED"
    other = tls_sim.add_job(inprogress_polls=2)
    result = BackupJobSensor(task_id="wait", job_id=other, poke_interval=0.01, timeout=30).execute({})
    assert result["state"] == "SUCCEEDED"
    assert tls_sim.stats()["open_sessions"] == 0


def test_async_hook_reads_a_replaced_ca_bundle(
    ca_file: str, tls_sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = tls_sim.add_job(inprogress_polls=0)
    use(monkeypatch, tls_sim, ca_bundle=ca_file)
    assert trigger_event(job)["status"] == "terminal"  # the first CA: cached for the path
    renewed = trustme.CA()  # the appliance's certificates are renewed under a new root
    sim = start_simulator(server_context(renewed, "127.0.0.1"))
    try:
        renewed.cert_pem.write_to_path(ca_file)  # and the admin updates the bundle in place
        job = sim.add_job(inprogress_polls=0)
        use(monkeypatch, sim, ca_bundle=ca_file)
        with BackupJobHook(retry_policy=FAST) as hook:
            assert hook.get_job(job).succeeded  # the sync hook reads the file again
        event = trigger_event(job)
        assert event["status"] == "terminal", event
    finally:
        sim.stop()


# --------------------------------------------------------------------------------------------------
# (c) verify_ssl false
# --------------------------------------------------------------------------------------------------
def verify_off_warnings(capsys: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture) -> int:
    """How many times the verification-off warning was logged, in whichever sink got it (Airflow 3
    hooks log through structlog to stdout; a plain stdlib logger may also reach caplog)."""
    captured = capsys.readouterr()
    counts = [len(VERIFY_OFF.findall(text)) for text in (captured.out, captured.err, caplog.text)]
    caplog.clear()
    return max(counts)


def test_verify_off_works_and_warns_once_per_hook(
    tls_sim: Simulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    job = tls_sim.add_job(inprogress_polls=3)
    use(monkeypatch, tls_sim, verify_ssl="false")
    verify_off_warnings(capsys, caplog)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with BackupJobHook(retry_policy=FAST) as hook:
            states = [hook.get_job(job).state.value for _ in range(5)]
            assert hook.list_jobs() == [job]
        assert verify_off_warnings(capsys, caplog) == 1
        with BackupJobHook(retry_policy=FAST) as hook:  # a new hook says it again, once
            hook.get_job(job)
            hook.get_job(job)
        assert verify_off_warnings(capsys, caplog) == 1
    assert states == ["INPROGRESS", "INPROGRESS", "INPROGRESS", "SUCCEEDED", "SUCCEEDED"]
    insecure = [w for w in seen if issubclass(w.category, InsecureRequestWarning)]
    assert insecure == [], [str(w.message) for w in insecure]
    assert tls_sim.stats()["open_sessions"] == 0


def test_verify_off_sensor_works_and_warns_once(
    tls_sim: Simulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    job = tls_sim.add_job(none_polls=1, inprogress_polls=3)
    use(monkeypatch, tls_sim, verify_ssl="false")
    verify_off_warnings(capsys, caplog)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        result = BackupJobSensor(task_id="wait", job_id=job, poke_interval=0.01, timeout=30).execute({})
    assert result["state"] == "SUCCEEDED"
    assert verify_off_warnings(capsys, caplog) == 1  # five pokes, one hook, one warning
    assert not [w for w in seen if issubclass(w.category, InsecureRequestWarning)]


def test_verify_off_is_not_silenced_for_the_rest_of_the_process(
    tls_sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The hook mutes urllib3's per-request warning for its own requests only."""
    use(monkeypatch, tls_sim, verify_ssl="false")
    with BackupJobHook(retry_policy=FAST) as hook:
        hook.list_jobs()
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        requests.get(f"{tls_sim.base_url}/api/session", verify=False, timeout=5)
    assert any(issubclass(w.category, InsecureRequestWarning) for w in seen)


def test_verify_off_trigger_works(tls_sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    job = tls_sim.add_job(inprogress_polls=3)
    use(monkeypatch, tls_sim, verify_ssl="false")
    event = trigger_event(job)
    assert event_outcome(job, event).xcom_value["state"] == "SUCCEEDED"
    assert tls_sim.stats()["open_sessions"] == 0


def test_verify_off_trigger_warns_once(
    tls_sim: Simulator,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    job = tls_sim.add_job(inprogress_polls=3)
    use(monkeypatch, tls_sim, verify_ssl="false")
    verify_off_warnings(capsys, caplog)
    assert trigger_event(job)["status"] == "terminal"  # four polls
    assert verify_off_warnings(capsys, caplog) == 1


# --------------------------------------------------------------------------------------------------
# A handshake that fails for another reason than the certificate
# --------------------------------------------------------------------------------------------------
def test_https_to_a_plain_http_port_fails_the_same_way_in_both_transports(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    job = sim.add_job()
    use(monkeypatch, sim)  # https://127.0.0.1 against the plain-HTTP simulator
    with BackupJobHook(retry_policy=FAST) as hook, pytest.raises(VCenterTLSError):
        hook.get_job(job)

    async def get() -> None:
        async with AsyncBackupJobHook(retry_policy=FAST) as hook:
            await hook.get_job(job)

    with pytest.raises(VCenterTLSError):
        asyncio.run(get())


# --------------------------------------------------------------------------------------------------
# Misconfigured TLS fails fast with the fix, in both hooks
# --------------------------------------------------------------------------------------------------
@FLAVOURS
def test_http_to_an_https_port_says_use_https(
    tls_sim: Simulator, monkeypatch: pytest.MonkeyPatch, flavour: str
) -> None:
    job = tls_sim.add_job()
    monkeypatch.setenv(
        "AIRFLOW_CONN_VCENTER_BACKUP_DEFAULT",
        connection_uri_json("http://127.0.0.1", tls_sim.port, timeout=5),
    )
    with pytest.raises(VCenterConfigError) as info:
        call_hook(flavour, "get_job", job)
    message = str(info.value)
    assert (
        "speaks HTTPS" in message
        and "https://127.0.0.1" in message
        and f"127.0.0.1:{tls_sim.port}" in message
    )
    with pytest.raises(AirflowFailException):  # no retries, no outage riding
        event_outcome(job, {"job_id": job, "status": "error", "error": info.value.to_event()})


@FLAVOURS
def test_a_certificate_for_another_name_names_the_name_to_use(
    ca: trustme.CA, ca_file: str, monkeypatch: pytest.MonkeyPatch, flavour: str
) -> None:
    sim = start_simulator(server_context(ca, "vcsa.example.com", "vcsa"))
    try:
        use(monkeypatch, sim, ca_bundle=ca_file)
        with pytest.raises(VCenterTLSError) as info:
            call_hook(flavour, "list_jobs")
        message = str(info.value)
        assert "is valid" in message and "but for other names (vcsa.example.com, vcsa)" in message
        assert "set the connection's host to 'vcsa.example.com'" in message
        assert "verify_ssl" not in message  # turning verification off is not the fix here
        assert sim.stats()["requests"] == 0
    finally:
        sim.stop()


@FLAVOURS
def test_a_ca_bundle_that_is_not_pem_is_refused_when_the_connection_is_read(
    ca: trustme.CA, tls_sim: Simulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, flavour: str
) -> None:
    der = tmp_path / "vmca-root.cer"
    der.write_bytes(ssl.PEM_cert_to_DER_cert(ca.cert_pem.bytes().decode()))
    junk = tmp_path / "notes.txt"
    junk.write_text("the VMCA root is in download.zip\n")
    for path in (der, junk):
        use(monkeypatch, tls_sim, ca_bundle=str(path))
        with pytest.raises(VCenterConfigError, match="not a PEM file of CA certificates|no '-----BEGIN CERT"):
            call_hook(flavour, "list_jobs")
    assert tls_sim.stats()["requests"] == 0


# --------------------------------------------------------------------------------------------------
# The CA certificate as PEM text: the connection extra ca_cert
# --------------------------------------------------------------------------------------------------
def test_ca_cert_text_makes_both_hooks_and_the_trigger_work(
    ca: trustme.CA, tls_sim: Simulator, monkeypatch: pytest.MonkeyPatch
) -> None:
    pem = trustme.CA().cert_pem.bytes().decode() + ca.cert_pem.bytes().decode()  # two CAs, one text
    register_secret(pem)  # never in a log, an exception or the trigger's kwargs
    job = tls_sim.add_job(inprogress_polls=1)
    use(monkeypatch, tls_sim, ca_cert=pem)
    assert call_hook("sync", "get_job", job).state.value == "INPROGRESS"
    assert call_hook("async", "get_job", job).succeeded
    assert event_outcome(job, trigger_event(job)).xcom_value["state"] == "SUCCEEDED"
    settings = BackupJobHook().settings
    assert settings.ca_cert is not None and "BEGIN CERTIFICATE" not in repr(settings)
    assert tls_sim.stats()["open_sessions"] == 0


def test_ca_cert_of_another_ca_is_refused(tls_sim: Simulator, monkeypatch: pytest.MonkeyPatch) -> None:
    job = tls_sim.add_job()
    use(monkeypatch, tls_sim, ca_cert=trustme.CA().cert_pem.bytes().decode())
    for flavour in ("sync", "async"):
        with pytest.raises(VCenterTLSError, match="could not be verified"):
            call_hook(flavour, "get_job", job)


@pytest.mark.parametrize(
    "text",
    [
        "secret-looking-but-not-a-certificate",
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydA==\n-----END CERTIFICATE-----\n",
        "-----BEGIN PRIVATE KEY-----\nbm90IGEga2V5\n-----END PRIVATE KEY-----\n",
    ],
    ids=["plain-text", "broken-block", "a-key"],
)
def test_ca_cert_that_is_not_pem_is_refused_without_quoting_it(
    tls_sim: Simulator, monkeypatch: pytest.MonkeyPatch, text: str
) -> None:
    register_secret(text)  # the leak check fails the test if the message quotes it
    use(monkeypatch, tls_sim, ca_cert=text)
    for flavour in ("sync", "async"):
        with pytest.raises(VCenterConfigError, match="'ca_cert' must be the PEM text"):
            call_hook(flavour, "list_jobs")
    assert tls_sim.stats()["requests"] == 0


@FLAVOURS
def test_a_handshake_cut_short_is_an_outage_not_a_tls_error(
    monkeypatch: pytest.MonkeyPatch, flavour: str
) -> None:
    """What an appliance restarting does (its proxy accepts, then closes): retried, then unavailable."""
    import socket
    import threading

    from airflow_provider_backupjob.exceptions import VCenterUnavailableError

    server = socket.create_server(("127.0.0.1", 0))
    server.settimeout(10)
    accepted: list[int] = []

    def serve() -> None:
        for _ in range(FAST.attempts):  # bounded: one connection per attempt
            try:
                conn, _ = server.accept()
            except OSError:
                return
            accepted.append(1)
            conn.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        monkeypatch.setenv(
            "AIRFLOW_CONN_VCENTER_BACKUP_DEFAULT",
            connection_uri_json("https://127.0.0.1", server.getsockname()[1], timeout=5),
        )
        with pytest.raises(VCenterUnavailableError) as info:
            call_hook(flavour, "list_jobs")
        assert not isinstance(info.value, VCenterTLSError)
        thread.join(10)
        assert len(accepted) == FAST.attempts
    finally:
        server.close()
