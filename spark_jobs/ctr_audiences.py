"""Campaign audiences ranked by a calibrated click probability (Spark MLlib logistic regression).

Reads the dbt features `ctr_train`, `ctr_score` and `campaigns` from `<features-dir>/<table>/ds=<ds>/`
and the user segments (`--segments`: Parquet file or directory with user_id, segment), then:
1. evaluates on a time-based holdout (impression_date <= ds - holdout_days trains, later days test). The
   `calibration_days` days just before the holdout choose reg_param (best AUC among the ctr.reg_param values)
   and fit the calibrators (Platt, isotonic: spark_jobs/calibration.py) on the scores of a model fit on the
   days before them. On the holdout: AUC and log loss vs a baseline scoring each impression with its
   placement's train CTR, and Brier score, expected calibration error and calibration curve of the raw and
   each calibrated score; `auto` keeps the calibration with the lowest holdout Brier score;
2. fits tonight's model the same way shifted to ds (with a calibration: model on the days up to
   ds - calibration_days, calibrator on the last calibration_days; without: the whole window), scores every
   ctr_score row at its campaign's send hour (p_click, calibrated), assigns deciles over all the campaign's
   scored users, selects audiences (top audience_size under the per-user frequency cap), assigns each member
   to treatment or control (salted hash) and adds bid hints (spark_jobs/audience_rules.py), attaches the
   segment ('unknown' without one) and writes `<output-dir>/audiences/` (overwritten);
3. writes metrics.json (default `<output-dir>/metrics.json`).
Features: one-hot placement, channel and hour; standardised affinity, recency_days, log1p(frequency),
log1p(monetary), log1p(category_recency_days); affinity x placement and affinity x channel; hashed user,
campaign x category and user x category keys (FeatureHasher).

Settings: the `ctr` and `activation` sections of --config (default config/platform.yaml; the nightly step
passes the checked configuration as JSON), changed with `--set ctr.KEY=VALUE`. Run:
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
from collections.abc import Mapping
from pathlib import Path

# spark-submit runs this file as a script (sys.path[0] = spark_jobs/), tests import it as
# spark_jobs.ctr_audiences: put the repository root on the path so both find spark_jobs.common.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.ml import Pipeline, PipelineModel  # noqa: E402
from pyspark.ml.classification import LogisticRegression  # noqa: E402
from pyspark.ml.evaluation import BinaryClassificationEvaluator  # noqa: E402
from pyspark.ml.feature import (  # noqa: E402
    FeatureHasher,
    Interaction,
    OneHotEncoder,
    StandardScaler,
    StringIndexer,
    VectorAssembler,
)
from pyspark.ml.functions import vector_to_array  # noqa: E402
from pyspark.sql import DataFrame, SparkSession, Window  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402
from pyspark.sql.types import DoubleType, StructField, StructType  # noqa: E402

from spark_jobs.audience_rules import (  # noqa: E402
    CONTROL,
    GROUP_COL,
    TREATMENT,
    add_bid_hints,
    assign_groups,
    select_audiences,
)
from spark_jobs.calibration import CALIBRATION_METHODS, Calibrator, fit_calibrator, reliability  # noqa: E402
from spark_jobs.common import (  # noqa: E402
    add_settings_arguments,
    check_columns,
    choose_job_engine,
    feature_table_path,
    finite_or_none,
    get_spark,
    iso_date,
    job_settings,
    json_safe,
    log_progress,
    platform_section,
    read_feature_table,
    read_parquet_table,
    run_as_script,
    write_metrics,
)
from spark_jobs.ctr_columns import (  # noqa: E402
    CAMPAIGN_COL,
    CATEGORICAL_COLS,
    CLICK_COL,
    CROSSED_COLS,
    DATE_COL,
    HASHED_KEYS,
    HOUR_COL,
    LOG_LOSS_EPSILON,
    LOG_SCALED_COLS,
    P_CLICK_COL,
    RAW_NUMERIC_COLS,
    USER_COL,
)
from spark_jobs.ctr_inprocess import InProcessEngine  # noqa: E402

LABEL_COL = "label"
RANK_COL = "rank"
DECILE_COL = "decile"
SEGMENT_COL = "segment"
EMAIL_COL = "email_sha256"
AUDIENCE_SIZE_COL = "audience_size"
UNKNOWN_SEGMENT = "unknown"
MODEL_NUMERIC_COLS = tuple(f"log_{name}" if name in LOG_SCALED_COLS else name for name in RAW_NUMERIC_COLS)
AUDIENCE_COLS = (
    CAMPAIGN_COL,
    USER_COL,
    RANK_COL,
    P_CLICK_COL,
    DECILE_COL,
    SEGMENT_COL,
    EMAIL_COL,
    "channel",
    GROUP_COL,
    "expected_value",
    "bid_hint",
)
TRAIN_COLS = (
    USER_COL,
    CAMPAIGN_COL,
    DATE_COL,
    "placement",
    "channel",
    "target_category",
    *RAW_NUMERIC_COLS,
    HOUR_COL,
    CLICK_COL,
)
SCORE_COLS = (USER_COL, CAMPAIGN_COL, "placement", "channel", "target_category", *RAW_NUMERIC_COLS, EMAIL_COL)
# per-campaign activation settings: CLI defaults, overridable per campaign_id (--campaign-overrides)
CAMPAIGN_SETTINGS = {"control_share": float, "value_per_click": float, "priority": int, "send_hour": int}
CTR_ENGINES = ("auto", "sklearn", "mllib")


CAMPAIGN_SPARK_SETTINGS = ("control_share", "value_per_click", "priority", "send_hour")  # per-campaign, used here


@dataclasses.dataclass(frozen=True)
class CtrConfig:
    """The `ctr` section of the platform configuration (config/platform.yaml says what each key means)."""

    holdout_days: int
    reg_params: tuple[float, ...]  # several: chosen by AUC on the calibration days
    elastic_net: float
    max_iter: int
    hash_features: int
    calibration_days: int  # last days before the holdout: calibrator fit and reg_param choice
    calibration: str  # auto (lowest holdout Brier score) | none | platt | isotonic
    seed: int  # LBFGS logistic regression is deterministic; kept for a stable CLI and recorded
    engine: str  # auto | sklearn | mllib (common.choose_job_engine)
    inprocess_max_rows: int  # ctr_train + ctr_score rows the driver holds for the sklearn engine

    @classmethod
    def from_settings(cls, ctr: Mapping, **changes) -> CtrConfig:
        reg = ctr["reg_param"] if isinstance(ctr["reg_param"], (list, tuple)) else [ctr["reg_param"]]
        config = dataclasses.replace(
            cls(
                holdout_days=int(ctr["holdout_days"]),
                reg_params=tuple(float(r) for r in reg),
                elastic_net=float(ctr["elastic_net"]),
                max_iter=int(ctr["max_iter"]),
                hash_features=int(ctr["hash_features"]),
                calibration_days=int(ctr["calibration_days"]),
                calibration=ctr["calibration"],
                seed=int(ctr["seed"]),
                engine=ctr["engine"],
                inprocess_max_rows=int(ctr["inprocess_max_rows"]),
            ),
            **changes,
        )
        if config.holdout_days < 0 or config.calibration_days < 0 or not 0.0 <= config.elastic_net <= 1.0:
            raise ValueError("ctr.holdout_days and calibration_days must be >= 0 and ctr.elastic_net within [0, 1]")
        if not config.reg_params or any(r < 0 for r in config.reg_params):
            raise ValueError(f"ctr.reg_param must be one or more non-negative numbers, got {list(config.reg_params)}")
        if config.calibration not in ("auto", *CALIBRATION_METHODS):
            raise ValueError(f"ctr.calibration must be one of auto, {', '.join(CALIBRATION_METHODS)}")
        if config.engine not in CTR_ENGINES:
            raise ValueError(f"ctr.engine must be one of {', '.join(CTR_ENGINES)}, got {config.engine!r}")
        return config

    @classmethod
    def defaults(cls, **changes) -> CtrConfig:
        """The settings of config/platform.yaml in this checkout, with `changes` (tests, benchmarks)."""
        return cls.from_settings(platform_section("ctr"), **changes)


@dataclasses.dataclass(frozen=True)
class ActivationConfig:
    """The `activation` section: groups, bids and frequency cap (the content settings are not the job's)."""

    control_share: float
    control_salt: str
    value_per_click: float
    bid_floor: float
    bid_cap: float
    priority: int
    send_hour: int
    max_audiences_per_user: int
    campaign_overrides: dict  # campaign_id -> {setting: value} of CAMPAIGN_SPARK_SETTINGS

    @classmethod
    def from_settings(cls, activation: Mapping, **changes) -> ActivationConfig:
        overrides = {
            campaign: {k: v for k, v in (settings or {}).items() if k in CAMPAIGN_SPARK_SETTINGS and v is not None}
            for campaign, settings in (activation.get("campaigns") or {}).items()
        }
        config = dataclasses.replace(
            cls(
                control_share=float(activation["control_share"]),
                control_salt=str(activation["control_salt"]),
                value_per_click=float(activation["value_per_click"]),
                bid_floor=float(activation["bid_floor"]),
                bid_cap=float(activation["bid_cap"]),
                priority=int(activation["priority"]),
                send_hour=int(activation["send_hour"]),
                max_audiences_per_user=int(activation["max_audiences_per_user"]),
                campaign_overrides=overrides,
            ),
            **changes,
        )
        if not 0 <= config.control_share < 1 or config.bid_floor < 0 or config.bid_cap < config.bid_floor:
            raise ValueError("activation.control_share must be in [0, 1) and 0 <= bid_floor <= bid_cap")
        return config

    @classmethod
    def defaults(cls, **changes) -> ActivationConfig:
        return cls.from_settings(platform_section("activation"), **changes)


# ---------------------------------------------------------------------------------------------- transforms
def add_model_inputs(frame: DataFrame) -> DataFrame:
    """Log-scale the heavy-tailed counts, build the hashed keys; add the double label when clicks are present."""
    user = F.col(USER_COL).cast("string")
    for name in LOG_SCALED_COLS:
        frame = frame.withColumn(f"log_{name}", F.log1p(name))
    frame = (
        frame.withColumn("user_key", user)
        .withColumn("campaign_category_key", F.concat_ws("|", CAMPAIGN_COL, "target_category"))
        .withColumn("user_category_key", F.concat_ws("|", user, "target_category"))
    )
    if CLICK_COL in frame.columns:
        frame = frame.withColumn(LABEL_COL, F.col(CLICK_COL).cast("double"))
    return frame


def build_pipeline(config: CtrConfig, reg_param: float, hashed: bool | None = None) -> Pipeline:
    """one-hot(placement, channel, hour) + standardised numerics + affinity x placement/channel crosses
    + hashed keys -> logistic regression. Unseen categories at scoring time go to an extra 'keep' slot.
    Numerics are standardised here, so LR's own standardisation is off: the L2 penalty then shrinks every
    one-hot and hashed coefficient in the same units (a per-user bias with few impressions stays near 0).
    hashed: with the hashed keys (default: when config.hash_features > 0)."""
    hashed = config.hash_features > 0 if hashed is None else hashed
    indexed = [f"{name}_index" for name in CATEGORICAL_COLS]
    one_hot = [f"{name}_one_hot" for name in CATEGORICAL_COLS]
    return Pipeline(
        stages=[
            StringIndexer(inputCols=list(CATEGORICAL_COLS), outputCols=indexed, handleInvalid="keep"),
            OneHotEncoder(inputCols=indexed, outputCols=one_hot, handleInvalid="keep"),
            VectorAssembler(inputCols=list(MODEL_NUMERIC_COLS), outputCol="numeric_raw"),
            StandardScaler(inputCol="numeric_raw", outputCol="numeric_scaled", withMean=True, withStd=True),
            *(
                Interaction(inputCols=["affinity", f"{name}_one_hot"], outputCol=f"affinity_x_{name}")
                for name in CROSSED_COLS
            ),
            *(
                [FeatureHasher(inputCols=list(HASHED_KEYS), outputCol="hashed", numFeatures=config.hash_features)]
                if hashed
                else []
            ),
            VectorAssembler(
                inputCols=[
                    "numeric_scaled",
                    *one_hot,
                    *(f"affinity_x_{name}" for name in CROSSED_COLS),
                    *(["hashed"] if hashed else []),
                ],
                outputCol="features",
            ),
            LogisticRegression(
                featuresCol="features",
                labelCol=LABEL_COL,
                regParam=reg_param,
                elasticNetParam=config.elastic_net,
                maxIter=config.max_iter,
                standardization=False,
            ),
        ]
    )


def fit_ctr_model(train: DataFrame, config: CtrConfig, reg_param: float | None = None) -> PipelineModel:
    reg = config.reg_params[0] if reg_param is None else reg_param
    return build_pipeline(config, reg).fit(add_model_inputs(train))


def predict_p_click(model: PipelineModel, frame: DataFrame) -> DataFrame:
    """`frame` with p_click = P(click); the pipeline's intermediate columns are dropped."""
    scored = model.transform(add_model_inputs(frame))
    return scored.select(*frame.columns, vector_to_array("probability")[1].alias(P_CLICK_COL))


def placement_ctr_baseline(train: DataFrame, test: DataFrame, *, score_col: str = "baseline_score") -> DataFrame:
    """`test` scored with its placement's train CTR (the overall train CTR for placements unseen in train)."""
    overall_ctr = train.agg(F.avg(CLICK_COL)).first()[0]
    placement_ctr = train.groupBy("placement").agg(F.avg(CLICK_COL).alias("_placement_ctr"))
    return (
        test.join(F.broadcast(placement_ctr), "placement", "left")
        .withColumn(score_col, F.coalesce(F.col("_placement_ctr"), F.lit(overall_ctr)).cast("double"))
        .drop("_placement_ctr")
    )


def area_under_roc(scored: DataFrame, *, score_col: str, label_col: str = CLICK_COL) -> float:
    evaluator = BinaryClassificationEvaluator(rawPredictionCol=score_col, labelCol=label_col, metricName="areaUnderROC")
    return evaluator.evaluate(scored.select(F.col(score_col).cast("double"), F.col(label_col).cast("double")))


def log_loss(scored: DataFrame, *, p_col: str = P_CLICK_COL, label_col: str = CLICK_COL) -> float | None:
    """Mean binary cross-entropy, probabilities clipped to [eps, 1 - eps]."""
    p = F.least(F.greatest(F.col(p_col), F.lit(LOG_LOSS_EPSILON)), F.lit(1 - LOG_LOSS_EPSILON))
    y = F.col(label_col).cast("double")
    return scored.agg(F.avg(-(y * F.log(p) + (1 - y) * F.log(1 - p)))).first()[0]


def resolve_campaign_settings(spark: SparkSession, campaigns: DataFrame, activation: ActivationConfig) -> DataFrame:
    """campaigns (campaign_id, audience_size) with the campaign's activation settings: the defaults, overridden
    per campaign_id. The campaigns table is small (one row per campaign), so it is resolved on the driver."""
    rows = []
    for row in campaigns.select(CAMPAIGN_COL, AUDIENCE_SIZE_COL).collect():
        override = activation.campaign_overrides.get(row[CAMPAIGN_COL], {}) or {}
        settings = {}
        for name, kind in CAMPAIGN_SETTINGS.items():
            value = override.get(name, getattr(activation, name))
            try:
                settings[name] = kind(value)
            except (TypeError, ValueError):
                raise SystemExit(
                    f"campaign {row[CAMPAIGN_COL]!r}: setting {name}={value!r} is not a {kind.__name__}"
                ) from None
        if (
            not 0 <= settings["control_share"] < 1
            or settings["value_per_click"] < 0
            or not 0 <= settings["send_hour"] <= 23
        ):
            raise SystemExit(
                f"campaign {row[CAMPAIGN_COL]!r}: control_share must be in [0, 1), value_per_click >= 0 "
                f"and send_hour in 0..23, got {settings}"
            )
        rows.append((row[CAMPAIGN_COL], int(row[AUDIENCE_SIZE_COL]), *settings.values()))
    schema = (
        f"{CAMPAIGN_COL} string, {AUDIENCE_SIZE_COL} int, control_share double, value_per_click double, "
        "priority int, send_hour int"
    )
    return spark.createDataFrame(rows, schema)


def build_audiences(
    scored: DataFrame, campaign_settings: DataFrame, segments: DataFrame, activation: ActivationConfig
) -> DataFrame:
    """Deciles over all the campaign's scored users; the audience (audience_rules.select_audiences: top
    audience_size by p_click under the frequency cap), ranked 1..n by p_click (ties: user_id); the segment
    ('unknown' if the user has none); the treatment/control group and the bid hints."""
    by_p_click = Window.partitionBy(CAMPAIGN_COL).orderBy(F.desc(P_CLICK_COL), F.asc(USER_COL))
    with_deciles = scored.withColumn(DECILE_COL, F.ntile(10).over(by_p_click))
    selected = select_audiences(
        with_deciles, campaign_settings, max_audiences_per_user=activation.max_audiences_per_user
    )
    settings = campaign_settings.select(CAMPAIGN_COL, "control_share", "value_per_click")
    audiences = (
        selected.withColumn(RANK_COL, F.row_number().over(by_p_click))
        .join(F.broadcast(settings), CAMPAIGN_COL, "inner")
        .join(segments.select(USER_COL, SEGMENT_COL), USER_COL, "left")
        .withColumn(SEGMENT_COL, F.coalesce(F.col(SEGMENT_COL), F.lit(UNKNOWN_SEGMENT)))
    )
    audiences = add_bid_hints(
        assign_groups(audiences, salt=activation.control_salt),
        bid_floor=activation.bid_floor,
        bid_cap=activation.bid_cap,
    )
    return audiences.select(
        CAMPAIGN_COL,
        USER_COL,
        F.col(RANK_COL).cast("int").alias(RANK_COL),
        P_CLICK_COL,
        F.col(DECILE_COL).cast("int").alias(DECILE_COL),
        SEGMENT_COL,
        EMAIL_COL,
        "channel",
        GROUP_COL,
        "expected_value",
        "bid_hint",
    )


def label_counts(frame: DataFrame) -> tuple[int, int]:
    """(rows, clicks) in one pass."""
    row = frame.agg(F.count(F.lit(1)), F.coalesce(F.sum(CLICK_COL), F.lit(0))).first()
    return int(row[0]), int(row[1])


class MllibEngine:
    """The engine protocol the decisions below are written against, on Spark DataFrames and MLlib models.
    ctr_inprocess.InProcessEngine is the same protocol on one pandas copy in the driver (scikit-learn)."""

    name = "mllib"

    def window(self, frame: DataFrame, *, after: dt.date | None = None, upto: dt.date | None = None) -> DataFrame:
        """Rows with after < impression_date <= upto."""
        if after is not None:
            frame = frame.filter(F.col(DATE_COL) > F.lit(after))
        if upto is not None:
            frame = frame.filter(F.col(DATE_COL) <= F.lit(upto))
        return frame

    def keep(self, frame: DataFrame) -> DataFrame:
        return frame.cache()

    def release(self, frame: DataFrame) -> None:
        frame.unpersist()

    def label_counts(self, frame: DataFrame) -> tuple[int, int]:
        return label_counts(frame)

    def fit(self, frame: DataFrame, config: CtrConfig, reg_param: float) -> PipelineModel:
        return fit_ctr_model(frame, config, reg_param)

    def predict(self, model: PipelineModel, frame: DataFrame) -> DataFrame:
        return predict_p_click(model, frame)

    def auc(self, frame: DataFrame, *, score_col: str) -> float:
        return area_under_roc(frame, score_col=score_col)

    def log_loss(self, frame: DataFrame) -> float | None:
        return log_loss(frame)

    def placement_baseline(self, train: DataFrame, test: DataFrame, *, score_col: str) -> DataFrame:
        return placement_ctr_baseline(train, test, score_col=score_col)

    def fit_calibrator(self, frame: DataFrame, method: str) -> Calibrator:
        return fit_calibrator(frame, method, p_col=P_CLICK_COL, label_col=CLICK_COL)

    def calibrate(self, calibrator: Calibrator, frame: DataFrame) -> DataFrame:
        return calibrator.apply(frame, p_col=P_CLICK_COL)

    def reliability(self, frame: DataFrame) -> dict:
        return reliability(frame, p_col=P_CLICK_COL, label_col=CLICK_COL)


def _both_classes(counts: tuple[int, int]) -> bool:
    rows, clicks = counts
    return 0 < clicks < rows


def fit_with_calibration(ctr_train, config: CtrConfig, engine, *, end: dt.date, reg_params, methods) -> dict:
    """Fit one model per reg_param on the days up to end - calibration_days, keep the one with the best AUC on
    the calibration days, and fit the calibrators `methods` on its scores there. Without usable calibration
    days (none configured, or no clicks / no non-clicks in them): the first reg_param on every day up to end."""
    cal_cutoff = end - dt.timedelta(days=config.calibration_days)
    fit = engine.keep(engine.window(ctr_train, upto=cal_cutoff))
    cal = engine.keep(engine.window(ctr_train, after=cal_cutoff, upto=end))
    result = {"reg_param": reg_params[0], "reg_param_auc": {}, "calibrators": {"none": Calibrator("none")}}
    counts = engine.label_counts(fit), engine.label_counts(cal)
    if config.calibration_days > 0 and all(_both_classes(c) for c in counts):
        best = None
        for reg in reg_params:
            model = engine.fit(fit, config, reg)
            scored_cal = engine.keep(engine.predict(model, cal))
            auc = engine.auc(scored_cal, score_col=P_CLICK_COL)
            result["reg_param_auc"][str(reg)] = auc
            if best is None or auc > best[0]:
                if best is not None:
                    engine.release(best[2])
                best = (auc, reg, scored_cal, model)
            else:
                engine.release(scored_cal)
        _, result["reg_param"], scored_cal, result["model"] = best
        for method in methods:
            if method != "none":
                result["calibrators"][method] = engine.fit_calibrator(scored_cal, method)
        result["calibration_from"] = (end - dt.timedelta(days=config.calibration_days - 1)).isoformat()
        engine.release(scored_cal)
    else:
        result["model"] = engine.fit(engine.window(ctr_train, upto=end), config, reg_params[0])
        result["note"] = "no calibration: the calibration days need clicks and non-clicks (and calibration_days > 0)"
    engine.release(fit)
    engine.release(cal)
    return result


def calibration_methods(config: CtrConfig) -> tuple[str, ...]:
    return CALIBRATION_METHODS if config.calibration == "auto" else tuple(dict.fromkeys(("none", config.calibration)))


def evaluate_holdout(ctr_train, config: CtrConfig, *, ds: dt.date, engine=None) -> dict:
    """On the last holdout_days: AUC / log loss of the model fit on the earlier days (reg_param chosen and
    calibrators fit on the calibration days just before the holdout) vs the placement-CTR baseline, and the
    reliability (Brier, ECE, curve) of the raw and each calibrated score. Under `auto` the calibration with the
    lowest holdout Brier score is chosen (`calibration.method`); the nightly model uses it.
    engine: MllibEngine (default) on a Spark DataFrame, or ctr_inprocess.InProcessEngine on a pandas frame."""
    engine = engine or MllibEngine()
    cutoff = ds - dt.timedelta(days=config.holdout_days)
    train = engine.keep(engine.window(ctr_train, upto=cutoff))
    test = engine.keep(engine.window(ctr_train, after=cutoff))
    (n_train, train_clicks), (n_test, test_clicks) = engine.label_counts(train), engine.label_counts(test)
    metrics = {
        "holdout_cutoff": cutoff.isoformat(),
        "n_train": n_train,
        "n_test": n_test,
        "train_ctr": train_clicks / n_train if n_train else None,
        "test_ctr": test_clicks / n_test if n_test else None,
        "auc": None,
        "baseline_auc": None,
        "log_loss": None,
        "brier": None,
        "ece": None,
        "reg_param": config.reg_params[0],
        "calibration": {"method": "none", "candidates": {}},
        "note": None,
    }
    if not _both_classes((n_train, train_clicks)) or not _both_classes((n_test, test_clicks)):
        metrics["note"] = (
            f"no evaluation: the holdout split at {cutoff} needs clicks and non-clicks on both sides "
            f"(train {train_clicks}/{n_train}, test {test_clicks}/{n_test})"
        )
    else:
        fitted = fit_with_calibration(
            train, config, engine, end=cutoff, reg_params=config.reg_params, methods=calibration_methods(config)
        )
        scored = engine.keep(engine.predict(fitted["model"], test))
        metrics["auc"] = engine.auc(scored, score_col=P_CLICK_COL)
        metrics["log_loss"] = engine.log_loss(scored)
        metrics["baseline_auc"] = engine.auc(
            engine.placement_baseline(train, test, score_col="baseline_score"), score_col="baseline_score"
        )
        metrics["reg_param"] = fitted["reg_param"]
        metrics["reg_param_auc"] = fitted["reg_param_auc"]
        candidates = {}
        for method, calibrator in fitted["calibrators"].items():
            calibrated = engine.calibrate(calibrator, scored)
            candidates[method] = {
                **engine.reliability(calibrated),
                "log_loss": engine.log_loss(calibrated),
                "auc": engine.auc(calibrated, score_col=P_CLICK_COL),
                **calibrator.describe(),
            }
        chosen = (
            min(candidates, key=lambda m: candidates[m]["brier"])
            if config.calibration == "auto"
            else config.calibration
            if config.calibration in candidates
            else "none"
        )
        metrics["calibration"] = {
            "method": chosen,
            "fitted_from": fitted.get("calibration_from"),
            "fitted_to": cutoff.isoformat() if "calibration_from" in fitted else None,
            "candidates": candidates,
        }
        metrics["brier"], metrics["ece"] = candidates[chosen]["brier"], candidates[chosen]["ece"]
        metrics["note"] = fitted.get("note")
        engine.release(scored)
    engine.release(train)
    engine.release(test)
    return metrics


def fit_nightly_model(ctr_train, config: CtrConfig, engine, *, ds: dt.date, reg_param: float, calibration: str):
    """(model, calibrator, note): the model that scores tonight, mirroring the evaluation shifted to ds: with a
    calibration, the model is fit on the days up to ds - calibration_days and the calibrator on the last
    calibration_days; without one, on the whole window."""
    if calibration != "none":
        fitted = fit_with_calibration(
            ctr_train, config, engine, end=ds, reg_params=(reg_param,), methods=("none", calibration)
        )
        if calibration in fitted["calibrators"]:
            return fitted["model"], fitted["calibrators"][calibration], None
        return fitted["model"], Calibrator("none"), fitted.get("note")
    return engine.fit(ctr_train, config, reg_param), Calibrator("none"), None


# ------------------------------------------------------------------------------------------------- job
def read_inputs(
    spark: SparkSession, args: argparse.Namespace
) -> tuple[DataFrame, DataFrame, DataFrame, DataFrame, int]:
    """Read and contract-check the four inputs; any problem exits naming the table, path and rule. The fifth
    value is ctr_score's row count (the check counts it)."""
    ctr_train = read_feature_table(spark, args.features_dir, "ctr_train", args.ds, TRAIN_COLS)
    ctr_score = read_feature_table(spark, args.features_dir, "ctr_score", args.ds, SCORE_COLS)
    campaigns = read_feature_table(spark, args.features_dir, "campaigns", args.ds, [CAMPAIGN_COL, AUDIENCE_SIZE_COL])
    segments = read_parquet_table(spark, args.segments, "user_segments", [USER_COL, SEGMENT_COL])

    categorical = ["placement", "channel", "target_category"]
    feature_rules = dict(not_null=[*categorical, *RAW_NUMERIC_COLS], non_negative=list(RAW_NUMERIC_COLS))
    train_path = feature_table_path(args.features_dir, "ctr_train", args.ds)
    n_train = check_columns(
        ctr_train,
        table="ctr_train",
        path=train_path,
        not_null=[USER_COL, CAMPAIGN_COL, DATE_COL, CLICK_COL, HOUR_COL, *feature_rules["not_null"]],
        non_negative=feature_rules["non_negative"],
        allowed_values={CLICK_COL: [0, 1], HOUR_COL: list(range(24))},
    )
    if n_train == 0:
        raise SystemExit(f"input table 'ctr_train' at {train_path} has no rows: nothing to train the CTR model on")
    n_score = check_columns(
        ctr_score,
        table="ctr_score",
        path=feature_table_path(args.features_dir, "ctr_score", args.ds),
        not_null=[USER_COL, CAMPAIGN_COL, *feature_rules["not_null"]],
        non_negative=feature_rules["non_negative"],
    )
    campaigns_path = feature_table_path(args.features_dir, "campaigns", args.ds)
    check_columns(
        campaigns,
        table="campaigns",
        path=campaigns_path,
        not_null=[CAMPAIGN_COL, AUDIENCE_SIZE_COL],
        non_negative=[AUDIENCE_SIZE_COL],
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
    return ctr_train, ctr_score, campaigns, segments, n_score


def audience_summary(audiences: DataFrame, scored: DataFrame, campaign_settings: DataFrame) -> dict:
    """Per campaign: candidates, audience rows by group, shortfall against audience_size, mean p_click and the
    summed expected value (one small row per campaign)."""
    candidates = scored.groupBy(CAMPAIGN_COL).agg(F.count(F.lit(1)).alias("candidates"))
    per_group = audiences.groupBy(CAMPAIGN_COL).agg(
        F.count(F.lit(1)).alias("audience"),
        F.sum(F.when(F.col(GROUP_COL) == TREATMENT, 1).otherwise(0)).alias("treatment"),
        F.sum(F.when(F.col(GROUP_COL) == CONTROL, 1).otherwise(0)).alias("control"),
        F.avg(P_CLICK_COL).alias("mean_p_click"),
        F.sum("expected_value").alias("expected_value"),
    )
    rows = (
        campaign_settings.join(candidates, CAMPAIGN_COL, "inner")
        .join(per_group, CAMPAIGN_COL, "left")
        .fillna(0, ["audience", "treatment", "control"])
        .orderBy(CAMPAIGN_COL)
        .collect()
    )
    return {
        r[CAMPAIGN_COL]: {
            "candidates": r["candidates"],
            "audience_size": r[AUDIENCE_SIZE_COL],
            "audience": r["audience"],
            "treatment": r["treatment"],
            "control": r["control"],
            "priority": r["priority"],
            "capped_short": max(0, min(r[AUDIENCE_SIZE_COL], r["candidates"]) - r["audience"]),
            "mean_p_click": finite_or_none(r["mean_p_click"]),
            "expected_value": finite_or_none(r["expected_value"]),
        }
        for r in rows
    }


def score_tonight(spark: SparkSession, engine, model, calibrator: Calibrator, to_score: DataFrame) -> DataFrame:
    """to_score with p_click (calibrated), without the hour column; the in-process engine scores one pandas copy
    and hands the rows back to Spark for the audiences."""
    if engine.name == "mllib":
        return engine.calibrate(calibrator, engine.predict(model, to_score)).drop(HOUR_COL)
    local = engine.calibrate(calibrator, engine.predict(model, to_score.toPandas())).drop(columns=[HOUR_COL])
    schema = StructType(
        [f for f in to_score.schema.fields if f.name != HOUR_COL] + [StructField(P_CLICK_COL, DoubleType())]
    )
    return spark.createDataFrame(local[schema.fieldNames()], schema)


def run(spark: SparkSession, args: argparse.Namespace) -> dict:
    config, activation = args.settings, args.activation
    spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")  # the in-process engine's copies
    ctr_train, ctr_score, campaigns, segments, n_score = read_inputs(spark, args)
    campaign_settings = resolve_campaign_settings(spark, campaigns, activation).cache()
    n_window, window_clicks = label_counts(ctr_train)
    engine_name, why = choose_job_engine(
        config.engine,
        inprocess="sklearn",
        n_rows=n_window + n_score,
        max_rows=config.inprocess_max_rows,
        master=spark.sparkContext.master,
        rows="ctr_train + ctr_score rows",
    )
    log_progress("ctr", f"engine {engine_name}: {why}")
    if engine_name == "sklearn":
        engine, train_rows = InProcessEngine(), ctr_train.select(*TRAIN_COLS).toPandas()
        train_rows[DATE_COL] = train_rows[DATE_COL].astype("datetime64[s]")  # date objects compare slowly
    else:
        engine, train_rows = MllibEngine(), ctr_train

    started = time.perf_counter()
    metrics = evaluate_holdout(train_rows, config, ds=args.ds, engine=engine)
    evaluate_seconds = time.perf_counter() - started
    if window_clicks in (0, n_window):
        raise SystemExit(
            f"input table 'ctr_train' at {feature_table_path(args.features_dir, 'ctr_train', args.ds)} "
            f"has {window_clicks} clicks in {n_window} impressions: the model needs both clicks and non-clicks"
        )
    started = time.perf_counter()
    model, calibrator, note = fit_nightly_model(
        train_rows,
        config,
        engine,
        ds=args.ds,
        reg_param=metrics["reg_param"],
        calibration=metrics["calibration"]["method"],
    )
    train_seconds = time.perf_counter() - started
    log_progress("ctr", f"holdout evaluation {evaluate_seconds:.1f} s, tonight's model {train_seconds:.1f} s")

    # tomorrow's messages go out at the campaign's send hour
    to_score = ctr_score.join(
        F.broadcast(campaign_settings.select(CAMPAIGN_COL, F.col("send_hour").alias(HOUR_COL))), CAMPAIGN_COL, "inner"
    )
    scored = score_tonight(spark, engine, model, calibrator, to_score).cache()
    audiences = build_audiences(scored, campaign_settings, segments, activation)
    output_path = f"{str(args.output_dir).rstrip('/')}/audiences"
    audiences.write.mode("overwrite").parquet(output_path)
    written = spark.read.parquet(output_path)
    metrics.update(
        ds=args.ds.isoformat(),
        engine=engine_name,
        engine_reason=why,
        n_window_impressions=n_window,
        n_scored=scored.count(),
        n_audience_rows=written.count(),
        n_campaigns=written.select(CAMPAIGN_COL).distinct().count(),
        campaigns=audience_summary(written, scored, campaign_settings),
        applied_calibration=calibrator.describe(),
        evaluate_seconds=evaluate_seconds,
        train_seconds=train_seconds,
        params={**dataclasses.asdict(config), **dataclasses.asdict(activation)},
        audiences_path=output_path,
    )
    if note:
        metrics["note"] = "; ".join(filter(None, [metrics.get("note"), f"nightly model: {note}"]))
    scored.unpersist()
    metrics = json_safe(metrics)
    write_metrics(args.metrics_path or f"{str(args.output_dir).rstrip('/')}/metrics.json", metrics)
    return metrics


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The job's command line: where to read and write, and the settings (the `ctr` and `activation` sections
    of --config with any --set). `args.settings` and `args.activation` are the two configs."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features-dir", required=True, help="root holding <table>/ds=<ds>/ Parquet features")
    parser.add_argument("--ds", required=True, type=iso_date, help="logical date YYYY-MM-DD")
    parser.add_argument("--segments", required=True, help="user_segments Parquet file or directory (user_id, segment)")
    parser.add_argument("--output-dir", required=True, help="audiences/ and metrics.json go here")
    add_settings_arguments(parser, ["ctr", "activation"])
    parser.add_argument("--metrics-path", default=None, help="default: <output-dir>/metrics.json")
    args = parser.parse_args(argv)
    settings = job_settings(args, ["ctr", "activation"], parser)
    try:
        args.settings = CtrConfig.from_settings(settings["ctr"])
        args.activation = ActivationConfig.from_settings(settings["activation"])
    except (KeyError, TypeError, ValueError) as error:
        parser.error(
            f"--config {args.config}: {error!r}" if isinstance(error, KeyError) else f"--config {args.config}: {error}"
        )
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    return run(get_spark("ctr_audiences"), args)


if __name__ == "__main__":
    run_as_script(main)
