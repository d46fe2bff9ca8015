"""Run one Great Expectations checkpoint over all tables of a layer ("marts" or "outputs").

    python -m expectations.checkpoints --layer marts --table user_features=/p/user_features.parquet ... \
        --docs-dir /p/reports/ds=D/data_docs/marts --ds D [--top-k 10]

Each table (a Parquet file or a Spark Parquet directory) is read with pandas; the cross-table rules of
expectations/suites.py get their derived columns/frames here; one GX Checkpoint validates them all and
builds Data Docs into --docs-dir. Any failed expectation raises DataQualityError whose message lists every
failure as `<layer>.<table>: <expectation> on column '<col>' failed (...)`; the CLI prints it and exits 1.

pandas is the thin version, fine for the demo sizes: for large tables point GX's Spark datasource
(context.data_sources.add_spark / add_spark_filesystem) at the same files and keep the same suites.
"""
from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
from pathlib import Path
from functools import partial
from typing import Any, Mapping

os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")

import pandas as pd  # noqa: E402

from expectations.data_docs import make_offline  # noqa: E402
from expectations.suites import LAYERS, expectations_for  # noqa: E402

# tables an output check reads only to evaluate a cross-table rule (they were validated as marts)
REFERENCE_TABLES = {"outputs": {"user_features", "interactions", "suppressions", "campaigns"}}
# frames built here from a validated table; validated whenever their base table is
DERIVED_FRAMES = {"recommendations_per_user", "audiences_per_campaign", "audiences_per_user"}
MAX_EXAMPLES = 5


class DataQualityError(Exception):
    """A table broke an expectation (or could not be read); `summary` holds the per-table results."""

    def __init__(self, message: str, summary: dict | None = None):
        super().__init__(message)
        self.summary = summary


# --- reading and derived frames --------------------------------------------------------------------
def _read_table(layer: str, table: str, path: Path) -> pd.DataFrame:
    if not path.exists():
        raise DataQualityError(f"{layer}.{table}: table file not found: {path}")
    try:
        return pd.read_parquet(path)
    except Exception as error:  # unreadable or not Parquet: same class of failure as a broken table
        raise DataQualityError(f"{layer}.{table}: cannot read Parquet {path}: {error}") from error


def _columns_of(frames: Mapping[str, pd.DataFrame], paths: Mapping[str, Path], layer: str, table: str,
                needed: str, columns: list[str]) -> pd.DataFrame:
    """Table `needed` (the checked table itself or a reference), with the columns a cross-table rule reads."""
    if needed not in frames:
        raise DataQualityError(f"{layer}.{table}: checking it needs table '{needed}' (pass --table {needed}=PATH)")
    missing = [c for c in columns if c not in frames[needed].columns]
    if missing:
        raise DataQualityError(f"{layer}.{table}: {paths[needed]} has no column {missing[0]!r}")
    return frames[needed]


def _has_pair(frame: pd.DataFrame, pairs: pd.DataFrame, on: list[str]) -> pd.Series:
    """Boolean per row of `frame`: its `on` values occur in `pairs`."""
    keys = pairs[on].drop_duplicates()
    merged = frame[on].merge(keys, on=on, how="left", indicator=True)
    return pd.Series((merged["_merge"] == "both").to_numpy(), index=frame.index)


def _frames_to_validate(layer: str, frames: dict[str, pd.DataFrame], paths: Mapping[str, Path],
                        validated: list[str]) -> dict[str, pd.DataFrame]:
    """The validated tables plus the derived columns/frames their cross-table rules are stated on."""
    out = {table: frames[table] for table in validated}
    ref = partial(_columns_of, frames, paths, layer)

    if "data_reconciliation" in out:
        recon = out["data_reconciliation"].copy()
        parts = ["raw_rows", "clean_rows", "quarantined_rows", "duplicate_rows"]
        if set(parts) <= set(recon.columns):  # else the column-set expectation reports what is missing
            recon["reconciles"] = recon["raw_rows"] == recon[parts[1:]].sum(axis=1, min_count=3)
        out["data_reconciliation"] = recon

    if layer == "outputs" and "recommendations" in out:
        recs = ref("recommendations", "recommendations", ["user_id", "product_id"]).copy()
        interactions = ref("recommendations", "interactions", ["user_id", "product_id", "n_purchases"])
        purchases = interactions.loc[interactions["n_purchases"] > 0, ["user_id", "product_id"]]
        recs["purchased_in_window"] = _has_pair(recs, purchases, ["user_id", "product_id"])
        out["recommendations"] = recs

        users = ref("recommendations", "user_features", ["user_id"])[["user_id"]].drop_duplicates()
        per_user = recs.groupby("user_id").size().rename("n_recommendations").reset_index()
        per_user = (users.merge(per_user, on="user_id", how="left")
                    .fillna({"n_recommendations": 0}).astype({"n_recommendations": "int64"}))
        out["recommendations_per_user"] = per_user

    if layer == "outputs" and "audiences" in out:
        audiences = ref("audiences", "audiences", ["campaign_id", "user_id", "channel"]).copy()
        suppressions = ref("audiences", "suppressions", ["user_id", "channel"])
        opted_out_everywhere = suppressions.loc[suppressions["channel"] == "all", ["user_id"]]
        audiences["is_suppressed"] = (_has_pair(audiences, suppressions, ["user_id", "channel"])
                                      | _has_pair(audiences, opted_out_everywhere, ["user_id"]))
        out["audiences"] = audiences

        campaigns = ref("audiences", "campaigns", ["campaign_id", "audience_size"])
        per_campaign = audiences.groupby("campaign_id").size().rename("n_users").reset_index()
        out["audiences_per_campaign"] = per_campaign.merge(
            campaigns[["campaign_id", "audience_size"]], on="campaign_id", how="left")
        out["audiences_per_user"] = audiences.groupby("user_id").size().rename("n_audiences").reset_index()

    if layer == "outputs" and "audience_exports" in out:
        exports = ref("audience_exports", "audience_exports", ["campaign_id", "user_id"]).copy()
        audiences = ref("audience_exports", "audiences", ["campaign_id", "user_id", "experiment_group"])
        treatment = audiences.loc[audiences["experiment_group"] == "treatment", ["campaign_id", "user_id"]]
        exports["exported_control"] = ~_has_pair(exports, treatment, ["campaign_id", "user_id"])
        out["audience_exports"] = exports
    return out


# --- failure messages ------------------------------------------------------------------------------
def _plain(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return type(value)(_plain(v) for v in value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    value = value.item() if hasattr(value, "item") and callable(value.item) else value
    return None if isinstance(value, float) and value != value else value  # NaN is how pandas reads NULL


def _exception_message(exception_info: Any) -> str | None:
    """GX nests exception info either flat or per metric; find the first raised one."""
    if isinstance(exception_info, Mapping):
        if exception_info.get("raised_exception"):
            return str(exception_info.get("exception_message")).splitlines()[0]
        for nested in exception_info.values():
            message = _exception_message(nested)
            if message:
                return message
    return None


def _describe_failure(layer: str, table: str, result: Any) -> str:
    config = result.expectation_config
    kwargs = config.kwargs
    if "column" in kwargs:
        target = f" on column '{kwargs['column']}'"
    elif "column_list" in kwargs:
        target = f" on columns {list(kwargs['column_list'])}"
    elif "column_A" in kwargs:
        target = f" on columns '{kwargs['column_A']}' >= '{kwargs['column_B']}'"
    else:
        target = ""
    details = result.result or {}
    error = _exception_message(result.exception_info)
    if error:
        observed = f"error: {error.removeprefix('Error: ')}"
    elif "unexpected_count" in details:
        examples = _plain(details.get("partial_unexpected_list", [])[:MAX_EXAMPLES])
        observed = (f"{details['unexpected_count']} unexpected values of {details.get('element_count')} rows, "
                    f"e.g. {examples}")
    elif details.get("details", {}).get("mismatched"):
        observed = f"columns {_plain(details['details']['mismatched'])}"
    else:
        observed = f"observed {_plain(details.get('observed_value'))}"
    rule = f" [{config.description}]" if config.description else ""
    return f"{layer}.{table}: {config.type}{target} failed ({observed}){rule}"


# --- the checkpoint --------------------------------------------------------------------------------
def _new_context(project_dir: Path, docs_dir: Path):
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="file", project_root_dir=project_dir)
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    context.update_data_docs_site("local_site", {
        "class_name": "SiteBuilder", "show_how_to_buttons": False,
        "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
        "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
    })
    return context


def run_checkpoint(layer: str, tables: Mapping[str, Path], *, docs_dir: Path, ds: str,
                   top_k: int | None = None, max_audiences_per_user: int | None = None) -> dict:
    """Validate the given tables of `layer`, build Data Docs into docs_dir (replaced), return a summary.

    tables: table name -> Parquet file or Spark Parquet directory; for "outputs" also the reference tables
    user_features, interactions (recommendations) and suppressions, campaigns (audiences).
    Raises DataQualityError listing every failure; ValueError for an unknown layer/table name.
    """
    if layer not in LAYERS:
        raise ValueError(f"unknown layer {layer!r}; expected one of {sorted(LAYERS)}")
    layer_tables = set(LAYERS[layer]) - DERIVED_FRAMES
    known = layer_tables | REFERENCE_TABLES.get(layer, set())
    unknown = sorted(set(tables) - known)
    if unknown:
        raise ValueError(f"unknown table(s) {unknown} for layer {layer!r}; expected some of {sorted(known)}")
    validated = [t for t in tables if t in layer_tables]
    if not validated:
        raise ValueError(f"no table of layer {layer!r} given; expected some of {sorted(layer_tables)}")

    paths = {table: Path(path) for table, path in tables.items()}
    frames = {table: _read_table(layer, table, path) for table, path in paths.items()}
    to_validate = _frames_to_validate(layer, frames, paths, validated)

    import great_expectations as gx
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.core.run_identifier import RunIdentifier

    docs_dir = Path(docs_dir).resolve()
    if (docs_dir / "index.html").exists():
        shutil.rmtree(docs_dir)  # a re-run of the ds replaces its docs
    docs_dir.mkdir(parents=True, exist_ok=True)

    with tempfile.TemporaryDirectory(prefix="gx-") as tmp:
        staging = Path(tmp) / "frames"
        staging.mkdir()
        context = _new_context(Path(tmp), docs_dir)
        # a file datasource (not add_dataframe_asset): a dataframe asset takes its frame as a run-time
        # batch parameter, which a Checkpoint shares across all of its validation definitions
        source = context.data_sources.add_pandas_filesystem(name=layer, base_directory=staging)
        definitions = []
        for table, frame in to_validate.items():
            frame.to_parquet(staging / f"{table}.parquet", index=False)
            batch = source.add_parquet_asset(name=table).add_batch_definition_path(name=table, path=f"{table}.parquet")
            suite = context.suites.add(gx.ExpectationSuite(
                name=f"{layer}.{table}", expectations=expectations_for(
                    layer, table, top_k=top_k, max_audiences_per_user=max_audiences_per_user)))
            definitions.append(context.validation_definitions.add(
                gx.ValidationDefinition(name=f"{layer}.{table}", data=batch, suite=suite)))
        checkpoint = context.checkpoints.add(gx.Checkpoint(
            name=f"{layer}_checkpoint", validation_definitions=definitions,
            actions=[UpdateDataDocsAction(name="update_data_docs")],
            result_format={"result_format": "SUMMARY", "partial_unexpected_count": MAX_EXAMPLES}))
        result = checkpoint.run(run_id=RunIdentifier(run_name=f"{layer} ds={ds}",
                                                     run_time=dt.datetime.now(dt.timezone.utc)))
    make_offline(docs_dir)  # the pages load their scripts and styles from the docs folder, not from CDNs

    summary: dict = {"layer": layer, "ds": ds, "success": bool(result.success),
                     "docs_index": str(docs_dir / "index.html"), "tables": {}}
    failures = []
    for validation in result.run_results.values():
        table = validation.suite_name.split(".", 1)[1]
        stats = validation.statistics
        summary["tables"][table] = {
            "success": bool(validation.success), "rows": len(to_validate[table]),
            "evaluated_expectations": stats["evaluated_expectations"],
            "failed_expectations": stats["unsuccessful_expectations"],
        }
        failures += [_describe_failure(layer, table, r) for r in validation.results if not r.success]
    if failures:
        raise DataQualityError(f"{len(failures)} expectation(s) failed in layer {layer!r} (ds {ds}; "
                               f"data docs: {summary['docs_index']}):\n" + "\n".join(failures), summary)
    return summary


# --- CLI -------------------------------------------------------------------------------------------
def _table_argument(text: str) -> tuple[str, Path]:
    name, sep, path = text.partition("=")
    if not sep or not name or not path:
        raise argparse.ArgumentTypeError(f"expected NAME=PATH, got {text!r}")
    return name, Path(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m expectations.checkpoints", description=__doc__.split("\n")[0])
    parser.add_argument("--layer", required=True, choices=sorted(LAYERS))
    parser.add_argument("--table", action="append", type=_table_argument, required=True, metavar="NAME=PATH",
                        help="a table to validate (or a reference table for outputs); repeat")
    parser.add_argument("--docs-dir", required=True, type=Path, help="Data Docs site folder (replaced)")
    parser.add_argument("--ds", required=True, help="logical date YYYY-MM-DD")
    parser.add_argument("--top-k", type=int, default=None, help="recommendations per user (outputs layer)")
    parser.add_argument("--max-audiences-per-user", type=int, default=None, help="frequency cap (outputs layer)")
    args = parser.parse_args(argv)
    try:
        summary = run_checkpoint(args.layer, dict(args.table), docs_dir=args.docs_dir, ds=args.ds, top_k=args.top_k,
                                 max_audiences_per_user=args.max_audiences_per_user)
    except (DataQualityError, ValueError) as error:
        print(f"data quality check failed: {error}", file=sys.stderr)
        return 1
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
