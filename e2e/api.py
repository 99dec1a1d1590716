"""A small client of Airflow 3's public REST API v2, authenticated with a JWT from ``/auth/token``."""

from __future__ import annotations

import json
from typing import Any

import httpx


class AirflowApi:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        # trust_env=False: never through a proxy from the environment; this is all loopback.
        self.http = httpx.Client(base_url=base_url, timeout=30, trust_env=False)

    def close(self) -> None:
        self.http.close()

    def login(self, username: str, password: str) -> str:
        """SimpleAuthManager's token endpoint: POST /auth/token (JSON) -> {"access_token": JWT}."""
        resp = self.http.post("/auth/token", json={"username": username, "password": password})
        resp.raise_for_status()
        token = str(resp.json()["access_token"])
        self.http.headers["Authorization"] = f"Bearer {token}"
        return token

    def status_without_token(self, path: str) -> int:
        return httpx.get(self.base_url + path, timeout=30, trust_env=False).status_code

    def _get(self, path: str, **params: Any) -> Any:
        resp = self.http.get(path, params=params or None)
        resp.raise_for_status()
        return resp.json()

    def health(self) -> dict[str, Any]:
        """Unauthenticated; each component's status ("healthy"/"unhealthy"/None)."""
        result: dict[str, Any] = self._get("/api/v2/monitor/health")
        return result

    def dags(self) -> dict[str, dict[str, Any]]:
        return {d["dag_id"]: d for d in self._get("/api/v2/dags", limit=100)["dags"]}

    def trigger(self, dag_id: str, conf: dict[str, Any] | None = None) -> str:
        resp = self.http.post(
            f"/api/v2/dags/{dag_id}/dagRuns", json={"logical_date": None, "conf": conf or {}}
        )
        if resp.status_code >= 400:
            raise RuntimeError(f"triggering {dag_id}: HTTP {resp.status_code}: {resp.text[:500]}")
        return str(resp.json()["dag_run_id"])

    def run_state(self, dag_id: str, run_id: str) -> str:
        return str(self._get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")["state"])

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        tis = self._get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances")["task_instances"]
        return {ti["task_id"]: ti["state"] for ti in tis}

    def task_tries(self, dag_id: str, run_id: str, task_id: str) -> list[dict[str, Any]]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/tries"
        tries: list[dict[str, Any]] = self._get(path)["task_instances"]
        return tries

    def set_task_state(self, dag_id: str, run_id: str, task_id: str, state: str) -> None:
        """What "Mark as failed/success" in the UI does: PATCH the task instance's state."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        resp = self.http.patch(path, json={"new_state": state})
        if resp.status_code >= 400:
            raise RuntimeError(f"setting {task_id} {state}: HTTP {resp.status_code}: {resp.text[:500]}")

    def xcom(self, dag_id: str, run_id: str, task_id: str, key: str = "return_value") -> Any:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/xcomEntries/{key}"
        return self._get(path)["value"]

    def connection(self, conn_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._get(f"/api/v2/connections/{conn_id}")
        return result

    def task_log(self, dag_id: str, run_id: str, task_id: str) -> str:
        """The latest try's log as text (the JSON of its structured lines, enough to search)."""
        base = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        try_number = self._get(base)["try_number"]
        resp = self.http.get(f"{base}/logs/{try_number}", headers={"Accept": "application/json"})
        resp.raise_for_status()
        return json.dumps(resp.json().get("content"))
