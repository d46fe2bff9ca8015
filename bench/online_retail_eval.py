"""Recommendation quality on real data: the UCI Online Retail purchase log (shared/data/online-retail,
CC BY 4.0, Chen, Sain & Guo 2012), through the job's own command line with no parameter set by hand,
next to what a user would otherwise run on the same train / test split.

    .venv/bin/python bench/online_retail_eval.py [--protocol random_75_25|last_14_days|both]
                                                 [--csv PATH] [--out bench/results/online_retail.json]

Two protocols (a user's checks, independent of the job's own time-based holdout):

* random_75_25 -- the distinct (customer, product) purchases of customers with >= 4 of them are split per
  customer at random 75 / 25 (seed 0); every purchase line of the 75 % pairs is the job's `interactions`,
  and each customer's held-out 25 % is what the lists are scored against.
* last_14_days -- cutoff = midnight after the last purchase date, minus 14 days. Every purchase line before
  the cutoff is the job's `interactions` (its ds is the last day before the cutoff). Scored: returning
  customers (with purchases before the cutoff) against the products they bought at or after the cutoff
  but never before it (first-time purchases); customers without such a product are not evaluated.

In both, `interactions` has one row per customer, product and hour (every line a purchase, so bought items
are never recommended); `user_features` / `item_features` list every customer and product of the log.

Lists scored (precision / recall / NDCG / MAP @10, items the customer bought in the train part excluded):

* job -- the job's published lists (`<output>/recommendations`);
* popularity -- products by distinct customers in the train part;
* recent_popularity_7d / _30d -- the same, counting only train lines in the last 7 / 30 days before the
  train part's last timestamp, ties broken by all-time popularity;
* implicit_best_on_test -- the `implicit` library's CPU ALS (iterations 15, random_state 0, one BLAS thread)
  on the train customer x product matrix, over a grid of 36 configurations: factors (32, 64, 128) x
  regularization (0.01, 0.1, 1.0) x alpha (1, 10, 40) with binary weights per pair (27), plus factors 64 x
  the same regularization x alpha with log1p(purchase lines) weights (9). The best configuration is picked
  by NDCG on the test itself -- an upper bound no user could actually reach; the grid median is reported too.

The job's wall time, engine, gate verdict, choice, list sources and internal holdout are reported per
protocol. Results go to --out (JSON, with the machine), a Markdown table per protocol to stdout (the
job's own output to stderr).

Cleaning (a stand-in for the import adapter): rows without CustomerID, cancellations (InvoiceNo 'C...'),
non-positive quantities or prices and non-product stock codes (no digit: POST, DOT, M, BANK CHARGES, ...)
are left out; StockCodes get integer keys. There is no category column, so the fallback is popularity.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import sparse

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CSV = REPO.parent / "shared" / "data" / "online-retail" / "online_retail.csv.gz"
PROTOCOLS = ("random_75_25", "last_14_days")
K = 10
PURCHASE_WEIGHT = 5.0  # the dbt default weight of a purchase event
TEST_DAYS = 14
RECENT_DAYS = (7, 30)
METRICS = ("precision", "recall", "ndcg", "map")
IMPLICIT_GRID = [
    {"factors": f, "regularization": r, "alpha": a, "weights": "binary"}
    for f in (32, 64, 128)
    for r in (0.01, 0.1, 1.0)
    for a in (1, 10, 40)
] + [
    {"factors": 64, "regularization": r, "alpha": a, "weights": "log1p"} for r in (0.01, 0.1, 1.0) for a in (1, 10, 40)
]


# ------------------------------------------------------------------------------------------------ data
def load_purchases(csv: Path) -> pd.DataFrame:
    raw = pd.read_csv(csv, dtype={"InvoiceNo": str, "StockCode": str, "CustomerID": str})
    kept = raw[
        raw["CustomerID"].notna()
        & ~raw["InvoiceNo"].str.startswith("C")
        & (raw["Quantity"] > 0)
        & (raw["UnitPrice"] > 0)
        & raw["StockCode"].str.contains(r"\d")
    ].copy()
    kept["user_id"] = kept["CustomerID"].astype(float).astype("int64")
    codes = {code: index + 1 for index, code in enumerate(sorted(kept["StockCode"].str.upper().unique()))}
    kept["product_id"] = kept["StockCode"].str.upper().map(codes).astype("int64")
    kept["event_hour"] = pd.to_datetime(kept["InvoiceDate"]).dt.floor("h").astype("datetime64[us]")
    print(
        f"online retail: {len(raw):,} rows, {len(kept):,} purchase lines kept, "
        f"{kept['user_id'].nunique():,} customers, {kept['product_id'].nunique():,} products",
        file=sys.stderr,
    )
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


def split_last_days(purchases: pd.DataFrame, days: int = TEST_DAYS):
    """Lines before the cutoff; test = returning customers' first-time products at or after it."""
    cutoff = purchases["event_hour"].max().normalize() + pd.Timedelta(days=1) - pd.Timedelta(days=days)
    before = purchases["event_hour"] < cutoff
    train = purchases[before]
    later = purchases.loc[~before & purchases["user_id"].isin(train["user_id"]), ["user_id", "product_id"]]
    known = train[["user_id", "product_id"]].drop_duplicates()
    test = (
        later.drop_duplicates()
        .merge(known, how="left", indicator=True)
        .query("_merge == 'left_only'")[["user_id", "product_id"]]
    )
    return train, test, cutoff


def make_split(protocol: str, purchases: pd.DataFrame) -> dict:
    """train lines, relevant products per evaluated customer, and the ds the job runs on."""
    if protocol == "random_75_25":
        train, test = split_per_user(purchases)
        ds, extra = purchases["event_hour"].max().date().isoformat(), {}
    else:
        train, test, cutoff = split_last_days(purchases)
        ds, extra = (cutoff - pd.Timedelta(days=1)).date().isoformat(), {"cutoff": cutoff.isoformat()}
    relevant = test.groupby("user_id")["product_id"].apply(set).to_dict()
    data = {
        "ds": ds,
        **extra,
        "train_lines": len(train),
        "train_pairs": int(train[["user_id", "product_id"]].drop_duplicates().shape[0]),
        "test_pairs": len(test),
        "evaluated_customers": len(relevant),
    }
    return {"train": train, "relevant": relevant, "ds": ds, "data": data}


def write_features(features: Path, train: pd.DataFrame, all_users: np.ndarray, all_items: np.ndarray, ds: str) -> None:
    interactions = (
        train.assign(event_date=train["event_hour"].dt.date, weight=PURCHASE_WEIGHT, n_purchases=1)
        .groupby(["user_id", "product_id", "event_date", "event_hour"], as_index=False)
        .agg(weight=("weight", "sum"), n_purchases=("n_purchases", "sum"))
        .astype({"n_purchases": "int32"})
    )
    tables = {
        "interactions": interactions,
        "user_features": pd.DataFrame({"user_id": all_users}),
        "item_features": pd.DataFrame(
            {"product_id": all_items, "category": pd.Series([None] * len(all_items), dtype="object")}
        ),
    }
    for table, frame in tables.items():
        target = features / table / f"ds={ds}"
        target.mkdir(parents=True, exist_ok=True)
        frame.to_parquet(target / f"{table}.parquet", index=False, coerce_timestamps="us")


# ------------------------------------------------------------------------------------------------ scoring
def score(lists: dict[int, list[int]], relevant: dict[int, set[int]], k: int = K) -> dict:
    totals = {"precision": 0.0, "recall": 0.0, "ndcg": 0.0, "map": 0.0}
    for user, items in relevant.items():
        hits = [1 if item in items else 0 for item in lists.get(user, [])[:k]]
        totals["precision"] += sum(hits) / k
        totals["recall"] += sum(hits) / len(items)
        totals["ndcg"] += sum(h / np.log2(i + 2) for i, h in enumerate(hits)) / sum(
            1 / np.log2(i + 2) for i in range(min(k, len(items)))
        )
        totals["map"] += sum(sum(hits[: i + 1]) / (i + 1) for i, h in enumerate(hits) if h) / min(k, len(items))
    return {m: round(float(v) / len(relevant), 4) for m, v in totals.items()} | {"n_users": len(relevant)}


# ------------------------------------------------------------------------------------------------ baselines
def popularity_lists(train: pd.DataFrame, users, k: int = K, recent_days: int | None = None) -> dict[int, list[int]]:
    """Products by distinct customers (only lines in the last `recent_days` before the train part's last
    timestamp, ties by all-time count, then product id), each customer's bought products left out."""
    counts = pd.DataFrame({"all_time": train.groupby("product_id")["user_id"].nunique()})
    if recent_days is None:
        counts["recent"] = counts["all_time"]
    else:
        since = train["event_hour"].max() - pd.Timedelta(days=recent_days)
        window = train[train["event_hour"] >= since]
        counts["recent"] = window.groupby("product_id")["user_id"].nunique().reindex(counts.index, fill_value=0)
    order = (
        counts.rename_axis("product_id")
        .reset_index()
        .sort_values(["recent", "all_time", "product_id"], ascending=[False, False, True])["product_id"]
    )
    seen = train.groupby("user_id")["product_id"].apply(set).to_dict()
    head = list(order[: k + max(len(s) for s in seen.values())])
    return {u: [i for i in head if i not in seen.get(u, ())][:k] for u in users}


def implicit_grid(train: pd.DataFrame, relevant: dict[int, set[int]], all_items: np.ndarray) -> list[dict]:
    """Every IMPLICIT_GRID configuration of implicit's CPU ALS, scored on the test."""
    from implicit.cpu.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    pairs = train.groupby(["user_id", "product_id"], as_index=False).size()
    users, rows = np.unique(pairs["user_id"].to_numpy(), return_inverse=True)
    items = np.sort(all_items)
    cols = np.searchsorted(items, pairs["product_id"].to_numpy())
    values = {"binary": np.ones(len(pairs)), "log1p": np.log1p(pairs["size"].to_numpy())}
    matrices = {
        name: sparse.csr_matrix((v.astype(np.float32), (rows, cols)), shape=(len(users), len(items)))
        for name, v in values.items()
    }
    evaluated = np.array(sorted(relevant))
    user_rows = np.searchsorted(users, evaluated)
    results = []
    for params in IMPLICIT_GRID:
        matrix = matrices[params["weights"]]
        started = time.perf_counter()
        with threadpool_limits(1, "blas"):
            model = AlternatingLeastSquares(
                factors=params["factors"],
                regularization=params["regularization"],
                alpha=params["alpha"],
                iterations=15,
                random_state=0,
            )
            model.fit(matrix, show_progress=False)
        ids, _ = model.recommend(user_rows, matrix[user_rows], N=K, filter_already_liked_items=True)
        lists = {int(u): items[r].tolist() for u, r in zip(evaluated, ids)}
        results.append({"params": params, **score(lists, relevant), "seconds": round(time.perf_counter() - started, 1)})
    return results


def grid_summary(results: list[dict]) -> tuple[dict, dict]:
    """(best configuration by NDCG on the test, with its params; median of every metric over the grid)."""
    best = max(results, key=lambda r: r["ndcg"])
    median = {m: round(float(np.median([r[m] for r in results])), 4) for m in METRICS}
    return (
        {m: best[m] for m in (*METRICS, "n_users")} | {"params": best["params"]},
        median | {"n_users": best["n_users"], "n_configurations": len(results)},
    )


# ------------------------------------------------------------------------------------------------ the job
def run_job(train: pd.DataFrame, all_users: np.ndarray, all_items: np.ndarray, ds: str, job_args: list[str]):
    """The job through its command line: (published lists per customer, metrics.json, wall seconds)."""
    with tempfile.TemporaryDirectory() as tmp:
        features, output = Path(tmp) / "features", Path(tmp) / "als"
        write_features(features, train, all_users, all_items, ds)
        started = time.perf_counter()
        subprocess.run(
            [
                str(Path(sys.executable).with_name("pm")),
                "spark-submit",
                "als_recommendations",
                "--features-dir",
                str(features),
                "--ds",
                ds,
                "--output-dir",
                str(output),
                *job_args,
            ],
            check=True,
            stdout=sys.stderr,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        seconds = time.perf_counter() - started
        recs = pd.read_parquet(output / "recommendations").sort_values(["user_id", "rank"])
        metrics = json.loads((output / "metrics.json").read_text())
    return recs.groupby("user_id")["product_id"].apply(list).to_dict(), metrics, seconds


def job_summary(metrics: dict, seconds: float) -> dict:
    return {
        "seconds": round(seconds, 1),
        "engine": metrics.get("engine"),
        "gate_verdict": metrics["gate"]["verdict"],
        "choice": metrics["tuning"]["chosen"],
        "sources": metrics["recommendations_by_source"],
        "internal_holdout": {name: lists["all"] for name, lists in metrics["holdout"]["lists"].items()},
        "internal_served_vs_baseline": metrics["holdout"].get("served_vs_baseline"),
    }


# ------------------------------------------------------------------------------------------------ protocol
def evaluate(protocol: str, purchases: pd.DataFrame, job_args: list[str]) -> dict:
    split = make_split(protocol, purchases)
    train, relevant = split["train"], split["relevant"]
    all_users, all_items = purchases["user_id"].unique(), purchases["product_id"].unique()
    print(f"{protocol}: {split['data']}", file=sys.stderr)
    job_lists, metrics, seconds = run_job(train, all_users, all_items, split["ds"], job_args)
    lists = {"job": score(job_lists, relevant), "popularity": score(popularity_lists(train, relevant), relevant)}
    for days in RECENT_DAYS:
        lists[f"recent_popularity_{days}d"] = score(popularity_lists(train, relevant, recent_days=days), relevant)
    grid = implicit_grid(train, relevant, all_items)
    lists["implicit_best_on_test"], lists["implicit_grid_median"] = grid_summary(grid)
    return {
        "data": split["data"],
        "lists": lists,
        "ratios": ratios(lists),
        "job": job_summary(metrics, seconds),
        "implicit_grid": grid,
    }


def ratios(lists: dict) -> dict:
    recent = max((lists[f"recent_popularity_{d}d"] for d in RECENT_DAYS), key=lambda s: s["ndcg"])
    best = lists["implicit_best_on_test"]
    divide = lambda a, b: round(a / b, 3) if b else None  # noqa: E731
    return {
        "job_over_best_recent_popularity_ndcg": divide(lists["job"]["ndcg"], recent["ndcg"]),
        "job_over_implicit_best_on_test_ndcg": divide(lists["job"]["ndcg"], best["ndcg"]),
        "job_over_implicit_best_on_test_precision": divide(lists["job"]["precision"], best["precision"]),
    }


def markdown(protocol: str, result: dict) -> str:
    lines = [
        f"### {protocol} ({result['data']['evaluated_customers']:,} customers evaluated)",
        "",
        "| list | NDCG@10 | precision@10 | recall@10 | users |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, s in result["lists"].items():
        lines.append(f"| {name} | {s['ndcg']:.4f} | {s['precision']:.4f} | {s['recall']:.4f} | {s['n_users']:,} |")
    job = result["job"]
    lines += [
        "",
        f"implicit best params: {result['lists']['implicit_best_on_test']['params']}",
        f"ratios: {result['ratios']}",
        f"job: {job['seconds']} s, engine {job['engine']}, {job['gate_verdict']}, chose {job['choice']}",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--csv", type=Path, default=DEFAULT_CSV)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "online_retail.json")
    parser.add_argument("--protocol", choices=(*PROTOCOLS, "both"), default="both")
    parser.add_argument("--job-arg", action="append", default=[], help="extra job argument (not for the headline run)")
    args = parser.parse_args()

    purchases = load_purchases(args.csv)
    result = {
        "machine": {
            "cpu_count": os.cpu_count(),
            "processor": platform.processor(),
            "python": platform.python_version(),
        },
        "data": {
            "purchase_lines": len(purchases),
            "customers": int(purchases["user_id"].nunique()),
            "products": int(purchases["product_id"].nunique()),
        },
    }
    for protocol in PROTOCOLS if args.protocol == "both" else (args.protocol,):
        result[protocol] = evaluate(protocol, purchases, args.job_arg)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print("\n".join(markdown(p, result[p]) for p in PROTOCOLS if p in result))


if __name__ == "__main__":
    main()
