"""The DAG's two Spark steps (pipeline.train_als, pipeline.train_ctr_and_build_audiences) on a real Spark
standalone cluster: a master and one worker started here from the pyspark package (`spark-class`, nothing to
download), on 127.0.0.1. The steps run unchanged, only the `spark_default` connection differs; the executors run
in the worker's own JVMs (their logs are in the worker's work dir). Input: the tiny planted features of the job tests.

One machine, so the work dir is shared storage already; on a multi-host cluster the work dir must be a shared
path (see README "Running on a cluster")."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from test_recommendations import planted_interactions, write_features
from test_scheduler import free_port
from test_spark_failures import write_every_source_delivered
from test_spark_jobs import DS, planted_impressions, planted_users, score_rows, write_feature

from precision_marketing import pipeline

pytestmark = pytest.mark.e2e


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


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    cluster = StandaloneCluster(tmp_path_factory.mktemp("spark_cluster"))
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


def plant_work_dir(work: Path) -> None:
    """The features the two Spark steps read, where the DAG's earlier steps put them for DS."""
    features = work / "features"
    write_features(features, planted_interactions())
    users = planted_users()
    write_feature(features, "ctr_train", planted_impressions(users))
    write_feature(
        features,
        "ctr_score",
        pd.concat(
            [
                score_rows(users.iloc[0:30], "big", "banner", "onsite"),
                score_rows(users.iloc[30:50], "small", "newsletter", "email"),
            ]
        ),
    )
    write_feature(
        features,
        "campaigns",
        pd.DataFrame({"campaign_id": ["big", "small"], "audience_size": np.array([5, 100], "int32")}),
    )
    segments = work / "models" / "segments" / f"ds={DS.isoformat()}" / "user_segments.parquet"
    segments.parent.mkdir(parents=True)
    pd.DataFrame({"user_id": np.arange(1, 41), "segment_id": 1, "segment": "champions"}).to_parquet(segments)
    write_every_source_delivered(work, DS.isoformat())


def test_the_dags_spark_steps_run_unchanged_on_a_standalone_cluster(cluster, tmp_path, monkeypatch):
    work = tmp_path / "work"
    plant_work_dir(work)
    for key, value in {
        "PM__WORK_DIR": work,
        "PM__LAKE__LOCAL_ROOT": tmp_path / "lake",
        "PM__SPARK__DRIVER_MEMORY": "1g",
        "PM__SPARK__SHUFFLE_PARTITIONS": "2",
        "PM__ALS__MAX_ITER": "5",
        "PM__ALS__TUNING__MAX_FITS": "2",
    }.items():
        monkeypatch.setenv(key, str(value))
    # the cluster is the Airflow connection spark_default, as a team defines it for every Spark DAG
    host, port = cluster.url.rsplit(":", 1)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    connection = {"conn_type": "spark", "host": host, "port": int(port)}
    monkeypatch.setenv("AIRFLOW_CONN_SPARK_DEFAULT", json.dumps(connection))
    ds = DS.isoformat()

    als = pipeline.train_als(ds)
    ctr = pipeline.train_ctr_and_build_audiences(ds)

    recommendations = pd.read_parquet(work / "models" / "als" / f"ds={ds}" / "recommendations")
    assert als["gate"] == "model" and len(recommendations) > 0  # the planted structure beats popularity
    assert recommendations.groupby("user_id").size().max() <= 10
    audiences = pd.read_parquet(work / "models" / "ctr" / f"ds={ds}" / "audiences")
    assert set(audiences["campaign_id"]) == {"big", "small"} and ctr["auc"] > 0.6
    # both applications ran on the cluster's master, their executors in the worker's own JVMs
    apps = cluster.state()["completedapps"]
    assert len(apps) == 2 and all(app["state"] == "FINISHED" for app in apps), apps
    executor_logs = sorted(cluster.worker_dir.glob("app-*/*/stderr"))
    assert {log.parts[-3] for log in executor_logs} == {app["id"] for app in apps}
