"""`make bench-pipeline`: the whole nightly DAG on generated data, time and peak memory per task. Not a test: figures.

For each scale (1x = the demo's 20,000 users and 2,000 products; 10x = 200,000 and 20,000; 30 days):
1. `pm generate` lands the 30 days up to D, then the day D+1, into a lake of the bench's own;
2. night 1: `pm run --ds D` on an empty work dir: every landing partition is read, typed and checked (the
   first night, or a `--full-refresh`);
3. night 2: `pm run --ds D+1`: one new day (the nightly case: staging is incremental by landing partition).
Per night: wall time and the peak resident memory of the largest process (`/usr/bin/time -v`), and per task
its duration (Airflow's task instance) and the peak resident memory of the run's whole process tree while it
ran (psutil, sampled every 0.2 s; `pm run` runs tasks in one process, so "own" is the peak above the tree's
memory when the task started: what the task itself added); task times are the records the DAG's task callbacks
write (<work>/runs/ds=D/tasks/). Results: bench/results/pipeline_<scale>x.json and
Markdown tables on stdout. Run it alone: parallel jobs slow each other.

    .venv/bin/python bench/pipeline_bench.py [--scale 1 10] [--ds 2026-11-22] [--nights 2] [--state DIR]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
PM = str(Path(sys.executable).with_name("pm"))


class TreeSampler(threading.Thread):
    """Resident memory of a process and all its descendants, sampled until stop()."""

    def __init__(self, pid: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.interval, self.samples = pid, interval, []  # (unix time, tree RSS bytes, largest process)
        self._stop_event = threading.Event()

    def run(self):
        try:
            root = psutil.Process(self.pid)
        except psutil.NoSuchProcess:
            return
        while not self._stop_event.is_set():
            rss = []
            try:
                for process in [root, *root.children(recursive=True)]:
                    try:
                        rss.append(process.memory_info().rss)
                    except (psutil.NoSuchProcess, psutil.AccessDenied):
                        pass
            except psutil.NoSuchProcess:
                break
            if rss:
                self.samples.append((time.time(), sum(rss), max(rss)))
            self._stop_event.wait(self.interval)

    def stop(self):
        self._stop_event.set()
        self.join()


def run_timed(command: list[str], env: dict, log: Path) -> dict:
    """Run `command` under /usr/bin/time -v with its process tree sampled; its output goes to `log`."""
    with log.open("w") as out:
        started = time.time()
        process = subprocess.Popen(["/usr/bin/time", "-v", *command], env=env, stdout=out, stderr=subprocess.STDOUT)
        sampler = TreeSampler(process.pid)
        sampler.start()
        process.wait()
        sampler.stop()
    text = log.read_text(errors="replace")
    peak = re.search(r"Maximum resident set size \(kbytes\): (\d+)", text)
    return {
        "returncode": process.returncode,
        "wall_s": round(time.time() - started, 1),
        "max_process_rss_mb": round(int(peak.group(1)) / 1024) if peak else None,
        "samples": sampler.samples,
        "log": str(log),
    }


def _when(value: str | None) -> float | None:
    return dt.datetime.fromisoformat(value).timestamp() if value else None


def task_figures(work: Path, ds: str, since: float, samples: list) -> list[dict]:
    """Duration and memory of every task of the run of ds that ended after `since`, from the timing records the
    DAG's task callbacks write (<work>/runs/ds=D/tasks/)."""
    tasks = []
    for path in sorted((work / "runs" / f"ds={ds}" / "tasks").glob("*.json")):
        record = json.loads(path.read_text())
        start, end = _when(record.get("start")), _when(record.get("end"))
        if end is None or end < since:
            continue
        window = [s for s in samples if start is not None and start <= s[0] <= end]
        before = [s for s in samples if start is not None and s[0] <= start]
        base = before[-1][1] if before else (window[0][1] if window else 0)
        tasks.append(
            {
                "task": record["task_id"],
                "state": record.get("state"),
                "start": start,
                "seconds": record.get("seconds"),
                "peak_tree_rss_mb": round(max(s[1] for s in window) / 2**20) if window else None,
                "peak_own_rss_mb": round(max(0, max(s[1] for s in window) - base) / 2**20) if window else None,
            }
        )
    return sorted(tasks, key=lambda t: t["start"] or 0)


def machine() -> dict:
    return {
        "cpus": os.cpu_count(),
        "ram_gb": round(psutil.virtual_memory().total / 2**30),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 1) for x in os.getloadavg()],
    }


def bench_scale(scale: int, ds: str, nights: int, state: Path) -> dict:
    root = (state / f"pipeline-{scale}x").resolve()
    shutil.rmtree(root / "work", ignore_errors=True)  # night 1 starts from nothing; the lake is kept (immutable)
    shutil.rmtree(root / "airflow", ignore_errors=True)
    env = {
        **os.environ,
        "PM__LAKE__LOCAL_ROOT": str(root / "lake"),
        "PM__WORK_DIR": str(root / "work"),
        "AIRFLOW_HOME": str(root / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{root / 'airflow' / 'airflow.db'}",
    }
    days = [(dt.date.fromisoformat(ds) + dt.timedelta(days=n)).isoformat() for n in range(nights)]
    generated = []
    for day in days:
        started = time.time()
        out = subprocess.run(
            [
                PM,
                "generate",
                "--ds",
                day,
                "--users",
                str(20_000 * scale),
                "--items",
                str(2_000 * scale),
                "--days",
                "30",
            ],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        summary = json.loads(out.stdout[out.stdout.index("{") :])
        generated.append(
            {
                "ds": day,
                "seconds": round(time.time() - started, 1),
                **{k: v for k, v in summary.items() if isinstance(v, (int, float, str))},
            }
        )
    raw_bytes = sum(p.stat().st_size for p in (root / "lake" / "raw").rglob("*") if p.is_file())
    result = {
        "scale": scale,
        "users": 20_000 * scale,
        "items": 2_000 * scale,
        "days": 30,
        "raw_mb": round(raw_bytes / 2**20),
        "generated": generated,
        "machine": machine(),
        "nights": [],
    }
    for night, day in enumerate(days, 1):
        print(f"[{scale}x] night {night}: pm run --ds {day} ...", file=sys.stderr, flush=True)
        started = time.time()
        timed = run_timed([PM, "run", "--ds", day], env, root / f"run-{day}.log")
        tasks = task_figures(root / "work", day, started, timed.pop("samples"))
        result["nights"].append(
            {
                "night": night,
                "ds": day,
                **timed,
                "tasks": tasks,
                "load_average_after": [round(x, 1) for x in os.getloadavg()],
            }
        )
        if timed["returncode"] != 0:
            print(f"[{scale}x] run failed, log: {timed['log']}", file=sys.stderr)
            break
    return result


def dbt_seconds(tasks: list[dict]) -> float:
    return round(sum(t["seconds"] or 0 for t in tasks if t["task"].startswith("dbt.")), 1)


def markdown(results: list[dict]) -> str:
    lines = []
    for result in results:
        nights = result["nights"]
        lines.append(
            f"\n{result['scale']}x: {result['users']:,} users, {result['items']:,} products, 30 days, "
            f"{result['raw_mb']:,} MB of landing files; {result['machine']}"
        )
        header = "| task | " + " | ".join(f"night {n['night']} ({n['ds']}) s / peak MB (own)" for n in nights) + " |"
        lines += [header, "|---" * (len(nights) + 1) + "|"]
        names = list(dict.fromkeys(t["task"] for n in nights for t in n["tasks"]))
        dbt_names = [name for name in names if name.startswith("dbt.")]
        for name in [n for n in names if not n.startswith("dbt.")] + ["dbt (all tasks)"]:
            cells = []
            for n in nights:
                if name == "dbt (all tasks)":
                    tasks = [t for t in n["tasks"] if t["task"] in dbt_names]
                    peak = max((t["peak_tree_rss_mb"] or 0 for t in tasks), default=0)
                    own = max((t["peak_own_rss_mb"] or 0 for t in tasks), default=0)
                    cells.append(f"{dbt_seconds(n['tasks'])} ({len(tasks)} tasks) / {peak:,} ({own:,})")
                    continue
                task = next((t for t in n["tasks"] if t["task"] == name), None)
                cells.append(
                    "-"
                    if task is None
                    else f"{task['seconds']} / {task['peak_tree_rss_mb'] or 0:,} ({task['peak_own_rss_mb'] or 0:,})"
                    + ("" if task["state"] == "success" else f" {task['state']}")
                )
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        lines.append(
            "| **whole run** (wall, largest process) | "
            + " | ".join(f"**{n['wall_s']}** / {n['max_process_rss_mb'] or 0:,}" for n in nights)
            + " |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scale", type=int, nargs="+", default=[1, 10], help="data sizes, multiples of the demo's")
    parser.add_argument("--ds", default="2026-11-22", help="night 1's date; night n runs ds + n - 1")
    parser.add_argument(
        "--nights", type=int, default=2, help="consecutive nights (2 = a first night, then one new day)"
    )
    parser.add_argument("--state", type=Path, default=REPO / ".state" / "bench", help="lake, work dir and Airflow home")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results")
    args = parser.parse_args(argv)
    results = []
    for scale in args.scale:
        result = bench_scale(scale, args.ds, args.nights, args.state)
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / f"pipeline_{scale}x.json").write_text(json.dumps(result, indent=2) + "\n")
        results.append(result)
    print(markdown(results))


if __name__ == "__main__":
    main()
