"""CTR benchmark: the nightly CTR model against its ceiling, and Spark MLlib LR against scikit-learn.

    .venv/bin/python bench/ctr_bench.py --impressions 2000000            # full size (make bench-ctr)
    .venv/bin/python bench/ctr_bench.py --impressions 200000             # a quick check

1. prepare: the synthetic generator at the demo's size (20,000 users, 2,000 items, 30 days) with the impression
   rate scaled to about --impressions clean impressions, writing each impression's true click probability
   to a side file the pipeline never reads; the ingest step's landing and the real dbt models up to ctr_train /
   ctr_score (DuckDB); export.
2. spark (own process, under /usr/bin/time -v): the nightly job's own holdout evaluation
   (spark_jobs/ctr_audiences.evaluate_holdout: reg_param choice, calibration) with each engine, Spark MLlib
   and in-process scikit-learn (ctr.engine) on the same rows -> model AUC and seconds; the AUC of the
   true probability on the same holdout impressions (the ceiling); then the job's feature pipeline fit on
   the train days and Spark LR alone on those features (timed), its holdout predictions and the feature
   matrices exported for step 3.
3. sklearn (own process, under /usr/bin/time -v): LogisticRegression (lbfgs) on the same sparse matrix with
   the same objective (C = 1 / (n_train * reg_param), intercept unpenalised), timed.
Ratios are reported side by side from one run; peak memory is /usr/bin/time's maximum resident set size
(for the Spark step, the Python driver; the JVM's own peak, VmHWM, is read from /proc). Run it alone: benchmarks in parallel slow each other.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DS = "2026-11-22"
DEFAULT_WORK = REPO / ".state" / "bench" / "ctr"


def timed_subprocess(args: list[str], log: Path) -> tuple[int, float | None]:
    """Run `args` under /usr/bin/time -v; (exit code, peak RSS in MB)."""
    command = (["/usr/bin/time", "-v"] if Path("/usr/bin/time").exists() else []) + args
    with log.open("w") as handle:
        code = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT).returncode
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", log.read_text())
    return code, (int(match.group(1)) / 1024 if match else None)


# ------------------------------------------------------------------------------------------- 1. prepare
def prepare(work: Path, *, impressions: int, users: int, items: int, days: int, seed: int) -> dict:
    import duckdb

    from precision_marketing.config import load_config
    from precision_marketing.datagen import DAILY_IMPRESSIONS_PER_USER_PER_CAMPAIGN, generate
    from precision_marketing.ingest.land import land_window, landed_dir
    from precision_marketing.ingest.mapping import mapping_from_config
    from precision_marketing.orchestration.dbt import dbt_env, dbt_executable
    from precision_marketing.pipeline import dbt_vars as pipeline_dbt_vars

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    size = dict(users=users, items=items, days=days, seed=seed)
    probe = generate(work / "probe", DS, dirty_rate=0.0, **size)  # impressions scale linearly with the rate
    rate = DAILY_IMPRESSIONS_PER_USER_PER_CAMPAIGN * impressions / max(1, probe["rows"]["impressions"])
    shutil.rmtree(work / "probe")
    started = time.perf_counter()
    summary = generate(work / "raw", DS, impression_rate=rate, truth_root=work / "truth", **size)
    generate_seconds = time.perf_counter() - started

    config = load_config({"work_dir": str(work), "dbt": {"history_days": days}})
    project = Path(config["dbt"]["project_dir"])
    started = time.perf_counter()
    # the check_raw step's landing, then the dbt models up to the CTR sets with the run's own vars
    land_window(work / "raw", landed_dir(config), DS, days, mapping_from_config(config))
    dbt_vars = json.dumps(pipeline_dbt_vars(config, DS))
    subprocess.run(
        [
            str(dbt_executable()),
            "run",
            "--project-dir",
            str(project),
            "--profiles-dir",
            str(project),
            "--target",
            config["dbt"]["target"],
            "--target-path",
            str(work / "dbt_target"),
            "--log-path",
            str(work / "dbt_logs"),
            "--select",
            "+ctr_train",
            "+ctr_score",
            "--vars",
            dbt_vars,
            "--quiet",
        ],
        check=True,
        env={**os.environ, **dbt_env(config)},
        cwd=project,
    )
    dbt_seconds = time.perf_counter() - started
    con = duckdb.connect(str(work / "warehouse.duckdb"), read_only=True)
    counts = {}
    for table in ("ctr_train", "ctr_score"):
        target = work / "features" / table / f"ds={DS}" / f"{table}.parquet"
        target.parent.mkdir(parents=True)
        counts[table] = con.execute(f"COPY (SELECT * FROM marts.{table}) TO '{target}' (FORMAT parquet)").fetchone()[0]
    con.close()
    return {
        "impression_rate": rate,
        "raw_impressions": summary["rows"]["impressions"],
        "raw_events": summary["rows"]["events"],
        "rows": counts,
        "generate_seconds": generate_seconds,
        "dbt_seconds": dbt_seconds,
    }


# --------------------------------------------------------------------------------------------- 2. spark
def spark_step(work: Path, *, master: str, driver_memory: str) -> dict:
    import datetime as dt

    import numpy as np
    from pyspark.ml import Pipeline
    from pyspark.ml.classification import LogisticRegression
    from pyspark.ml.functions import vector_to_array
    from pyspark.ml.linalg import DenseVector
    from pyspark.sql import SparkSession
    from pyspark.sql import functions as F
    from sklearn.metrics import roc_auc_score

    from precision_marketing.config import load_config
    from spark_jobs import ctr_audiences as job

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)  # the export UDF runs in Python workers: this venv's
    spark = (
        SparkSession.builder.master(master)
        .appName("ctr-bench")
        .config("spark.driver.memory", driver_memory)
        .config("spark.sql.shuffle.partitions", "8")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("ERROR")
    config = job.CtrConfig.from_settings(load_config()["ctr"])
    ds = dt.date.fromisoformat(DS)
    ctr_train = spark.read.parquet(str(work / "features" / "ctr_train" / f"ds={DS}")).cache()
    result: dict = {"n_window": ctr_train.count()}

    # the nightly job's own evaluation, and the ceiling on the same holdout impressions
    started = time.perf_counter()
    evaluation = job.evaluate_holdout(ctr_train, config, ds=ds)
    result["evaluate_seconds"] = time.perf_counter() - started
    result["model"] = {
        k: evaluation[k] for k in ("auc", "baseline_auc", "log_loss", "brier", "ece", "reg_param", "n_train", "n_test")
    }
    result["model"]["calibration"] = evaluation["calibration"]["method"]
    # the same evaluation with the in-process engine (ctr.engine: sklearn), on one pandas copy of the same rows
    from spark_jobs.ctr_inprocess import InProcessEngine

    spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
    started = time.perf_counter()
    local_train = ctr_train.select(*job.TRAIN_COLS).toPandas()
    result["inprocess_copy_seconds"] = time.perf_counter() - started
    started = time.perf_counter()
    inprocess = job.evaluate_holdout(local_train, config, ds=ds, engine=InProcessEngine())
    result["inprocess_evaluate_seconds"] = time.perf_counter() - started
    result["inprocess_model"] = {
        k: inprocess[k] for k in ("auc", "baseline_auc", "log_loss", "brier", "ece", "reg_param", "n_train", "n_test")
    }
    result["inprocess_model"]["calibration"] = inprocess["calibration"]["method"]
    del local_train
    cutoff = ds - dt.timedelta(days=config.holdout_days)
    truth = spark.read.csv(str(work / "truth" / "impressions"), header=True, inferSchema=True)
    test = ctr_train.filter(F.col(job.DATE_COL) > F.lit(cutoff))
    with_truth = test.join(truth.withColumnRenamed("p_click", "true_p"), "impression_id", "inner")
    result["n_test_with_truth"] = with_truth.count()
    result["ceiling_auc"] = job.area_under_roc(with_truth, score_col="true_p")

    # Spark LR alone, on the job's features, for the side-by-side with scikit-learn
    reg = evaluation["reg_param"]
    train = job.add_model_inputs(ctr_train.filter(F.col(job.DATE_COL) <= F.lit(cutoff)))
    stages = job.build_pipeline(config, reg).getStages()
    started = time.perf_counter()
    featurizer = Pipeline(stages=stages[:-1]).fit(train)
    train_features = featurizer.transform(train).select("features", job.LABEL_COL).cache()
    n_train = train_features.count()
    result["feature_pipeline_seconds"] = time.perf_counter() - started
    lr: LogisticRegression = stages[-1]
    started = time.perf_counter()
    model = lr.fit(train_features)
    result["spark_lr_fit_seconds"] = time.perf_counter() - started
    result["spark_lr_iterations"] = model.summary.totalIterations
    test_features = featurizer.transform(job.add_model_inputs(test)).select("features", job.LABEL_COL)
    predictions = model.transform(test_features).select(vector_to_array("probability")[1].alias("p"), job.LABEL_COL)
    local = predictions.toPandas()  # the holdout scores: one double and one label per row
    result["spark_lr_auc"] = float(roc_auc_score(local[job.LABEL_COL], local["p"]))
    result.update(
        n_train=n_train,
        n_test=len(local),
        reg_param=reg,
        max_iter=config.max_iter,
        n_features=int(train_features.first()["features"].size),
    )

    # the same matrices for scikit-learn (indices/values per row; a bench-only Python UDF)
    @F.udf("struct<indices:array<int>,values:array<double>>")
    def sparse_parts(vector):
        if isinstance(vector, DenseVector):
            nonzero = np.flatnonzero(vector.toArray())
            return nonzero.tolist(), vector.toArray()[nonzero].tolist()
        return vector.indices.tolist(), vector.values.tolist()

    for name, frame in (("train", train_features), ("test", test_features)):
        (
            frame.select(sparse_parts("features").alias("x"), job.LABEL_COL)
            .select("x.indices", "x.values", job.LABEL_COL)
            .write.mode("overwrite")
            .parquet(str(work / "matrices" / name))
        )
    result["jvm_peak_rss_mb"] = jvm_peak_rss_mb(spark)
    spark.stop()
    return result


def jvm_peak_rss_mb(spark) -> float | None:
    """The driver JVM's peak resident set (VmHWM): /usr/bin/time sees only the Python process that started it."""
    try:
        pid = spark.sparkContext._jvm.java.lang.ProcessHandle.current().pid()
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except Exception:  # noqa: BLE001 - a figure for the report, not a reason to fail the bench
        return None
    return None


# ------------------------------------------------------------------------------------------- 3. sklearn
def sklearn_step(work: Path, *, reg_param: float, n_features: int) -> dict:
    import numpy as np
    import pyarrow.parquet as pq
    import scipy.sparse as sp
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score

    def load(name):
        table = pq.read_table(work / "matrices" / name)
        indices, values = table["indices"].combine_chunks(), table["values"].combine_chunks()
        matrix = sp.csr_matrix(
            (values.flatten().to_numpy(), indices.flatten().to_numpy(), indices.offsets.to_numpy()),
            shape=(table.num_rows, n_features),
        )
        return matrix, table["label"].to_numpy()

    x_train, y_train = load("train")
    x_test, y_test = load("test")
    # Spark minimises mean(log loss) + reg/2 ||w||^2 (intercept free); sklearn C * sum(log loss) + 1/2 ||w||^2
    model = LogisticRegression(C=1.0 / (len(y_train) * reg_param), solver="lbfgs", max_iter=1000, tol=1e-6)
    started = time.perf_counter()
    model.fit(x_train, y_train)
    fit_seconds = time.perf_counter() - started
    return {
        "sklearn_fit_seconds": fit_seconds,
        "sklearn_iterations": int(np.max(model.n_iter_)),
        "sklearn_auc": float(roc_auc_score(y_test, model.predict_proba(x_test)[:, 1])),
        "n_train": len(y_train),
        "n_test": len(y_test),
    }


# ---------------------------------------------------------------------------------------------- driver
def machine() -> str:
    try:
        import numpy  # noqa: F401 - load numpy's BLAS so threadpoolctl can name it
        import threadpoolctl

        blas = ", ".join(sorted({f"{i['internal_api']} {i.get('version')}" for i in threadpoolctl.threadpool_info()}))
    except Exception:  # noqa: BLE001 - only for the description
        blas = "unknown"
    return f"{os.cpu_count()} cores, {platform.python_version()}, numpy BLAS: {blas}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--impressions", type=int, default=2_000_000, help="target clean impressions in ctr_train")
    parser.add_argument("--users", type=int, default=20_000)
    parser.add_argument("--items", type=int, default=2_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--work", type=Path, default=DEFAULT_WORK)
    parser.add_argument("--master", default="local[*]")
    parser.add_argument("--driver-memory", default="8g")
    parser.add_argument("--skip-prepare", action="store_true", help="reuse the data of the previous run in --work")
    parser.add_argument("--step", choices=("spark", "sklearn"), help=argparse.SUPPRESS)  # internal
    parser.add_argument("--reg-param", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--n-features", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    work = args.work.resolve()

    if args.step == "spark":
        (work / "spark.json").write_text(
            json.dumps(spark_step(work, master=args.master, driver_memory=args.driver_memory))
        )
        return 0
    if args.step == "sklearn":
        (work / "sklearn.json").write_text(
            json.dumps(sklearn_step(work, reg_param=args.reg_param, n_features=args.n_features))
        )
        return 0

    started = time.perf_counter()
    prepared = (
        json.loads((work / "prepare.json").read_text())
        if args.skip_prepare
        else prepare(
            work, impressions=args.impressions, users=args.users, items=args.items, days=args.days, seed=args.seed
        )
    )
    (work / "prepare.json").write_text(json.dumps(prepared))
    me = [sys.executable, str(Path(__file__).resolve()), "--work", str(work)]
    code, spark_mb = timed_subprocess(
        [*me, "--step", "spark", "--master", args.master, "--driver-memory", args.driver_memory], work / "spark.log"
    )
    if code:
        print(f"spark step failed: see {work / 'spark.log'}", file=sys.stderr)
        return code
    spark = json.loads((work / "spark.json").read_text())
    code, sklearn_mb = timed_subprocess(
        [*me, "--step", "sklearn", "--reg-param", str(spark["reg_param"]), "--n-features", str(spark["n_features"])],
        work / "sklearn.log",
    )
    if code:
        print(f"sklearn step failed: see {work / 'sklearn.log'}", file=sys.stderr)
        return code
    sklearn = json.loads((work / "sklearn.json").read_text())

    model_auc, ceiling = spark["model"]["auc"], spark["ceiling_auc"]
    results = {
        "machine": machine(),
        "data": prepared,
        "spark": spark,
        "sklearn": sklearn,
        "peak_rss_mb": {"spark_step": spark_mb, "sklearn_step": sklearn_mb},
        "share_of_ceiling_lift": (model_auc - 0.5) / (ceiling - 0.5) if model_auc and ceiling > 0.5 else None,
        "auc_difference_spark_minus_sklearn": spark["spark_lr_auc"] - sklearn["sklearn_auc"],
        "fit_time_ratio_spark_over_sklearn": spark["spark_lr_fit_seconds"] / sklearn["sklearn_fit_seconds"],
        "wall_seconds": time.perf_counter() - started,
    }
    (work / "results.json").write_text(json.dumps(results, indent=2))
    m = spark["model"]
    print(f"""
CTR benchmark ({results['machine']})
data: {prepared['rows']['ctr_train']:,} ctr_train impressions ({prepared['raw_events']:,} raw events), train {spark['n_train']:,} / holdout {spark['n_test']:,} impressions, {spark['n_features']:,} features

| what | figure |
|---|---|
| nightly model holdout AUC (reg_param {m['reg_param']}, calibration {m['calibration']}) | {model_auc:.4f} |
| ceiling: AUC of the true click probability, same holdout | {ceiling:.4f} |
| share of the ceiling's lift over 0.5 (goal >= 0.95) | {results['share_of_ceiling_lift']:.3f} |
| placement-prior baseline AUC | {m['baseline_auc']:.4f} |
| holdout Brier / ECE (calibrated) | {m['brier']:.5f} / {m['ece']:.5f} |
| Spark LR AUC / scikit-learn AUC, same features and objective | {spark['spark_lr_auc']:.4f} / {sklearn['sklearn_auc']:.4f} (diff {results['auc_difference_spark_minus_sklearn']:+.4f}) |
| LR fit: Spark {spark['spark_lr_iterations']} it. / scikit-learn lbfgs {sklearn['sklearn_iterations']} it. | {spark['spark_lr_fit_seconds']:.1f} s / {sklearn['sklearn_fit_seconds']:.1f} s (ratio {results['fit_time_ratio_spark_over_sklearn']:.2f}) |
| Spark feature pipeline (fit + materialise train features) | {spark['feature_pipeline_seconds']:.1f} s |
| nightly evaluation (reg choice, calibrators, reliability): Spark MLlib engine | {spark['evaluate_seconds']:.1f} s, AUC {m['auc']:.4f}, calibration {m['calibration']} |
| the same, in-process engine (scikit-learn; + {spark['inprocess_copy_seconds']:.1f} s to copy the rows) | {spark['inprocess_evaluate_seconds']:.1f} s, AUC {spark['inprocess_model']['auc']:.4f}, calibration {spark['inprocess_model']['calibration']} (MLlib / in-process = {spark['evaluate_seconds'] / spark['inprocess_evaluate_seconds']:.1f}x) |
| peak RSS: Spark driver JVM + its Python / scikit-learn process | {spark.get('jvm_peak_rss_mb') or 0:.0f} MB + {spark_mb or 0:.0f} MB / {sklearn_mb or 0:.0f} MB |
| data prep: generate / dbt run | {prepared['generate_seconds']:.1f} s / {prepared['dbt_seconds']:.1f} s |
results: {work / 'results.json'}""")
    return 0


if __name__ == "__main__":
    sys.exit(main())
