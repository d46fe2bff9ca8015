"""A failing Spark job names its root cause in the task's final error, and an unreachable master fails in
seconds, before any job is submitted (so the CTR job is not started on a master the ALS job could not reach)."""

import hashlib
import json
import time

import pytest

from precision_marketing import pipeline
from precision_marketing.ingest.land import status_path
from precision_marketing.training.spark_submit import SparkJobError, check_master, root_cause, run_spark_job

SMALL_SPARK = {"master": "local[1]", "driver_memory": "1g", "shuffle_partitions": 1, "conf": {}}


def test_the_first_exception_is_the_root_cause_not_the_last_lines():
    output = "\n".join(
        [
            "26/11/29 10:00:01 WARN Utils: Your hostname resolves to a loopback address",
            "26/11/29 10:00:02 ERROR SparkContext: Error initializing SparkContext.",
            "java.net.UnknownHostException: nowhere",
            "\tat java.base/java.net.InetAddress.getAllByName0(InetAddress.java:1302)",
            "Traceback (most recent call last):",
            "py4j.protocol.Py4JJavaError: An error occurred while calling None.org.apache.spark.api.java.JavaSparkContext.",
            "java.lang.IllegalStateException: Cannot call methods on a stopped SparkContext.",
        ]
    )
    assert root_cause(output) == "java.net.UnknownHostException: nowhere"
    assert root_cause("all good\nno problem here") is None


def test_a_failed_job_names_its_cause_first(tmp_path):
    with pytest.raises(SparkJobError) as raised:
        run_spark_job(
            "ctr_audiences",
            [
                "--features-dir",
                tmp_path / "missing",
                "--ds",
                "2026-11-22",
                "--segments",
                tmp_path / "none.parquet",
                "--output-dir",
                tmp_path / "out",
            ],
            SMALL_SPARK,
        )
    first_line = str(raised.value).splitlines()[0]
    assert first_line.startswith("Spark job ctr_audiences failed (exit 1): java.io.FileNotFoundException: File ")
    assert "missing/ctr_train/ds=2026-11-22 does not exist" in first_line


@pytest.mark.parametrize(
    "master, reason",
    [
        ("spark://nowhere.invalid:7077", "nowhere.invalid:7077"),
        ("spark://127.0.0.1:9", "127.0.0.1:9: [Errno 111] Connection refused"),
    ],
)
def test_an_unreachable_master_fails_in_seconds_naming_it(master, reason):
    started = time.monotonic()
    with pytest.raises(SparkJobError, match=f"Spark master {master} is not reachable"):
        check_master(master, timeout=5)
    with pytest.raises(SparkJobError) as raised:
        check_master(master, timeout=5)
    assert reason in str(raised.value)
    assert time.monotonic() - started < 30
    check_master("local[2]")  # nothing to reach


def write_every_source_delivered(work, ds: str) -> None:
    """check_raw's status for ds with every source delivered, so the CTR step does not skip itself."""
    status = status_path(work / "landed", ds)
    status.parent.mkdir(parents=True)
    status.write_text(
        json.dumps({"capabilities": {"recommendations": True, "segments": True, "audiences": True}, "notes": []})
    )


def test_neither_spark_step_submits_to_an_unreachable_master(tmp_path, monkeypatch):
    monkeypatch.setenv("PM__WORK_DIR", str(tmp_path / "work"))
    monkeypatch.setenv("PM__LAKE__LOCAL_ROOT", str(tmp_path / "lake"))
    params = {"spark_master": "spark://nowhere.invalid:7077"}
    write_every_source_delivered(tmp_path / "work", "2026-11-22")
    for step in (pipeline.train_als, pipeline.train_ctr_and_build_audiences):
        started = time.monotonic()
        with pytest.raises(SparkJobError, match="Spark master spark://nowhere.invalid:7077 is not reachable"):
            step("2026-11-22", params)
        assert time.monotonic() - started < 30, step.__name__


def test_spark_properties_reach_the_job_but_no_log_line_or_process_list(tmp_path, monkeypatch, capsys):
    """--conf values (an S3 secret, say) go through a private properties file: the job sees them, the task log and
    `ps` (the command line) do not."""
    from precision_marketing.training import spark_submit

    (tmp_path / "probe.py").write_text(
        "import hashlib\n"
        "from pyspark.sql import SparkSession\n"
        "conf = SparkSession.builder.getOrCreate().sparkContext.getConf()\n"
        "print('probe plain:', conf.get('spark.pm.probe.plain'))\n"
        "print('probe secret sha:', hashlib.sha256(conf.get('spark.hadoop.fs.s3a.secret.key').encode()).hexdigest())\n"
    )
    monkeypatch.setattr(spark_submit, "SPARK_JOBS_DIR", tmp_path)
    secret = "hunter2-do-not-log"
    config = {**SMALL_SPARK, "conf": {"spark.pm.probe.plain": "a=b:c", "spark.hadoop.fs.s3a.secret.key": secret}}
    hook = spark_submit.spark_submit_hook("probe", [], config, tmp_path / "p.properties")
    command = hook._build_spark_submit_command("probe.py")
    assert not any(secret in part or "a=b:c" in part for part in command)
    assert command[command.index("--master") + 1] == "local[1]" and "--load-spark-defaults" in command
    run_spark_job("probe", [], config)
    out = capsys.readouterr().out  # the hook logs spark-submit's output: the task log in Airflow
    assert secret not in out
    assert '"spark.hadoop.fs.s3a.secret.key": "***"' in out and "probe plain: a=b:c" in out
    assert f"probe secret sha: {hashlib.sha256(secret.encode()).hexdigest()}" in out


def test_the_python_side_and_the_jars_are_one_spark_release(spark):
    """The Spark provider needs pyspark-client, which ships pyspark's Python files again: both are pinned to one
    release, so whichever pip installs last, the Python API matches the jars the JVM runs."""
    from importlib.metadata import version
    from pathlib import Path

    import pyspark

    jars = Path(pyspark.__file__).parent / "jars"
    [core] = jars.glob("spark-core_*.jar")
    assert version("pyspark") == version("pyspark-client") == pyspark.__version__ == spark.version
    assert core.stem.rsplit("-", 1)[1] == spark.version


def test_killing_the_task_stops_its_spark_job(tmp_path, monkeypatch):
    """Airflow calls the task's on_kill when it times out (spark.timeout_minutes) or is marked failed:
    SparkStepOperator's stops spark-submit through the provider's hook, and the job's Python driver, which talks to
    that JVM, ends with it."""
    import subprocess
    import threading

    from precision_marketing.orchestration.operators import SparkStepOperator
    from precision_marketing.training import spark_submit

    (tmp_path / "forever.py").write_text(
        "import time\n"
        "from pyspark.sql import SparkSession\n"
        "spark = SparkSession.builder.getOrCreate()\n"
        "print('forever started', flush=True)\n"
        "while True:\n"
        "    spark.range(1).count()\n"
        "    time.sleep(0.5)\n"
    )
    monkeypatch.setattr(spark_submit, "SPARK_JOBS_DIR", tmp_path)
    failures = []

    def run():
        try:
            run_spark_job("forever", [], SMALL_SPARK)
        except SparkJobError as exc:
            failures.append(exc)

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 120
    while not (spark_submit.RUNNING and "forever started" in spark_submit.RUNNING[0].output):
        assert thread.is_alive() and time.monotonic() < deadline, "the job did not start"
        time.sleep(0.5)
    hook = spark_submit.RUNNING[0]
    SparkStepOperator(task_id="train_als", python_callable=run).on_kill()
    thread.join(60)
    assert not thread.is_alive() and failures and "Spark job forever failed" in str(failures[0])
    assert hook._submit_sp.poll() is not None
    deadline = time.monotonic() + 30
    while subprocess.run(["pgrep", "-f", str(tmp_path / "forever.py")], capture_output=True).returncode == 0:
        assert time.monotonic() < deadline, "a process of the job outlived the kill"
        time.sleep(1)
