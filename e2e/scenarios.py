"""DAG-run scenarios: triggered through the REST API, run by the real scheduler, checked through the API."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
from api import AirflowApi
from procs import E2EError, Service

from airflow_provider_backupjob.simulator.client import SimulatorClient

GATE_TASKS = ("wait_for_backup", "patch_cluster")
TERMINAL = {"success", "failed"}
MISSING_JOB_ID = "20990101-000000-0000000"
# What Airflow's task runner logs when a sensor defers or reschedules: proof of the mode that ran.
DEFERRED = "Pausing task as DEFERRED"
RESCHEDULED = "Rescheduling task, marking task as UP_FOR_RESCHEDULE"
NOT_POKE = (DEFERRED, RESCHEDULED)


@dataclass
class Scenario:
    name: str
    dag_id: str
    expect_run: str
    expect_tasks: dict[str, str]
    job: dict[str, Any] | None = None  # a simulator job to create; its id goes in the run's conf
    job_id: str | None = None  # or a fixed job id (one the simulator does not have)
    log_has: tuple[str, ...] = ()  # texts the first task's log (read through the API) must contain
    log_lacks: tuple[str, ...] = ()  # and must not
    # The appliance (and the simulator) runs one backup at a time: a DAG that starts one runs in the
    # first wave, with no scripted job in progress; the gate scenarios, which script jobs, in the second.
    wave: int = 2
    run_id: str = ""
    started: float = 0.0
    seconds: float = 0.0
    run_state: str = "-"
    task_states: dict[str, str | None] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.problems and self.run_state == self.expect_run

    @property
    def expected(self) -> str:
        """The run's state [its tasks' states, in DAG order]."""
        return f"{self.expect_run} [{', '.join(self.expect_tasks.values())}]"

    @property
    def actual(self) -> str:
        return f"{self.run_state} [{', '.join(str(self.task_states.get(k)) for k in self.expect_tasks)}]"


def gate(state: str) -> dict[str, str]:
    if state == "success":
        return dict.fromkeys(GATE_TASKS, "success")
    return {"wait_for_backup": "failed", "patch_cluster": "upstream_failed"}


def all_scenarios() -> list[Scenario]:
    # A few polls each (POKE_INTERVAL apart): every state is seen, and a deferred task's exit reaches the
    # scheduler before its trigger fires (see AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL in stack.py).
    ok_job = {"outcome": "SUCCEEDED", "none_polls": 1, "inprogress_polls": 2}
    failing_job = {"outcome": "FAILED", "none_polls": 0, "inprogress_polls": 2}
    ok, failed = gate("success"), gate("failed")
    gate_poke, gate_reschedule, gate_deferrable = (
        "vcenter_backup_gate",
        "vcenter_backup_gate_reschedule",
        "vcenter_backup_gate_deferrable",
    )
    return [
        Scenario("gate, poke, job succeeds", gate_poke, "success", ok, job=ok_job, log_lacks=NOT_POKE),
        Scenario(
            "gate, reschedule, job succeeds",
            gate_reschedule,
            "success",
            ok,
            job={"outcome": "SUCCEEDED", "none_polls": 0, "inprogress_polls": 2},
            log_has=(RESCHEDULED,),
        ),
        Scenario(
            "gate, deferrable, job succeeds", gate_deferrable, "success", ok, job=ok_job, log_has=(DEFERRED,)
        ),
        Scenario(
            "gate, deferrable, job FAILS",
            gate_deferrable,
            "failed",
            failed,
            job=failing_job,
            log_has=(DEFERRED, "FAILED (progress"),
        ),
        Scenario(
            "gate, poke, job FAILS",
            gate_poke,
            "failed",
            failed,
            job=failing_job,
            log_has=("FAILED (progress",),
            log_lacks=NOT_POKE,
        ),
        Scenario(
            "gate, poke, missing job id",
            gate_poke,
            "failed",
            failed,
            job_id=MISSING_JOB_ID,
            log_has=("does not exist",),
            wave=1,
        ),
        Scenario(
            "start_and_wait (deferrable)",
            "vcenter_backup_start_and_wait",
            "success",
            {"start_backup": "success", "report": "success"},
            log_has=(DEFERRED,),
            wave=1,
        ),
    ]


def trigger_all(api: AirflowApi, sim: SimulatorClient, scenarios: list[Scenario]) -> None:
    for sc in scenarios:
        conf = None
        if sc.job is not None:
            sc.job_id = sim.add_job(**sc.job)
        if sc.job_id is not None:
            conf = {"job_id": sc.job_id}
        sc.started = time.monotonic()
        sc.run_id = api.trigger(sc.dag_id, conf)
        print(
            f"  triggered {sc.dag_id} run {sc.run_id} (job {sc.job_id or 'started by the DAG'})", flush=True
        )


def wait_all(
    api: AirflowApi, scenarios: list[Scenario], timeout: float, services: tuple[Service, ...]
) -> None:
    """Poll every run until it is success or failed; a run still going at ``timeout`` is a failure."""
    pending = list(scenarios)
    deadline = time.monotonic() + timeout
    while pending:
        for svc in services:
            svc.check_alive()
        for sc in list(pending):
            state = api.run_state(sc.dag_id, sc.run_id)
            if state in TERMINAL:
                sc.seconds = time.monotonic() - sc.started
                sc.run_state = state
                pending.remove(sc)
                print(f"  {sc.name}: run {state} after {sc.seconds:.1f} s", flush=True)
        if pending and time.monotonic() >= deadline:
            for sc in pending:
                sc.run_state = api.run_state(sc.dag_id, sc.run_id)
                sc.task_states = api.task_states(sc.dag_id, sc.run_id)
                sc.seconds = time.monotonic() - sc.started
                sc.problems.append(f"run still {sc.run_state} after {timeout:g} s (tasks: {sc.task_states})")
            logs = "\n".join(s.tail(15) for s in services)
            raise E2EError(f"timed out after {timeout:g} s waiting for DAG runs to finish\n{logs}")
        time.sleep(1)


def check_all(api: AirflowApi, sim: SimulatorClient, scenarios: list[Scenario]) -> None:
    for sc in scenarios:
        sc.task_states = api.task_states(sc.dag_id, sc.run_id)
        if sc.run_state != sc.expect_run:
            sc.problems.append(f"run state {sc.run_state}, expected {sc.expect_run}")
        for task, want in sc.expect_tasks.items():
            got = sc.task_states.get(task)
            if got != want:
                sc.problems.append(f"task {task} {got}, expected {want}")
        first = next(iter(sc.expect_tasks))
        text = api.task_log(sc.dag_id, sc.run_id, first)
        for needle in sc.log_has:
            if needle not in text:
                sc.problems.append(f"the log of {first} does not say {needle!r}")
        for needle in sc.log_lacks:
            if needle in text:
                sc.problems.append(f"the log of {first} says {needle!r}")
        if sc.expect_run == "success" and sc.job is not None:
            info = sim.job_info(sc.job_id or "")
            polls = info["polls"] if info else 0
            want_polls = sc.job["none_polls"] + sc.job["inprogress_polls"] + 1
            if polls < want_polls:  # every scripted state was seen: it really waited
                sc.problems.append(
                    f"the simulator saw {polls} polls of job {sc.job_id}, expected >= {want_polls}"
                )
        if sc.dag_id == "vcenter_backup_start_and_wait" and sc.run_state == "success":
            job_id = api.xcom(sc.dag_id, sc.run_id, "start_backup", "job_id")
            sc.job_id = str(job_id)
            if sim.job_state(sc.job_id) != "SUCCEEDED":
                sc.problems.append(f"the simulator's job {job_id} is {sim.job_state(sc.job_id)}")


# -- Wave 3: the simulator's backup schedule, the "tonight's backup" gate and the asset watcher ----------
ASSET_DAG = "vcenter_backup_asset"
TONIGHT_DAG = "vcenter_backup_tonight"
# A SCHEDULED job every 20 s, 4 s long, three of them, the second FAILS: every job ends well before
# the next starts, so each ends in its own watcher poll and its own asset event.
SCHEDULE = {
    "interval": 20.0,
    "outcomes": ["SUCCEEDED", "FAILED", "SUCCEEDED"],
    "run_seconds": 4.0,
    "count": 3,
}


def tonight_scenario() -> Scenario:
    return Scenario(
        "tonight's backup: started_after gates on a SCHEDULED job",
        TONIGHT_DAG,
        "success",
        {"wait_for_tonights_backup": "success", "patch_cluster": "success"},
        log_has=("no SCHEDULED backup job started after", "Chose backup job", "(SCHEDULED, started"),
        wave=3,
    )


def dag_runs(api: AirflowApi, dag_id: str) -> dict[str, dict[str, Any]]:
    runs = api._get(f"/api/v2/dags/{dag_id}/dagRuns", limit=100)["dag_runs"]
    return {r["dag_run_id"]: r for r in runs}


def scheduled_wave(
    api: AirflowApi, sim: SimulatorClient, services: tuple[Service, ...], add: Any, poll_interval: float
) -> Scenario:
    """Start the schedule; check the tonight gate chose a scheduled job, and that the asset DAG ran
    once for each scheduled job that SUCCEEDED and not for the FAILED one. ``add`` records a check."""
    from procs import wait_for

    before_jobs = set(sim.list_jobs())
    before_runs = set(dag_runs(api, ASSET_DAG))
    tonight = tonight_scenario()
    trigger_all(api, sim, [tonight])
    task = next(iter(tonight.expect_tasks))

    def poked_once() -> bool:  # the gate said it found nothing yet (or the run ended: checked below)
        if api.run_state(TONIGHT_DAG, tonight.run_id) in TERMINAL:
            return True
        try:
            return "no SCHEDULED backup job started after" in api.task_log(TONIGHT_DAG, tonight.run_id, task)
        except httpx.HTTPError:  # no log yet
            return False

    wait_for("the gate's first poke", poked_once, 120, services=services, interval=1)
    started = time.monotonic()
    sim.set_schedule(first_in=1.0, **SCHEDULE)
    wait_all(api, [tonight], timeout=180, services=services)
    check_all(api, sim, [tonight])
    chosen = api.xcom(TONIGHT_DAG, tonight.run_id, "wait_for_tonights_backup")
    new_jobs = wait_for(
        "the schedule's three jobs to end",
        lambda: _ended_schedule(sim, before_jobs),
        120,
        services=services,
        interval=1,
    )
    tonight.job_id = str(chosen.get("id"))
    if chosen.get("type") != "SCHEDULED" or tonight.job_id not in new_jobs:
        tonight.problems.append(f"the gate chose {chosen!r:.200}, not one of the scheduled jobs {new_jobs}")
    succeeded = sorted(j for j, state in new_jobs.items() if state == "SUCCEEDED")
    failed = sorted(j for j, state in new_jobs.items() if state == "FAILED")

    def asset_runs_done() -> dict[str, dict[str, Any]] | None:
        runs = {k: v for k, v in dag_runs(api, ASSET_DAG).items() if k not in before_runs}
        done = len(runs) >= len(succeeded) and all(r["state"] in TERMINAL for r in runs.values())
        return runs if done else None

    with contextlib.suppress(E2EError):  # reported below with what there is
        wait_for("the asset-triggered runs", asset_runs_done, 120, services=services, interval=1)
    time.sleep(3 * poll_interval)  # a few more watcher polls: nothing more may fire
    runs = {k: v for k, v in dag_runs(api, ASSET_DAG).items() if k not in before_runs}
    fired: list[str] = []
    for run_id, run in sorted(runs.items()):
        if run["state"] == "success":
            fired += [str(j) for j in api.xcom(ASSET_DAG, run_id, "patch_after_backup") or []]
    types = sorted({str(r.get("run_type")) for r in runs.values()})
    ok = (
        sorted(fired) == succeeded
        and len(runs) == len(succeeded)
        and all(r["state"] == "success" for r in runs.values())
    )
    add(
        "asset watcher: one run per scheduled job that SUCCEEDED",
        f"{len(succeeded)} runs for {', '.join(succeeded)}; none for FAILED {', '.join(failed)}",
        f"{len(runs)} runs ({', '.join(types) or 'none'}; {[r['state'] for r in runs.values()]}) "
        f"for {', '.join(fired) or 'no job'}",
        ok and not set(fired) & set(failed),
        time.monotonic() - started,
    )
    return tonight


def _ended_schedule(sim: SimulatorClient, before: set[str]) -> dict[str, str] | None:
    info = sim.schedule_info() or {}
    jobs = {j: sim.job_state(j) or "?" for j in sim.list_jobs() if j not in before}
    done = all(state in ("SUCCEEDED", "FAILED") for state in jobs.values())
    return jobs if info.get("made") == SCHEDULE["count"] == len(jobs) and done else None
