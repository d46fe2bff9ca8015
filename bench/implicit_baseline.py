"""What a user would otherwise run: the `implicit` library's CPU ALS on the same interactions, top-K for
every user with their purchases filtered, written as Parquet. Prints one JSON line of step timings.

    .venv/bin/python bench/implicit_baseline.py --features DIR --ds D --out recs.parquet --rank 64 --iterations 10
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import pandas as pd
from scipy import sparse


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--features", required=True)
    parser.add_argument("--ds", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--k", type=int, default=10)
    args = parser.parse_args()
    from implicit.cpu.als import AlternatingLeastSquares

    steps = {}
    started = time.perf_counter()
    interactions = pd.read_parquet(
        f"{args.features}/interactions/ds={args.ds}", columns=["user_id", "product_id", "weight", "n_purchases"]
    )
    pairs = interactions.groupby(["user_id", "product_id"], as_index=False).agg(
        weight=("weight", "sum"), purchases=("n_purchases", "sum")
    )
    users, user_index = np.unique(pairs["user_id"].to_numpy(), return_inverse=True)
    items, item_index = np.unique(pairs["product_id"].to_numpy(), return_inverse=True)
    matrix = sparse.csr_matrix(
        (pairs["weight"].to_numpy(np.float32), (user_index, item_index)), shape=(len(users), len(items))
    )
    bought = pairs["purchases"].to_numpy() > 0
    purchased = sparse.csr_matrix(
        (np.ones(bought.sum(), np.float32), (user_index[bought], item_index[bought])), shape=matrix.shape
    )
    steps["read"] = time.perf_counter() - started

    mark = time.perf_counter()
    model = AlternatingLeastSquares(
        factors=args.rank, iterations=args.iterations, regularization=0.1, alpha=10.0, random_state=42
    )
    model.fit(matrix, show_progress=False)
    steps["fit"] = time.perf_counter() - mark

    mark = time.perf_counter()
    ids, scores = model.recommend(np.arange(len(users)), purchased, N=args.k, filter_already_liked_items=True)
    steps["top_k"] = time.perf_counter() - mark

    mark = time.perf_counter()
    pd.DataFrame(
        {
            "user_id": np.repeat(users, args.k),
            "rank": np.tile(np.arange(1, args.k + 1), len(users)),
            "product_id": items[ids.ravel()],
            "score": scores.ravel(),
        }
    ).to_parquet(args.out, index=False)
    steps["write"] = time.perf_counter() - mark
    print(json.dumps({k: round(v, 2) for k, v in steps.items()}))


if __name__ == "__main__":
    main()
