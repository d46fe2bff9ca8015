"""Recommendation quality on real data: the UCI Online Retail purchase log (shared/data/online-retail,
CC BY 4.0, Chen, Sain & Guo 2012), through the job's own command line with no parameter set by hand.

Protocol (a user's check, independent of the job's own time-based holdout): the customers' distinct
(customer, product) purchases are split per customer at random 75 / 25; the 75 % becomes the job's
`interactions` (one row per customer, product and hour; every line a purchase, so bought items are never
recommended); its published lists are scored against each customer's held-out 25 % with precision /
recall / NDCG / MAP @10, next to a popularity ranking of the same 75 % (seen items excluded).
The job's own metrics (its time-based holdout, tuning candidates, choice, gate) are reported too.

    .venv/bin/python bench/online_retail_eval.py [--csv PATH] [--out bench/results/online_retail.json]

Cleaning (a stand-in for the import adapter): rows without CustomerID, cancellations (InvoiceNo 'C...'),
non-positive quantities or prices and non-product stock codes (no digit: POST, DOT, M, BANK CHARGES, ...)
are left out; StockCodes get integer keys. There is no category column, so the fallback is popularity.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CSV = REPO.parent / "shared" / "data" / "online-retail" / "online_retail.csv.gz"
DS = "2011-12-09"
K = 10
PURCHASE_WEIGHT = 5.0  # the dbt default weight of a purchase event


def load_purchases(csv: Path) -> pd.DataFrame:
    raw = pd.read_csv(csv, dtype={"InvoiceNo": str, "StockCode": str, "CustomerID": str})
    kept = raw[raw["CustomerID"].notna() & ~raw["InvoiceNo"].str.startswith("C") & (raw["Quantity"] > 0)
               & (raw["UnitPrice"] > 0) & raw["StockCode"].str.contains(r"\d")].copy()
    kept["user_id"] = kept["CustomerID"].astype(float).astype("int64")
    codes = {code: index + 1 for index, code in enumerate(sorted(kept["StockCode"].str.upper().unique()))}
    kept["product_id"] = kept["StockCode"].str.upper().map(codes).astype("int64")
    kept["event_hour"] = pd.to_datetime(kept["InvoiceDate"]).dt.floor("h").astype("datetime64[us]")
    print(f"online retail: {len(raw):,} rows, {len(kept):,} purchase lines kept, "
          f"{kept['user_id'].nunique():,} customers, {kept['product_id'].nunique():,} products", file=sys.stderr)
    return kept[["user_id", "product_id", "event_hour"]]


def split_per_user(purchases: pd.DataFrame, share: float = 0.25, seed: int = 0):
    """Distinct (customer, product) pairs, 25 % per customer held out at random (customers with >= 4)."""
    pairs = purchases.groupby(["user_id", "product_id"], as_index=False).size()
    rng = np.random.default_rng(seed)
    pairs["u"] = rng.random(len(pairs))
    pairs["rank"] = pairs.groupby("user_id")["u"].rank(method="first")
    pairs["n"] = pairs.groupby("user_id")["product_id"].transform("size")
    held = (pairs["n"] >= 4) & (pairs["rank"] <= np.floor(share * pairs["n"]))
    test = pairs.loc[held, ["user_id", "product_id"]]
    train = purchases.merge(pairs.loc[~held, ["user_id", "product_id"]], on=["user_id", "product_id"])
    return train, test


def write_features(features: Path, train: pd.DataFrame, all_users: np.ndarray, all_items: np.ndarray) -> None:
    interactions = (train.assign(event_date=train["event_hour"].dt.date, weight=PURCHASE_WEIGHT, n_purchases=1)
                    .groupby(["user_id", "product_id", "event_date", "event_hour"], as_index=False)
                    .agg(weight=("weight", "sum"), n_purchases=("n_purchases", "sum"))
                    .astype({"n_purchases": "int32"}))
    tables = {"interactions": interactions, "user_features": pd.DataFrame({"user_id": all_users}),
              "item_features": pd.DataFrame({"product_id": all_items, "category": pd.Series([None] * len(all_items),
                                                                                             dtype="object")})}
    for table, frame in tables.items():
        target = features / table / f"ds={DS}"
        target.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(target / f"{table}.parquet", index=False, coerce_timestamps="us")


def score(lists: dict[int, list[int]], relevant: dict[int, set[int]], k: int = K) -> dict:
    totals = {"precision": 0.0, "recall": 0.0, "ndcg": 0.0, "map": 0.0}
    for user, items in relevant.items():
        hits = [1 if item in items else 0 for item in lists.get(user, [])[:k]]
        totals["precision"] += sum(hits) / k
        totals["recall"] += sum(hits) / len(items)
        totals["ndcg"] += sum(h / np.log2(i + 2) for i, h in enumerate(hits)) / sum(
            1 / np.log2(i + 2) for i in range(min(k, len(items))))
        totals["map"] += sum(sum(hits[:i + 1]) / (i + 1) for i, h in enumerate(hits) if h) / min(k, len(items))
    return {m: round(v / len(relevant), 4) for m, v in totals.items()} | {"n_users": len(relevant)}


def popularity_lists(train: pd.DataFrame, users, k: int = K) -> dict[int, list[int]]:
    order = train.groupby("product_id")["user_id"].nunique().sort_values(ascending=False, kind="stable").index
    seen = train.groupby("user_id")["product_id"].apply(set).to_dict()
    head = list(order[: k + max(len(s) for s in seen.values())])
    return {u: [i for i in head if i not in seen.get(u, ())][:k] for u in users}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "online_retail.json")
    parser.add_argument("--job-arg", action="append", default=[], help="extra job argument (not for the headline run)")
    args = parser.parse_args()

    purchases = load_purchases(args.csv)
    train, test = split_per_user(purchases)
    relevant = test.groupby("user_id")["product_id"].apply(set).to_dict()
    with tempfile.TemporaryDirectory() as tmp:
        features, output = Path(tmp) / "features", Path(tmp) / "als"
        write_features(features, train, purchases["user_id"].unique(), purchases["product_id"].unique())
        started = time.perf_counter()
        subprocess.run([str(Path(sys.executable).with_name("pm")), "spark-submit", "als_recommendations",
                        "--features-dir", str(features), "--ds", DS, "--output-dir", str(output), *args.job_arg],
                       check=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        seconds = time.perf_counter() - started
        recs = pd.read_parquet(output / "recommendations").sort_values(["user_id", "rank"])
        metrics = json.loads((output / "metrics.json").read_text())
    job_lists = recs.groupby("user_id")["product_id"].apply(list).to_dict()
    result = {
        "data": {"purchase_lines": len(purchases), "train_pairs": int(train[["user_id", "product_id"]].drop_duplicates().shape[0]),
                 "held_out_pairs": len(test), "evaluated_customers": len(relevant)},
        "random_75_25": {"job": score(job_lists, relevant), "popularity": score(popularity_lists(train, relevant), relevant)},
        "job_seconds": round(seconds, 1),
        "job_internal_holdout": {name: lists["all"] for name, lists in metrics["holdout"]["lists"].items()},
        "job_choice": metrics["tuning"]["chosen"], "job_candidates": metrics["tuning"].get("candidates"),
        "gate": metrics["gate"], "sources": metrics["recommendations_by_source"],
    }
    result["random_75_25"]["lift_precision"] = round(
        result["random_75_25"]["job"]["precision"] / result["random_75_25"]["popularity"]["precision"], 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
