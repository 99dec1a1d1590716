"""A bundled vCenter Server Appliance simulator for the backup-job API (both /rest and /api dialects).

In-process (tests)::

    with Simulator() as sim:            # 127.0.0.1, free port, background thread + event loop
        job_id = sim.add_job(none_polls=1, inprogress_polls=2, outcome="FAILED")
        ...                             # talk HTTP to sim.base_url
        sim.inject("http_503_html", method="GET", path_contains=job_id)
        sim.stats()["logins"]

As a process: ``python -m airflow_provider_backupjob.simulator --port 0 --port-file PORT``, then drive
it with ``SimulatorClient(base_url)`` (same control methods, over ``/_sim/``). Never imports Airflow.

Behaviour choices where the spec leaves room:

* ``api_enabled=False`` (``--rest-only``): every ``/api`` path answers 404 ``text/html`` (an nginx-like
  "404 Not Found" page), i.e. not a vAPI body. Unknown paths outside /rest and /api answer the same.
  Unknown operations under /rest or /api answer a vAPI ``not_found`` in that dialect.
* Logins accept HTTP basic only; login sets cookie ``vmware-api-session-id`` (``Path=/; HttpOnly``, plus
  ``Secure`` over TLS) unless ``vmware-use-header-authn: true`` was sent. The header wins over the cookie.
* A job's state is what its last GET answered; a GET counts one poll. A job never polled is in its
  initial state (NONE if ``none_polls`` else INPROGRESS with progress 0; the outcome if both are 0).
  "Is a backup running" (``feature_in_use``) uses that state, so a job that was never polled to its end
  blocks new starts: remove it, cancel it, or poll it.
* Jobs have a type: MANUAL (started by POST, or ``add_job``) or SCHEDULED (``add_job(job_type=...)``,
  or the schedule: ``set_schedule(interval, outcomes, run_seconds, first_in, count)`` / ``--schedule``
  starts one every ``interval`` seconds, created lazily on the next request, stamped with its
  scheduled start time, running ``run_seconds`` by the clock). ``add_job(started_ago=...)`` back-dates
  a job (and its id).
* The details call (``.../job/details``, ``jobs=`` on /api as an object keyed by id, ``filter.jobs=`` on
  /rest as ``[{key, value}]``) answers the vendor's ``Details.Info`` with every required field; its
  ``error`` is an object, as real appliances send (the generated spec says string). Reading details
  counts no poll: a poll-driven job moves on only by GETs. ``set_details_enabled(False)``
  (``--no-details``) answers it 404, as vCenter 6.5 does (with ``--rest-only``: a 6.5 appliance).
* ``default_message`` texts are rendered (args substituted), ``args`` carry the raw values.
* Start validates ``parts`` (list of known ids: common, seat), ``location_type``, ``location`` and
  ``backup_password`` length (8-20). ``stats()["started_requests"]`` records accepted BackupRequests
  (unwrapped from ``{"piece": ...}`` on /rest), passwords included.
* Faults are proxy-level: ``http_*``, ``not_found`` and ``malformed_json`` answer without processing the
  request (a job GET is not counted as a poll); ``slow``, ``reset_after_read`` and ``expire_session``
  process it. ``path_contains`` matches the raw request target, query string included. Explicit faults
  can hit logins; chaos never touches login/logout (``POST``/``DELETE`` session) nor ``/_sim/``.
* Expired sessions (idle timeout, ``expire_session``, ``expire_all_sessions``) count in
  ``expired_sessions``, never in ``logouts``.
"""

from __future__ import annotations

from .client import SimulatorClient, SimulatorError
from .faults import FAULT_KINDS
from .inprocess import Simulator
from .model import ADMIN_USER, JobScript, VapiError
from .state import (
    DEFAULT_PASSWORD,
    DEFAULT_USERS,
    READONLY_USER,
    SimState,
)

__all__ = [
    "ADMIN_USER",
    "DEFAULT_PASSWORD",
    "DEFAULT_USERS",
    "FAULT_KINDS",
    "READONLY_USER",
    "JobScript",
    "SimState",
    "Simulator",
    "SimulatorClient",
    "SimulatorError",
    "VapiError",
]
