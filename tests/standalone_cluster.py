"""A real Spark standalone cluster for tests: a master and one worker started from the pyspark package
(`spark-class`, nothing to download) on 127.0.0.1; the executors run in the worker's own JVMs (their logs are in
the worker's work dir). One machine, so the work dir is shared storage already; on a multi-host cluster the work
dir must be a shared path (see README "Running on a cluster")."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StandaloneCluster:
    """`spark-class org.apache.spark.deploy.master.Master` and one `...worker.Worker`, stopped at the end."""

    def __init__(self, root: Path, cores: int = 2, memory: str = "2g"):
        import pyspark

        self.spark_home = Path(pyspark.__file__).parent
        self.root, self.cores, self.memory = root, cores, memory
        self.port, self.ui_port = free_port(), free_port()
        self.url = f"spark://127.0.0.1:{self.port}"
        self.worker_dir = root / "worker"
        self.processes: list[subprocess.Popen] = []

    def _start(self, name: str, *args: str) -> None:
        env = {
            **os.environ,
            "SPARK_HOME": str(self.spark_home),
            "SPARK_LOCAL_IP": "127.0.0.1",
            "SPARK_NO_DAEMONIZE": "1",
        }
        log = (self.root / f"{name}.log").open("w")
        self.processes.append(
            subprocess.Popen(
                [str(self.spark_home / "bin" / "spark-class"), *args],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )

    def state(self) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.ui_port}/json/", timeout=5) as response:
            return json.loads(response.read())

    def start(self) -> None:
        self._start(
            "master",
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--webui-port",
            str(self.ui_port),
        )
        # a port taken between free_port() and the bind makes Spark move to the next one: read where it listens
        master_log = self.root / "master.log"
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not (
            re.search(r"Starting Spark master at (spark://\S+)", text := master_log.read_text())
            and re.search(r"Bound MasterWebUI to \S+, and started at http://[^:/]+:(\d+)", text)
        ):
            if self.processes[0].poll() is not None:
                break
            time.sleep(0.5)
        text = master_log.read_text()
        if url := re.search(r"Starting Spark master at (spark://\S+)", text):
            self.url, self.port = url.group(1), int(url.group(1).rsplit(":", 1)[1])
        if ui := re.search(r"Bound MasterWebUI to \S+, and started at http://[^:/]+:(\d+)", text):
            self.ui_port = int(ui.group(1))
        self._start(
            "worker",
            "org.apache.spark.deploy.worker.Worker",
            self.url,
            "--host",
            "127.0.0.1",
            "--cores",
            str(self.cores),
            "--memory",
            self.memory,
            "--webui-port",
            str(free_port()),
            "--work-dir",
            str(self.worker_dir),
        )
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if self.state().get("aliveworkers") == 1:
                    return
            except OSError:
                pass
            if any(p.poll() is not None for p in self.processes):
                break
            time.sleep(1)
        logs = "\n".join((self.root / f"{n}.log").read_text()[-2000:] for n in ("master", "worker"))
        raise AssertionError(f"the standalone cluster did not come up with one worker:\n{logs}")

    def stop(self) -> None:
        for process in reversed(self.processes):
            try:
                os.killpg(process.pid, signal.SIGTERM)
            except ProcessLookupError:
                continue
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)

    def connection(self) -> str:
        """The cluster as the Airflow connection spark_default (`AIRFLOW_CONN_SPARK_DEFAULT`), as a team defines it."""
        host, port = self.url.rsplit(":", 1)
        return json.dumps({"conn_type": "spark", "host": host, "port": int(port)})
