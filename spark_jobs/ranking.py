"""Ranking metrics @K over per-user recommendation lists, computed in one Spark pass.

Definitions (binary relevance, the same as Spark's RankingMetrics / RankingEvaluator, which the tests
check against, next to a plain pandas reference):
- precision@K = hits in the first K / K
- recall@K    = hits in the first K / |relevant|
- NDCG@K      = sum over hit positions i (0-based) of 1/log2(i+2), divided by the same sum over the first
                min(K, |relevant|) positions
- MAP@K       = sum over hit positions i of (hits up to i)/(i+1), divided by min(K, |relevant|)
Only users with at least one relevant item are evaluated. Lists are arrays of item ids, best first.
"""
from __future__ import annotations

from typing import Mapping

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

METRICS = ("precision", "recall", "ndcg", "map")
ALL_USERS = "all"


def metric_columns(recommended: str, relevant: str, *, k: int) -> dict[str, Column]:
    """Per-user metric columns for the list column `recommended` against the array column `relevant`."""
    hits = f"transform(slice(coalesce({recommended}, array()), 1, {k}), x -> if(array_contains({relevant}, x), 1, 0))"
    n_hits = f"aggregate({hits}, 0, (acc, h) -> acc + h)"
    ideal = f"least({k}, size({relevant}))"
    dcg = f"aggregate(transform({hits}, (h, i) -> h / log2(i + 2)), 0D, (acc, x) -> acc + x)"
    idcg = f"aggregate(transform(sequence(0, {ideal} - 1), i -> 1 / log2(i + 2)), 0D, (acc, x) -> acc + x)"
    precision_sum = (f"aggregate(transform({hits}, (h, i) -> h * aggregate(slice({hits}, 1, i + 1), 0, "
                     f"(acc, x) -> acc + x) / (i + 1)), 0D, (acc, x) -> acc + x)")
    return {
        "precision": F.expr(f"{n_hits} / {k}"),
        "recall": F.expr(f"{n_hits} / size({relevant})"),
        "ndcg": F.expr(f"{dcg} / {idcg}"),
        "map": F.expr(f"{precision_sum} / {ideal}"),
    }


def evaluate_lists(
    frame: DataFrame,
    lists: Mapping[str, Column],
    *,
    relevant: str = "relevant",
    segment: str | None = "activity",
    k: int,
) -> dict[str, dict[str, dict]]:
    """Mean metrics @k of several recommendation lists over the users of `frame` (one row per user with a
    non-empty `relevant` array), overall and per value of the `segment` column, in one aggregation.

    Returns {list_name: {"all" | segment value: {"n_users", "precision", "recall", "ndcg", "map"}}}."""
    evaluated = frame.filter(F.size(relevant) > 0)
    per_user = [F.lit(1).alias("__one")]
    for name, column in lists.items():
        evaluated = evaluated.withColumn(f"__list_{name}", column)
        for metric, value in metric_columns(f"__list_{name}", relevant, k=k).items():
            per_user.append(value.alias(f"{name}__{metric}"))
    group = F.col(segment) if segment else F.lit(ALL_USERS)
    scored = evaluated.select(group.cast("string").alias("__segment"), *per_user)
    sums = [F.sum(c).alias(c) for c in scored.columns if c != "__segment"]
    rows = scored.groupBy("__segment").agg(*sums).collect()  # one row per segment: tiny

    result: dict[str, dict[str, dict]] = {name: {} for name in lists}
    totals: dict[str, float] = {}
    for row in rows:
        n_users = row["__one"]
        for name in lists:
            result[name][row["__segment"]] = {
                "n_users": n_users, **{m: row[f"{name}__{m}"] / n_users for m in METRICS}}
        for column in row.asDict():
            if column != "__segment":
                totals[column] = totals.get(column, 0) + row[column]
    n_all = totals.get("__one", 0)
    for name in lists:
        result[name][ALL_USERS] = {"n_users": n_all, **{
            m: (totals[f"{name}__{m}"] / n_all if n_all else None) for m in METRICS}}
    return result


def coverage(frame: DataFrame, lists: Mapping[str, Column], *, n_items: int) -> dict[str, float | None]:
    """Share of the catalogue (n_items) that appears in at least one user's list, per list, in one pass."""
    if n_items <= 0:
        return {name: None for name in lists}
    exploded = None
    for name, column in lists.items():
        part = frame.select(F.lit(name).alias("list"), F.explode_outer(column).alias("item"))
        exploded = part if exploded is None else exploded.unionByName(part)
    counts = {row["list"]: row["n"] for row in
              exploded.groupBy("list").agg(F.countDistinct("item").alias("n")).collect()}
    return {name: counts.get(name, 0) / n_items for name in lists}
