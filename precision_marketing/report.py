"""The run report: one JSON (for machines) and one Markdown page (for people) per ds, published
under <lake>/reports/ds=YYYY-MM-DD/ next to the Great Expectations Data Docs."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Mapping

import pyarrow.parquet as pq


def _fmt(value) -> str:
    if isinstance(value, float):
        return f"{value:.4f}"
    return "n/a" if value is None else str(value)


def build_report(*, ds: str, run_id: str, manifests: Mapping[str, dict | None], metrics: Mapping[str, dict],
                 reconciliation_path: Path, out_dir: Path, campaign_lift_path: Path | None = None) -> dict:
    from precision_marketing.campaign_report import campaign_section, read_lift

    reconciliation = pq.read_table(reconciliation_path).to_pylist()  # one row per raw source: tiny
    campaigns = campaign_section(metrics.get("ctr", {}), read_lift(campaign_lift_path))
    report = {
        "ds": ds,
        "run_id": run_id,
        "published": {t: (m["row_count"] if m else None) for t, m in manifests.items()},
        "metrics": dict(metrics),
        "campaigns": campaigns["data"],
        "data_quality": {"reconciliation": reconciliation},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    if campaigns["svg"]:
        (out_dir / "calibration.svg").write_text(campaigns["svg"])
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str))

    als, ctr, seg = metrics.get("als", {}), metrics.get("ctr", {}), metrics.get("segments", {})
    lines = [
        f"# Nightly run report — ds {ds}",
        f"run id: `{run_id}`",
        "",
        "## Published tables",
        "| table | rows |",
        "|---|---|",
        *[f"| {t} | {_fmt(rows)} |" for t, rows in report["published"].items()],
        "",
        "## Models",
        f"- ALS top-{_fmt(als.get('k'))}: precision@K {_fmt(als.get('precision_at_k'))} vs popularity "
        f"{_fmt(als.get('baseline_precision_at_k'))} (recall@K {_fmt(als.get('recall_at_k'))} vs "
        f"{_fmt(als.get('baseline_recall_at_k'))}), {_fmt(als.get('n_eval_users'))} holdout users",
        f"- CTR logistic regression: AUC {_fmt(ctr.get('auc'))} vs placement-prior baseline "
        f"{_fmt(ctr.get('baseline_auc'))} on {_fmt(ctr.get('n_test'))} holdout impressions",
        f"- Segments (k={_fmt(seg.get('k'))}): silhouette {_fmt(seg.get('silhouette'))}",
        "",
        *campaigns["markdown"],
        "## Data quality: raw rows = clean + quarantined + duplicates",
        "| source | raw | clean | quarantined | duplicates |",
        "|---|---|---|---|---|",
        *[f"| {r['source']} | {r['raw_rows']} | {r['clean_rows']} | {r['quarantined_rows']} | {r['duplicate_rows']} |"
          for r in reconciliation],
        "",
        "Great Expectations Data Docs: `data_docs/marts/index.html`, `data_docs/outputs/index.html`.",
    ]
    (out_dir / "report.md").write_text("\n".join(lines) + "\n")
    return report
