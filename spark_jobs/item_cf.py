"""Item-based collaborative filtering: item-item cosine similarity on the user-item matrix, top-N neighbours
per item, computed sparsely in Spark.

Each partition of users multiplies its slice of the user-item matrix with itself (scipy, X_p^T X_p: only
co-occurring item pairs), the partial co-occurrence sums are added up by (item, item) in Spark, divided by
the item norms (cosine) and cut to the N best neighbours per item. Only that n_items x N table reaches the
driver, to be broadcast for scoring (spark_jobs/topk.py: a user's scores = their history x neighbours).
A user's values are log(1 + weight); users with very long histories contribute their `max_user_items`
strongest items, which bounds the pair count (sum of squared history lengths) on real data with a few
accounts that buy thousands of items.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

from spark_jobs.topk import HISTORY, WEIGHTS, TopK

PAIR_SCHEMA = "i int, j int, dot double"
FLUSH_NNZ = 5_000_000  # partial co-occurrence entries a task holds before emitting them


def _partial_cooccurrence(n_items: int, max_user_items: int):
    from scipy import sparse

    def emit(total) -> pd.DataFrame:
        coo = total.tocoo()
        return pd.DataFrame(
            {"i": coo.row.astype(np.int32), "j": coo.col.astype(np.int32), "dot": coo.data.astype(np.float64)}
        )

    def run(frames: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        total = None
        for frame in frames:
            rows, cols, values = [], [], []
            for row, (items, weights) in enumerate(zip(frame[HISTORY], frame[WEIGHTS])):
                items = np.asarray(items, np.int64)
                values_u = TopK.cf_values(np.asarray(weights, np.float32))
                if len(items) > max_user_items:
                    strongest = np.argpartition(values_u, -max_user_items)[-max_user_items:]
                    items, values_u = items[strongest], values_u[strongest]
                rows.append(np.full(len(items), row))
                cols.append(items)
                values.append(values_u)
            if not rows:
                continue
            matrix = sparse.csr_matrix(
                (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))),
                shape=(len(frame), n_items),
                dtype=np.float64,
            )
            partial = (matrix.T @ matrix).tocsr()
            total = partial if total is None else total + partial
            if total.nnz > FLUSH_NNZ:
                yield emit(total)
                total = None
        if total is not None and total.nnz:
            yield emit(total)

    return run


def item_neighbours(user_rows: DataFrame, n_items: int, *, neighbours: int, max_user_items: int = 100):
    """The item-item cosine similarity matrix (scipy CSR, n_items x n_items, float32) keeping the
    `neighbours` most similar items of each item. `user_rows` holds per user the item indices (`history`)
    and weights (`history_weights`)."""
    from scipy import sparse

    sums = (
        user_rows.select(HISTORY, WEIGHTS)
        .mapInPandas(_partial_cooccurrence(n_items, max_user_items), PAIR_SCHEMA)
        .groupBy("i", "j")
        .agg(F.sum("dot").alias("dot"))
    )
    sums = sums.cache()
    norms = sums.filter(F.col("i") == F.col("j")).select(F.col("i").alias("item"), F.sqrt("dot").alias("norm"))
    best = Window.partitionBy("i").orderBy(F.desc("similarity"), F.asc("j"))
    top = (
        sums.filter(F.col("i") != F.col("j"))
        .join(F.broadcast(norms.withColumnRenamed("item", "i").withColumnRenamed("norm", "norm_i")), "i")
        .join(F.broadcast(norms.withColumnRenamed("item", "j").withColumnRenamed("norm", "norm_j")), "j")
        .select("i", "j", (F.col("dot") / (F.col("norm_i") * F.col("norm_j"))).alias("similarity"))
        .withColumn("_rank", F.row_number().over(best))
        .filter(F.col("_rank") <= neighbours)
        .select("i", "j", "similarity")
    )
    table = top.toPandas()  # n_items x neighbours rows at most: the model itself, broadcast for scoring
    sums.unpersist()
    return sparse.csr_matrix(
        (table["similarity"].to_numpy(np.float32), (table["i"].to_numpy(), table["j"].to_numpy())),
        shape=(n_items, n_items),
        dtype=np.float32,
    )
