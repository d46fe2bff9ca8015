"""`make bench-als`: the recommendation job end to end against the `implicit` library, and its top-K step
against the BLAS limit, on generated interactions at 1M and 10M user-item pairs. Not a test: figures.

For each size, in one run on the same machine and the same data:
1. the job through its command line (`pm spark-submit als_recommendations`: JVM start, read, ALS fit,
   top-K for every user with purchases excluded, write Parquet), with tuning and evaluation off
   (`--set als.split=time --set als.holdout=0h --fixed-choice` ALS at the same rank / iterations as 2.), with the in-process
   engine (`implicit`) and, up to --mllib-max-pairs, with Spark MLlib;
2. `implicit` (CPU ALS, conjugate gradient): read, fit, recommend for every user with
   filter_already_liked_items, write Parquet (bench/implicit_baseline.py);
3. the top-K engine alone (spark_jobs/topk.py, numpy, this process) on random factors of the same shape,
   against the BLAS limit: users x items x rank multiply-adds at the measured single-precision GEMM rate.
Wall time and peak resident memory come from /usr/bin/time -v. Results: bench/results/als_bench.json and a
Markdown table on stdout. Hyperparameters do not carry over between Spark's and implicit's ALS (Spark scales
the regularisation by each row's count): the comparison is of speed at equal rank and iterations.

    .venv/bin/python bench/als_bench.py [--pairs 1000000 10000000] [--tuned-pairs 100000] [--rank 64] [--iterations 10]

4. the job with its defaults (tuning and evaluation on) at --tuned-pairs: the nightly cost of self-tuning.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
DS = "2026-11-22"


def generate(pairs: int, out: Path, seed: int = 0) -> dict:
    """`pairs` distinct (user, item) pairs with structure: users in taste clusters that favour their own item
    pool, Zipf popularity, lognormal activity; ~10 % purchases. 20 pairs per user, 200 per item on average."""
    rng = np.random.default_rng(seed)
    n_users, n_items, n_clusters = max(pairs // 20, 100), max(pairs // 200, 50), 50
    activity = rng.lognormal(0, 1, n_users)
    activity /= activity.sum()
    cluster = rng.integers(0, n_clusters, n_users)
    popularity = 1 / np.arange(1, n_items + 1) ** 0.9
    item_order = rng.permutation(n_items)
    pool_size = n_items // n_clusters
    frame = pd.DataFrame({"user_id": [], "product_id": []}, dtype="int64")
    while len(frame) < pairs:  # draw until enough distinct pairs (heavy users repeat items)
        draws = int((pairs - len(frame)) * 1.5) + 1000
        users = rng.choice(n_users, draws, p=activity)
        own_pool = rng.random(draws) < 0.7
        ranks = np.minimum(rng.zipf(1.3, draws) - 1, pool_size - 1)
        global_pick = rng.choice(n_items, draws, p=popularity / popularity.sum())
        items = item_order[np.where(own_pool, cluster[users] * pool_size + ranks, global_pick)]
        drawn = pd.DataFrame({"user_id": users.astype("int64") + 1, "product_id": items.astype("int64") + 1})
        frame = pd.concat([frame, drawn]).drop_duplicates()
    frame = frame.head(pairs).reset_index(drop=True)
    hours = rng.integers(0, 30 * 24, len(frame))
    start = pd.Timestamp("2026-10-24")
    frame["event_hour"] = (start + pd.to_timedelta(hours, unit="h")).astype("datetime64[us]")
    frame["event_date"] = frame["event_hour"].dt.date
    purchased = rng.random(len(frame)) < 0.1
    frame["weight"] = np.where(purchased, 5.0, rng.choice([1.0, 2.0, 3.0], len(frame)))
    frame["n_purchases"] = purchased.astype("int32")
    tables = {
        "interactions": frame,
        "user_features": pd.DataFrame({"user_id": np.arange(1, n_users + 1)}),
        "item_features": pd.DataFrame(
            {"product_id": np.arange(1, n_items + 1), "category": [f"c{i % 20}" for i in range(n_items)]}
        ),
    }
    for table, data in tables.items():
        target = out / table / f"ds={DS}"
        target.mkdir(parents=True, exist_ok=True)
        data.to_parquet(target / f"{table}.parquet", index=False, coerce_timestamps="us")
    return {
        "pairs": len(frame),
        "users": n_users,
        "items": n_items,
        "users_with_history": int(frame["user_id"].nunique()),
        "items_with_history": int(frame["product_id"].nunique()),
    }


def timed(command: list[str], env: dict | None = None) -> dict:
    """Run under /usr/bin/time -v: wall seconds, peak RSS (MB) and the command's stdout."""
    started = time.perf_counter()
    result = subprocess.run(
        ["/usr/bin/time", "-v", *command], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )
    wall = time.perf_counter() - started
    if result.returncode != 0:
        raise SystemExit(f"{command[0]} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
    peak_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", result.stderr).group(1))
    return {"seconds": round(wall, 1), "peak_rss_mb": round(peak_kb / 1024), "stdout": result.stdout}


def gemm_rate(size: int = 4096) -> float:
    """Single-precision GEMM rate of this machine with every core (FLOP/s), the best of 3."""
    a = np.random.default_rng(0).random((size, size), dtype=np.float32)
    a @ a
    best = min(_seconds(lambda: a @ a) for _ in range(3))
    return 2 * size**3 / best


def _seconds(step) -> float:
    started = time.perf_counter()
    step()
    return time.perf_counter() - started


def engine_top_k(n_users: int, n_items: int, rank: int, k: int) -> float:
    """Seconds for the top-K engine alone over every user (random factors, 5 purchases per user masked)."""
    from spark_jobs.topk import ItemSide, ServePolicy, TopK

    rng = np.random.default_rng(1)
    items = ItemSide(
        product_ids=np.arange(n_items),
        popularity=np.linspace(1, 0, n_items, dtype=np.float32),
        category=np.zeros(n_items, np.int32),
        n_categories=1,
        factors=rng.standard_normal((n_items, rank), dtype=np.float32),
    )
    engine = TopK(items, ServePolicy(k=k, model="als", min_score=-np.inf))
    history = [rng.integers(0, n_items, 5) for _ in range(engine.block_users)]
    factors = list(rng.standard_normal((engine.block_users, rank), dtype=np.float32))
    block = pd.DataFrame(
        {
            "user_id": np.arange(engine.block_users),
            "n_history": 5,
            "history": history,
            "history_weights": [np.ones(5, np.float32)] * engine.block_users,
            "purchased": [np.ones(5, bool)] * engine.block_users,
            "factors": factors,
        }
    )
    engine.model_tier(block, engine._history(block))  # warm-up
    blocks = -(-n_users // engine.block_users)
    per_block = min(_seconds(lambda: engine.model_tier(block, engine._history(block))) for _ in range(3))
    return per_block * blocks


def run_size(pairs: int, args) -> dict:
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        features = Path(tmp) / "features"
        shape = generate(pairs, features)
        print(f"== {shape['pairs']:,} pairs: {shape['users']:,} users x {shape['items']:,} items", file=sys.stderr)
        choice = json.dumps(
            {"model": "als", "params": {"alpha": 10.0, "reg_param": 0.1, "rank": args.rank, "weight_transform": "raw"}}
        )
        jobs = {}
        for engine in ("implicit", "mllib") if pairs <= args.mllib_max_pairs else ("implicit",):
            out = Path(tmp) / engine
            run = timed(
                [
                    str(Path(sys.executable).with_name("pm")),
                    "spark-submit",
                    "als_recommendations",
                    "--features-dir",
                    str(features),
                    "--ds",
                    DS,
                    "--output-dir",
                    str(out),
                    "--engine",
                    engine,
                    "--top-k",
                    str(args.k),
                    "--set",
                    "als.split=time",
                    "--set",
                    "als.holdout=0h",
                    "--set",
                    f"als.max_iter={args.iterations}",
                    "--fixed-choice",
                    choice,
                ]
            )
            metrics = json.loads((out / "metrics.json").read_text())
            jobs[engine] = {
                "seconds": run["seconds"],
                "peak_rss_mb": run["peak_rss_mb"],
                "steps": metrics["seconds"],
                "rows": metrics["n_recommendations"],
            }
        baseline = timed(
            [
                sys.executable,
                str(REPO / "bench" / "implicit_baseline.py"),
                "--features",
                str(features),
                "--ds",
                DS,
                "--out",
                str(Path(tmp) / "implicit.parquet"),
                "--rank",
                str(args.rank),
                "--iterations",
                str(args.iterations),
                "--k",
                str(args.k),
            ],
            env={"OPENBLAS_NUM_THREADS": "1"},
        )  # implicit's own advice: it runs its own threads
        implicit_steps = json.loads(baseline["stdout"].strip().splitlines()[-1])
    flops = 2.0 * shape["users"] * shape["items_with_history"] * args.rank
    engine_seconds = engine_top_k(shape["users"], shape["items_with_history"], args.rank, args.k)
    return {
        "data": shape,
        "job": jobs["implicit"],
        "job_mllib": jobs.get("mllib"),
        "implicit": {"seconds": baseline["seconds"], "peak_rss_mb": baseline["peak_rss_mb"], "steps": implicit_steps},
        "ratio_job_to_implicit": round(jobs["implicit"]["seconds"] / baseline["seconds"], 2),
        "ratio_mllib_job_to_implicit": round(jobs["mllib"]["seconds"] / baseline["seconds"], 2)
        if "mllib" in jobs
        else None,
        "top_k": {
            "blas_limit_seconds": round(flops / args.gemm_rate, 2),
            "engine_seconds": round(engine_seconds, 2),
            "ratio_to_blas_limit": round(engine_seconds / (flops / args.gemm_rate), 2),
            "job_fit_and_top_k_seconds": jobs["implicit"]["steps"].get("final_fit_and_top_k"),
        },
    }


def tuned_run(pairs: int, args) -> dict:
    """The job with its defaults (tuning and evaluation on), as a night runs it: wall time, fits, candidates."""
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        features = Path(tmp) / "features"
        shape = generate(pairs, features)
        run = timed(
            [
                str(Path(sys.executable).with_name("pm")),
                "spark-submit",
                "als_recommendations",
                "--features-dir",
                str(features),
                "--ds",
                DS,
                "--output-dir",
                str(Path(tmp) / "job"),
            ]
        )
        metrics = json.loads((Path(tmp) / "job" / "metrics.json").read_text())
    tuning = metrics["tuning"]
    return {
        "data": shape,
        "seconds": run["seconds"],
        "peak_rss_mb": run["peak_rss_mb"],
        "steps": metrics["seconds"],
        "engine": metrics["engine"],
        "fits": tuning.get("n_fits"),
        "candidates": tuning.get("n_candidates"),
        "budget_seconds": tuning.get("budget_seconds"),
        "chosen": tuning.get("chosen"),
        "verdict": metrics["gate"].get("verdict"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pairs", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--rank", type=int, default=64)
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--tmp", default=None, help="scratch folder for the generated data")
    parser.add_argument(
        "--tuned-pairs",
        type=int,
        nargs="*",
        default=[100_000],
        help="sizes also run with the job's defaults (tuning and evaluation on)",
    )
    parser.add_argument(
        "--mllib-max-pairs", type=int, default=2_000_000, help="sizes up to this also run the job with --engine mllib"
    )
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "als_bench.json")
    args = parser.parse_args()
    args.gemm_rate = gemm_rate()
    machine = {
        "cpus": os.cpu_count(),
        "processor": platform.processor() or platform.machine(),
        "sgemm_gflops": round(args.gemm_rate / 1e9, 1),
        "python": platform.python_version(),
    }
    results = {
        "machine": machine,
        "rank": args.rank,
        "iterations": args.iterations,
        "k": args.k,
        "sizes": [run_size(pairs, args) for pairs in args.pairs],
        "tuned": [tuned_run(pairs, args) for pairs in args.tuned_pairs],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"machine: {machine}; rank {args.rank}, {args.iterations} iterations, K={args.k}\n")
    print(
        "| pairs | users x items | job, implicit engine (s) | job, MLlib engine (s) | implicit alone (s) "
        "| job / implicit | job peak RSS | implicit peak RSS | top-K engine (s) | BLAS limit (s) | engine / limit |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for size in results["sizes"]:
        d, top = size["data"], size["top_k"]
        mllib = size["job_mllib"]["seconds"] if size["job_mllib"] else "not run"
        print(
            f"| {d['pairs']:,} | {d['users']:,} x {d['items_with_history']:,} | {size['job']['seconds']} "
            f"| {mllib} | {size['implicit']['seconds']} | {size['ratio_job_to_implicit']} "
            f"| {size['job']['peak_rss_mb']} MB | {size['implicit']['peak_rss_mb']} MB | {top['engine_seconds']} "
            f"| {top['blas_limit_seconds']} | {top['ratio_to_blas_limit']} |"
        )
    print(
        "\n| pairs, job with its defaults (tuning on) | engine | wall (s) | tuning (s) | fits | candidates | peak RSS |"
    )
    print("|---|---|---|---|---|---|---|")
    for run in results["tuned"]:
        print(
            f"| {run['data']['pairs']:,} | {run['engine']} | {run['seconds']} | {run['steps'].get('tune_and_evaluate')} "
            f"| {run['fits']} | {run['candidates']} | {run['peak_rss_mb']} MB |"
        )


if __name__ == "__main__":
    main()
