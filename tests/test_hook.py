"""BackupJobHook against the bundled simulator, over real sockets."""

from __future__ import annotations

import re
import socket
from typing import Any

import pytest

from airflow_provider_backupjob.exceptions import (
    BackupJobNotFound,
    UnexpectedResponseError,
    VCenterApiError,
    VCenterAuthError,
    VCenterConfigError,
    VCenterUnavailableError,
)
from airflow_provider_backupjob.hooks.backup_job import BackupJobHook
from airflow_provider_backupjob.models import BackupJobState
from airflow_provider_backupjob.protocol import Dialect
from airflow_provider_backupjob.simulator import DEFAULT_PASSWORD, READONLY_USER, Simulator
from tests.helpers import FAST, FLAVOURS, Connect, call_hook


def hook(conn_id: str = "vcenter_backup_default") -> BackupJobHook:
    return BackupJobHook(conn_id, retry_policy=FAST)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize(
    ("api_enabled", "style", "dialect"),
    [
        (True, "auto", Dialect.API),
        (False, "auto", Dialect.REST),
        (True, "rest", Dialect.REST),
        (True, "api", Dialect.API),
    ],
)
def test_one_session_for_many_calls_in_either_dialect(
    sim: Simulator, connect: Connect, api_enabled: bool, style: str, dialect: Dialect
) -> None:
    sim.set_api_enabled(api_enabled)
    job = sim.add_job(inprogress_polls=2)
    connect(api_style=style)
    with hook() as h:
        states = [h.get_job(job).state for _ in range(4)]
        assert h.list_jobs() == [job]
        assert h.vcenter.dialect is dialect
    assert states == [
        BackupJobState.INPROGRESS,
        BackupJobState.INPROGRESS,
        BackupJobState.SUCCEEDED,
        BackupJobState.SUCCEEDED,
    ]
    stats = sim.stats()
    assert (stats["logins"], stats["logouts"], stats["open_sessions"]) == (1, 1, 0)
    by_dialect = stats["requests_by_dialect"]
    other = "api" if dialect is Dialect.REST else "rest"
    # auto on an appliance without /api costs one probing login there, once for the hook's life
    assert by_dialect.get(other, 0) == (1 if (style, api_enabled) == ("auto", False) else 0)
    assert by_dialect[dialect.value] == 7  # login, 4 gets, 1 list, logout


def test_status_fields_are_typed(sim: Simulator, connect: Connect) -> None:
    job = sim.add_job(inprogress_polls=1, end_time_null=True)
    connect()
    with hook() as h:
        running = h.get_job(job)
        done = h.get_job(job)
    assert running.end_time is None and running.start_time is not None
    assert done.succeeded and done.progress == 100 and done.end_time is not None
    assert done.to_dict()["state"] == "SUCCEEDED"


def test_missing_job_is_not_found_naming_host_and_job(sim: Simulator, connect: Connect) -> None:
    connect()
    with hook() as h, pytest.raises(BackupJobNotFound) as info:
        h.get_job("20990101-000000-1")
    assert "20990101-000000-1" in str(info.value) and f"127.0.0.1:{sim.port}" in str(info.value)
    assert sim.stats()["open_sessions"] == 0


def test_expired_session_is_renewed_once(sim: Simulator, connect: Connect) -> None:
    job = sim.add_job(inprogress_polls=5)
    connect()
    with hook() as h:
        h.get_job(job)
        sim.expire_all_sessions()
        h.get_job(job)
    stats = sim.stats()
    assert stats["logins"] == 2 and stats["open_sessions"] == 0


@pytest.mark.parametrize("kind", ["http_503_html", "http_503_json", "http_502_html", "http_504_html", "drop"])
def test_transient_failures_are_retried(sim: Simulator, connect: Connect, kind: str) -> None:
    job = sim.add_job(inprogress_polls=0)
    connect()
    sim.inject(kind, path_contains="/backup/job/", times=2)
    with hook() as h:
        assert h.get_job(job).succeeded
    assert sim.stats()["faults_injected"] == 2


def test_transient_failures_are_bounded(sim: Simulator, connect: Connect) -> None:
    job = sim.add_job()
    connect()
    sim.inject("http_503_html", path_contains="/backup/job/", times=10)
    with hook() as h, pytest.raises(VCenterUnavailableError, match="HTTP 503"):
        h.get_job(job)
    assert sim.stats()["faults_injected"] == FAST.attempts
    assert sim.stats()["open_sessions"] == 0


def test_client_errors_are_not_retried(sim: Simulator, connect: Connect) -> None:
    job = sim.add_job()
    connect()
    sim.inject("http_500_json", path_contains="/backup/job/", times=5)
    with hook() as h, pytest.raises(VCenterApiError, match="HTTP 500"):
        h.get_job(job)
    assert sim.stats()["faults_injected"] == 1


def test_malformed_json_is_an_unexpected_response(sim: Simulator, connect: Connect) -> None:
    job = sim.add_job()
    connect()
    sim.inject("malformed_json", path_contains="/backup/job/")
    with hook() as h, pytest.raises(UnexpectedResponseError, match="not JSON"):
        h.get_job(job)


def test_slow_answer_past_the_timeout_is_transient(sim: Simulator, connect: Connect) -> None:
    job = sim.add_job()
    connect(timeout=0.3)
    sim.inject("slow", path_contains="/backup/job/", delay=1.0, times=5)
    with hook() as h, pytest.raises(VCenterUnavailableError, match="did not answer within 0.3 s"):
        h.get_job(job)


def test_refused_connection_is_transient_and_names_the_host(sim: Simulator, connect: Connect) -> None:
    port = free_port()
    connect(port=port)
    with hook() as h, pytest.raises(VCenterUnavailableError, match="Connection refused") as info:
        h.get_job("20170717-132629-5318154")
    assert f"127.0.0.1:{port}" in str(info.value)


def test_bad_password_and_missing_privilege(sim: Simulator, connect: Connect) -> None:
    connect(password="wrong-password-1")
    with hook() as h, pytest.raises(VCenterAuthError, match="user name or password") as info:
        h.list_jobs()
    assert "wrong-password-1" not in str(info.value)
    connect(login=READONLY_USER, password=DEFAULT_PASSWORD)
    with hook() as h, pytest.raises(VCenterAuthError, match="SystemConfiguration.Administrators"):
        h.list_jobs()
    assert sim.stats()["open_sessions"] == 0


def test_session_cap_refusal_quotes_vcenter(sim: Simulator, connect: Connect) -> None:
    sim.set_session_cap(0)
    connect()
    with hook() as h, pytest.raises(VCenterAuthError, match="session cap") as info:
        h.list_jobs()
    assert "User session count is limited to 0" in str(info.value)
    assert sim.stats()["login_failures"] == 1  # a refusal at the cap is not retried


def test_job_id_with_path_characters_sends_nothing(sim: Simulator, connect: Connect) -> None:
    connect()
    with hook() as h, pytest.raises(ValueError, match="invalid backup job id '../session'"):
        h.get_job("../session")
    assert sim.stats()["requests"] == 0


def test_test_connection_success_and_failures(sim: Simulator, connect: Connect) -> None:
    sim.add_job()
    connect()
    ok, message = hook().test_connection()
    assert ok and "1 backup job(s)" in message
    connect(password="nope-nope")
    ok, message = hook().test_connection()
    assert not ok and "user name or password" in message and "nope-nope" not in message
    connect(port=free_port())
    ok, message = hook().test_connection()
    assert not ok and "could not reach vCenter" in message
    assert sim.stats()["open_sessions"] == 0


def test_connection_settings_validation(
    monkeypatch: pytest.MonkeyPatch, sim: Simulator, connect: Connect
) -> None:
    connect(api_style="soap")
    with pytest.raises(ValueError, match="api_style must be one of"):
        hook().settings  # noqa: B018
    connect(verify_ssl="maybe")
    with pytest.raises(ValueError, match="verify_ssl"):
        hook().settings  # noqa: B018


def test_prefixed_extras_and_bare_host(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(
        "AIRFLOW_CONN_VC",
        '{"conn_type": "vcenter_backup", "host": "vcsa.example.com", "login": "u", "password": "p4ssword",'
        ' "extra": {"extra__vcenter_backup__api_style": "rest", "extra__vcenter_backup__timeout": "12"}}',
    )
    s = BackupJobHook("vc").settings
    assert (s.base_url, s.api_style, s.timeout, s.verify) == (
        "https://vcsa.example.com:443",
        "rest",
        12.0,
        True,
    )
    assert "p4ssword" not in repr(s)
    assert s.ui_url == "https://vcsa.example.com:5480/"


@pytest.mark.parametrize("api_enabled", [True, False], ids=["api", "rest"])
def test_parts_start_and_cancel_in_both_dialects(sim: Simulator, connect: Connect, api_enabled: bool) -> None:
    from airflow_provider_backupjob.models import BackupRequest

    sim.set_api_enabled(api_enabled)
    sim.set_start_script(inprogress_polls=100)
    connect()
    with hook() as h:
        assert h.list_parts() == ["common", "seat"]
        started = h.start_backup(BackupRequest(parts=["common"], location_type="NFS", location="nfs://f/b"))
        assert h.list_jobs() == [started.id]
        assert h.cancel_job(started.id).status == "OK"
        cancelled = h.get_job(started.id)
    assert cancelled.state is BackupJobState.FAILED and "cancel" in cancelled.message_text.lower()
    assert sim.stats()["cancels"] == 1 and sim.stats()["open_sessions"] == 0


def test_a_start_is_retried_only_when_it_was_never_sent(
    sim: Simulator, connect: Connect, mocker: Any
) -> None:
    from airflow_provider_backupjob.models import BackupRequest

    request = BackupRequest(parts=["common"], location_type="NFS", location="nfs://f/b")
    connect()
    with hook() as h:
        h.list_jobs()  # logged in: what follows is about the start request alone
        sim.inject("reset_after_read", method="POST", path_contains="/backup/job")
        sends = mocker.spy(h, "_send_once")
        with pytest.raises(VCenterUnavailableError, match="failed during the request"):
            h.start_backup(request)
        assert sends.call_count == 1 and sim.stats()["backups_started"] == 1
    connect(port=free_port())  # nothing listens: the request surely never left
    with hook() as h:
        sends = mocker.spy(h, "_send_once")
        with pytest.raises(VCenterUnavailableError, match="could not reach"):
            h.start_backup(request)
        assert sends.call_count == FAST.attempts  # the login, retried; the start was never reached


def test_async_hook_lists_jobs_and_logs_out(sim: Simulator, connect: Connect) -> None:
    import asyncio

    from airflow_provider_backupjob.hooks.backup_job_async import AsyncBackupJobHook

    job = sim.add_job()
    connect()

    async def main() -> list[str]:
        async with AsyncBackupJobHook(retry_policy=FAST) as h:
            return await h.list_jobs()

    assert asyncio.run(main()) == [job]
    assert sim.stats()["logins"] == sim.stats()["logouts"] == 1


# --------------------------------------------------------------------------------------------------
# Both hooks, one behaviour: the transport core
# --------------------------------------------------------------------------------------------------
def send_counter(mocker: Any, flavour: str) -> Any:
    """A spy on the one method of either hook that sends one request (class level: fresh hooks)."""
    from airflow_provider_backupjob.hooks.backup_job_async import AsyncBackupJobHook

    return mocker.spy(BackupJobHook if flavour == "sync" else AsyncBackupJobHook, "_send_once")


@FLAVOURS
def test_start_backup_takes_the_request_or_its_fields(sim: Simulator, connect: Connect, flavour: str) -> None:
    from airflow_provider_backupjob.models import BackupRequest

    sim.set_start_script(inprogress_polls=0)
    connect()
    started = call_hook(flavour, "start_backup", parts=["common"], location="nfs://filer/backups")
    assert started.id in call_hook(flavour, "list_jobs")
    (sent,) = sim.stats()["started_requests"]
    assert (sent["parts"], sent["location_type"], sent["location"]) == (
        ["common"],
        "NFS",
        "nfs://filer/backups",
    )
    request = BackupRequest(parts=["seat"], location_type="SFTP", location="sftp://h/b")
    with pytest.raises(ValueError, match="either a BackupRequest or its fields"):
        call_hook(flavour, "start_backup", request, comment="both")
    with pytest.raises(ValueError, match="unknown backup request field"):
        call_hook(flavour, "start_backup", parts=["common"], location="nfs://f/b", where="here")
    assert len(sim.stats()["started_requests"]) == 1  # the refused calls sent no start


@FLAVOURS
def test_each_retry_is_logged_with_its_attempt_and_wait(
    sim: Simulator, connect: Connect, flavour: str, capsys: pytest.CaptureFixture[str], caplog: Any
) -> None:
    job = sim.add_job(inprogress_polls=0)
    connect()
    sim.inject("http_503_html", path_contains="/backup/job/", times=2)
    caplog.set_level("WARNING")
    assert call_hook(flavour, "get_job", job).succeeded
    logged = capsys.readouterr().out + caplog.text
    for attempt in (1, 2):
        assert re.search(
            rf"127\.0\.0\.1:{sim.port}: .*HTTP 503.*\(attempt {attempt}\); retrying in \d", logged
        )
    assert "(attempt 3)" not in logged


@FLAVOURS
def test_the_session_token_is_masked_in_logs(
    sim: Simulator, connect: Connect, flavour: str, mocker: Any
) -> None:
    from airflow.sdk.log import redact

    connect()
    call_hook(flavour, "list_jobs")
    (token,) = sim.state.issued_tokens
    assert redact(token) != token and token not in str(redact(f"session {token}"))


@FLAVOURS
def test_errors_carry_their_context_once(sim: Simulator, connect: Connect, flavour: str) -> None:
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    from airflow_provider_backupjob.outage import OutageTracker
    from airflow_provider_backupjob.outcome import job_outcome

    host = f"127.0.0.1:{sim.port}"
    connect()
    missing = "20990101-000000-1"
    with pytest.raises(BackupJobNotFound) as not_found:
        call_hook(flavour, "get_job", missing)
    with pytest.raises(AirflowFailException) as failed:
        job_outcome(missing, not_found.value)
    assert str(failed.value).count("does not exist") == 1 and str(failed.value).count(host) == 1
    ours = str(not_found.value).split(": vCenter says: ")[0]  # what follows is vCenter's own words
    assert ours.count(host) == 1 and ours.count(missing) == 1 and ours.count("does not exist") == 1

    port = free_port()
    connect(port=port)
    with pytest.raises(VCenterUnavailableError) as down:
        call_hook(flavour, "get_job", missing)
    with pytest.raises(VCenterUnavailableError) as outage:
        OutageTracker(max_outage=0).failed(down.value)
    with pytest.raises(AirflowException) as gave_up:
        job_outcome(missing, outage.value)
    for err in (down.value, outage.value, gave_up.value):
        assert str(err).count(f"127.0.0.1:{port}") == 1, str(err)
        assert str(err).count(missing) <= 1, str(err)


# --------------------------------------------------------------------------------------------------
# Misconfiguration fails fast, with the fix in the message, in both hooks
# --------------------------------------------------------------------------------------------------
@FLAVOURS
def test_a_host_name_that_does_not_resolve_fails_fast(
    monkeypatch: pytest.MonkeyPatch, flavour: str, mocker: Any
) -> None:
    from tests.helpers import connection_uri_json

    monkeypatch.setenv(
        "AIRFLOW_CONN_VCENTER_BACKUP_DEFAULT", connection_uri_json("http://vcsa.no-such-name.invalid", 443)
    )
    sends = send_counter(mocker, flavour)
    with pytest.raises(VCenterConfigError) as info:
        call_hook(flavour, "list_jobs")
    message = str(info.value)
    assert (
        "'vcsa.no-such-name.invalid' does not resolve" in message and "check the connection's host" in message
    )
    assert sends.call_count == 1  # not retried: a name that does not exist will not start to


@FLAVOURS
def test_a_temporary_resolver_failure_is_retried(
    sim: Simulator, monkeypatch: pytest.MonkeyPatch, flavour: str, mocker: Any
) -> None:
    """EAI_AGAIN (the resolver did not answer) may pass: an outage. No socket makes it: a mock."""
    from tests.helpers import connection_uri_json

    real = socket.getaddrinfo

    def getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if host in ("vcsa.flaky.test", b"vcsa.flaky.test"):  # anyio passes the name idna-encoded
            raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")
        return real(host, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", getaddrinfo)
    monkeypatch.setenv(
        "AIRFLOW_CONN_VCENTER_BACKUP_DEFAULT", connection_uri_json("http://vcsa.flaky.test", sim.port)
    )
    sends = send_counter(mocker, flavour)
    with pytest.raises(VCenterUnavailableError, match="Temporary failure in name resolution"):
        call_hook(flavour, "list_jobs")
    assert sends.call_count == FAST.attempts


@FLAVOURS
def test_api_style_api_on_an_appliance_without_api_says_auto_or_rest(
    sim: Simulator, connect: Connect, flavour: str
) -> None:
    from airflow_provider_backupjob.outcome import job_outcome

    sim.set_api_enabled(False)
    connect(api_style="api")
    with pytest.raises(
        VCenterConfigError, match="set the connection extra api_style to auto or rest"
    ) as info:
        call_hook(flavour, "list_jobs")
    assert "HTTP 404" in str(info.value)
    from airflow.sdk.exceptions import AirflowFailException

    with pytest.raises(AirflowFailException):  # the task fails without retries
        job_outcome("j", info.value)
    assert sim.stats()["requests_by_dialect"].get("rest", 0) == 0


@FLAVOURS
def test_a_dropped_first_request_over_plain_http_stays_an_outage(
    sim: Simulator, connect: Connect, flavour: str
) -> None:
    """The port speaks HTTP (the handshake probe finds no TLS): a connection closed without an answer
    on the very first request is an outage, retried, not an https:// hint."""
    connect()
    sim.inject("drop", path_contains="/session", times=10)
    with pytest.raises(VCenterUnavailableError, match="failed during the request to log in") as info:
        call_hook(flavour, "list_jobs")
    assert "https" not in str(info.value)
    assert sim.stats()["faults_injected"] == FAST.attempts
