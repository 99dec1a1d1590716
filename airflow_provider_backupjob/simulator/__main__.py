"""CLI: ``python -m airflow_provider_backupjob.simulator [--port 8443] [--port-file PATH] ...``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ipaddress
import os
import signal
import ssl
import sys
from collections.abc import Sequence

from .model import JobScript
from .server import SimServer
from .state import DEFAULT_UNPRIVILEGED, DEFAULT_USERS, SimState

JOB_METAVAR = "ID[:OUTCOME[:NONE_POLLS[:INPROGRESS_POLLS]]]"


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _user(spec: str) -> tuple[str, str]:
    name, sep, password = spec.partition(":")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"expected NAME:PASSWORD, got {spec!r}")
    return name, password


def _job(spec: str) -> tuple[str | None, JobScript]:
    fields = spec.split(":")
    if len(fields) > 4:
        raise argparse.ArgumentTypeError(f"expected {JOB_METAVAR}, got {spec!r}")
    fields += [""] * (4 - len(fields))
    try:
        script = JobScript((fields[1] or "SUCCEEDED").upper(), int(fields[2] or 0), int(fields[3] or 3))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad --job {spec!r}: {exc}") from exc
    return fields[0] or None, script


def _schedule(spec: str) -> dict[str, object]:
    fields = spec.split(":")
    if len(fields) > 3 or not fields[0]:
        raise argparse.ArgumentTypeError(f"expected INTERVAL[:OUTCOMES[:RUN_SECONDS]], got {spec!r}")
    fields += [""] * (3 - len(fields))
    try:
        interval = float(fields[0])
        outcomes = [o.upper() for o in fields[1].split(",") if o] or ["SUCCEEDED"]
        for outcome in outcomes:
            JobScript(outcome)
        run_seconds = float(fields[2] or 2.0)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad --schedule {spec!r}: {exc}") from exc
    if interval <= 0 or run_seconds < 0:
        raise argparse.ArgumentTypeError(f"bad --schedule {spec!r}: INTERVAL > 0 and RUN_SECONDS >= 0")
    return {"interval": interval, "outcomes": outcomes, "run_seconds": run_seconds}


def _script(spec: str) -> JobScript:
    return _job(":" + spec)[1]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m airflow_provider_backupjob.simulator",
        description="Simulated vCenter Server Appliance (backup-job API).",
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (loopback only unless --allow-remote)")
    p.add_argument("--port", type=int, default=8443, help="port; 0 picks a free one (default 8443)")
    p.add_argument("--port-file", help="write the bound port to this file once listening")
    p.add_argument("--allow-remote", action="store_true", help="allow binding a non-loopback address")
    p.add_argument("--rest-only", action="store_true", help="answer 404 on /api (an appliance before 7.0 U2)")
    p.add_argument(
        "--no-details",
        action="store_true",
        help="answer 404 on .../backup/job/details (with --rest-only: a vCenter 6.5 appliance)",
    )
    p.add_argument(
        "--schedule",
        type=_schedule,
        default=None,
        metavar="INTERVAL[:OUTCOMES[:RUN_SECONDS]]",
        help="start a SCHEDULED job every INTERVAL seconds; OUTCOMES a comma list cycled through "
        "(default SUCCEEDED); each runs RUN_SECONDS (default 2), e.g. 60:SUCCEEDED,FAILED:5",
    )
    p.add_argument("--session-cap", type=int, default=550, help="sessions per user (default 550)")
    p.add_argument(
        "--idle-timeout", type=float, default=1800.0, help="session idle timeout, s (default 1800)"
    )
    p.add_argument(
        "--job",
        action="append",
        type=_job,
        default=[],
        metavar=JOB_METAVAR,
        help="pre-create a job (repeatable; empty ID picks one)",
    )
    p.add_argument(
        "--start-script",
        type=_script,
        default=None,
        metavar="OUTCOME:NONE_POLLS:INPROGRESS_POLLS",
        help="how jobs started by POST progress (default SUCCEEDED:0:3)",
    )
    p.add_argument(
        "--user",
        action="append",
        type=_user,
        default=[],
        metavar="NAME:PASSWORD",
        help="privileged user (repeatable; replaces the default administrator@vsphere.local)",
    )
    p.add_argument(
        "--unprivileged-user",
        action="append",
        type=_user,
        default=[],
        metavar="NAME:PASSWORD",
        help="user lacking the backup privilege (repeatable; replaces readonly@vsphere.local)",
    )
    p.add_argument("--certfile", help="serve HTTPS with this certificate (PEM)")
    p.add_argument("--keyfile", help="private key for --certfile")
    p.add_argument("--seed", type=int, default=None, help="seed for job ids")
    args = p.parse_args(argv)
    if not args.allow_remote and not _is_loopback(args.host):
        p.error(f"refusing to bind non-loopback address {args.host!r} without --allow-remote")
    if args.keyfile and not args.certfile:
        p.error("--keyfile needs --certfile")
    return args


def build_state(args: argparse.Namespace) -> SimState:
    users = dict(DEFAULT_USERS)
    unprivileged = set(DEFAULT_UNPRIVILEGED)
    if args.user or args.unprivileged_user:
        users = dict(args.user) if args.user else {k: v for k, v in users.items() if k not in unprivileged}
        if args.unprivileged_user:
            for k in unprivileged:
                users.pop(k, None)
            unprivileged = {name for name, _ in args.unprivileged_user}
            users.update(dict(args.unprivileged_user))
    state = SimState(
        users=users,
        unprivileged_users=unprivileged,
        session_cap=args.session_cap,
        idle_timeout=args.idle_timeout,
        api_enabled=not args.rest_only,
        start_script=args.start_script,
        seed=args.seed,
    )
    state.configure(details_enabled=not args.no_details)
    if args.schedule:
        state.set_schedule(**args.schedule)
    for job_id, script in args.job:
        jid = state.add_job(job_id, script.outcome, script.none_polls, script.inprogress_polls)
        print(
            f"job {jid} {script.outcome} none_polls={script.none_polls} "
            f"inprogress_polls={script.inprogress_polls}",
            file=sys.stderr,
            flush=True,
        )
    return state


def _raise_fd_limit() -> None:
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        want = 65536 if hard == resource.RLIM_INFINITY else min(hard, 65536)
        if soft != resource.RLIM_INFINITY and soft < want:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))


async def serve(args: argparse.Namespace, state: SimState) -> None:
    ctx: ssl.SSLContext | None = None
    if args.certfile:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.certfile, args.keyfile)
    server = SimServer(state, host=args.host, port=args.port, ssl_context=ctx)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    print(f"vCenter simulator listening on {server.base_url}", flush=True)
    if args.port_file:
        tmp = f"{args.port_file}.tmp{os.getpid()}"
        with open(tmp, "w", encoding="ascii") as fh:
            fh.write(f"{server.port}\n")
        os.replace(tmp, args.port_file)
    try:
        await stop.wait()
    finally:
        await server.close()
    print("vCenter simulator stopped", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    state = build_state(args)
    _raise_fd_limit()
    try:
        asyncio.run(serve(args, state))
    except OSError as exc:
        print(f"vCenter simulator: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
