"""Top-K product recommendations per user: self-tuned implicit ALS or item-based CF, evaluated, gated, served.

Reads the dbt features `interactions` (hour grain), `user_features` and `item_features` (category) from
`<features-dir>/<table>/ds=<ds>/`, then:
1. splits time: the holdout is the last `--holdout` of the data (`7d`, `36h` or `20%` of the span; a holdout
   of half the span or more becomes the last 20 %, so a data set of a few hours is still evaluated);
2. tunes on a validation split carved the same way from the *training* period (never the holdout):
   budgeted search over ALS (alpha, regParam, rank, weight transform) and item-CF (neighbours), a blend of
   the best two, and the history threshold below which a user's list comes from the fallback; the choice
   is reused for `--tune-every-days` (read from `--previous-metrics`);
3. refits the choice on the training period and evaluates on the holdout: precision / recall / NDCG / MAP
   @K and catalogue coverage, overall and per user activity (cold / light / heavy), for the served lists,
   the model alone, category popularity and global popularity;
4. gates: unless the served lists beat the `--gate-baseline` by `--gate-min-lift` and do not fall more than
   `--gate-max-drop` below the last published run, the fallback ranking (or nothing: `--gate-action
   keep_last`) is written instead, and metrics.json says so (the pipeline marks the task);
5. refits on the whole window and writes `<output-dir>/recommendations/` (overwritten): exactly K rows per
   user of user_features (user_id, rank, product_id, score, source), purchased items excluded, `source`
   naming the tier (als | item_cf | blend | category_popularity | popularity);
6. writes metrics.json (default `<output-dir>/metrics.json`).

Run from the repository root (`pm spark-submit` finds Spark in the venv and keeps the log at WARN):
  .venv/bin/pm spark-submit als_recommendations --features-dir .state/work/features --ds 2026-11-22 \
      --output-dir .state/work/models/als/ds=2026-11-22
or with Spark's own launcher, the venv's Python and SPARK_HOME set:
  SPARK_HOME=$(.venv/bin/python -c 'import pyspark, os; print(os.path.dirname(pyspark.__file__))') \
  PYSPARK_PYTHON=.venv/bin/python .venv/bin/spark-submit --master 'local[*]' --driver-memory 4g \
      --conf spark.log.level=WARN spark_jobs/als_recommendations.py --features-dir ... --ds ... --output-dir ...
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import math
import shutil
import sys
import time
from pathlib import Path
from typing import Any

# spark-submit runs this file as a script (sys.path[0] = spark_jobs/), tests import it as
# spark_jobs.als_recommendations: put the repository root on the path so both find spark_jobs.*.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from pyspark.ml.recommendation import ALS, ALSModel  # noqa: E402
from pyspark.sql import Column, DataFrame, SparkSession, Window  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from spark_jobs import ranking  # noqa: E402
from spark_jobs.common import (  # noqa: E402
    check_columns,
    feature_table_path,
    finite_or_none,
    get_spark,
    iso_date,
    read_feature_table,
    run_as_script,
    ship_package,
    write_metrics,
)
from spark_jobs.item_cf import item_neighbours  # noqa: E402
from spark_jobs.topk import (  # noqa: E402
    FACTORS, HISTORY, PURCHASED, SOURCE_CATEGORY, SOURCE_POPULARITY, WEIGHTS, ItemSide, ServePolicy, TopK,
)

USER_COL = "user_id"
ITEM_COL = "product_id"
HOUR_COL = "event_hour"
WEIGHT_COL = "weight"
PURCHASES_COL = "n_purchases"
CATEGORY_COL = "category"
INDEX_COL = "item_index"
INT32_MAX = 2**31 - 1  # MLlib ALS stores ids as 32-bit ints
SHORT_SPAN_SHARE = 0.2  # a holdout of half the span or more becomes the last 20 % of it
HISTORY_THRESHOLDS = (1, 2, 3, 5, 8, 13, 21, 34)
ACTIVITY = "activity"

SERVED_SCHEMA = "user_id long, rank int, product_id long, score double, source string"
TIERS_SCHEMA = ("user_id long, model_items array<long>, model_scores array<double>, category_items array<long>, "
                "category_scores array<double>, popularity_items array<long>, popularity_scores array<double>")
CANDIDATES_SCHEMA = "user_id long, item_index long, score double"


@dataclasses.dataclass(frozen=True)
class RecConfig:
    top_k: int = 10
    holdout: str = "7d"
    max_iter: int = 10
    seed: int = 42
    # the search space (ranges from the literature on implicit ALS, wide enough for data nobody has seen)
    alpha_range: tuple[float, float] = (0.5, 40.0)
    reg_range: tuple[float, float] = (0.01, 1.0)
    rank_range: tuple[int, int] = (16, 128)
    neighbours_choices: tuple[int, ...] = (20, 50, 100, 200)
    tune_max_fits: int = 8
    tune_max_minutes: float = 10.0
    tune_every_days: int = 7
    tune_max_pairs: int = 2_000_000  # tuning fits use a sample of users above this many training pairs
    max_eval_users: int = 20_000
    selection_metric: str = "ndcg"
    min_history: str = "auto"  # or an integer: fewer items of history -> fallback list
    min_score: float = 1e-6
    heavy_min_items: int = 10
    gate_min_lift: float = 0.05
    gate_max_drop: float = 0.2
    gate_baseline: str = "popularity"  # popularity | best (the better of popularity and category popularity)
    gate_action: str = "fallback"  # fallback | keep_last
    gate_level: str = "warn"       # warn | fail
    checkpoint_interval: int = 5
    broadcast_max_mb: float = 256.0
    num_blocks: int | None = None  # ALS user/item blocks; None = the session's default parallelism
    max_user_items_cf: int = 100


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One model configuration: ALS (alpha, reg_param, rank, weight transform), item-CF (neighbours) or a blend."""

    model: str
    params: dict

    def describe(self) -> dict:
        return {"model": self.model, "params": self.params}


def log(message: str) -> None:
    """One progress line for the task log (the job's stdout)."""
    print(f"[recommendations {time.strftime('%H:%M:%S')}] {message}", flush=True)


# ------------------------------------------------------------------------------------------------ splits
def parse_holdout(spec: str | int) -> tuple[str, float]:
    """'7d' -> ('hours', 168), '36h' -> ('hours', 36), '20%' -> ('share', 0.2); a bare number means days."""
    text = str(spec).strip().lower()
    try:
        if text.endswith("%"):
            share = float(text[:-1]) / 100
            if 0 < share < 1:
                return "share", share
        elif text.endswith("h"):
            return "hours", float(text[:-1])
        elif text.endswith("d"):
            return "hours", 24 * float(text[:-1])
        else:
            return "hours", 24 * float(text)
    except ValueError:
        pass
    raise ValueError(f"holdout must look like '7d', '36h' or '20%', got {spec!r}")


def split_cutoff(start: dt.datetime, end: dt.datetime, spec: str | int) -> tuple[dt.datetime | None, str]:
    """The first hour of the held-out period for data spanning [start, end) (hour grain), and the rule used.
    None when the span is a single hour (nothing to split)."""
    span_hours = (end - start) / dt.timedelta(hours=1)
    kind, value = parse_holdout(spec)
    if kind == "share":
        hours, rule = value * span_hours, f"last {value:.0%} of the {span_hours:.0f} h span"
    elif value <= 0:
        return end, "no holdout"
    elif value < span_hours / 2:
        hours, rule = value, f"last {value:.0f} h"
    else:
        hours = SHORT_SPAN_SHARE * span_hours
        rule = (f"last {SHORT_SPAN_SHARE:.0%} of the {span_hours:.0f} h span (a {value:.0f} h holdout would "
                f"take half of it or more)")
    cutoff = end - dt.timedelta(hours=max(1, math.ceil(hours)))
    if cutoff <= start:
        return None, f"no split: the data spans {span_hours:.0f} h"
    return cutoff, rule


def time_bounds(pairs_by_hour: DataFrame) -> tuple[dt.datetime, dt.datetime]:
    row = pairs_by_hour.agg(F.min(HOUR_COL), F.max(HOUR_COL)).first()
    return row[0], row[1] + dt.timedelta(hours=1)


def user_item_pairs(interactions: DataFrame) -> DataFrame:
    """One row per (user, item): summed implicit weight and whether the user purchased it."""
    return interactions.groupBy(USER_COL, ITEM_COL).agg(
        F.sum(WEIGHT_COL).alias(WEIGHT_COL), (F.sum(PURCHASES_COL) > 0).alias(PURCHASED))


def relevant_items(train_pairs: DataFrame, test_interactions: DataFrame) -> DataFrame:
    """Per user with test-period interactions: the items they interacted with and had not purchased in
    train (purchased items are never recommended), as an array. Users without train history included."""
    purchased = train_pairs.filter(F.col(PURCHASED)).select(USER_COL, ITEM_COL)
    return (test_interactions.select(USER_COL, ITEM_COL).distinct()
            .join(purchased, [USER_COL, ITEM_COL], "left_anti")
            .groupBy(USER_COL).agg(F.collect_list(ITEM_COL).alias("relevant")))


# ------------------------------------------------------------------------------------- per-split inputs
@dataclasses.dataclass
class Split:
    """Everything the models and the top-K engine need about one training period."""

    pairs: DataFrame          # user_id, product_id, weight, purchased, item_index (cached)
    user_rows: DataFrame      # user_id, n_history, history, history_weights, purchased (cached)
    items: ItemSide
    n_pairs: int

    def release(self) -> None:
        self.pairs.unpersist()
        self.user_rows.unpersist()


def prepare_split(pairs: DataFrame, item_categories: DataFrame) -> Split:
    """Index the items of `pairs` in popularity order (the driver holds one row per item: id, popularity,
    category) and group each user's history into arrays."""
    stats = (pairs.groupBy(ITEM_COL)
             .agg(F.count(F.lit(1)).alias("n_users"), F.sum(WEIGHT_COL).alias("total_weight"))
             .join(item_categories, ITEM_COL, "left")
             .orderBy(F.desc("n_users"), F.desc("total_weight"), F.asc(ITEM_COL))
             .toPandas())
    n_active = pairs.select(USER_COL).distinct().count()
    categories = sorted(c for c in stats[CATEGORY_COL].dropna().unique())
    code = {c: i for i, c in enumerate(categories)}
    items = ItemSide(
        product_ids=stats[ITEM_COL].to_numpy(np.int64),
        popularity=(stats["n_users"].to_numpy(np.float64) / max(n_active, 1)).astype(np.float32),
        category=np.array([code.get(c, -1) if isinstance(c, str) else -1 for c in stats[CATEGORY_COL]], np.int32),
        n_categories=len(categories))
    spark = pairs.sparkSession
    index = spark.createDataFrame(
        [(int(p), i) for i, p in enumerate(items.product_ids)], f"{ITEM_COL} long, {INDEX_COL} int")
    indexed = pairs.join(F.broadcast(index), ITEM_COL).cache()
    user_rows = (indexed.groupBy(USER_COL).agg(
        F.count(F.lit(1)).cast("int").alias("n_history"),
        F.collect_list(INDEX_COL).alias(HISTORY),
        F.collect_list(F.col(WEIGHT_COL).cast("float")).alias(WEIGHTS),
        F.collect_list(PURCHASED).alias(PURCHASED))).cache()
    return Split(pairs=indexed, user_rows=user_rows, items=items, n_pairs=int(stats["n_users"].sum()))


# ------------------------------------------------------------------------------------------------ models
def fit_als(pairs: DataFrame, params: dict, config: RecConfig) -> ALSModel:
    num_blocks = config.num_blocks or pairs.sparkSession.sparkContext.defaultParallelism
    ratings = pairs.select(USER_COL, ITEM_COL, weight_column(params.get("weight_transform", "raw")))
    als = ALS(userCol=USER_COL, itemCol=ITEM_COL, ratingCol=WEIGHT_COL, implicitPrefs=True,
              rank=int(params["rank"]), regParam=float(params["reg_param"]), alpha=float(params["alpha"]),
              maxIter=config.max_iter, seed=config.seed, coldStartStrategy="drop",
              numUserBlocks=num_blocks, numItemBlocks=num_blocks, checkpointInterval=config.checkpoint_interval)
    return als.fit(ratings)


def weight_column(transform: str) -> Column:
    weight = F.col(WEIGHT_COL)
    return (F.log1p(weight) if transform == "log1p" else weight).alias(WEIGHT_COL)


@dataclasses.dataclass
class Fitted:
    """A fitted candidate, ready for the top-K engine."""

    candidate: Candidate
    user_factors: DataFrame | None = None   # user_id, factors
    item_factors: DataFrame | None = None   # item_index, factors
    neighbours: Any = None                  # scipy CSR


def fit_candidate(candidate: Candidate, split: Split, config: RecConfig, *, fitted: dict | None = None) -> Fitted:
    if candidate.model == "als":
        model = fit_als(split.pairs, candidate.params, config)
        index = split.pairs.select(ITEM_COL, INDEX_COL).distinct()
        return Fitted(
            candidate,
            user_factors=model.userFactors.select(F.col("id").cast("long").alias(USER_COL),
                                                  F.col("features").alias(FACTORS)),
            item_factors=model.itemFactors.select(F.col("id").cast("long").alias(ITEM_COL), "features")
            .join(index, ITEM_COL).select(INDEX_COL, F.col("features").alias(FACTORS)))
    if candidate.model == "item_cf":
        matrix = item_neighbours(split.user_rows, split.items.n_items,
                                 neighbours=int(candidate.params["neighbours"]),
                                 max_user_items=config.max_user_items_cf)
        return Fitted(candidate, neighbours=matrix)
    if candidate.model == "blend":  # the best ALS and item-CF fits, combined at scoring time
        als, cf = fitted["als"], fitted["item_cf"]
        return Fitted(candidate, user_factors=als.user_factors, item_factors=als.item_factors,
                      neighbours=cf.neighbours)
    raise ValueError(f"unknown model {candidate.model!r}")


# ------------------------------------------------------------------------------------------ top-K engine
def _item_blocks(n_items: int, rank: int, config: RecConfig) -> list[tuple[int, int]]:
    per_block = max(1, int(config.broadcast_max_mb * 2**20 // (rank * 4)))
    return [(start, min(n_items, start + per_block)) for start in range(0, n_items, per_block)]


def _collect_factors(item_factors: DataFrame, start: int, stop: int, rank: int) -> np.ndarray:
    """Item factors of the index block [start, stop) as a dense matrix (items without factors: zeros)."""
    block = np.zeros((stop - start, rank), np.float32)
    rows = item_factors.filter((F.col(INDEX_COL) >= start) & (F.col(INDEX_COL) < stop)).toPandas()
    if len(rows):
        block[rows[INDEX_COL].to_numpy() - start] = np.stack(rows[FACTORS].to_numpy()).astype(np.float32)
    return block


def _engine_input(user_rows: DataFrame, users: DataFrame, fitted: Fitted | None) -> DataFrame:
    """One row per user of `users` with their history arrays (empty without history) and ALS factors."""
    frame = users.select(USER_COL).distinct().join(user_rows, USER_COL, "left").select(
        USER_COL,
        F.coalesce("n_history", F.lit(0)).alias("n_history"),
        F.coalesce(HISTORY, F.array().cast("array<int>")).alias(HISTORY),
        F.coalesce(WEIGHTS, F.array().cast("array<float>")).alias(WEIGHTS),
        F.coalesce(PURCHASED, F.array().cast("array<boolean>")).alias(PURCHASED))
    if fitted is not None and fitted.user_factors is not None:
        return frame.join(fitted.user_factors, USER_COL, "left")
    return frame.withColumn(FACTORS, F.lit(None).cast("array<float>"))


def run_engine(spark: SparkSession, frame: DataFrame, items: ItemSide, policy: ServePolicy, mode: str,
               schema: str) -> DataFrame:
    broadcast = spark.sparkContext.broadcast(items)

    def score(frames):
        yield from TopK(broadcast.value, policy).run(frames, mode)

    return frame.mapInPandas(score, schema)


def recommend(spark: SparkSession, split: Split, users: DataFrame, fitted: Fitted | None, policy: ServePolicy,
              config: RecConfig, *, mode: str) -> DataFrame:
    """Top-K lists for `users` from one fitted model and the fallbacks: `served` rows or per-user `tiers`.
    ALS item factors are broadcast when they fit in broadcast_max_mb, else scored one item block at a time
    (each block's model candidates kept per user, then merged) before the fallbacks are filled."""
    frame = _engine_input(split.user_rows, users, fitted)
    items = dataclasses.replace(split.items, neighbours=fitted.neighbours if fitted else None)
    schema = SERVED_SCHEMA if mode == "served" else TIERS_SCHEMA
    if fitted is None or fitted.item_factors is None:
        return run_engine(spark, frame, items, policy, mode, schema)
    params = fitted.candidate.params
    rank = int(params["rank"] if fitted.candidate.model == "als" else params["als"]["rank"])
    # only plain ALS is scored in item blocks; a blend's item-CF half needs the whole catalogue at once
    blocks = _item_blocks(items.n_items, rank, config) if fitted.candidate.model == "als" else [(0, items.n_items)]
    if len(blocks) == 1:
        items.factors = _collect_factors(fitted.item_factors, 0, items.n_items, rank)
        return run_engine(spark, frame, items, policy, mode, schema)
    frame = frame.cache()
    parts = []
    for start, stop in blocks:
        block_items = dataclasses.replace(items, factors=_collect_factors(fitted.item_factors, start, stop, rank),
                                          block_start=start)
        parts.append(run_engine(spark, frame, block_items, policy, "candidates", CANDIDATES_SCHEMA))
    candidates = parts[0]
    for part in parts[1:]:
        candidates = candidates.unionByName(part)
    best = Window.partitionBy(USER_COL).orderBy(F.desc("score"), F.asc("item_index"))
    model_tier = (candidates.withColumn("_r", F.row_number().over(best)).filter(F.col("_r") <= policy.k)
                  .groupBy(USER_COL).agg(F.sort_array(F.collect_list(F.struct(
                      F.col("_r"), F.col("item_index"), F.col("score")))).alias("_c"))
                  .select(USER_COL, F.col("_c.item_index").alias("model_items"),
                          F.col("_c.score").alias("model_scores")))
    return run_engine(spark, frame.join(model_tier, USER_COL, "left"), items, policy, mode, schema)


# ------------------------------------------------------------------------------------------- evaluation
def served_list(k: int, min_history: int | None) -> Column:
    """The served list composed from the tiers: model items first for users with enough history."""
    fallback = F.concat(F.col("category_items"), F.col("popularity_items"))
    if min_history is None:
        return F.slice(F.array_distinct(fallback), 1, k)
    with_model = F.concat(F.col("model_items"), fallback)
    return F.slice(F.array_distinct(F.when(F.col("n_history") >= min_history, with_model).otherwise(fallback)), 1, k)


def activity_column(heavy_min_items: int) -> Column:
    return (F.when(F.col("n_history") == 0, "cold").when(F.col("n_history") < heavy_min_items, "light")
            .otherwise("heavy"))


@dataclasses.dataclass
class EvalSet:
    """Users of a test period with relevant items (sampled to max_eval_users), with their training history."""

    split: Split
    users: DataFrame   # user_id, relevant, n_history, activity (cached)
    n_users: int
    n_relevant_users: int


def eval_set(spark: SparkSession, split: Split, test: DataFrame, config: RecConfig) -> EvalSet:
    relevant = relevant_items(split.pairs, test)
    n_relevant_users = relevant.count()
    if n_relevant_users > config.max_eval_users:
        relevant = relevant.sample(fraction=config.max_eval_users / n_relevant_users, seed=config.seed)
    users = (relevant.join(split.user_rows.select(USER_COL, "n_history"), USER_COL, "left")
             .fillna(0, subset=["n_history"])
             .withColumn(ACTIVITY, activity_column(config.heavy_min_items))).cache()
    return EvalSet(split, users, users.count(), n_relevant_users)


def score_tiers(spark: SparkSession, evaluation: EvalSet, fitted: Fitted | None, config: RecConfig,
                *, min_score: float) -> DataFrame:
    """Per evaluated user: model, category-popularity and popularity tiers (2K deep, so any served list can
    be composed from them), joined with the relevant items and activity."""
    policy = ServePolicy(k=2 * config.top_k, model=fitted.candidate.model if fitted else None, min_history=1,
                         min_score=min_score, blend_weight=_blend_weight(fitted))
    tiers = recommend(spark, evaluation.split, evaluation.users, fitted, policy, config, mode="tiers")
    return tiers.join(evaluation.users, USER_COL).withColumn(
        "model_items", F.slice("model_items", 1, config.top_k))


def _blend_weight(fitted: Fitted | None) -> float:
    return float(fitted.candidate.params.get("weight", 0.5)) if fitted else 0.5


def choose_min_history(scored: DataFrame, k: int, metric: str) -> tuple[int, list[dict]]:
    """The history threshold that maximises the summed validation metric of the served lists: users below
    it get the fallback list, users at or above it the model's. Returns (threshold, per-threshold scores)."""
    columns = {"model": served_list(k, 1), "fallback": served_list(k, None)}
    with_lists = scored.filter(F.size("relevant") > 0)
    for name, column in columns.items():
        with_lists = with_lists.withColumn(f"__{name}", column)
    per_user = with_lists.select("n_history", *[
        ranking.metric_columns(f"__{name}", "relevant", k=k)[metric].alias(name) for name in columns])
    sums = (per_user.groupBy("n_history").agg(F.sum("model").alias("model"), F.sum("fallback").alias("fallback"))
            .toPandas())  # one row per distinct history length: small
    options = []
    for threshold in HISTORY_THRESHOLDS:
        below = sums["n_history"] < threshold
        total = float(sums.loc[below, "fallback"].sum() + sums.loc[~below, "model"].sum())
        options.append({"min_history": threshold, f"sum_{metric}": round(total, 6)})
    best = max(options, key=lambda o: (o[f"sum_{metric}"], -o["min_history"]))
    return best["min_history"], options


# --------------------------------------------------------------------------------------------- tuning
def halton(index: int, base: int) -> float:
    result, fraction = 0.0, 1.0
    while index > 0:
        fraction /= base
        result += fraction * (index % base)
        index //= base
    return result


def als_candidate(point: tuple[float, float, float, float], config: RecConfig) -> Candidate:
    """A point of [0,1]^4 -> ALS parameters: log-uniform alpha and reg, rank a power of two, transform."""
    def log_scale(u, low, high):
        return float(math.exp(math.log(low) + u * (math.log(high) - math.log(low))))

    low_exp, high_exp = math.log2(config.rank_range[0]), math.log2(config.rank_range[1])
    rank = int(2 ** round(low_exp + point[2] * (high_exp - low_exp)))
    return Candidate("als", {"alpha": round(log_scale(point[0], *config.alpha_range), 4),
                             "reg_param": round(log_scale(point[1], *config.reg_range), 5),
                             "rank": rank, "weight_transform": "log1p" if point[3] >= 0.5 else "raw"})


def candidate_plan(config: RecConfig) -> list[Candidate]:
    """The order candidates are tried in until the budget runs out: the centre of the ALS space, the middle
    item-CF, then Halton points over the ALS space with an item-CF variant every fourth slot."""
    plan = [als_candidate((0.5, 0.5, 0.5, 0.0), config)]
    cf_choices = sorted(config.neighbours_choices, key=lambda n: abs(n - 50))
    plan.append(Candidate("item_cf", {"neighbours": cf_choices[0]}))
    index, cf_next = 3, 1  # Halton points 1 and 2 sit on the centre's axes
    while len(plan) < max(config.tune_max_fits, 2) + 8:
        if len(plan) % 4 == 3 and cf_next < len(cf_choices):
            plan.append(Candidate("item_cf", {"neighbours": cf_choices[cf_next]}))
            cf_next += 1
            continue
        # the weight transform alternates, so both are tried early whatever the budget
        plan.append(als_candidate((halton(index, 2), halton(index, 3), halton(index, 5), 0.75 * (index % 2)), config))
        index += 1
    return plan


def refine(best: Candidate, index: int, config: RecConfig) -> Candidate:
    """A point near the best ALS candidate (alpha and reg within a factor of ~3, same rank neighbourhood)."""
    def around(value, low, high, u):
        return float(min(high, max(low, value * math.exp((u - 0.5) * 2.2))))

    params = dict(best.params)
    params["alpha"] = round(around(params["alpha"], *config.alpha_range, halton(index, 2)), 4)
    params["reg_param"] = round(around(params["reg_param"], *config.reg_range, halton(index, 3)), 5)
    return Candidate("als", params)


def tune(spark: SparkSession, split: Split, evaluation: EvalSet, config: RecConfig) -> dict:
    """Budgeted search on the validation split. Returns the record for metrics.json, with the choice."""
    started = time.perf_counter()
    budget_seconds = config.tune_max_minutes * 60
    metric = config.selection_metric
    fallback_scores = score_tiers(spark, evaluation, None, config, min_score=config.min_score).cache()
    warm = F.col("n_history") > 0
    fallback_metric = ranking.evaluate_lists(fallback_scores.filter(warm), {"fallback": served_list(config.top_k, None)},
                                             segment=None, k=config.top_k)["fallback"]["all"][metric]
    tried: list[dict] = []
    best: dict[str, tuple[float, Fitted]] = {}
    plan = candidate_plan(config)
    fits = 0
    seen = set()
    while fits < config.tune_max_fits and plan:
        elapsed = time.perf_counter() - started
        mean_fit = elapsed / fits if fits else 0
        if fits and elapsed + mean_fit > budget_seconds:
            break
        candidate = plan.pop(0)
        if fits >= config.tune_max_fits // 2 and "als" in best and candidate.model == "als":
            candidate = refine(best["als"][1].candidate, fits, config)
        key = json.dumps(candidate.describe(), sort_keys=True)
        if key in seen:
            continue
        seen.add(key)
        fit_started = time.perf_counter()
        fitted = fit_candidate(candidate, split, config)
        fits += 1
        scored = score_tiers(spark, evaluation, fitted, config, min_score=config.min_score)
        value = ranking.evaluate_lists(scored.filter(warm), {"model": F.col("model_items")}, segment=None,
                                       k=config.top_k)["model"]["all"][metric]
        tried.append({**candidate.describe(), f"validation_{metric}": finite_or_none(value),
                      "seconds": round(time.perf_counter() - fit_started, 1)})
        log(f"candidate {fits}/{config.tune_max_fits} {candidate.model} {candidate.params}: validation "
            f"{metric}@{config.top_k} {_fmt(value)} ({tried[-1]['seconds']} s)")
        if value is not None and (candidate.model not in best or value > best[candidate.model][0]):
            best[candidate.model] = (value, fitted)
    if not best:
        raise SystemExit("tuning could not fit any candidate: check the interactions")
    options = [(value, fitted) for value, fitted in best.values()]
    if "als" in best and "item_cf" in best:
        blend = fit_candidate(Candidate("blend", {
            "weight": 0.5, "als": best["als"][1].candidate.params,
            "item_cf": best["item_cf"][1].candidate.params}), split, config,
            fitted={m: f for m, (_, f) in best.items()})
        scored = score_tiers(spark, evaluation, blend, config, min_score=config.min_score)
        value = ranking.evaluate_lists(scored.filter(warm), {"model": F.col("model_items")}, segment=None,
                                       k=config.top_k)["model"]["all"][metric]
        tried.append({**blend.candidate.describe(), f"validation_{metric}": finite_or_none(value), "seconds": 0.0})
        if value is not None:
            options.append((value, blend))
    chosen_value, chosen = max(options, key=lambda option: option[0])
    log(f"chosen {chosen.candidate.model} {chosen.candidate.params} (validation {metric} {_fmt(chosen_value)}, "
        f"fallback {_fmt(fallback_metric)})")
    if config.min_history == "auto":
        scored = score_tiers(spark, evaluation, chosen, config, min_score=config.min_score)
        min_history, threshold_scores = choose_min_history(scored, config.top_k, metric)
    else:
        min_history, threshold_scores = int(config.min_history), []
    fallback_scores.unpersist()
    return {
        "tuned": True,
        "selection_metric": metric,
        f"validation_fallback_{metric}": finite_or_none(fallback_metric),
        "candidates": tried,
        "history_thresholds": threshold_scores,
        "chosen": {**chosen.candidate.describe(), "min_history": min_history,
                   f"validation_{metric}": finite_or_none(chosen_value)},
        "seconds": round(time.perf_counter() - started, 1),
    }


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def reusable_choice(previous: dict | None, ds: dt.date, config: RecConfig) -> dict | None:
    """The last tuning's choice, when it is younger than tune_every_days and was made for the same K."""
    if not previous or config.tune_every_days <= 1:
        return None
    tuning = previous.get("tuning") or {}
    chosen, tuned_on = tuning.get("chosen"), tuning.get("tuned_on")
    if not chosen or not tuned_on or previous.get("k") != config.top_k:
        return None
    age = (ds - dt.date.fromisoformat(tuned_on)).days
    return chosen if 0 <= age < config.tune_every_days else None


# ------------------------------------------------------------------------------------------------ gate
def gate(holdout: dict, previous: dict | None, config: RecConfig) -> dict:
    """Pass when the served lists beat the gate baseline (popularity, or the better of popularity and
    category popularity) by gate_min_lift and do not fall more than
    gate_max_drop below the last published run (on the selection metric)."""
    metric = config.selection_metric
    result = {"metric": metric, "min_lift": config.gate_min_lift, "max_drop": config.gate_max_drop,
              "action": config.gate_action, "level": config.gate_level, "reasons": []}
    lists = holdout.get("lists") or {}
    served = (lists.get("served") or {}).get("all", {}).get(metric)
    if served is None:
        result.update(passed=True, note="not evaluated: the holdout has no users with relevant items")
        return result
    compared = ("popularity", SOURCE_CATEGORY) if config.gate_baseline == "best" else ("popularity",)
    baselines = {name: lists[name]["all"][metric] for name in compared if name in lists}
    best_name = max(baselines, key=baselines.get)
    result.update(served=served, baseline=best_name, baseline_value=baselines[best_name])
    if served < baselines[best_name] * (1 + config.gate_min_lift):
        result["reasons"].append(
            f"served {metric}@K {served:.4f} does not beat {best_name} {baselines[best_name]:.4f} "
            f"by {config.gate_min_lift:.0%}")
    previous_value = ((previous or {}).get("holdout") or {}).get("lists", {}).get("served", {}).get(
        "all", {}).get(metric)
    if previous_value:
        result.update(previous_ds=previous.get("ds"), previous_value=previous_value)
        if served < previous_value * (1 - config.gate_max_drop):
            result["reasons"].append(
                f"served {metric}@K {served:.4f} is more than {config.gate_max_drop:.0%} below the last published "
                f"run ({previous.get('ds')}: {previous_value:.4f})")
    result["passed"] = not result["reasons"]
    return result


# ------------------------------------------------------------------------------------------------- job
def check_interactions(interactions: DataFrame, path: str) -> None:
    """Contract checks the recommenders depend on, in one pass; no interactions at all is an error."""
    n_rows = check_columns(
        interactions, table="interactions", path=path,
        not_null=[USER_COL, ITEM_COL, HOUR_COL, WEIGHT_COL, PURCHASES_COL],
        non_negative=[USER_COL, ITEM_COL, WEIGHT_COL, PURCHASES_COL])
    if n_rows == 0:
        raise SystemExit(f"input table 'interactions' at {path} has no rows: nothing to train on")
    largest_id = interactions.agg(F.max(USER_COL), F.max(ITEM_COL)).first()
    for column, value in zip((USER_COL, ITEM_COL), largest_id):
        if value > INT32_MAX:
            raise SystemExit(f"input table 'interactions' at {path}: {column} {value} exceeds ALS's 32-bit id range")


def default_choice(config: RecConfig, note: str) -> dict:
    """Without data to tune on: ALS at the centre of the search space, personalised from one history item."""
    return {**als_candidate((0.5, 0.5, 0.5, 0.0), config).describe(), "min_history": 1, "note": note}


def evaluate_holdout(spark: SparkSession, interactions: DataFrame, item_categories: DataFrame, config: RecConfig,
                     *, choice: dict | None, n_catalogue: int) -> tuple[dict, dict | None, dict]:
    """Tune (unless `choice` is given) on a validation split of the training period, refit the choice on the
    training period and evaluate it and the baselines on the holdout.
    Returns (holdout record, tuning record or None, the choice)."""
    start, end = time_bounds(interactions)
    cutoff, rule = split_cutoff(start, end, config.holdout)
    record: dict = {"rule": rule, "cutoff": cutoff.isoformat() if cutoff else None,
                    "data_start": start.isoformat(), "data_end": end.isoformat(), "lists": {}}
    if cutoff is None or cutoff >= end:
        record["note"] = f"no evaluation: {rule}"
        tuning = None if choice else {"tuned": False, "note": "no tuning: the data cannot be split"}
        return record, tuning, choice or default_choice(config, "nothing to tune on")
    train = interactions.filter(F.col(HOUR_COL) < F.lit(cutoff))
    tuning = None
    if choice is None:
        tuning = tune_on_training_period(spark, train, item_categories, config)
        choice = tuning.get("chosen") or default_choice(config, tuning.get("note", "tuning found no choice"))
    split = prepare_split(user_item_pairs(train), item_categories)
    evaluation = eval_set(spark, split, interactions.filter(F.col(HOUR_COL) >= F.lit(cutoff)), config)
    record.update(n_train_pairs=split.n_pairs, n_eval_users=evaluation.n_users,
                  n_users_with_relevant_items=evaluation.n_relevant_users)
    if evaluation.n_users == 0:
        record["note"] = "no evaluation: no test-period user has a relevant (not purchased) item"
        split.release()
        return record, tuning, choice
    fitted = fit_choice(choice, split, config)
    scored = score_tiers(spark, evaluation, fitted, config, min_score=config.min_score).cache()
    lists = {"served": served_list(config.top_k, int(choice["min_history"])),
             fitted.candidate.model: F.col("model_items"),
             SOURCE_CATEGORY: served_list(config.top_k, None),
             "popularity": F.slice("popularity_items", 1, config.top_k)}
    record["lists"] = ranking.evaluate_lists(scored, lists, k=config.top_k)
    record["coverage"] = ranking.coverage(scored, lists, n_items=n_catalogue)
    log(f"holdout ({rule}, {evaluation.n_users} users): " + ", ".join(
        f"{name} {config.selection_metric}@{config.top_k} {_fmt(values['all'][config.selection_metric])}"
        for name, values in record["lists"].items()))
    scored.unpersist()
    evaluation.users.unpersist()
    split.release()
    return record, tuning, choice


def tune_on_training_period(spark: SparkSession, train: DataFrame, item_categories: DataFrame,
                            config: RecConfig) -> dict:
    start, end = time_bounds(train)
    cutoff, rule = split_cutoff(start, end, config.holdout)
    if cutoff is None or cutoff >= end:
        return {"tuned": False, "note": f"no tuning: the training period cannot be split ({rule})"}
    pairs = user_item_pairs(train.filter(F.col(HOUR_COL) < F.lit(cutoff)))
    n_pairs = pairs.count()
    sampled = None
    if n_pairs > config.tune_max_pairs:  # tune on a sample of users: the hyperparameters are per-user scale
        sampled = round(config.tune_max_pairs / n_pairs, 4)
        kept_users = pairs.select(USER_COL).distinct().sample(fraction=sampled, seed=config.seed)
        pairs = pairs.join(kept_users, USER_COL, "left_semi")
    split = prepare_split(pairs, item_categories)
    # validation users with history in the fit part: for users without, every candidate serves the fallback
    validation = train.filter(F.col(HOUR_COL) >= F.lit(cutoff)).join(
        split.user_rows.select(USER_COL), USER_COL, "left_semi")
    evaluation = eval_set(spark, split, validation, config)
    if evaluation.n_users == 0:
        split.release()
        return {"tuned": False, "note": "no tuning: no validation user has a relevant item"}
    record = tune(spark, split, evaluation, config)
    record.update(validation_rule=rule, validation_cutoff=cutoff.isoformat(), n_fit_pairs=split.n_pairs,
                  n_validation_users=evaluation.n_users, user_sample=sampled)
    evaluation.users.unpersist()
    split.release()
    return record


def fit_choice(choice: dict, split: Split, config: RecConfig) -> Fitted:
    candidate = Candidate(choice["model"], choice["params"])
    if candidate.model != "blend":
        return fit_candidate(candidate, split, config)
    parts = {name: fit_candidate(Candidate(name, candidate.params[name]), split, config)
             for name in ("als", "item_cf")}
    return fit_candidate(candidate, split, config, fitted=parts)


def run(spark: SparkSession, args: argparse.Namespace) -> dict:
    started = time.perf_counter()
    config = RecConfig(**{field.name: getattr(args, field.name) for field in dataclasses.fields(RecConfig)
                          if hasattr(args, field.name)})
    ship_package(spark)
    checkpoint_dir = args.checkpoint_dir or f"{str(args.output_dir).rstrip('/')}/_checkpoints"
    spark.sparkContext.setCheckpointDir(checkpoint_dir)
    interactions = read_feature_table(spark, args.features_dir, "interactions", args.ds,
                                      [USER_COL, ITEM_COL, HOUR_COL, WEIGHT_COL, PURCHASES_COL])
    users = read_feature_table(spark, args.features_dir, "user_features", args.ds, [USER_COL])
    items = read_feature_table(spark, args.features_dir, "item_features", args.ds, [ITEM_COL, CATEGORY_COL])
    check_interactions(interactions, feature_table_path(args.features_dir, "interactions", args.ds))
    check_columns(users, table="user_features", not_null=[USER_COL],
                  path=feature_table_path(args.features_dir, "user_features", args.ds))
    interactions = interactions.cache()
    item_categories = items.select(ITEM_COL, CATEGORY_COL).cache()
    n_catalogue = item_categories.count()
    previous = json.loads(Path(args.previous_metrics).read_text()) if args.previous_metrics else None

    timings: dict[str, float] = {}
    reused = reusable_choice(previous, args.ds, config)
    mark = time.perf_counter()
    holdout, tuning, choice = evaluate_holdout(spark, interactions, item_categories, config, choice=reused,
                                               n_catalogue=n_catalogue)
    timings["tune_and_evaluate"] = time.perf_counter() - mark
    if reused is not None:
        tuning = {"tuned": False, "reused_from": previous.get("ds"), "tuned_on": previous["tuning"]["tuned_on"],
                  "chosen": reused}
    elif tuning and tuning.get("tuned"):
        tuning["tuned_on"] = args.ds.isoformat()
    else:
        tuning = {**(tuning or {}), "chosen": choice}
    gate_result = gate(holdout, previous, config)
    publish = "model" if gate_result["passed"] else ("fallback" if config.gate_action == "fallback" else "none")
    gate_result["published"] = publish
    log(f"gate {'passed' if gate_result['passed'] else 'failed: ' + '; '.join(gate_result['reasons'])}; "
        f"publishing {publish}")

    output_path = f"{str(args.output_dir).rstrip('/')}/recommendations"
    sources: dict[str, int] = {}
    n_recommendations = 0
    coverage = None
    mark = time.perf_counter()
    pairs = user_item_pairs(interactions)
    split = prepare_split(pairs, item_categories)
    n_users = None
    if publish != "none":
        fitted = fit_choice(choice, split, config) if publish == "model" else None
        timings["final_fit"] = time.perf_counter() - mark
        mark = time.perf_counter()
        policy = ServePolicy(k=config.top_k, model=choice["model"] if fitted else None,
                             min_history=int(choice.get("min_history", 1)), min_score=config.min_score,
                             blend_weight=_blend_weight(fitted))
        recommendations = recommend(spark, split, users, fitted, policy, config, mode="served")
        recommendations.write.mode("overwrite").parquet(output_path)
        timings["top_k_and_write"] = time.perf_counter() - mark
        log(f"top-{config.top_k} lists written in {timings['top_k_and_write']:.1f} s")
        written = spark.read.parquet(output_path)
        sources = {row["source"]: row["n"] for row in
                   written.groupBy("source").agg(F.count(F.lit(1)).alias("n")).collect()}
        n_recommendations = sum(sources.values())
        distinct = written.agg(F.countDistinct(USER_COL), F.countDistinct(ITEM_COL)).first()
        n_users = distinct[0]
        coverage = distinct[1] / n_catalogue if n_catalogue else None
    split.release()
    _remove_local(checkpoint_dir)

    metrics = headline(holdout, config)
    metrics.update(
        ds=args.ds.isoformat(), k=config.top_k, model=choice["model"] if publish == "model" else publish,
        params=choice.get("params"), min_history=int(choice.get("min_history", 1)), min_score=config.min_score,
        n_users=n_users, n_items=n_catalogue, n_window_interactions=split.n_pairs,
        n_recommendations=n_recommendations, recommendations_by_source=sources, catalog_coverage=coverage,
        holdout=holdout, tuning=tuning, gate=gate_result, config=_jsonable(dataclasses.asdict(config)),
        recommendations_path=output_path if publish != "none" else None,
        seconds={**{k: round(v, 1) for k, v in timings.items()},
                 "total": round(time.perf_counter() - started, 1)})
    metrics = _jsonable(metrics)
    write_metrics(args.metrics_path or f"{str(args.output_dir).rstrip('/')}/metrics.json", metrics)
    interactions.unpersist()
    item_categories.unpersist()
    return metrics


def headline(holdout: dict, config: RecConfig) -> dict:
    """The figures a report shows first: served lists vs global popularity on the holdout."""
    lists = holdout.get("lists") or {}
    served = (lists.get("served") or {}).get("all", {})
    baseline = (lists.get("popularity") or {}).get("all", {})
    out = {"n_eval_users": (served or {}).get("n_users", 0), "note": holdout.get("note"),
           "holdout_cutoff": holdout.get("cutoff")}
    for metric in ranking.METRICS:
        out[f"{metric}_at_k"] = served.get(metric)
        out[f"baseline_{metric}_at_k"] = baseline.get(metric)
    out["lift"] = (out["precision_at_k"] / out["baseline_precision_at_k"]
                   if out["precision_at_k"] is not None and out["baseline_precision_at_k"] else None)
    return out


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.floating, float)):
        return finite_or_none(float(value))
    if isinstance(value, np.integer):
        return int(value)
    return value


def _remove_local(path: str) -> None:
    if "://" not in path or path.startswith("file://"):
        shutil.rmtree(path.removeprefix("file://"), ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = RecConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--features-dir", required=True, help="root holding <table>/ds=<ds>/ Parquet features")
    add("--ds", required=True, type=iso_date, help="logical date YYYY-MM-DD")
    add("--output-dir", required=True, help="recommendations/ and metrics.json go here")
    add("--top-k", type=int, default=defaults.top_k)
    add("--holdout", default=defaults.holdout, help="held-out end of the data: '7d', '36h' or '20%%'")
    add("--max-iter", type=int, default=defaults.max_iter, help="ALS iterations (any number: checkpointed)")
    add("--seed", type=int, default=defaults.seed)
    add("--alpha-range", type=float, nargs=2, default=defaults.alpha_range, metavar=("LOW", "HIGH"))
    add("--reg-range", type=float, nargs=2, default=defaults.reg_range, metavar=("LOW", "HIGH"))
    add("--rank-range", type=int, nargs=2, default=defaults.rank_range, metavar=("LOW", "HIGH"))
    add("--neighbours-choices", type=int, nargs="+", default=defaults.neighbours_choices,
        help="item-CF neighbours per item to try")
    add("--tune-max-fits", type=int, default=defaults.tune_max_fits, help="tuning budget: model fits")
    add("--tune-max-minutes", type=float, default=defaults.tune_max_minutes, help="tuning budget: minutes")
    add("--tune-every-days", type=int, default=defaults.tune_every_days,
        help="reuse the previous run's choice while it is younger than this (1 = tune every run)")
    add("--tune-max-pairs", type=int, default=defaults.tune_max_pairs,
        help="above this many training pairs, tuning fits use a sample of users")
    add("--max-eval-users", type=int, default=defaults.max_eval_users, help="users sampled per evaluation")
    add("--selection-metric", choices=ranking.METRICS, default=defaults.selection_metric)
    add("--min-history", default=defaults.min_history,
        help="'auto' (chosen on validation) or the fewest history items for a personalised list")
    add("--min-score", type=float, default=defaults.min_score, help="model scores at or below this are noise")
    add("--heavy-min-items", type=int, default=defaults.heavy_min_items,
        help="history items from which a user counts as heavy in the evaluation (light below, cold at 0)")
    add("--gate-min-lift", type=float, default=defaults.gate_min_lift)
    add("--gate-max-drop", type=float, default=defaults.gate_max_drop)
    add("--gate-baseline", choices=("popularity", "best"), default=defaults.gate_baseline,
        help="what the served lists must beat: popularity, or the better of popularity and category popularity")
    add("--gate-action", choices=("fallback", "keep_last"), default=defaults.gate_action)
    add("--gate-level", choices=("warn", "fail"), default=defaults.gate_level)
    add("--checkpoint-interval", type=int, default=defaults.checkpoint_interval)
    add("--checkpoint-dir", default=None, help="Spark checkpoint dir (default <output-dir>/_checkpoints)")
    add("--broadcast-max-mb", type=float, default=defaults.broadcast_max_mb,
        help="item factors above this are scored in item blocks")
    add("--num-blocks", type=int, default=defaults.num_blocks, help="ALS blocks (default: default parallelism)")
    add("--max-user-items-cf", type=int, default=defaults.max_user_items_cf,
        help="item-CF similarity uses at most this many of a user's strongest items")
    add("--previous-metrics", default=None, help="metrics.json of the last published run (gate and tuning reuse)")
    add("--metrics-path", default=None, help="default: <output-dir>/metrics.json")
    args = parser.parse_args(argv)
    try:
        parse_holdout(args.holdout)
    except ValueError as error:
        parser.error(str(error))
    if args.min_history != "auto" and not str(args.min_history).isdigit():
        parser.error("--min-history must be 'auto' or a non-negative integer")
    if min(args.top_k, args.max_iter, args.tune_max_fits, args.max_eval_users) < 1:
        parser.error("--top-k, --max-iter, --tune-max-fits and --max-eval-users must be >= 1")
    for name in ("alpha_range", "reg_range", "rank_range"):
        low, high = getattr(args, name)
        if not 0 < low <= high:
            parser.error(f"--{name.replace('_', '-')} needs 0 < LOW <= HIGH")
        setattr(args, name, (low, high))
    args.neighbours_choices = tuple(args.neighbours_choices)
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    return run(get_spark("als_recommendations"), args)


if __name__ == "__main__":
    run_as_script(main)
