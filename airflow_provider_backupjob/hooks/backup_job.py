"""BackupJobHook: the synchronous shell around the sans-IO protocol, over ``requests``."""

from __future__ import annotations

import ssl
import time
import warnings
from types import TracebackType
from typing import Any, TypeVar

import requests
from tenacity import RetryCallState, Retrying
from urllib3.exceptions import InsecureRequestWarning, NewConnectionError

from airflow_provider_backupjob.compat import BaseHook
from airflow_provider_backupjob.exceptions import (
    VCenterApiError,
    VCenterError,
    VCenterTLSError,
    VCenterUnavailableError,
    caused_by,
    exception_chain,
)
from airflow_provider_backupjob.models import BackupJobStatus, BackupRequest, CancelResult
from airflow_provider_backupjob.protocol import (
    Exchange,
    HttpRequest,
    HttpResponse,
    VCenterSession,
    drive,
    error_for,
    is_transient,
)
from airflow_provider_backupjob.retry import NO_RETRY, RetryPolicy
from airflow_provider_backupjob.settings import CONN_TYPE, DEFAULT_CONN_ID, ConnectionSettings

T = TypeVar("T")


class BackupJobHook(BaseHook):
    """
    Talk to the backup-job API of a vCenter Server Appliance.

    One session is opened on first use, reused for every call of the hook, renewed once on a 401 and
    closed by :meth:`close` (or the ``with`` block). Transient failures are retried with exponential
    backoff (``retry_policy``); other errors raise the exceptions of
    :mod:`airflow_provider_backupjob.exceptions`.

    :param vcenter_conn_id: an Airflow connection of type ``vcenter_backup``.
    :param retry_policy: how transient failures are retried; default up to 4 attempts within 60 s.
    """

    conn_name_attr = "vcenter_conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = CONN_TYPE
    hook_name = "VMware vCenter Backup"

    # The Connections form on Airflow 3.0/3.1 (3.2+ reads the provider info): one source for both.
    @classmethod
    def get_connection_form_widgets(cls) -> dict[str, Any]:
        from airflow_provider_backupjob.connection_form import form_widgets

        return form_widgets()

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        from airflow_provider_backupjob.connection_form import field_behaviour

        return field_behaviour()

    def __init__(
        self,
        vcenter_conn_id: str = DEFAULT_CONN_ID,
        *,
        retry_policy: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.vcenter_conn_id = vcenter_conn_id
        self.retry_policy = retry_policy or RetryPolicy()
        self._settings: ConnectionSettings | None = None
        self._http: requests.Session | None = None
        self._vcenter: VCenterSession | None = None
        self._masked_token: str | None = None

    # Set-up, lazily: building a hook (at DAG parse time) sends nothing and reads no connection.
    @property
    def settings(self) -> ConnectionSettings:
        if self._settings is None:
            conn = self.get_connection(self.vcenter_conn_id)
            self._settings = ConnectionSettings.from_connection(conn, self.vcenter_conn_id)
            if warning := self._settings.verify_off_warning(self.vcenter_conn_id):
                self.log.warning(warning)
        return self._settings

    @property
    def vcenter(self) -> VCenterSession:
        if self._vcenter is None:
            s = self.settings
            self._vcenter = VCenterSession(username=s.username, password=s.password, api_style=s.api_style)
        return self._vcenter

    def _client(self) -> requests.Session:
        if self._http is None:
            self._http = requests.Session()
            self._http.verify = self.settings.verify
            self._http.headers["Accept"] = "application/json"
            self._http.trust_env = False  # no proxies or netrc credentials picked up behind our back
        return self._http

    # Transport ----------------------------------------------------------------------------------------
    def _send_once(self, req: HttpRequest) -> HttpResponse:
        s = self.settings
        try:
            with warnings.catch_warnings():
                if s.verify is False:  # said once, at set-up, rather than once a request
                    warnings.simplefilter("ignore", InsecureRequestWarning)
                r = self._client().request(
                    req.method,
                    s.base_url + req.target,
                    headers=req.headers,
                    json=req.json_body,
                    timeout=s.timeout,
                    allow_redirects=False,
                )
        except requests.exceptions.SSLError as err:
            certificate = caused_by(err, ssl.SSLCertVerificationError)
            raise VCenterTLSError.from_ssl_error(s.host, _root_reason(err), certificate=certificate) from None
        except requests.exceptions.ConnectTimeout:
            raise VCenterUnavailableError(
                f"timed out connecting to vCenter to {req.operation}", request_sent=False
            ) from None
        except requests.exceptions.Timeout:
            raise VCenterUnavailableError(
                f"vCenter did not answer within {s.timeout:g} s to the request to {req.operation}"
            ) from None
        except requests.exceptions.ConnectionError as err:
            refused = caused_by(err, NewConnectionError)
            what = (
                "could not reach vCenter to"
                if refused
                else "the connection to vCenter failed during the request to"
            )
            raise VCenterUnavailableError(
                f"{what} {req.operation}: {_root_reason(err)}", request_sent=not refused
            ) from None
        except requests.exceptions.RequestException as err:
            raise VCenterApiError(f"the request to {req.operation} failed: {_root_reason(err)}") from None
        resp = HttpResponse(r.status_code, r.content, r.headers.get("Content-Type", ""))
        if is_transient(resp):
            raise error_for(req, resp)
        return resp

    def _send(self, req: HttpRequest, policy: RetryPolicy) -> HttpResponse:
        try:
            return self._send_once(req)
        except VCenterUnavailableError as err:
            retrying = policy.retries_after(req, err)
            if retrying is None:
                raise
            wait = policy.first_wait()
            self._log_retry(err, 1, wait)
            time.sleep(wait)

        def log_retry(state: RetryCallState) -> None:
            assert state.outcome is not None
            assert state.next_action is not None
            self._log_retry(state.outcome.exception(), state.attempt_number + 1, state.next_action.sleep)

        for attempt in Retrying(**retrying, before_sleep=log_retry):
            with attempt:
                return self._send_once(req)
        raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover

    def _log_retry(self, err: BaseException | None, attempt: int, wait: float) -> None:
        self.log.warning(
            "vCenter %s: %s (attempt %d); retrying in %.1f s", self.settings.host, err, attempt, wait
        )

    def run(self, exchange: Exchange[T], policy: RetryPolicy | None = None) -> T:
        """Drive one protocol exchange; every error comes out naming the host."""
        chosen = policy or self.retry_policy
        try:
            return drive(exchange, lambda req: self._send(req, chosen))
        except VCenterError as err:
            raise err.with_context(host=self.settings.host) from err.__cause__
        finally:
            token = self.vcenter.token
            if token and token != self._masked_token:
                _mask(token)
                self._masked_token = token

    # The API ------------------------------------------------------------------------------------------
    def get_job(self, job_id: str) -> BackupJobStatus:
        """The status of backup job ``job_id``; raises ``BackupJobNotFound`` if it does not exist."""
        return self.run(self.vcenter.get_job(job_id))

    def list_jobs(self) -> list[str]:
        """The ids of the backup jobs the appliance knows."""
        return self.run(self.vcenter.list_jobs())

    def list_parts(self) -> list[str]:
        """The ids of the parts a backup can include (``common``, ``seat``, ...)."""
        return self.run(self.vcenter.list_parts())

    def start_backup(self, request: BackupRequest) -> BackupJobStatus:
        """Start a backup. Never sent twice; raises ``BackupAlreadyRunning`` when one runs."""
        return self.run(self.vcenter.start_backup(request))

    def cancel_job(self, job_id: str) -> CancelResult:
        """Ask the appliance to cancel a running backup job."""
        return self.run(self.vcenter.cancel_job(job_id))

    def test_connection(self) -> tuple[bool, str]:
        """Log in, list the jobs, log out: the Connections page's Test button."""
        try:
            ids = self.run(self.vcenter.list_jobs(), NO_RETRY)
            dialect = self.vcenter.dialect.value if self.vcenter.dialect else "?"
            return True, (
                f"Connected to vCenter {self.settings.host} as {self.settings.username} "
                f"(/{dialect} API): {len(ids)} backup job(s) on the appliance."
            )
        except (VCenterError, ValueError) as err:
            return False, str(err)
        finally:
            self.close()

    # Lifecycle ----------------------------------------------------------------------------------------
    def close(self) -> None:
        """Log out (when a session is open) and release the HTTP connections. Never raises."""
        try:
            if self._vcenter is not None and self._vcenter.is_open:
                try:
                    self.run(self._vcenter.logout(), RetryPolicy(attempts=2, max_seconds=10, max_wait=2))
                except VCenterError as err:
                    self.log.warning("Could not log out of vCenter: %s", err)
        finally:
            if self._http is not None:
                self._http.close()
                self._http = None

    def __enter__(self) -> BackupJobHook:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def _root_reason(err: BaseException) -> str:
    """A short reason (``ConnectionRefusedError``, a certificate error) without the request's URL."""
    *_, seen = exception_chain(err)
    text = str(seen)
    # urllib3 puts "HTTPSConnectionPool(host=..., port=...): " and the URL path in front; drop them.
    text = text.split("): ", 1)[-1] if "ConnectionPool(" in text else text
    return f"{type(seen).__name__}: {text}"[:300]


def _mask(token: str) -> None:
    """Register the session token with Airflow's secrets masker, so no log line can show it."""
    from airflow_provider_backupjob.compat import mask_secret

    mask_secret(token)
