"""The nightly run's steps as plain functions of (ds, params): Airflow calls them (dags/), so can a shell,
a notebook or a test. Each step reads and writes the work dir and/or the lake; none holds state.

Order: stage_and_check_raw -> dbt (Cosmos, one task per model) -> export_features -> validate_marts
       -> train_als | segment_users -> train_ctr_and_build_audiences -> build_audience_exports
       | measure_campaign_lift -> validate_outputs -> publish -> refresh_catalog_and_report

What a run can build depends on what was delivered (the landing status stage_and_check_raw writes): without
the audience sources (impressions, campaigns, consent) train_ctr_and_build_audiences, build_audience_exports and
measure_campaign_lift raise StepSkipped and their tables are neither validated nor published; the notes say why
in the task logs and the report.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import duckdb

from precision_marketing.config import ConfigError, load_config
from precision_marketing.ingest.land import landed_dir, local_raw_dir  # noqa: F401 - where a run's zones are
from precision_marketing.storage import LocalStorage, Storage, storage_from_config

# dbt relations exported as Parquet for Spark, scikit-learn and GE: marts.<table> and audit.<table>
MART_TABLES = [
    "user_features",
    "user_category_affinity",
    "item_features",
    "interactions",
    "ctr_train",
    "ctr_score",
    "campaigns",
    "suppressions",
    "user_keys",
    "product_keys",
    "consent_ledger",  # also its backup: a lost warehouse gets it back (carry_consent_ledger)
]
AUDIT_TABLES = ["data_reconciliation", "consent_delivery"]
# marts that only mean something when the audience sources were delivered (else empty, not validated)
AUDIENCE_MARTS = ["ctr_train", "ctr_score", "campaigns"]
# the models whose metrics.json is published beside their table and read by the report
MODELS = ("als", "ctr", "segments")


class StepSkipped(Exception):
    """The step cannot run for this ds (a source it needs was not delivered); the message says why.
    Airflow shows the task as skipped (orchestration.skippable)."""


def raw_sources() -> list[str]:
    from precision_marketing.contract import SOURCES

    return list(SOURCES)


def run_config(params: Mapping | None = None) -> dict:
    """Configuration for one run: the platform config with the run's Airflow params applied on top."""
    params = dict(params or {})
    overrides: dict = {}
    if params.get("top_k") is not None:
        overrides.setdefault("als", {})["top_k"] = int(params["top_k"])
    if params.get("holdout_days") is not None:
        days = int(params["holdout_days"])
        overrides.setdefault("als", {})["holdout"] = f"{days}d"
        overrides.setdefault("ctr", {})["holdout_days"] = days
    if params.get("spark_master"):
        overrides.setdefault("spark", {})["master"] = params["spark_master"]
    config = load_config(overrides)
    published_tables(config)  # an unknown table name stops the run at its first step, not at publish
    if not params.get("spark_master"):
        with_spark_connection(config)
    return config


def with_spark_connection(config: dict) -> dict:
    """The master of the Airflow connection `spark.connection` (spark_default), when it is defined, over the
    file's and the environment's; a run's `spark_master` param still wins (run_config)."""
    from pydantic import ValidationError

    from precision_marketing.config.connections import spark_master
    from precision_marketing.config.schema import Spark

    master = spark_master(config["spark"].get("connection"))
    if master:
        try:
            Spark.model_validate({**config["spark"], "master": master})
        except ValidationError:
            raise ConfigError(
                f"Airflow connection {config['spark']['connection']!r} gives the Spark master {master!r}: expected "
                "local[*], spark://host:port, yarn or k8s://..."
            ) from None
        config["spark"]["master"] = master
    return config


@dataclass(frozen=True)
class RunPaths:
    """Where one ds's files live in the work dir (the lake mirrors the same relative layout)."""

    work: Path
    ds: str

    @property
    def warehouse(self) -> Path:
        return self.work / "warehouse.duckdb"

    def feature_dir(self, table: str) -> Path:
        return self.work / "features" / table / f"ds={self.ds}"

    def feature(self, table: str) -> Path:
        return self.feature_dir(table) / f"{table}.parquet"

    def quarantine(self, source: str) -> Path:
        return self.work / "quarantine" / source / f"ds={self.ds}" / f"quarantine_{source}.parquet"

    def model_dir(self, model: str) -> Path:
        return self.work / "models" / model / f"ds={self.ds}"

    @property
    def report_dir(self) -> Path:
        return self.work / "reports" / f"ds={self.ds}"

    @property
    def task_times_dir(self) -> Path:
        """One JSON per task of the latest run of ds (written by the DAG's task callbacks)."""
        return self.work / "runs" / f"ds={self.ds}" / "tasks"

    @property
    def consent_guard(self) -> Path:
        """Tonight's consent guard verdict (written by validate_marts; the audience steps read it)."""
        return self.work / "runs" / f"ds={self.ds}" / "consent_guard.json"

    @property
    def consent_ledger_state(self) -> Path:
        """Whether tonight's warehouse kept, restored or newly started the consent ledger (check_raw writes it)."""
        return self.work / "runs" / f"ds={self.ds}" / "consent_ledger.json"

    def job_settings(self, job: str) -> Path:
        """The settings a Spark job of this ds ran with (its --config)."""
        return self.work / "job_settings" / f"ds={self.ds}" / f"{job}.json"

    @property
    def dbt_results_dir(self) -> Path:
        """One JSON per dbt layer of the latest run of ds: each node's result (dbt.execution_mode layers)."""
        return self.work / "runs" / f"ds={self.ds}" / "dbt"

    def dbt_results(self, layer: str) -> Path:
        return self.dbt_results_dir / f"{layer}.json"

    def task_time(self, task_id: str) -> Path:
        return self.task_times_dir / f"{task_id}.json"

    def lake_key(self, path: Path) -> str:
        return path.relative_to(self.work).as_posix()


def paths_for(config: Mapping, ds: str) -> RunPaths:
    dt.date.fromisoformat(ds)  # fail early and clearly on a malformed date
    return RunPaths(Path(config["work_dir"]), ds)


def window_days(ds: str, history_days: int) -> list[str]:
    end = dt.date.fromisoformat(ds)
    return [(end - dt.timedelta(days=n)).isoformat() for n in range(history_days - 1, -1, -1)]


def landing_status(config: Mapping, ds: str) -> dict:
    """What was delivered for ds and what the run can build (written by stage_and_check_raw)."""
    from precision_marketing.ingest.land import read_status

    return read_status(landed_dir(config), ds)


def _upload(storage: Storage, paths: RunPaths, local_dir: Path) -> None:
    if isinstance(storage, LocalStorage) and storage.root == paths.work:
        return
    storage.upload_tree(local_dir, paths.lake_key(local_dir))


def restrict_work_dir(config: Mapping) -> Path:
    """The work dir (the warehouse with raw e-mails in staging, landed copies, exports) for its owner and group
    only: other local users cannot enter it, whatever the umask."""
    work = Path(config["work_dir"])
    work.mkdir(parents=True, exist_ok=True)
    work.chmod(0o750)
    return work


# ---------------------------------------------------------------- steps


def stage_and_check_raw(ds: str, params: Mapping | None = None) -> dict:
    """Bring the window's raw partitions to local disk (S3 lake only), check them against the raw contract
    (file-level problems stop the run here) and land them through the mapping for dbt (ingest.land_window)."""
    from precision_marketing.ingest.land import land_window
    from precision_marketing.ingest.mapping import mapping_from_config
    from precision_marketing.privacy.erasure import erased_for_ingest

    config = run_config(params)
    restrict_work_dir(config)
    history_days = config["dbt"]["history_days"]
    raw_dir = local_raw_dir(config)
    storage = storage_from_config(config)
    if config["lake"]["backend"] != "local":
        for source in raw_sources():
            for day in window_days(ds, history_days):
                target = raw_dir / source / f"ds={day}"
                shutil.rmtree(target, ignore_errors=True)
                storage.download_tree(f"raw/{source}/ds={day}", target)
    status = land_window(
        raw_dir, landed_dir(config), ds, history_days, mapping_from_config(config), erased_for_ingest(config, storage)
    )
    for note in status["notes"]:
        print(f"note: {note}", flush=True)
    ledger = carry_consent_ledger(paths_for(config, ds), storage)
    if ledger["ledger"] == "restored":
        print(f"note: the warehouse had no consent ledger: restored from {ledger['from']} ({ledger['rows']} rows)")
    erased = erased_rows(status)
    if erased:  # people forgotten (pm forget) still in a delivery: counted, never landed
        print(f"note: rows of forgotten people not landed (erasure register): {erased}", flush=True)
    # a compact summary for the task log / XCom; the per-source status stays in <work>/landed/_status/
    return {
        "delivered": [s["source"] for s in status["sources"] if s["delivered"]],
        "rows_per_source": {s["source"]: s["rows"] for s in status["sources"] if s["delivered"]},
        "ingest_errors": {s["source"]: s["ingest_errors"] for s in status["sources"] if s["ingest_errors"]},
        "erased_rows": erased,
        "capabilities": status["capabilities"],
        "notes": status["notes"],
        "warnings": status["warnings"],
    }


def carry_consent_ledger(paths: RunPaths, storage: Storage) -> dict:
    """The consent ledger outlives the warehouse: when the warehouse has none (a new machine, a lost work dir), the
    newest nightly backup in the lake (features/consent_ledger/, exported with the marts) becomes tonight's
    starting ledger, so earlier opt-outs still hold. Writes and returns {ledger: kept | restored | new, ...}."""
    paths.warehouse.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect(str(paths.warehouse))
    try:
        kept = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'marts' "
            "AND table_name = 'consent_ledger'"
        ).fetchone()[0]
        state: dict = {"ledger": "kept"} if kept else {"ledger": "new"}
        backups = [] if kept else days_before(storage, "features/consent_ledger", "consent_ledger.parquet", paths.ds)
        if backups:
            key = f"features/consent_ledger/ds={backups[-1]}/consent_ledger.parquet"
            local = paths.work / "runs" / f"ds={paths.ds}" / "consent_ledger_backup.parquet"
            local.parent.mkdir(parents=True, exist_ok=True)
            local.write_bytes(storage.get_bytes(key))
            con.execute("CREATE SCHEMA IF NOT EXISTS marts")
            con.execute(
                f"CREATE TABLE marts.consent_ledger AS SELECT * FROM read_parquet('{local}', hive_partitioning = false)"
            )
            rows = con.execute("SELECT count(*) FROM marts.consent_ledger").fetchone()[0]
            local.unlink()
            state = {"ledger": "restored", "from": key, "rows": rows}
    finally:
        con.close()
    paths.consent_ledger_state.parent.mkdir(parents=True, exist_ok=True)
    paths.consent_ledger_state.write_text(json.dumps(state))
    return state


def dbt_vars(config: Mapping, ds: str) -> dict:
    """The dbt vars of a run (orchestration.dbt.dbt_group passes the same, with ds templated)."""
    from precision_marketing.ingest.mapping import mapping_from_config

    return {
        "ds": ds,
        "landed_dir": str(landed_dir(config)),
        "history_days": config["dbt"]["history_days"],
        "id_types": mapping_from_config(config).as_dbt_var(),
        "future_tolerance_hours": config["ingest"]["future_tolerance_hours"],
        "explicit_opt_in_channels": config["consent"]["explicit_opt_in_channels"],
    }


def export_features(ds: str, params: Mapping | None = None) -> dict:
    """Export the dbt marts, the audit table and the quarantine tables as Parquet (work dir, then lake)."""
    config = run_config(params)
    paths = paths_for(config, ds)
    storage = storage_from_config(config)
    exports = [("marts", t, paths.feature(t)) for t in MART_TABLES]
    exports += [("audit", t, paths.feature(t)) for t in AUDIT_TABLES]
    exports += [("quarantine", f"quarantine_{s}", paths.quarantine(s)) for s in raw_sources()]
    counts = {}
    # default (read-write) mode: under `airflow dags test` dbt runs in this process and DuckDB refuses a
    # second connection to the same file with a different configuration
    con = duckdb.connect(str(paths.warehouse))
    try:
        for schema, relation, target in exports:
            shutil.rmtree(target.parent, ignore_errors=True)
            target.parent.mkdir(parents=True)
            copied = con.execute(f'COPY (SELECT * FROM "{schema}"."{relation}") TO \'{target}\' (FORMAT parquet)')
            counts[relation] = copied.fetchone()[0]  # COPY reports the rows it wrote
    finally:
        con.close()
    for _, _, target in exports:
        _upload(storage, paths, target.parent)
    return counts


def check_quarantine(ds: str, params: Mapping | None = None) -> dict:
    """Stop the run when a source quarantined more of the ds delivery than its limit (expectations/quarantine_share.py)."""
    from expectations.quarantine_share import check_quarantine_share
    from precision_marketing.ingest.mapping import mapping_from_config

    config = run_config(params)
    paths = paths_for(config, ds)
    mapping = mapping_from_config(config)
    con = duckdb.connect()
    try:
        reconciliation = con.execute(f"SELECT * FROM read_parquet('{paths.feature('data_reconciliation')}')").df()
        reasons = {}
        for source in raw_sources():
            rows = con.execute(
                f"SELECT reject_reason, count(*) AS n FROM read_parquet('{paths.quarantine(source)}') "
                "WHERE source_file LIKE ? GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT 3",
                [f"%/ds={ds}/%"],
            ).fetchall()
            reasons[source] = [(reason, n) for reason, n in rows]
    finally:
        con.close()
    storage = storage_from_config(config)
    limits = {
        name: source.max_quarantine_share
        for name, source in mapping.sources.items()
        if source.max_quarantine_share is not None
    }
    return check_quarantine_share(
        reconciliation.to_dict("records"),
        limits=limits,
        default_limit=config["ingest"]["max_quarantine_share"],
        min_rows=config["ingest"]["quarantine_min_rows"],
        reasons=reasons,
        ds=ds,
        where={s: storage.uri(paths.lake_key(paths.quarantine(s).parent)) for s in raw_sources()},
    )


def validation_engine(config: Mapping) -> dict:
    """run_checkpoint's engine settings: large tables on a local Spark inside the task (its staging files are
    local to the task, so not the cluster master), the rest with pandas."""
    validation = config["validation"]
    return {
        "spark_min_rows": int(validation["spark_min_rows"]),
        "spark_config": {"master": "local[*]", "shuffle_partitions": config["spark"]["shuffle_partitions"]},
        "spark_driver_memory": validation["spark_driver_memory"],
    }


def validate_marts(ds: str, params: Mapping | None = None) -> dict:
    """The quarantine share of every source, then the Great Expectations marts suites (the CTR marts only
    when the audience sources were delivered: otherwise they are empty by design)."""
    from expectations.checkpoints import run_checkpoint

    config = run_config(params)
    paths = paths_for(config, ds)
    quarantine = check_quarantine(ds, params)
    consent = guard_consent(config, paths, storage_from_config(config))
    audiences = landing_status(config, ds)["capabilities"]["audiences"]
    tables = {t: paths.feature(t) for t in MART_TABLES + AUDIT_TABLES if audiences or t not in AUDIENCE_MARTS}
    summary = run_checkpoint(
        "marts", tables, docs_dir=paths.report_dir / "data_docs" / "marts", ds=ds, **validation_engine(config)
    )
    return {**summary, "quarantine_share": quarantine, "consent_guard": consent}


class RecommendationGateError(RuntimeError):
    """The recommendations did not pass the publish gate and the configured gate level is 'fail'."""


def days_before(storage: Storage, prefix: str, filename: str, ds: str) -> list[str]:
    """The days before ds with a lake file <prefix>/ds=D/<filename> (e.g. models/als, metrics.json), oldest first."""
    days = set()
    for key in storage.list_keys(prefix + "/"):
        partition = key[len(prefix) + 1 :].split("/")[0]
        if key.endswith(f"/{filename}") and partition.startswith("ds=") and partition[3:] < ds:
            days.add(partition[3:])
    return sorted(days)


def last_published_metrics(storage: Storage, model: str, ds: str, target: Path) -> Path | None:
    """The metrics.json of the newest published run of `model` before `ds` (published by `publish`),
    copied to `target`; None on a first run."""
    earlier = days_before(storage, f"models/{model}", "metrics.json", ds)
    if not earlier:
        return None
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(storage.get_bytes(f"models/{model}/ds={earlier[-1]}/metrics.json"))
    return target


def report_gate(ds: str, gate: Mapping) -> None:
    """A failed recommendation gate alerts (warning; error with level 'fail', which also fails the task)."""
    if gate["passed"]:
        return
    from precision_marketing.reporting.alerts import notify

    message = (
        f"recommendations for ds={ds} failed the publish gate ("
        + {"fallback": "publishing the popularity fallback lists", "none": "keeping the last published partition"}.get(
            gate["published"], gate["published"]
        )
        + "): "
        + "; ".join(gate["reasons"])
    )
    notify(
        "error" if gate["level"] == "fail" else "warning",
        message,
        {"event": "recommendation_gate_failed", "ds": ds, "published": gate["published"]},
    )
    if gate["level"] == "fail":
        raise RecommendationGateError(message)


def train_als(ds: str, params: Mapping | None = None) -> dict:
    """Tune, evaluate, gate and serve the recommendations (spark_jobs/als_recommendations.py). A gate
    failure is logged as a structured warning; with gate level 'fail' the task fails."""
    from precision_marketing.training.spark_submit import run_spark_job, write_job_settings

    config = run_config(params)
    paths = paths_for(config, ds)
    out = paths.model_dir("als")
    previous = last_published_metrics(storage_from_config(config), "als", ds, paths.work / "previous" / "als.json")
    settings = write_job_settings(config, "als_recommendations", paths.job_settings("als_recommendations"))
    run_spark_job(
        "als_recommendations",
        [
            "--features-dir",
            paths.work / "features",
            "--ds",
            ds,
            "--output-dir",
            out,
            "--config",
            settings,
            *(["--previous-metrics", previous] if previous is not None else []),
        ],
        config["spark"],
    )
    metrics = json.loads((out / "metrics.json").read_text())
    gate = metrics["gate"]
    report_gate(ds, gate)
    from precision_marketing.reporting.report import headline_keys

    # the headline figures, and the evidence behind them (interval, sample) for the task log
    evidence = (
        "baseline",
        "ndcg_at_k_interval",
        "n_eval_users",
        "min_history",
        "recommendations_by_source",
        "catalog_coverage",
    )
    return {key: metrics.get(key) for key in [*headline_keys("als"), *evidence]} | {
        "gate": gate["published"],
        "verdict": gate.get("verdict"),
    }


def segment_users(ds: str, params: Mapping | None = None) -> dict:
    from precision_marketing.training.segmentation import segment_users as run_segmentation

    config = run_config(params)
    paths = paths_for(config, ds)
    out = paths.model_dir("segments")
    shutil.rmtree(out, ignore_errors=True)
    return run_segmentation(
        paths.feature("user_features"),
        out / "user_segments.parquet",
        k=config["segments"]["k"],
        seed=config["segments"]["seed"],
    )


def _audience_note(config: Mapping, ds: str) -> str | None:
    """Why audiences cannot be built for ds, or None when they can: their sources were not delivered, or the
    consent guard blocked tonight's consent export."""
    status = landing_status(config, ds)
    if not status["capabilities"]["audiences"]:
        return next((note for note in status["notes"] if note.startswith("audiences skipped")), "audiences skipped")
    verdict_path = paths_for(config, ds).consent_guard
    if verdict_path.exists():
        verdict = json.loads(verdict_path.read_text())
        if not verdict["passed"]:
            return "audiences blocked by the consent guard: " + "; ".join(verdict["reasons"])
    return None


def guard_consent(config: Mapping, paths: RunPaths, storage: Storage) -> dict | None:
    """Judge tonight's consent export against the last night the guard let through (its verdicts are kept in
    the lake beside the models); write tonight's verdict, alert when it blocks. None without audience sources."""
    from expectations.consent_guard import consent_guard

    if not landing_status(config, paths.ds)["capabilities"]["audiences"]:
        return None
    relation = duckdb.sql(f"select * from read_parquet('{paths.feature('consent_delivery')}')")
    [tonight] = [dict(zip(relation.columns, row)) for row in relation.fetchall()]
    last_good = None
    earlier_verdicts = days_before(storage, "models/consent_guard", "verdict.json", paths.ds)
    for day in reversed(earlier_verdicts):
        earlier = json.loads(storage.get_bytes(f"models/consent_guard/ds={day}/verdict.json"))
        if earlier["passed"]:
            last_good = earlier["tonight"]
            break
    consent = config["consent"]
    ledger = json.loads(paths.consent_ledger_state.read_text()) if paths.consent_ledger_state.exists() else {}
    verdict = consent_guard(
        tonight,
        last_good,
        # the platform ran before (a verdict exists) yet tonight's ledger started empty, with no backup to restore
        ledger_lost=ledger.get("ledger") == "new" and bool(earlier_verdicts),
        max_drop_share=consent["max_drop_share"],
        max_unknown_user_share=consent["max_unknown_user_share"],
        min_rows=consent["min_rows"],
    )
    paths.consent_guard.parent.mkdir(parents=True, exist_ok=True)
    paths.consent_guard.write_text(json.dumps(verdict, indent=2, default=str))
    storage.put_file(f"models/consent_guard/ds={paths.ds}/verdict.json", paths.consent_guard)
    if not verdict["passed"]:
        from precision_marketing.reporting.alerts import notify

        message = f"audiences for ds={paths.ds} blocked by the consent guard: " + "; ".join(verdict["reasons"])
        print(message, flush=True)
        notify("error", message, {"event": "consent_guard_blocked", "ds": paths.ds})
    return verdict


def _skip_without_audience_sources(config: Mapping, paths: RunPaths, model: str) -> None:
    """StepSkipped (the task shows as skipped) when the audience sources were not delivered; an earlier run's
    output of this ds is removed so nothing stale is published."""
    note = _audience_note(config, paths.ds)
    if note:
        shutil.rmtree(paths.model_dir(model), ignore_errors=True)
        raise StepSkipped(note)


def train_ctr_and_build_audiences(ds: str, params: Mapping | None = None) -> dict:
    from precision_marketing.training.spark_submit import run_spark_job, write_job_settings

    config = run_config(params)
    paths = paths_for(config, ds)
    _skip_without_audience_sources(config, paths, "ctr")
    out = paths.model_dir("ctr")
    settings = write_job_settings(config, "ctr_audiences", paths.job_settings("ctr_audiences"))
    run_spark_job(
        "ctr_audiences",
        [
            "--features-dir",
            paths.work / "features",
            "--ds",
            ds,
            "--segments",
            paths.model_dir("segments") / "user_segments.parquet",
            "--output-dir",
            out,
            "--config",
            settings,
        ],
        config["spark"],
    )
    return json.loads((out / "metrics.json").read_text())


def build_audience_exports(ds: str, params: Mapping | None = None) -> dict:
    """The treatment rows of the audiences with their personalised content (precision_marketing/campaigns/content.py)."""
    from precision_marketing.campaigns.content import build_audience_exports as build

    config = run_config(params)
    paths = paths_for(config, ds)
    _skip_without_audience_sources(config, paths, "activation")
    tables = output_tables(paths)
    # without tonight's recommendations (publish gate keep_last) the rows get no products: fallback subjects
    return build(
        audiences=tables["audiences"],
        recommendations=tables.get("recommendations"),
        item_features=paths.feature("item_features"),
        campaigns=paths.feature("campaigns"),
        out=tables["audience_exports"],
        activation=config["activation"],
    )


def measure_campaign_lift(ds: str, params: Mapping | None = None) -> dict:
    """campaign_lift from the audiences published before ds and the window's behaviour (precision_marketing/campaigns/lift.py)."""
    from precision_marketing.campaigns.lift import measure_campaign_lift as measure

    config = run_config(params)
    paths = paths_for(config, ds)
    _skip_without_audience_sources(config, paths, "lift")
    lift = config["lift"]
    return measure(
        storage_from_config(config),
        ds=ds,
        ctr_train=paths.feature("ctr_train"),
        interactions=paths.feature("interactions"),
        item_features=paths.feature("item_features"),
        campaigns=paths.feature("campaigns"),
        user_keys=paths.feature("user_keys"),
        out=output_tables(paths)["campaign_lift"],
        windows=lift["windows_days"],
        history_days=config["dbt"]["history_days"],
        confidence=float(lift["confidence"]),
        min_group_size=int(lift["min_group_size"]),
    )


@dataclass(frozen=True)
class Output:
    """A publishable table: where the run writes it (models/<model>/ds=D/<name>: a Parquet file or Spark folder)
    and whether it needs the audience sources (impressions, campaigns, consent)."""

    model: str
    name: str
    needs_audience_sources: bool = False


# Every publishable table, in publishing order. Adding one: its entry here (and the step that writes it), its
# suite in expectations/suites.py, its schema in docs/tables.md (tests/test_layout.py checks the three agree).
OUTPUTS = {
    "recommendations": Output("als", "recommendations"),
    "audiences": Output("ctr", "audiences", needs_audience_sources=True),
    "user_segments": Output("segments", "user_segments.parquet"),
    "audience_exports": Output("activation", "audience_exports.parquet", needs_audience_sources=True),
    "campaign_lift": Output("lift", "campaign_lift.parquet", needs_audience_sources=True),
}
PUBLISHED_TABLES = tuple(OUTPUTS)


def published_tables(config: Mapping) -> list[str]:
    """The tables this platform publishes: config publish.tables, `all` = every table of OUTPUTS."""
    chosen = config["publish"]["tables"]
    if chosen == "all":
        return list(PUBLISHED_TABLES)
    unknown = [table for table in chosen if table not in OUTPUTS]
    if unknown:
        raise ConfigError(
            f"publish.tables: unknown table(s) {', '.join(unknown)} "
            f"(the published tables: {', '.join(PUBLISHED_TABLES)}, or 'all')"
        )
    return list(chosen)


def output_tables(paths: RunPaths) -> dict[str, Path]:
    """The run's publishable outputs: table name -> local Parquet file or Spark folder. Recommendations are
    left out when the publish gate kept the last published partition (gate action keep_last)."""
    outputs = {table: paths.model_dir(output.model) / output.name for table, output in OUTPUTS.items()}
    als_metrics = paths.model_dir("als") / "metrics.json"
    if als_metrics.exists() and json.loads(als_metrics.read_text()).get("gate", {}).get("published") == "none":
        del outputs["recommendations"]
    return outputs


def built_outputs(config: Mapping, paths: RunPaths) -> tuple[dict[str, Path], list[str]]:
    """The outputs this run built (audiences only when the audience sources were delivered) and notes on the rest."""
    outputs = output_tables(paths)
    note = _audience_note(config, paths.ds)
    if note:
        return {t: p for t, p in outputs.items() if not OUTPUTS[t].needs_audience_sources}, [note]
    return outputs, []


def validate_outputs(ds: str, params: Mapping | None = None) -> dict:
    from expectations.checkpoints import run_checkpoint

    config = run_config(params)
    paths = paths_for(config, ds)
    outputs, _ = built_outputs(config, paths)
    references = ["user_features", "interactions", "suppressions"] + (["campaigns"] if "audiences" in outputs else [])
    tables = {**outputs, **{t: paths.feature(t) for t in references}}
    return run_checkpoint(
        "outputs",
        tables,
        docs_dir=paths.report_dir / "data_docs" / "outputs",
        ds=ds,
        top_k=config["als"]["top_k"],
        max_audiences_per_user=config["activation"]["max_audiences_per_user"],
        **validation_engine(config),
    )


def publish(ds: str, run_id: str, params: Mapping | None = None) -> dict:
    """Publish the validated outputs (atomic per partition), with the original ids restored
    (precision_marketing/publish/ids.py), and the models' artifacts. A table this run did not build keeps its last
    partition; for the audience tables that partition is re-checked against tonight's consent (publish/consent.py)."""
    from precision_marketing.ingest.mapping import mapping_from_config
    from precision_marketing.publish.consent import REFILTERED_TABLES, refilter_latest
    from precision_marketing.publish.ids import restore_original_ids
    from precision_marketing.publish.partitions import publish_table

    config = run_config(params)
    paths = paths_for(config, ds)
    storage = storage_from_config(config)
    outputs, notes = built_outputs(config, paths)
    keys = {"user": paths.feature("user_keys"), "product": paths.feature("product_keys")}
    id_types = mapping_from_config(config).ids
    manifests = {}
    for table in published_tables(config):
        if table not in outputs:  # held back by the recommendation gate, or not built: the last good partition stays
            why = f" ({'; '.join(notes)})" if table == "audiences" and notes else ""
            print(f"publish: {table} not published by this run, the last published partition stays{why}", flush=True)
            manifests[table] = {"row_count": None, "files": 0, "kept_last_published": True}
            if table in REFILTERED_TABLES:  # ... without anyone suppressed since it was published
                refiltered = refilter_latest(
                    storage, table, paths.feature("suppressions"), paths.feature("user_keys"), paths.work, run_id
                )
                if refiltered:
                    print(
                        f"publish: {table} ds={refiltered['ds']} re-checked against tonight's consent: "
                        f"{refiltered['removed']} row(s) of people suppressed since removed",
                        flush=True,
                    )
                manifests[table]["refiltered"] = refiltered
            continue
        staged = restore_original_ids(
            table, outputs[table], keys, id_types, paths.work / "publish" / table / f"ds={ds}" / f"{table}.parquet"
        )
        manifest = publish_table(storage, table, ds, staged, run_id)
        manifests[table] = {"row_count": manifest["row_count"], "files": len(manifest["files"])}
    for model in MODELS:  # a skipped model has no metrics
        metrics = paths.model_dir(model) / "metrics.json"
        if metrics.exists():
            storage.put_file(paths.lake_key(metrics), metrics)
    return manifests


def headline_metrics(ds: str, params: Mapping | None = None) -> dict:
    """The figures an operator looks at first, flat: {"als_precision_at_k": ..., "ctr_auc": ..., ...}
    (keys a model does not write are left out)."""
    from precision_marketing.reporting.report import headline_keys

    paths = paths_for(run_config(params), ds)
    figures = {}
    for model in MODELS:
        path = paths.model_dir(model) / "metrics.json"
        metrics = json.loads(path.read_text()) if path.exists() else {}
        figures.update(
            {
                f"{model}_{key}": metrics[key]
                for key in headline_keys(model)
                if metrics.get(key) is not None and not isinstance(metrics[key], dict)
            }
        )
        gate = metrics.get("gate")
        if isinstance(gate, dict) and "published" in gate:
            figures[f"{model}_published"] = gate["published"]
    return figures


def report_history(storage: Storage, ds: str, nights: int) -> list[dict]:
    """report.json of up to `nights` published nights before ds (the trends of the HTML report)."""
    days = sorted(
        {
            key.split("/ds=")[1].split("/")[0]
            for key in storage.list_keys("reports/")
            if key.endswith("/report.json") and "/ds=" in key
        }
    )
    history = []
    for day in [d for d in days if d < ds][-nights:]:
        try:
            history.append(json.loads(storage.get_bytes(f"reports/ds={day}/report.json")))
        except (FileNotFoundError, ValueError):
            continue  # a night whose report is missing or unreadable is a gap in the plots, not a failure
    return history


def audience_sizes(audiences: Path) -> dict[str, int]:
    """Users per campaign in the run's audiences output (an aggregate: one row per campaign)."""
    from precision_marketing.publish.partitions import parquet_files

    files = [str(p) for p in parquet_files(audiences)]
    rows = duckdb.sql(f"SELECT campaign_id, count(*) FROM read_parquet({files}) GROUP BY 1 ORDER BY 1").fetchall()
    return {str(campaign): int(n) for campaign, n in rows}


def refresh_catalog_and_report(ds: str, run_id: str, params: Mapping | None = None) -> dict:
    """Write the SQL catalog (views over the published tables) and the run report beside the tables."""
    from precision_marketing.privacy.retention import apply_retention
    from precision_marketing.publish.catalog import view_statements
    from precision_marketing.publish.partitions import read_manifest
    from precision_marketing.reporting.report import build_report, dbt_layer_results, timing_records

    config = run_config(params)
    paths = paths_for(config, ds)
    storage = storage_from_config(config)
    tables = published_tables(config)
    retention = apply_retention(config, storage, ds)  # before the views, which list what stays
    views_sql = ";\n\n".join(view_statements(storage, tables)) + ";\n"
    storage.put_bytes("catalog/views.sql", views_sql.encode())

    outputs, _ = built_outputs(config, paths)
    status = landing_status(config, ds)
    report = build_report(
        ds=ds,
        run_id=run_id,
        manifests={t: read_manifest(storage, t, ds) if t in outputs else None for t in tables},
        metrics={
            m: json.loads((paths.model_dir(m) / "metrics.json").read_text())
            for m in MODELS
            if (paths.model_dir(m) / "metrics.json").exists()
        },
        reconciliation_path=paths.feature("data_reconciliation"),
        out_dir=paths.report_dir,
        notes=status["notes"] + status["warnings"] + privacy_notes(status, retention),
        history=report_history(storage, ds, config["report"]["history_nights"]),
        audience_sizes=audience_sizes(outputs["audiences"]) if "audiences" in outputs else {},
        task_seconds=timing_records(paths.task_times_dir, run_id),
        dbt_layers=dbt_layer_results(paths.dbt_results_dir, run_id),
        campaign_lift_path=outputs.get("campaign_lift"),
    )
    _upload(storage, paths, paths.report_dir)
    return {
        "report": storage.uri(f"reports/ds={ds}/report.html"),
        "published": report["published"],
        "retention_deleted_partitions": retention,
    }


def erased_rows(status: Mapping) -> dict[str, int]:
    """Rows of forgotten people (the erasure register) in the window's deliveries, per source: not landed."""
    return {s["source"]: s["erased_rows"] for s in status["sources"] if s.get("erased_rows")}


def privacy_notes(status: Mapping, retention: Mapping[str, int]) -> list[str]:
    """The night's erasure and retention figures, for the run report."""
    notes = []
    erased = erased_rows(status)
    if erased:
        notes.append(
            "rows of people forgotten by pm forget were in tonight's deliveries and were not landed: "
            + ", ".join(f"{source} {rows}" for source, rows in erased.items())
            + " (the export still lists them: fix it at the source; pm forget again clears the delivered files)"
        )
    if any(retention.values()):
        notes.append(
            "retention deleted expired partitions: " + ", ".join(f"{zone} {n}" for zone, n in retention.items() if n)
        )
    return notes
