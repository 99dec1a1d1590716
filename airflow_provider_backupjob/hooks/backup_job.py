"""BackupJobHook: the synchronous shell around the sans-IO protocol, over ``requests``.

What it shares with the async hook lives in :mod:`._transport`; here is only what ``requests`` and
blocking sleeps need.
"""

from __future__ import annotations

import ssl
import time
import warnings
from collections.abc import Callable, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar

import requests
from airflow.sdk import BaseHook
from requests.adapters import HTTPAdapter
from urllib3.exceptions import InsecureRequestWarning, NewConnectionError

from airflow_provider_backupjob.exceptions import VCenterError
from airflow_provider_backupjob.hooks._transport import (
    LOGOUT_POLICY,
    CoreOwner,
    Failure,
    FailureTable,
    Send,
    TransportCore,
    probe_tls,
)
from airflow_provider_backupjob.models import (
    BackupJobDetails,
    BackupJobStatus,
    BackupRequest,
    CancelResult,
    JobType,
)
from airflow_provider_backupjob.protocol import Exchange, HttpRequest, HttpResponse, VCenterSession
from airflow_provider_backupjob.retry import NO_RETRY, RetryPolicy
from airflow_provider_backupjob.settings import CONN_TYPE, DEFAULT_CONN_ID, ConnectionSettings, tls_context

T = TypeVar("T")

REQUESTS_FAILURES: FailureTable = (
    (requests.exceptions.ConnectTimeout, Failure.CONNECT_TIMEOUT),
    (requests.exceptions.Timeout, Failure.READ_TIMEOUT),
    ((requests.exceptions.SSLError, NewConnectionError), Failure.CONNECT),
    (requests.exceptions.ConnectionError, Failure.DROPPED),
)


class _TrustAdapter(HTTPAdapter):
    """Verifies against the connection's own CAs (``ca_bundle``, ``ca_cert``): requests alone takes a
    file path only, and would add certifi's CAs to the context."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self._context = context
        super().__init__()

    def init_poolmanager(self, *args: Any, **kwargs: Any) -> None:
        super().init_poolmanager(*args, ssl_context=self._context, **kwargs)

    def cert_verify(self, conn: Any, url: str, verify: Any, cert: Any) -> None:
        super().cert_verify(conn, url, verify, cert)  # type: ignore[no-untyped-call]
        conn.ca_certs = conn.ca_cert_dir = None  # the context holds the trust


class BackupJobHook(CoreOwner, BaseHook):
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

    def __init__(
        self,
        vcenter_conn_id: str = DEFAULT_CONN_ID,
        *,
        retry_policy: RetryPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.vcenter_conn_id = vcenter_conn_id
        self._core = TransportCore(vcenter_conn_id, retry_policy, self.log, REQUESTS_FAILURES)
        self._http: requests.Session | None = None

    # Set-up, lazily: building a hook (at DAG parse time) sends nothing and reads no connection.
    @property
    def settings(self) -> ConnectionSettings:
        if self._core.settings is None:
            return self._core.configure(self.get_connection(self.vcenter_conn_id))
        return self._core.settings

    @property
    def vcenter(self) -> VCenterSession:
        self.settings  # noqa: B018  (read the connection first)
        return self._core.vcenter()

    def _client(self) -> requests.Session:
        if self._http is None:
            s = self.settings
            self._http = requests.Session()
            self._http.verify = s.verify is not False
            if s.verify is not False and (s.ca_cert or isinstance(s.verify, str)):
                self._http.mount("https://", _TrustAdapter(tls_context(s)))
            self._http.headers["Accept"] = "application/json"
            self._http.trust_env = False  # no proxies or netrc credentials picked up behind our back
        return self._http

    # Transport: requests, and time.sleep --------------------------------------------------------------
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
        except requests.exceptions.RequestException as err:
            probe = self._core.probe_for(err)
            raise self._core.failure(req, err, probe_tls(probe) if probe else None) from None
        return self._core.answer(req, r.status_code, r.content, r.headers.get("Content-Type", ""))

    def _attempt(self, req: HttpRequest) -> HttpResponse | VCenterError:
        try:
            return self._send_once(req)
        except VCenterError as err:
            return err

    def run(self, operation: Callable[[VCenterSession], Exchange[T]], policy: RetryPolicy | None = None) -> T:
        """Drive the exchange ``operation(session)`` returns; every error comes out naming the host."""
        with self._core.start(self.vcenter, operation, policy) as run:
            for step in run:
                if isinstance(step, Send):
                    run.outcome = self._attempt(step.request)
                else:
                    time.sleep(step.seconds)
        return run.result

    # The API ------------------------------------------------------------------------------------------
    def get_job(self, job_id: str) -> BackupJobStatus:
        """The status of backup job ``job_id``; raises ``BackupJobNotFound`` if it does not exist."""
        return self.run(lambda s: s.get_job(job_id))

    def list_jobs(self) -> list[str]:
        """The ids of the backup jobs the appliance knows."""
        return self.run(lambda s: s.list_jobs())

    def list_job_details(self, job_ids: Sequence[str] | None = None) -> dict[str, BackupJobDetails]:
        """Details (type, size, duration, location, ...) by job id; all jobs if ``job_ids`` is None."""
        return self.run(lambda s: s.list_job_details(job_ids))

    def find_job(
        self,
        *,
        started_after: datetime,
        started_before: datetime | None = None,
        job_type: JobType | str | None = None,
    ) -> BackupJobStatus | None:
        """The newest job started in ``[started_after, started_before)`` of ``job_type``, or None."""
        return self.run(
            lambda s: s.find_job(
                started_after=started_after, started_before=started_before, job_type=job_type
            )
        )

    def list_parts(self) -> list[str]:
        """The ids of the parts a backup can include (``common``, ``seat``, ...)."""
        return self.run(lambda s: s.list_parts())

    def start_backup(self, request: BackupRequest | None = None, **fields: Any) -> BackupJobStatus:
        """Start a backup, of a :class:`BackupRequest` or of its fields as keyword arguments
        (``start_backup(parts=["common"], location="sftp://...")``). Never sent twice; raises
        ``BackupAlreadyRunning`` when one runs."""
        backup = BackupRequest.of(request, **fields)
        return self.run(lambda s: s.start_backup(backup))

    def cancel_job(self, job_id: str) -> CancelResult:
        """Ask the appliance to cancel a running backup job."""
        return self.run(lambda s: s.cancel_job(job_id))

    def test_connection(self) -> tuple[bool, str]:
        """Log in, list the jobs, log out: the Connections page's Test button."""
        try:
            ids = self.run(lambda s: s.list_jobs(), NO_RETRY)
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
            if self._core.session is not None and self._core.session.is_open:
                try:
                    self.run(lambda s: s.logout(), LOGOUT_POLICY)
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
