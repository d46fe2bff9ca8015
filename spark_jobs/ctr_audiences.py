"""Campaign audiences ranked by predicted click-through (Spark MLlib logistic regression).

Reads the dbt features `ctr_train`, `ctr_score` and `campaigns` from `<features-dir>/<table>/ds=<ds>/`
and the user segments (`--segments`: Parquet file or directory with user_id, segment), then:
1. evaluates on a time-based holdout (impression_date <= ds - holdout_days trains, later days test):
   AUC and log loss of the model vs a baseline scoring each impression with its placement's train CTR;
2. refits on the whole window, scores every ctr_score row (p_click) and, per campaign, ranks users by
   p_click (ties: user_id), assigns deciles over all its scored users, keeps rank <= audience_size,
   adds the segment ('unknown' without one) and writes `<output-dir>/audiences/` (overwritten);
3. writes metrics.json (default `<output-dir>/metrics.json`).
Features: one-hot placement and channel, standardised affinity, recency_days, log1p(frequency), log1p(monetary).

Run:
  spark-submit --master 'local[*]' --driver-memory 4g spark_jobs/ctr_audiences.py \
      --features-dir .state/work/features --ds 2026-11-22 \
      --segments .state/work/models/segments/ds=2026-11-22/user_segments.parquet \
      --output-dir .state/work/models/ctr/ds=2026-11-22
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
import time
from pathlib import Path

# spark-submit runs this file as a script (sys.path[0] = spark_jobs/), tests import it as
# spark_jobs.ctr_audiences: put the repository root on the path so both find spark_jobs.common.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.ml import Pipeline, PipelineModel  # noqa: E402
from pyspark.ml.classification import LogisticRegression  # noqa: E402
from pyspark.ml.evaluation import BinaryClassificationEvaluator  # noqa: E402
from pyspark.ml.feature import OneHotEncoder, StandardScaler, StringIndexer, VectorAssembler  # noqa: E402
from pyspark.ml.functions import vector_to_array  # noqa: E402
from pyspark.sql import DataFrame, SparkSession, Window  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from spark_jobs.common import (  # noqa: E402
    check_columns,
    feature_table_path,
    finite_or_none,
    get_spark,
    iso_date,
    read_feature_table,
    read_parquet_table,
    run_as_script,
    write_metrics,
)

USER_COL = "user_id"
CAMPAIGN_COL = "campaign_id"
DATE_COL = "impression_date"
CLICK_COL = "clicked"
LABEL_COL = "label"
P_CLICK_COL = "p_click"
RANK_COL = "rank"
DECILE_COL = "decile"
SEGMENT_COL = "segment"
EMAIL_COL = "email_sha256"
AUDIENCE_SIZE_COL = "audience_size"
UNKNOWN_SEGMENT = "unknown"
CATEGORICAL_COLS = ("placement", "channel")
RAW_NUMERIC_COLS = ("affinity", "recency_days", "frequency", "monetary")
MODEL_NUMERIC_COLS = ("affinity", "recency_days", "log_frequency", "log_monetary")
AUDIENCE_COLS = (CAMPAIGN_COL, USER_COL, RANK_COL, P_CLICK_COL, DECILE_COL, SEGMENT_COL, EMAIL_COL, "channel")
TRAIN_COLS = (USER_COL, CAMPAIGN_COL, DATE_COL, *CATEGORICAL_COLS, *RAW_NUMERIC_COLS, CLICK_COL)
SCORE_COLS = (USER_COL, CAMPAIGN_COL, *CATEGORICAL_COLS, *RAW_NUMERIC_COLS, EMAIL_COL)
LOG_LOSS_EPSILON = 1e-15


@dataclasses.dataclass(frozen=True)
class CtrConfig:
    holdout_days: int = 7
    reg_param: float = 0.01
    elastic_net: float = 0.0
    max_iter: int = 50
    seed: int = 42  # LBFGS logistic regression is deterministic; kept for a stable CLI and recorded


# ---------------------------------------------------------------------------------------------- transforms
def add_model_inputs(frame: DataFrame) -> DataFrame:
    """Log-scale the heavy-tailed counts; add the double label when the click column is present."""
    frame = frame.withColumn("log_frequency", F.log1p("frequency")).withColumn("log_monetary", F.log1p("monetary"))
    if CLICK_COL in frame.columns:
        frame = frame.withColumn(LABEL_COL, F.col(CLICK_COL).cast("double"))
    return frame


def build_pipeline(config: CtrConfig) -> Pipeline:
    """one-hot(placement, channel) + standardised numerics -> logistic regression.
    Unseen categories at scoring time go to an extra 'keep' slot instead of failing."""
    indexed = [f"{name}_index" for name in CATEGORICAL_COLS]
    one_hot = [f"{name}_one_hot" for name in CATEGORICAL_COLS]
    return Pipeline(
        stages=[
            StringIndexer(inputCols=list(CATEGORICAL_COLS), outputCols=indexed, handleInvalid="keep"),
            OneHotEncoder(inputCols=indexed, outputCols=one_hot, handleInvalid="keep"),
            VectorAssembler(inputCols=list(MODEL_NUMERIC_COLS), outputCol="numeric_raw"),
            StandardScaler(inputCol="numeric_raw", outputCol="numeric_scaled", withMean=True, withStd=True),
            VectorAssembler(inputCols=["numeric_scaled", *one_hot], outputCol="features"),
            LogisticRegression(
                featuresCol="features",
                labelCol=LABEL_COL,
                regParam=config.reg_param,
                elasticNetParam=config.elastic_net,
                maxIter=config.max_iter,
            ),
        ]
    )


def fit_ctr_model(train: DataFrame, config: CtrConfig) -> PipelineModel:
    return build_pipeline(config).fit(add_model_inputs(train))


def predict_p_click(model: PipelineModel, frame: DataFrame) -> DataFrame:
    """`frame` with p_click = P(click); the pipeline's intermediate columns are dropped."""
    scored = model.transform(add_model_inputs(frame))
    return scored.select(*frame.columns, vector_to_array("probability")[1].alias(P_CLICK_COL))


def placement_ctr_baseline(train: DataFrame, test: DataFrame, *, score_col: str = "baseline_score") -> DataFrame:
    """`test` scored with its placement's train CTR (the overall train CTR for placements unseen in train)."""
    overall_ctr = train.agg(F.avg(CLICK_COL)).first()[0]
    placement_ctr = train.groupBy("placement").agg(F.avg(CLICK_COL).alias("_placement_ctr"))
    return test.join(F.broadcast(placement_ctr), "placement", "left").withColumn(
        score_col, F.coalesce(F.col("_placement_ctr"), F.lit(overall_ctr)).cast("double")
    ).drop("_placement_ctr")


def area_under_roc(scored: DataFrame, *, score_col: str, label_col: str = CLICK_COL) -> float:
    evaluator = BinaryClassificationEvaluator(rawPredictionCol=score_col, labelCol=label_col, metricName="areaUnderROC")
    return evaluator.evaluate(scored.select(F.col(score_col).cast("double"), F.col(label_col).cast("double")))


def log_loss(scored: DataFrame, *, p_col: str = P_CLICK_COL, label_col: str = CLICK_COL) -> float | None:
    """Mean binary cross-entropy, probabilities clipped to [eps, 1 - eps]."""
    p = F.least(F.greatest(F.col(p_col), F.lit(LOG_LOSS_EPSILON)), F.lit(1 - LOG_LOSS_EPSILON))
    y = F.col(label_col).cast("double")
    return scored.agg(F.avg(-(y * F.log(p) + (1 - y) * F.log(1 - p)))).first()[0]


def build_audiences(scored: DataFrame, campaigns: DataFrame, segments: DataFrame) -> DataFrame:
    """Per campaign: rank users by p_click desc (ties: user_id), decile over all the campaign's scored
    users, keep rank <= audience_size, attach the segment ('unknown' if the user has none)."""
    by_p_click = Window.partitionBy(CAMPAIGN_COL).orderBy(F.desc(P_CLICK_COL), F.asc(USER_COL))
    ranked = scored.withColumn(RANK_COL, F.row_number().over(by_p_click)).withColumn(
        DECILE_COL, F.ntile(10).over(by_p_click)
    )
    return (
        ranked.join(F.broadcast(campaigns.select(CAMPAIGN_COL, AUDIENCE_SIZE_COL)), CAMPAIGN_COL, "inner")
        .filter(F.col(RANK_COL) <= F.col(AUDIENCE_SIZE_COL))
        .join(segments.select(USER_COL, SEGMENT_COL), USER_COL, "left")
        .withColumn(SEGMENT_COL, F.coalesce(F.col(SEGMENT_COL), F.lit(UNKNOWN_SEGMENT)))
        .select(
            CAMPAIGN_COL,
            USER_COL,
            F.col(RANK_COL).cast("int").alias(RANK_COL),
            P_CLICK_COL,
            F.col(DECILE_COL).cast("int").alias(DECILE_COL),
            SEGMENT_COL,
            EMAIL_COL,
            "channel",
        )
    )


def label_counts(frame: DataFrame) -> tuple[int, int]:
    """(rows, clicks) in one pass."""
    row = frame.agg(F.count(F.lit(1)), F.coalesce(F.sum(CLICK_COL), F.lit(0))).first()
    return int(row[0]), int(row[1])


def evaluate_holdout(ctr_train: DataFrame, config: CtrConfig, *, ds: dt.date) -> dict:
    """AUC / log loss of the model fit on the earlier days vs the placement-CTR baseline on the later days."""
    cutoff = ds - dt.timedelta(days=config.holdout_days)
    train = ctr_train.filter(F.col(DATE_COL) <= F.lit(cutoff)).cache()
    test = ctr_train.filter(F.col(DATE_COL) > F.lit(cutoff)).cache()
    (n_train, train_clicks), (n_test, test_clicks) = label_counts(train), label_counts(test)
    metrics = {
        "holdout_cutoff": cutoff.isoformat(),
        "n_train": n_train,
        "n_test": n_test,
        "train_ctr": train_clicks / n_train if n_train else None,
        "test_ctr": test_clicks / n_test if n_test else None,
        "auc": None,
        "baseline_auc": None,
        "log_loss": None,
        "note": None,
    }
    if train_clicks in (0, n_train) or test_clicks in (0, n_test):
        metrics["note"] = (
            f"no evaluation: the holdout split at {cutoff} needs clicks and non-clicks on both sides "
            f"(train {train_clicks}/{n_train}, test {test_clicks}/{n_test})"
        )
    else:
        scored = predict_p_click(fit_ctr_model(train, config), test).cache()
        metrics["auc"] = area_under_roc(scored, score_col=P_CLICK_COL)
        metrics["log_loss"] = log_loss(scored)
        metrics["baseline_auc"] = area_under_roc(placement_ctr_baseline(train, test), score_col="baseline_score")
        scored.unpersist()
    train.unpersist()
    test.unpersist()
    return metrics


# ------------------------------------------------------------------------------------------------- job
def read_inputs(spark: SparkSession, args: argparse.Namespace) -> tuple[DataFrame, DataFrame, DataFrame, DataFrame]:
    """Read and contract-check the four inputs; any problem exits naming the table, path and rule."""
    ctr_train = read_feature_table(spark, args.features_dir, "ctr_train", args.ds, TRAIN_COLS)
    ctr_score = read_feature_table(spark, args.features_dir, "ctr_score", args.ds, SCORE_COLS)
    campaigns = read_feature_table(spark, args.features_dir, "campaigns", args.ds, [CAMPAIGN_COL, AUDIENCE_SIZE_COL])
    segments = read_parquet_table(spark, args.segments, "user_segments", [USER_COL, SEGMENT_COL])

    feature_rules = dict(not_null=[*CATEGORICAL_COLS, *RAW_NUMERIC_COLS], non_negative=list(RAW_NUMERIC_COLS))
    train_path = feature_table_path(args.features_dir, "ctr_train", args.ds)
    n_train = check_columns(
        ctr_train,
        table="ctr_train",
        path=train_path,
        not_null=[DATE_COL, CLICK_COL, *feature_rules["not_null"]],
        non_negative=feature_rules["non_negative"],
        allowed_values={CLICK_COL: [0, 1]},
    )
    if n_train == 0:
        raise SystemExit(f"input table 'ctr_train' at {train_path} has no rows: nothing to train the CTR model on")
    check_columns(
        ctr_score, table="ctr_score", path=feature_table_path(args.features_dir, "ctr_score", args.ds),
        not_null=[USER_COL, CAMPAIGN_COL, *feature_rules["not_null"]], non_negative=feature_rules["non_negative"],
    )
    campaigns_path = feature_table_path(args.features_dir, "campaigns", args.ds)
    check_columns(
        campaigns, table="campaigns", path=campaigns_path,
        not_null=[CAMPAIGN_COL, AUDIENCE_SIZE_COL], non_negative=[AUDIENCE_SIZE_COL],
    )
    # Campaigns are a small table: an unknown campaign_id in ctr_score would silently vanish in the join.
    unknown = ctr_score.select(CAMPAIGN_COL).distinct().join(campaigns, CAMPAIGN_COL, "left_anti").limit(5).collect()
    if unknown:
        raise SystemExit(
            f"input table 'ctr_score' references campaign_id(s) {[row[0] for row in unknown]} "
            f"that are not in 'campaigns' at {campaigns_path}"
        )
    duplicated = segments.groupBy(USER_COL).count().filter("count > 1").limit(5).collect()
    if duplicated:
        raise SystemExit(
            f"input table 'user_segments' at {args.segments} has several rows for user_id(s) "
            f"{[row[0] for row in duplicated]}: one segment per user expected"
        )
    return ctr_train, ctr_score, campaigns, segments


def run(spark: SparkSession, args: argparse.Namespace) -> dict:
    config = CtrConfig(**{field.name: getattr(args, field.name) for field in dataclasses.fields(CtrConfig)})
    ctr_train, ctr_score, campaigns, segments = read_inputs(spark, args)

    metrics = evaluate_holdout(ctr_train, config, ds=args.ds)
    n_window, window_clicks = label_counts(ctr_train)
    if window_clicks in (0, n_window):
        raise SystemExit(
            f"input table 'ctr_train' at {feature_table_path(args.features_dir, 'ctr_train', args.ds)} "
            f"has {window_clicks} clicks in {n_window} impressions: the model needs both clicks and non-clicks"
        )
    started = time.perf_counter()
    model = fit_ctr_model(ctr_train, config)
    train_seconds = time.perf_counter() - started

    audiences = build_audiences(predict_p_click(model, ctr_score), campaigns, segments)
    output_path = f"{str(args.output_dir).rstrip('/')}/audiences"
    audiences.write.mode("overwrite").parquet(output_path)
    written = spark.read.parquet(output_path)
    metrics.update(
        ds=args.ds.isoformat(),
        n_window_impressions=n_window,
        n_scored=ctr_score.count(),
        n_audience_rows=written.count(),
        n_campaigns=written.select(CAMPAIGN_COL).distinct().count(),
        train_seconds=train_seconds,
        params=dataclasses.asdict(config),
        audiences_path=output_path,
    )
    metrics = {key: finite_or_none(value) if isinstance(value, float) else value for key, value in metrics.items()}
    write_metrics(args.metrics_path or f"{str(args.output_dir).rstrip('/')}/metrics.json", metrics)
    return metrics


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = CtrConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features-dir", required=True, help="root holding <table>/ds=<ds>/ Parquet features")
    parser.add_argument("--ds", required=True, type=iso_date, help="logical date YYYY-MM-DD")
    parser.add_argument("--segments", required=True, help="user_segments Parquet file or directory (user_id, segment)")
    parser.add_argument("--output-dir", required=True, help="audiences/ and metrics.json go here")
    parser.add_argument("--holdout-days", type=int, default=defaults.holdout_days, help="last days held out for evaluation")
    parser.add_argument("--reg-param", type=float, default=defaults.reg_param)
    parser.add_argument("--elastic-net", type=float, default=defaults.elastic_net, help="0 = L2, 1 = L1")
    parser.add_argument("--max-iter", type=int, default=defaults.max_iter)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument("--metrics-path", default=None, help="default: <output-dir>/metrics.json")
    args = parser.parse_args(argv)
    if args.holdout_days < 0 or not 0.0 <= args.elastic_net <= 1.0:
        parser.error("--holdout-days must be >= 0 and --elastic-net within [0, 1]")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    return run(get_spark("ctr_audiences"), args)


if __name__ == "__main__":
    run_as_script(main)
