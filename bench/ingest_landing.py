"""Benchmark of the ingest step (landing files -> normalised Parquet), side by side with reading the same files
with DuckDB's read_csv, which is what the run did before the ingest step existed (and what a team would use),
and with the ingest step's careful path alone (every file read record by record, as before the fast path).

    /usr/bin/time -v .venv/bin/python bench/ingest_landing.py [--users 20000 --items 2000 --days 30] [--out DIR]

Prints one JSON object: data size, seconds and rows/s of each path, their ratio, the warm (cached) re-landing
time, and the process's peak RSS. Run it alone: the machines are shared and noisy.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import duckdb  # noqa: E402

from precision_marketing.contract import SOURCES  # noqa: E402
from precision_marketing.datagen import generate  # noqa: E402
from precision_marketing.ingest.land import land_window  # noqa: E402
from precision_marketing.ingest.mapping import Mapping  # noqa: E402


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--users", type=int, default=20000)
    parser.add_argument("--items", type=int, default=2000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--ds", default="2026-11-22")
    parser.add_argument("--out", type=Path, default=None, help="working folder (default: a temporary one)")
    args = parser.parse_args(argv)
    work = args.out or Path(tempfile.mkdtemp(prefix="bench-ingest-"))
    raw, landed = work / "raw", work / "landed"
    shutil.rmtree(raw, ignore_errors=True)
    summary = generate(raw, args.ds, users=args.users, items=args.items, days=args.days, seed=42)
    rows = sum(summary["rows"].values())
    size = sum(p.stat().st_size for p in raw.rglob("*.csv"))

    started = time.perf_counter()
    con = duckdb.connect()
    duckdb_rows = 0
    for source in summary["rows"]:  # the same files the run reads: snapshots of ds, increments of the window
        partitions = "ds=*" if SOURCES[source].kind == "increment" else f"ds={args.ds}"
        duckdb_rows += con.execute(
            f"SELECT count(*) FROM read_csv('{raw}/{source}/{partitions}/{source}.csv', all_varchar = true, "
            "header = true, union_by_name = true, null_padding = true, strict_mode = false)"
        ).fetchone()[0]
    duckdb_seconds = time.perf_counter() - started

    shutil.rmtree(landed, ignore_errors=True)
    started = time.perf_counter()
    careful_status = land_window(raw, landed, args.ds, args.days, Mapping(), fast=False)
    careful = time.perf_counter() - started
    shutil.rmtree(landed, ignore_errors=True)
    started = time.perf_counter()
    status = land_window(raw, landed, args.ds, args.days, Mapping())
    cold = time.perf_counter() - started
    started = time.perf_counter()
    land_window(raw, landed, args.ds, args.days, Mapping())
    warm = time.perf_counter() - started
    landed_rows = duckdb.sql(f"SELECT count(*) FROM read_parquet('{landed}/*/ds=*/*.parquet')").fetchone()[0]

    result = {
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "data": {
            "users": args.users,
            "items": args.items,
            "days": args.days,
            "rows_read": rows,
            "csv_megabytes": round(size / 1e6, 1),
        },
        "duckdb_read_csv": {
            "seconds": round(duckdb_seconds, 2),
            "rows": duckdb_rows,
            "rows_per_second": round(duckdb_rows / duckdb_seconds),
        },
        "ingest_cold": {
            "seconds": round(cold, 2),
            "rows": landed_rows,
            "rows_per_second": round(landed_rows / cold),
            "files": sum(source["files"] for source in status["sources"]),
            "files_fast": sum(source["files_fast"] for source in status["sources"]),
        },
        "ingest_careful_path_only": {
            "seconds": round(careful, 2),
            "files_fast": sum(source["files_fast"] for source in careful_status["sources"]),
        },
        "ingest_warm_cached": {"seconds": round(warm, 2)},
        "ingest_over_duckdb": round(cold / duckdb_seconds, 1),
        "careful_over_fast": round(careful / cold, 1),
        "peak_rss_megabytes": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
    }
    print(json.dumps(result, indent=2))
    if args.out is None:
        shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    main()
