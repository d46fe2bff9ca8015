"""Airflow's long-running processes on this machine (scheduler, DAG processor, API server) and their health."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path

from precision_marketing.orchestration.environment import airflow_env


def api_url(environ: Mapping[str, str] | None = None) -> str:
    """Where the Airflow API server is (and where tasks find its execution API)."""
    environ = os.environ if environ is None else environ
    return (environ.get("AIRFLOW__API__BASE_URL") or "http://localhost:8080").rstrip("/")


def airflow_health(base_url: str, timeout: float = 3.0) -> dict | None:
    """The API server's health document, or None when nothing answers there."""
    import json
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{base_url}/api/v2/monitor/health", timeout=timeout) as response:
            return json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError):
        return None


def scheduler_is_up(base_url: str) -> bool:
    health = airflow_health(base_url) or {}
    return (health.get("scheduler") or {}).get("status") == "healthy"


class AirflowServers:
    """The Airflow processes of a production deployment, on this machine: scheduler (LocalExecutor),
    DAG processor and API server (UI, REST API, and the execution API the tasks report to).

    `pm backfill` starts them when none are running; the end-to-end tests share one set per session.
    Each process logs to <log_dir>/<name>.log. Use as a context manager, or start() / stop()."""

    NAMES = ("api-server", "scheduler", "dag-processor")

    def __init__(self, config: Mapping, port: int, log_dir: Path, extra_env: Mapping[str, str] | None = None):
        self.base_url = f"http://127.0.0.1:{port}"
        self.port = port
        self.log_dir = Path(log_dir)
        self.env = {
            **airflow_env(config),
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__API__BASE_URL": self.base_url,
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.base_url}/execution/",
            "AIRFLOW__API__WORKERS": "1",
            **(extra_env or {}),
        }
        self.processes: dict[str, subprocess.Popen] = {}

    def start(self, timeout: float = 180) -> AirflowServers:
        import time

        airflow_bin = str(Path(sys.executable).with_name("airflow"))
        self.log_dir.mkdir(parents=True, exist_ok=True)
        for name in self.NAMES:
            command = [airflow_bin, name] + (
                ["--port", str(self.port), "--host", "127.0.0.1"] if name == "api-server" else []
            )
            log = (self.log_dir / f"{name}.log").open("ab")
            # own process group: stop() ends the server and the workers it forked, nothing else
            self.processes[name] = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, process in self.processes.items():
                if process.poll() is not None:
                    self.stop()
                    raise RuntimeError(
                        f"airflow {name} exited with {process.returncode}; see {self.log_dir / (name + '.log')}"
                    )
            if scheduler_is_up(self.base_url):
                return self
            time.sleep(2)
        self.stop()
        raise TimeoutError(
            f"Airflow did not become healthy at {self.base_url} in {timeout:.0f} s; logs in {self.log_dir}"
        )

    def stop(self, timeout: float = 30) -> None:
        import signal

        for process in self.processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in self.processes.values():
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()

    def __enter__(self) -> AirflowServers:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
