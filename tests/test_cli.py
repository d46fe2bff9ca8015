"""The `pm` command line as a new user meets it: dates, run parameters, queries and help texts give one clear
line instead of a traceback; stopping `pm run` stops the Airflow run it started."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from precision_marketing.cli import build_parser
from precision_marketing.publish.catalog import open_catalog
from precision_marketing.storage import LocalStorage

PM = str(Path(sys.executable).with_name("pm"))


@pytest.fixture
def env(tmp_path):
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("PM__", "AIRFLOW"))},
        "PM__WORK_DIR": str(tmp_path / "work"),
        "PM__LAKE__LOCAL_ROOT": str(tmp_path / "lake"),
    }


def pm(args, env, timeout=120):
    return subprocess.run([PM, *args], env=env, capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize(
    "given, reason",
    [
        ("20261122", "'20261122' is not a day in the form YYYY-MM-DD (e.g. 2026-11-22)"),
        ("2026-13-01", "'2026-13-01' is not a valid day: month must be in 1..12"),
    ],
)
def test_ds_must_be_a_real_day_written_yyyy_mm_dd(given, reason, capsys):
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "--ds", given])
    assert capsys.readouterr().err.strip().endswith(f"error: argument --ds: {reason}")
    assert build_parser().parse_args(["run", "--ds", "2026-11-22"]).ds == "2026-11-22"


@pytest.mark.parametrize(
    "conf, line",
    [
        (
            '{"top_k": 0}',
            "pm run: top_k = 0 is not allowed: 0 is less than the minimum of 1 (Recommendations per user (K))",
        ),
        (
            '{"top_k": 500}',
            "pm run: top_k = 500 is not allowed: 500 is greater than the maximum of 200 (Recommendations per user (K))",
        ),
        (
            '{"top_k": "abc"}',
            "pm run: top_k = 'abc' is not allowed: 'abc' is not of type 'integer' (Recommendations per user (K))",
        ),
        (
            '{"topk": 5}',
            "pm run: unknown parameter 'topk' (parameters: ds, top_k, holdout_days, spark_master, full_refresh)",
        ),
    ],
)
def test_a_rejected_run_parameter_is_one_clear_line(conf, line, env):
    result = pm(["run", "--ds", "2026-11-22", "--conf", conf], env)
    assert result.returncode != 0
    assert result.stderr.strip() == line and result.stdout == ""  # nothing started, no traceback


def test_empty_or_comment_only_query_says_so(env):
    for sql in ("", "   ", "-- just a comment"):
        result = pm(["query", sql], env)
        assert result.returncode != 0 and "Traceback" not in result.stderr, result.stderr
        assert result.stderr.startswith("query failed: "), result.stderr
    assert "no SQL given" in pm(["query", ""], env).stderr
    assert "returns no rows to show" in pm(["query", "-- just a comment"], env).stderr


def test_quarantine_and_reconciliation_are_queryable(tmp_path):
    lake = LocalStorage(tmp_path)
    for ds, reason in (("2026-11-21", "user_id is null"), ("2026-11-22", "malformed event_ts")):
        path = lake.path(f"quarantine/events/ds={ds}/quarantine_events.parquet")
        path.parent.mkdir(parents=True)
        pq.write_table(
            pa.table({"event_id": ["e1"], "reject_reason": [reason], "ds": [pa.scalar(ds).cast(pa.date32()).as_py()]}),
            path,
        )
        recon = lake.path(f"features/data_reconciliation/ds={ds}/data_reconciliation.parquet")
        recon.parent.mkdir(parents=True)
        pq.write_table(
            pa.table(
                {
                    "source": ["events"],
                    "raw_rows": [10],
                    "clean_rows": [9],
                    "quarantined_rows": [1],
                    "duplicate_rows": [0],
                }
            ),
            recon,
        )
    con = open_catalog(lake, [])
    assert con.execute("select ds::varchar, reject_reason from quarantine_events order by ds").fetchall() == [
        ("2026-11-21", "user_id is null"),
        ("2026-11-22", "malformed event_ts"),
    ]
    assert con.execute("select ds::varchar, raw_rows from data_reconciliation order by ds").fetchall() == [
        ("2026-11-21", 10),
        ("2026-11-22", 10),
    ]
    assert con.execute("select typeof(ds) from data_reconciliation limit 1").fetchone()[0] == "DATE"


def test_every_subcommand_help_says_what_it_does():
    parser = build_parser()
    subcommands = next(a for a in parser._actions if a.dest == "command").choices
    for name, sub in subcommands.items():
        assert sub.description and len(sub.description) > 20, name
        assert all(action.help for action in sub._actions if action.dest != "help"), name


@pytest.mark.e2e
def test_stopping_pm_run_stops_the_airflow_run(env, tmp_path):
    """Nothing landed and the sensor would wait an hour: SIGTERM to pm ends the run and every process under it."""
    env = {**env, "PM__LANDING__TIMEOUT_MINUTES": "60", "PM__LANDING__POKE_SECONDS": "30"}
    process = subprocess.Popen(
        [PM, "run", "--ds", "2026-11-22"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    deadline = time.monotonic() + 240
    airflow_run = []
    while time.monotonic() < deadline and not airflow_run:
        time.sleep(2)
        airflow_run = [
            p
            for p in psutil.Process(process.pid).children(recursive=True)
            if "dags" in p.cmdline() and "test" in p.cmdline()
        ]
    assert airflow_run, "airflow dags test did not start"
    time.sleep(10)  # inside the run: the sensor is waiting for files
    family = psutil.Process(process.pid).children(recursive=True)
    process.send_signal(signal.SIGTERM)
    output, _ = process.communicate(timeout=120)
    assert process.returncode != 0
    # stopped by the signals pm forwards, not by its SIGKILL a minute later (Airflow's `dags test` ignores SIGTERM)
    assert "stopped (SIGTERM): the nightly run for ds=2026-11-22 was stopped with its Airflow process" in output
    gone, alive = psutil.wait_procs(family, timeout=30)
    assert alive == [], [p.cmdline() for p in alive]
