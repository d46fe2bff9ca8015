"""Top-K product recommendations per user with implicit-feedback ALS (Spark MLlib).

Reads the dbt features `interactions`, `user_features` and `item_features` from
`<features-dir>/<table>/ds=<ds>/`, then:
1. evaluates on a time-based holdout: ALS fit on days <= ds - holdout_days, scored on the later days
   (relevant items = test-period interactions not purchased in train) against a popularity baseline,
   precision@K / recall@K on users with train history and >= 1 relevant item;
2. refits on the whole window and writes `<output-dir>/recommendations/` (overwritten): exactly K rows
   per user of user_features (user_id, rank, product_id, score, source), ALS candidates minus items
   purchased in the window, topped up from the most popular items (cold-start users get only those);
3. writes metrics.json (default `<output-dir>/metrics.json`).

Run:
  spark-submit --master 'local[*]' --driver-memory 4g spark_jobs/als_recommendations.py \
      --features-dir .state/work/features --ds 2026-11-22 --output-dir .state/work/models/als/ds=2026-11-22
"""
from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import sys
import time
from pathlib import Path

# spark-submit runs this file as a script (sys.path[0] = spark_jobs/), tests import it as
# spark_jobs.als_recommendations: put the repository root on the path so both find spark_jobs.common.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pyspark.ml.recommendation import ALS, ALSModel  # noqa: E402
from pyspark.sql import DataFrame, SparkSession, Window  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from spark_jobs.common import (  # noqa: E402
    check_columns,
    feature_table_path,
    finite_or_none,
    get_spark,
    iso_date,
    read_feature_table,
    run_as_script,
    write_metrics,
)

USER_COL = "user_id"
ITEM_COL = "product_id"
DATE_COL = "event_date"
WEIGHT_COL = "weight"
PURCHASES_COL = "n_purchases"
PURCHASED_COL = "purchased"
RANK_COL = "rank"
SCORE_COL = "score"
SOURCE_COL = "source"
SOURCE_ALS = "als"
SOURCE_POPULARITY = "popularity"
INT32_MAX = 2**31 - 1  # MLlib ALS stores ids as 32-bit ints


@dataclasses.dataclass(frozen=True)
class AlsConfig:
    top_k: int = 10
    holdout_days: int = 7
    rank: int = 32
    reg_param: float = 0.05
    alpha: float = 20.0
    max_iter: int = 10
    seed: int = 42
    candidate_buffer: int = 50
    num_blocks: int | None = None  # ALS user/item blocks; None = the session's default parallelism (cores)


# ---------------------------------------------------------------------------------------------- transforms
def user_item_pairs(interactions: DataFrame) -> DataFrame:
    """One row per (user, item): summed implicit weight and whether the user purchased it."""
    return interactions.groupBy(USER_COL, ITEM_COL).agg(
        F.sum(WEIGHT_COL).alias(WEIGHT_COL),
        (F.sum(PURCHASES_COL) > 0).alias(PURCHASED_COL),
    )


def purchased_pairs(pairs: DataFrame) -> DataFrame:
    return pairs.filter(F.col(PURCHASED_COL)).select(USER_COL, ITEM_COL)


def max_purchases_per_user(pairs: DataFrame) -> int:
    largest = purchased_pairs(pairs).groupBy(USER_COL).count().agg(F.max("count")).first()[0]
    return int(largest or 0)


def popular_items(pairs: DataFrame, *, n: int) -> DataFrame:
    """The n most popular items (distinct users, then summed weight, then id): a small list to broadcast.
    score = share of active users who interacted with the item, so it reads on a 0..1 scale like ALS."""
    n_active_users = pairs.select(USER_COL).distinct().count()
    return (
        pairs.groupBy(ITEM_COL)
        .agg(F.count(F.lit(1)).alias("n_users"), F.sum(WEIGHT_COL).alias("total_weight"))
        .orderBy(F.desc("n_users"), F.desc("total_weight"), F.asc(ITEM_COL))
        .limit(n)
        .select(ITEM_COL, (F.col("n_users") / F.lit(max(n_active_users, 1))).alias(SCORE_COL))
    )


def relevant_items(train_pairs: DataFrame, test_interactions: DataFrame) -> DataFrame:
    """(user, item) the user interacted with in the test period and had not purchased in train,
    for users with train history (ALS cannot score others)."""
    return (
        test_interactions.select(USER_COL, ITEM_COL)
        .distinct()
        .join(train_pairs.select(USER_COL).distinct(), USER_COL, "left_semi")
        .join(purchased_pairs(train_pairs), [USER_COL, ITEM_COL], "left_anti")
    )


def fit_als(pairs: DataFrame, config: AlsConfig) -> ALSModel:
    # Spark's fixed default of 10 blocks costs minutes of task overhead on a 2-core machine.
    num_blocks = config.num_blocks or pairs.sparkSession.sparkContext.defaultParallelism
    als = ALS(
        userCol=USER_COL,
        itemCol=ITEM_COL,
        ratingCol=WEIGHT_COL,
        implicitPrefs=True,
        rank=config.rank,
        regParam=config.reg_param,
        alpha=config.alpha,
        maxIter=config.max_iter,
        seed=config.seed,
        coldStartStrategy="drop",
        numUserBlocks=num_blocks,
        numItemBlocks=num_blocks,
    )
    return als.fit(pairs)


def als_candidates(model: ALSModel, users: DataFrame, *, n: int) -> DataFrame:
    """(user, item, score) for the n best ALS items of each user known to the model."""
    return (
        model.recommendForUserSubset(users.select(USER_COL), n)
        .select(F.col(USER_COL).cast("bigint").alias(USER_COL), F.explode("recommendations").alias("rec"))
        .select(
            USER_COL,
            F.col(f"rec.{ITEM_COL}").cast("bigint").alias(ITEM_COL),
            F.col("rec.rating").cast("double").alias(SCORE_COL),
        )
    )


def top_k_recommendations(
    users: DataFrame,
    popular: DataFrame,
    purchased: DataFrame,
    *,
    top_k: int,
    candidates: DataFrame | None = None,
) -> DataFrame:
    """Exactly top_k distinct items per user (fewer only if the popular list is exhausted): the best
    non-purchased candidates first, then popular items the user neither purchased nor already got.
    `popular` must hold >= top_k + (max purchases of a user) items for the guarantee."""
    users = users.select(USER_COL).distinct()
    # users x a small broadcast list, never users x catalogue
    popular_pool = (
        users.crossJoin(F.broadcast(popular.select(ITEM_COL, SCORE_COL)))
        .join(purchased, [USER_COL, ITEM_COL], "left_anti")
        .withColumn(SOURCE_COL, F.lit(SOURCE_POPULARITY))
        .withColumn("_tier", F.lit(1))
    )
    if candidates is None:
        pool = popular_pool
    else:
        by_score = Window.partitionBy(USER_COL).orderBy(F.desc(SCORE_COL), F.asc(ITEM_COL))
        best_candidates = (
            candidates.join(users, USER_COL, "left_semi")
            .join(purchased, [USER_COL, ITEM_COL], "left_anti")
            .withColumn("_order", F.row_number().over(by_score))
            .filter(F.col("_order") <= top_k)
            .select(USER_COL, ITEM_COL, SCORE_COL, F.lit(SOURCE_ALS).alias(SOURCE_COL), F.lit(0).alias("_tier"))
        )
        pool = best_candidates.unionByName(
            popular_pool.join(best_candidates.select(USER_COL, ITEM_COL), [USER_COL, ITEM_COL], "left_anti")
        )
    final_order = Window.partitionBy(USER_COL).orderBy(F.asc("_tier"), F.desc(SCORE_COL), F.asc(ITEM_COL))
    return (
        pool.withColumn(RANK_COL, F.row_number().over(final_order))
        .filter(F.col(RANK_COL) <= top_k)
        .select(USER_COL, F.col(RANK_COL).cast("int").alias(RANK_COL), ITEM_COL, SCORE_COL, SOURCE_COL)
    )


# ----------------------------------------------------------------------------------------------- metrics
def _hits_per_user(recommendations: DataFrame, relevant: DataFrame, *, k: int) -> DataFrame:
    """Per user of `relevant`: n_relevant and hits = relevant items among the top-k recommendations."""
    relevant_counts = relevant.groupBy(USER_COL).agg(F.count(F.lit(1)).alias("n_relevant"))
    hits = (
        recommendations.filter(F.col(RANK_COL) <= k)
        .join(relevant, [USER_COL, ITEM_COL], "inner")
        .groupBy(USER_COL)
        .agg(F.count(F.lit(1)).alias("hits"))
    )
    return relevant_counts.join(hits, USER_COL, "left").fillna(0, subset=["hits"])


def precision_at_k(recommendations: DataFrame, relevant: DataFrame, *, k: int) -> float | None:
    """Mean over users with relevant items of |top-k recs ∩ relevant| / k (None without such users)."""
    return _hits_per_user(recommendations, relevant, k=k).agg(F.avg(F.col("hits") / F.lit(k))).first()[0]


def recall_at_k(recommendations: DataFrame, relevant: DataFrame, *, k: int) -> float | None:
    """Mean over users with relevant items of |top-k recs ∩ relevant| / |relevant|."""
    return _hits_per_user(recommendations, relevant, k=k).agg(F.avg(F.col("hits") / F.col("n_relevant"))).first()[0]


def catalog_coverage(recommendations: DataFrame, n_items: int) -> float | None:
    """Share of the catalogue recommended to at least one user."""
    if n_items == 0:
        return None
    return recommendations.select(ITEM_COL).distinct().count() / n_items


def evaluate_holdout(interactions: DataFrame, config: AlsConfig, *, ds: dt.date) -> dict:
    """Precision/recall@K of ALS vs the popularity baseline on a time-based split (see module docstring)."""
    cutoff = ds - dt.timedelta(days=config.holdout_days)
    k = config.top_k
    metrics = dict.fromkeys(
        ["precision_at_k", "baseline_precision_at_k", "recall_at_k", "baseline_recall_at_k", "lift"]
    )
    metrics.update(holdout_cutoff=cutoff.isoformat(), n_eval_users=0, n_train_interactions=0, note=None)

    train_pairs = user_item_pairs(interactions.filter(F.col(DATE_COL) <= F.lit(cutoff))).cache()
    test = interactions.filter(F.col(DATE_COL) > F.lit(cutoff))
    metrics["n_train_interactions"] = train_pairs.count()
    if metrics["n_train_interactions"] == 0 or test.isEmpty():
        metrics["note"] = (
            f"no evaluation: the holdout split at {cutoff} leaves "
            + ("no training interactions" if metrics["n_train_interactions"] == 0 else "no test-period interactions")
        )
        train_pairs.unpersist()
        return metrics
    relevant = relevant_items(train_pairs, test).cache()
    eval_users = relevant.select(USER_COL).distinct()
    metrics["n_eval_users"] = eval_users.count()
    if metrics["n_eval_users"] == 0:
        metrics["note"] = "no evaluation: no test user has train history and a relevant (not purchased) item"
    else:
        purchased = purchased_pairs(train_pairs)
        popular = popular_items(train_pairs, n=k + max_purchases_per_user(train_pairs))
        model = fit_als(train_pairs, config)
        candidates = als_candidates(model, eval_users, n=k + config.candidate_buffer)
        als_recs = top_k_recommendations(eval_users, popular, purchased, top_k=k, candidates=candidates).cache()
        baseline_recs = top_k_recommendations(eval_users, popular, purchased, top_k=k).cache()
        metrics["precision_at_k"] = precision_at_k(als_recs, relevant, k=k)
        metrics["recall_at_k"] = recall_at_k(als_recs, relevant, k=k)
        metrics["baseline_precision_at_k"] = precision_at_k(baseline_recs, relevant, k=k)
        metrics["baseline_recall_at_k"] = recall_at_k(baseline_recs, relevant, k=k)
        if metrics["baseline_precision_at_k"]:
            metrics["lift"] = metrics["precision_at_k"] / metrics["baseline_precision_at_k"]
        als_recs.unpersist()
        baseline_recs.unpersist()
    relevant.unpersist()
    train_pairs.unpersist()
    return metrics


# ------------------------------------------------------------------------------------------------- job
def check_interactions(interactions: DataFrame, path: str) -> None:
    """Contract checks ALS depends on, in one pass; no interactions at all is an error."""
    n_rows = check_columns(
        interactions,
        table="interactions",
        path=path,
        not_null=[USER_COL, ITEM_COL, DATE_COL, WEIGHT_COL, PURCHASES_COL],
        non_negative=[USER_COL, ITEM_COL, WEIGHT_COL, PURCHASES_COL],
    )
    if n_rows == 0:
        raise SystemExit(f"input table 'interactions' at {path} has no rows: nothing to train ALS on")
    largest_id = interactions.agg(F.max(USER_COL), F.max(ITEM_COL)).first()
    for column, value in zip((USER_COL, ITEM_COL), largest_id):
        if value > INT32_MAX:
            raise SystemExit(f"input table 'interactions' at {path}: {column} {value} exceeds ALS's 32-bit id range")


def run(spark: SparkSession, args: argparse.Namespace) -> dict:
    config = AlsConfig(**{field.name: getattr(args, field.name) for field in dataclasses.fields(AlsConfig)})
    interactions = read_feature_table(
        spark, args.features_dir, "interactions", args.ds, [USER_COL, ITEM_COL, DATE_COL, WEIGHT_COL, PURCHASES_COL]
    )
    users = read_feature_table(spark, args.features_dir, "user_features", args.ds, [USER_COL])
    items = read_feature_table(spark, args.features_dir, "item_features", args.ds, [ITEM_COL])
    check_interactions(interactions, feature_table_path(args.features_dir, "interactions", args.ds))
    users_path = feature_table_path(args.features_dir, "user_features", args.ds)
    check_columns(users, table="user_features", path=users_path, not_null=[USER_COL])

    metrics = evaluate_holdout(interactions, config, ds=args.ds)

    pairs = user_item_pairs(interactions).cache()
    started = time.perf_counter()
    model = fit_als(pairs, config)
    train_seconds = time.perf_counter() - started
    popular = popular_items(pairs, n=config.top_k + max_purchases_per_user(pairs))
    recommendations = top_k_recommendations(
        users,
        popular,
        purchased_pairs(pairs),
        top_k=config.top_k,
        candidates=als_candidates(model, users, n=config.top_k + config.candidate_buffer),
    )
    output_path = f"{str(args.output_dir).rstrip('/')}/recommendations"
    recommendations.write.mode("overwrite").parquet(output_path)
    written = spark.read.parquet(output_path)

    n_items = items.count()
    metrics.update(
        k=config.top_k,
        n_users=users.count(),
        n_items=n_items,
        n_window_interactions=pairs.count(),
        n_recommendations=written.count(),
        catalog_coverage=catalog_coverage(written, n_items),
        train_seconds=train_seconds,
        ds=args.ds.isoformat(),
        params=dataclasses.asdict(config),
        recommendations_path=output_path,
    )
    pairs.unpersist()
    metrics = {key: finite_or_none(value) if isinstance(value, float) else value for key, value in metrics.items()}
    write_metrics(args.metrics_path or f"{str(args.output_dir).rstrip('/')}/metrics.json", metrics)
    return metrics


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    defaults = AlsConfig()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--features-dir", required=True, help="root holding <table>/ds=<ds>/ Parquet features")
    parser.add_argument("--ds", required=True, type=iso_date, help="logical date YYYY-MM-DD")
    parser.add_argument("--output-dir", required=True, help="recommendations/ and metrics.json go here")
    parser.add_argument("--top-k", type=int, default=defaults.top_k)
    parser.add_argument("--holdout-days", type=int, default=defaults.holdout_days, help="last days held out for evaluation")
    parser.add_argument("--rank", type=int, default=defaults.rank, help="ALS latent factors")
    parser.add_argument("--reg-param", type=float, default=defaults.reg_param)
    parser.add_argument("--alpha", type=float, default=defaults.alpha, help="implicit-feedback confidence scale")
    parser.add_argument("--max-iter", type=int, default=defaults.max_iter)
    parser.add_argument("--seed", type=int, default=defaults.seed)
    parser.add_argument(
        "--candidate-buffer", type=int, default=defaults.candidate_buffer,
        help="extra ALS candidates per user so K remain after removing purchased items",
    )
    parser.add_argument(
        "--num-blocks", type=int, default=defaults.num_blocks,
        help="ALS user and item blocks (default: Spark's default parallelism)",
    )
    parser.add_argument("--metrics-path", default=None, help="default: <output-dir>/metrics.json")
    args = parser.parse_args(argv)
    num_blocks = 1 if args.num_blocks is None else args.num_blocks
    if min(args.top_k, num_blocks) < 1 or min(args.holdout_days, args.candidate_buffer) < 0:
        parser.error("--top-k and --num-blocks must be >= 1, --holdout-days and --candidate-buffer >= 0")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    return run(get_spark("als_recommendations"), args)


if __name__ == "__main__":
    run_as_script(main)
