"""Run a job of spark_jobs/ through the Spark provider's SparkSubmitHook, with master, memory and conf from the
configuration (and the Airflow connection spark.connection over it).

A separate JVM per job keeps the Airflow worker small, and the same command line works against
local[*] or a cluster master (spark://, yarn, k8s://) unchanged. The hook logs spark-submit's output into
the task log, keeps the cluster's application or driver id and kills the job when the task is killed
(SparkStepOperator.on_kill)."""

from __future__ import annotations

import json
import os
import re
import socket
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from airflow.providers.apache.spark.hooks.spark_submit import SparkSubmitHook
from airflow.providers.common.compat.sdk import AirflowException

from precision_marketing.config import REPO_ROOT

SPARK_JOBS_DIR = REPO_ROOT / "spark_jobs"
# the configuration sections each job reads from its --config (spark_jobs/common.py: job_settings)
JOB_SECTIONS = {"als_recommendations": ("als",), "ctr_audiences": ("ctr", "activation")}


class SparkJobError(RuntimeError):
    pass


# a conf whose key says it holds a secret: its value never reaches a log line or the process list
_SECRET_KEY = re.compile(r"secret|password|passwd|token|credential|access\.key|\bkey$", re.I)


def spark_conf(spark_config: Mapping) -> dict[str, str]:
    """The Spark properties of a job: the platform's defaults, then config spark.conf."""
    return {
        "spark.sql.shuffle.partitions": str(spark_config["shuffle_partitions"]),
        "spark.sql.session.timeZone": "UTC",
        "spark.ui.showConsoleProgress": "false",
        "spark.log.level": "WARN",  # INFO drowns the task log; the jobs print their own progress
        "spark.serializer": "org.apache.spark.serializer.KryoSerializer",  # ALS shuffles factor blocks
        "spark.cleaner.referenceTracking.cleanCheckpoints": "true",
        **{k: str(v) for k, v in (spark_config.get("conf") or {}).items()},
    }


def redacted_conf(conf: Mapping[str, str]) -> dict[str, str]:
    return {key: "***" if _SECRET_KEY.search(key) else value for key, value in conf.items()}


def write_properties(conf: Mapping[str, str], directory: Path) -> Path:
    """The properties as a file only its owner can read (Java properties syntax: key and value escaped)."""
    path = Path(directory) / "spark.properties"
    escape = str.maketrans({"\\": "\\\\", "\n": "\\n", "\r": "\\r", "=": "\\=", ":": "\\:"})
    lines = [f"{key.translate(escape)}={value.translate(escape)}" for key, value in conf.items()]
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as handle:
        handle.write("\n".join(lines) + "\n")
    return path


def write_job_settings(config: Mapping, job: str, target: Path) -> Path:
    """The job's sections of the checked configuration as the JSON its --config reads: one source for every
    setting (config/platform.yaml + PM__ variables + run params, validated), no flag list kept by hand."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps({section: config[section] for section in JOB_SECTIONS[job]}, indent=2, default=str))
    return target


def spark_env() -> dict[str, str]:
    """spark-submit finds its jars and Python through these; without them it needs the venv on PATH."""
    import pyspark

    return {
        "SPARK_HOME": os.environ.get("SPARK_HOME", str(Path(pyspark.__file__).parent)),
        "PYSPARK_PYTHON": sys.executable,
        "PYSPARK_DRIVER_PYTHON": sys.executable,
    }


# a line that names an exception: "java.net.UnknownHostException: nowhere", "pyspark.errors...AnalysisException: ..."
_EXCEPTION_LINE = re.compile(r"^\s*(?:Caused by: )?((?:[\w$]+\.)*[\w$]*(?:Exception|Error)\b:?.*)$")
# wrappers whose own message says less than what they wrap
_WRAPPERS = ("py4j.protocol.Py4JJavaError", "org.apache.spark.SparkException: Job aborted")


def root_cause(output: str) -> str | None:
    """The first exception a failed job printed (the cause; later ones are its consequences, e.g. "Cannot call
    methods on a stopped SparkContext"), skipping logger prefixes and generic wrappers."""
    for line in output.splitlines():
        text = re.sub(r"^\S+ \S+ (?:ERROR|WARN|INFO) \S+: ", "", line.strip())  # log4j "date time LEVEL Logger:"
        match = _EXCEPTION_LINE.match(text)
        if match and not match.group(1).startswith(_WRAPPERS) and ":" in match.group(1):
            return match.group(1).strip()
    return None


def check_master(master: str, timeout: float = 10.0) -> None:
    """Fail in seconds, naming the master, when a spark:// master cannot be reached (instead of a job that
    retries for minutes and ends in a stopped SparkContext)."""
    if not master.startswith("spark://"):
        return  # local[*] needs no server; yarn / k8s resolve through their own configuration
    for address in master[len("spark://") :].split(","):
        host, _, port = address.partition(":")
        try:
            with socket.create_connection((host, int(port or 7077)), timeout=timeout):
                pass
        except OSError as exc:
            raise SparkJobError(
                f"Spark master {master} is not reachable ({host}:{port or 7077}: {exc}). "
                "Check the Airflow connection spark_default, spark.master (PM__SPARK__MASTER) or the run's spark_master param."
            ) from None


class PlatformSparkSubmitHook(SparkSubmitHook):
    """The provider's hook with the master the platform resolved (run param > Airflow connection > config): the
    hook itself reads the master from a connection only. The connection's extra (queue, namespace, principal,
    keytab) still applies. It keeps spark-submit's output for the failure's root cause."""

    def __init__(self, *, master: str, extra: Mapping, **kwargs):
        self._master, self._extra = master, dict(extra)
        self.output: list[str] = []
        super().__init__(**kwargs)

    def get_connection(self, conn_id):
        from airflow.sdk import Connection

        return Connection(conn_id=conn_id, conn_type="spark", host=self._master, extra=json.dumps(self._extra))

    def _build_spark_common_args(self) -> list[str]:
        return [*super()._build_spark_common_args(), "--load-spark-defaults"]

    def _process_spark_submit_log(self, itr) -> None:
        def kept(lines):
            for line in lines:
                self.output.append(line.rstrip("\n"))
                yield line

        super()._process_spark_submit_log(kept(itr))


def spark_submit_hook(
    job: str, job_args: Sequence[str], spark_config: Mapping, properties_file: Path
) -> PlatformSparkSubmitHook:
    """The hook for one job, with its properties in `properties_file` (written by write_properties): no --conf on
    the command line, so no value shows in `ps` or the task log; conf/spark-defaults.conf still applies."""
    from precision_marketing.config.connections import airflow_connection

    conn_id = spark_config.get("connection") or "spark_default"
    defined = airflow_connection(spark_config.get("connection"))
    extra = defined.extra_dejson if defined is not None else {}
    if extra.get("deploy-mode") == "cluster":
        raise SparkJobError(
            f"Airflow connection {conn_id!r} sets deploy-mode cluster: the jobs read and write the task's work "
            "dir, so their driver runs beside the task (client mode). Remove deploy-mode from its extra."
        )
    master = spark_config["master"]
    local = master.startswith(("local", "spark://"))  # yarn and k8s bring their own Python and Spark home
    return PlatformSparkSubmitHook(
        master=master,
        extra=extra,
        conn_id=conn_id,
        driver_memory=str(spark_config["driver_memory"]),
        properties_file=str(properties_file),
        spark_binary=str(Path(sys.executable).with_name("spark-submit")),
        env_vars=spark_env() if local else None,
        application_args=[str(arg) for arg in job_args],
        name=f"pm-{job}",
    )


# the hooks of the jobs running in this process, for SparkStepOperator.on_kill
RUNNING: list = []


def kill_running_jobs() -> None:
    """Stop the spark-submit (and the driver or application on a cluster) of every job this process runs."""
    for hook in list(RUNNING):
        hook.on_kill()


# spark.driver_memory auto: heap bytes per byte of the night's exported features (Parquet), above a 1 GB floor.
# At the demo's size (13 MB of features) the CTR job ran in 81 s with a 1 GB heap, its process tree at 2.1 GB,
# against 85 s and 4.6 GB with the former fixed 4 GB: the heap, not the data, set the memory.
HEAP_PER_FEATURE_BYTE = 16
HEAP_FLOOR_MB = 1024


def _mb(size: str) -> int:
    """A JVM size with its unit (spark.driver_memory_max requires one) in MiB."""
    return round(int(size[:-1]) * {"k": 1 / 1024, "m": 1, "g": 1024, "t": 1024 * 1024}[size[-1].lower()])


def feature_bytes(job_args: Sequence[str]) -> int | None:
    """The size of the night's exported features a job reads (its --features-dir, partitions ds=<its --ds>)."""
    args = [str(arg) for arg in job_args]
    if "--features-dir" not in args or "--ds" not in args:
        return None
    features, ds = Path(args[args.index("--features-dir") + 1]), args[args.index("--ds") + 1]
    return sum(f.stat().st_size for f in features.glob(f"*/ds={ds}/**/*") if f.is_file())


def driver_memory(spark_config: Mapping, job_args: Sequence[str]) -> str:
    """spark.driver_memory, or with `auto` a heap sized from the data the job reads: 1 GB plus
    HEAP_PER_FEATURE_BYTE per byte of the night's features, at most spark.driver_memory_max."""
    chosen = str(spark_config["driver_memory"])
    if chosen != "auto":
        return chosen
    data = feature_bytes(job_args)
    cap = _mb(str(spark_config["driver_memory_max"]))
    if data is None:  # a job run by hand without the features: the cap, as a fixed setting would
        return f"{cap}m"
    return f"{min(cap, HEAP_FLOOR_MB + -(-data * HEAP_PER_FEATURE_BYTE // 2**20))}m"


def run_spark_job(job: str, job_args: Sequence[str], spark_config: Mapping) -> None:
    check_master(spark_config["master"])
    conf = spark_conf(spark_config)
    spark_config = {**spark_config, "driver_memory": driver_memory(spark_config, job_args)}
    with tempfile.TemporaryDirectory(prefix="pm-spark-") as private:  # mode 0700: the properties stay private
        hook = spark_submit_hook(job, job_args, spark_config, write_properties(conf, Path(private)))
        hook.log.info(
            "spark driver memory %s; properties: %s", spark_config["driver_memory"], json.dumps(redacted_conf(conf))
        )
        RUNNING.append(hook)
        try:
            hook.submit(str(SPARK_JOBS_DIR / f"{job}.py"))
        except AirflowException as exc:
            if hook._submit_sp is None:
                raise SparkJobError(f"Spark job {job} was not submitted: {exc}") from None
            output = "\n".join(hook.output)
            tail = "\n".join(output.strip().splitlines()[-25:])
            cause = root_cause(output)
            raise SparkJobError(
                f"Spark job {job} failed (exit {hook._submit_sp.returncode})"
                + (f": {cause}" if cause else "")
                + f". Last output lines:\n{tail}"
            ) from None
        finally:
            RUNNING.remove(hook)
