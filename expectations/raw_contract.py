"""The file-level check that runs before anything is transformed, as a report and a command line.

The contract itself is precision_marketing/contract.py; which files a run reads and their header checks are
precision_marketing/ingest/plan.py (`plan_window`). `check_raw` adds each file's row count; all problems are
collected into one `RawContractError` naming each file.

    python -m expectations.raw_contract --raw-root lake/raw --ds 2026-11-23 --history-days 30 [--mapping m.yaml]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from precision_marketing.contract import RawContractError  # noqa: F401 - raised by check_raw, caught by callers
from precision_marketing.ingest.files import open_binary
from precision_marketing.ingest.mapping import load_mapping
from precision_marketing.ingest.plan import plan_window


def _count_data_lines(path: Path) -> int:
    """Lines after the header (a quoted field with a newline counts twice: cheap, not exact)."""
    newlines, last = 0, b"\n"
    with open_binary(path) as handle:
        while chunk := handle.read(1 << 20):
            newlines += chunk.count(b"\n")
            last = chunk[-1:]
    lines = newlines + (0 if last == b"\n" else 1)
    return max(lines - 1, 0)


def check_raw(raw_root: Path, ds: str, history_days: int, mapping=None) -> dict:
    """Check every landing file the run for `ds` reads; raise RawContractError listing all problems.

    Returns a report: files checked with their data-line counts, warnings, delivered sources, notes.
    """
    plan = plan_window(raw_root, ds, history_days, mapping)
    files = [
        {"source": name, "ds": day, "path": path, "rows": _count_data_lines(Path(raw_root) / path)}
        for name, source in plan["sources"].items()
        for day, paths in source["partitions"].items()
        for path in paths
    ]
    return {
        "raw_root": str(raw_root),
        "ds": plan["ds"],
        "history_days": history_days,
        "files_checked": len(files),
        "files": files,
        "warnings": plan["warnings"],
        "delivered": [name for name, source in plan["sources"].items() if source["delivered"]],
        "capabilities": plan["capabilities"],
        "notes": plan["notes"],
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m expectations.raw_contract", description=__doc__.split("\n")[0])
    parser.add_argument("--raw-root", required=True, type=Path, help="folder holding <source>/ds=YYYY-MM-DD/")
    parser.add_argument("--ds", required=True, help="logical date YYYY-MM-DD")
    parser.add_argument("--history-days", type=int, default=30, help="days of increments the run reads")
    parser.add_argument(
        "--mapping", type=Path, default=None, help="mapping file of your exports (docs/data_contract.md)"
    )
    args = parser.parse_args(argv)
    try:
        report = check_raw(args.raw_root, args.ds, args.history_days, load_mapping(args.mapping))
    except (RawContractError, ValueError) as error:
        print(error, file=sys.stderr)
        return 1
    print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
