"""The suite-wide secret check itself: a test that leaks a password or a token must fail."""

from __future__ import annotations

from pathlib import Path

import pytest

LEAKY_TESTS = """
from airflow_provider_backupjob.exceptions import VCenterApiError
from airflow_provider_backupjob.hooks.backup_job import BackupJobHook
from airflow_provider_backupjob.triggers.backup_job import BackupJobTrigger


def test_password_in_a_log_line(sim, connect):
    connect(password="leaky-pass-1")
    hook = BackupJobHook()
    hook.log.info("connecting with %s", hook.settings.password)


def test_token_printed(sim, connect):
    connect()
    with BackupJobHook() as hook:
        hook.list_jobs()
        print("token", hook.vcenter.token)


def test_password_in_an_exception(sim, connect):
    connect(password="leaky-pass-2")
    try:
        raise VCenterApiError("failed with " + BackupJobHook().settings.password)
    except VCenterApiError:
        pass


def test_password_in_trigger_kwargs(sim, connect):
    connect(password="leaky-pass-3")
    BackupJobTrigger(job_id="leaky-pass-3").serialize()


def test_clean(sim, connect):
    connect()
    with BackupJobHook() as hook:
        hook.list_jobs()
"""


def test_every_kind_of_leak_fails_the_test(pytester: pytest.Pytester) -> None:
    pytester.makeconftest((Path(__file__).parent / "conftest.py").read_text())
    pytester.makepyfile(**{"tests/helpers": (Path(__file__).parent / "helpers.py").read_text()})
    pytester.makepyfile(test_leaky=LEAKY_TESTS)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=5, errors=4)
    result.stdout.fnmatch_lines(["*secret(s) leaked*"])
    assert "leaky-pass-1" not in result.stdout.str().split("short test summary")[-1]
