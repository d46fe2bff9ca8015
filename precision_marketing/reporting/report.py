"""The run report, per ds, published under <lake>/reports/ds=YYYY-MM-DD/ next to the Great Expectations
Data Docs: report.json (for machines, and the history later reports plot), report.md (short, for a
terminal) and report.html (for people: one self-contained page, plots as inline SVG, no network needed).

The HTML page shows the models' headline metrics and their trend over the published nights (precision@K
vs the popularity baseline, AUC vs the placement-prior baseline), audience sizes per campaign, the
quarantine rate per source over time and the time per task. Metrics are read defensively: a key a
model does not write shows as n/a, and every scalar key of every metrics.json is listed, so keys added
to a job's metrics appear without a change here.
"""

from __future__ import annotations

import html
import io
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

# headline rows: (model, key, label, baseline key or None)
HEADLINES = [
    (
        "als",
        "precision_at_k",
        "recommendations precision@K (baseline: strongest non-personalised)",
        "baseline_precision_at_k",
    ),
    ("als", "recall_at_k", "recommendations recall@K", "baseline_recall_at_k"),
    ("als", "ndcg_at_k", "recommendations NDCG@K", "baseline_ndcg_at_k"),
    ("als", "map_at_k", "recommendations MAP@K", "baseline_map_at_k"),
    ("als", "model", "recommendations served from", None),
    ("als", "engine", "recommendation engine", None),
    ("als", "gate", "publish gate", None),
    ("ctr", "auc", "CTR AUC", "baseline_auc"),
    ("ctr", "log_loss", "CTR log loss", None),
    ("segments", "silhouette", "segments silhouette", None),
]


def headline_keys(model: str) -> list[str]:
    """The metrics.json keys of `model` that HEADLINES shows (with their baselines): the figures an operator
    reads first, in the report, the Asset events and the task's return value alike."""
    keys = [key for name, key, _, baseline in HEADLINES if name == model for key in (key, baseline) if key]
    return list(dict.fromkeys(keys))


def _fmt(value) -> str:
    if isinstance(value, dict) and "passed" in value:  # the recommendation publish gate
        return (
            ("passed" if value["passed"] else "failed")
            + f" (published: {value.get('published', 'n/a')})"
            + "".join(f"; {reason}" for reason in value.get("reasons") or [])
        )
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4f}"
    return "n/a" if value is None else str(value)


def _metric(report: Mapping, model: str, key: str):
    value = ((report.get("metrics") or {}).get(model) or {}).get(key)
    return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None


def run_records(directory: Path, run_id: str) -> list[dict]:
    """The JSON records one run left in a folder of the work dir (a rerun of the same ds overwrites them)."""
    records = []
    for path in sorted(Path(directory).glob("*.json")):
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            continue  # a record being written right now
        if record.get("run_id") == run_id:
            records.append(record)
    return records


def timing_records(directory: Path, run_id: str) -> list[dict]:
    """The task timing records of one run, in start order."""
    return sorted(run_records(directory, run_id), key=lambda r: r.get("start") or "")


def dbt_layer_results(directory: Path, run_id: str) -> list[dict]:
    """What each dbt layer's build did in one run (records of dbt.execution_mode layers), in build order."""
    return sorted(run_records(directory, run_id), key=lambda r: r["finished_at"])


def dbt_summary(layers: Sequence[Mapping]) -> dict:
    """Per layer: models and tests built, the nodes that did not pass (with dbt's message), the slowest models."""
    summary = {"layers": [], "not_passed": [], "slowest_models": []}
    models = []
    for layer in layers:
        nodes = [{"layer": layer["layer"], **n} for n in layer["nodes"]]
        layer_models = [n for n in nodes if n["unique_id"].startswith("model.")]
        not_passed = [n for n in nodes if n["status"] not in ("success", "pass")]
        summary["layers"].append(
            {
                "layer": layer["layer"],
                "models": len(layer_models),
                "tests": len(nodes) - len(layer_models),
                "not_passed": len(not_passed),
                "seconds": round(layer.get("seconds") or 0.0, 1),
            }
        )
        summary["not_passed"] += not_passed
        models += layer_models
    summary["slowest_models"] = sorted(models, key=lambda n: -n["seconds"])[:10]
    return summary


def quarantine_rates(reconciliation: Iterable[Mapping]) -> dict[str, float | None]:
    return {r["source"]: (r["quarantined_rows"] / r["raw_rows"] if r.get("raw_rows") else None) for r in reconciliation}


# ------------------------------------------------------------------------------------------ plots


def _svg(figure) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    figure.savefig(buffer, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(figure)
    text = buffer.getvalue()
    text = re.sub(r"<metadata>.*?</metadata>", "", text, flags=re.S)  # RDF boilerplate
    return text[text.index("<svg") :]  # drop the XML prolog and DOCTYPE: inline in HTML


def _figure(width=6.4, height=2.8):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams.update({"svg.fonttype": "none", "font.size": 9, "axes.spines.top": False, "axes.spines.right": False})
    return plt.subplots(figsize=(width, height))


def _trend_plot(nights: list[Mapping], series: list[tuple[str, str, str]], ylabel: str) -> str | None:
    """Lines over nights; series = (model, metrics key, label). None when no night has a value."""
    days = [n["ds"] for n in nights]
    lines = [(label, [_metric(n, model, key) for n in nights]) for model, key, label in series]
    if not any(v is not None for _, values in lines for v in values):
        return None
    fig, ax = _figure()
    for label, values in lines:
        points = [(d, v) for d, v in zip(days, values) if v is not None]
        if points:
            ax.plot([d for d, _ in points], [v for _, v in points], marker="o", label=label)
    ax.set_ylabel(ylabel)
    ax.tick_params(axis="x", labelrotation=45)
    ax.legend(loc="best", frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return _svg(fig)


def _quarantine_plot(nights: list[Mapping]) -> str | None:
    per_source: dict[str, list[tuple[str, float]]] = {}
    for night in nights:
        rates = quarantine_rates((night.get("data_quality") or {}).get("reconciliation") or [])
        for source, rate in rates.items():
            if rate is not None:
                per_source.setdefault(source, []).append((night["ds"], 100 * rate))
    if not per_source:
        return None
    fig, ax = _figure()
    for source, points in sorted(per_source.items()):
        ax.plot([d for d, _ in points], [v for _, v in points], marker="o", label=source)
    ax.set_ylabel("quarantined rows, % of raw")
    ax.tick_params(axis="x", labelrotation=45)
    ax.legend(loc="best", frameon=False, ncol=3)
    ax.grid(axis="y", alpha=0.3)
    return _svg(fig)


def _bar_plot(labels: list[str], values: list[float], xlabel: str) -> str | None:
    if not labels:
        return None
    fig, ax = _figure(height=max(1.6, 0.28 * len(labels) + 0.8))
    ax.barh(labels[::-1], values[::-1], color="#4C72B0")
    ax.set_xlabel(xlabel)
    ax.grid(axis="x", alpha=0.3)
    return _svg(fig)


# ------------------------------------------------------------------------------------------ HTML

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2rem auto;max-width:1100px;color:#222;padding:0 1rem}
h1{font-size:1.5rem} h2{font-size:1.15rem;margin-top:2rem;border-bottom:1px solid #ddd;padding-bottom:.2rem}
table{border-collapse:collapse;margin:.5rem 0} td,th{border:1px solid #ddd;padding:.25rem .6rem;text-align:left;font-size:.9rem}
th{background:#f4f6f8} td.num{text-align:right;font-variant-numeric:tabular-nums}
.grid{display:grid;grid-template-columns:repeat(auto-fit,minmax(480px,1fr));gap:1rem}
figure.plot{margin:.5rem 0;border:1px solid #eee;padding:.5rem;border-radius:4px;max-width:720px} figure.plot svg{width:100%;height:auto}
figcaption{font-weight:600;font-size:.9rem;margin-bottom:.3rem} .na{color:#888;font-style:italic}
code{background:#f4f6f8;padding:0 .2rem}
"""


def _table(header: list[str], rows: list[list[Any]], numeric_from: int = 1) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>"
        + "".join(
            f"<td{' class=num' if i >= numeric_from else ''}>{html.escape(_fmt(v))}</td>" for i, v in enumerate(row)
        )
        + "</tr>"
        for row in rows
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _plot_block(plot_id: str, caption: str, svg: str | None) -> str:
    content = svg if svg else '<p class="na">no data yet</p>'
    return f'<figure class="plot" id="plot-{plot_id}"><figcaption>{html.escape(caption)}</figcaption>{content}</figure>'


CANDIDATES_SHOWN = 20  # metrics.json keeps every candidate; the page shows the best


def recommendation_sections(als: Mapping) -> list[str]:
    """What the recommendation job chose and why: the engine, holdout metrics with intervals per list and user
    activity, the gate's verdict against the strongest non-personalised ranking, the best tuning candidates
    with their validation scores, and where the published rows come from."""
    if not als:
        return []
    k = als.get("k")
    holdout = als.get("holdout") or {}
    lists = holdout.get("lists") or {}
    coverage = holdout.get("coverage") or {}
    tuning = als.get("tuning") or {}
    metric = tuning.get("selection_metric", "ndcg")
    segments = [s for s in ("cold", "light", "heavy") if any(s in values for values in lists.values())]

    def interval(values: Mapping) -> str | None:
        low, high = values.get(f"{metric}_low"), values.get(f"{metric}_high")
        return f"{low:.4f} – {high:.4f}" if low is not None and high is not None else None

    holdout_rows = [
        [
            name,
            *[values.get("all", {}).get(m) for m in ("precision", "recall", "ndcg", "map")],
            interval(values.get("all", {})),
            *[values.get(s, {}).get(metric) for s in segments],
            coverage.get(name),
            values.get("all", {}).get("n_users"),
        ]
        for name, values in lists.items()
    ]
    chosen = tuning.get("chosen") or {}
    candidates = sorted(tuning.get("candidates") or [], key=lambda c: -(c.get(f"validation_{metric}") or 0))
    candidate_rows = [
        [
            c.get("model"),
            json.dumps(c.get("params"), sort_keys=True),
            c.get(f"validation_{metric}"),
            c.get("seconds"),
            "chosen" if (c.get("model"), c.get("params")) == (chosen.get("model"), chosen.get("params")) else "",
        ]
        for c in candidates[:CANDIDATES_SHOWN]
    ]
    gate = als.get("gate") or {}
    if tuning.get("tuned"):
        how = (
            f"tuned tonight on {tuning.get('validation_rule', 'a validation split')} "
            f"({_fmt(tuning.get('n_fits'))} fits, {_fmt(tuning.get('n_candidates'))} candidates in "
            f"{tuning.get('seconds', 'n/a')} s)"
        )
    elif tuning.get("reused_from"):
        how = f"reused from the run of {tuning['reused_from']} (tuned on {tuning.get('tuned_on')})"
    else:
        how = tuning.get("note") or chosen.get("note") or "not tuned"
    verdict = gate.get("verdict") or (_fmt(gate) if gate else "n/a")
    sections = [
        "<h2>Recommendations</h2>",
        f"<p>Published from <b>{html.escape(str(als.get('model')))}</b> "
        f"({html.escape(json.dumps(als.get('params'), sort_keys=True))}), users with fewer than "
        f"{_fmt(als.get('min_history'))} history items get the fallback lists; choice {html.escape(how)}. "
        f"Engine: <b>{html.escape(str(als.get('engine', 'n/a')))}</b>"
        f"{' (' + html.escape(str(als['engine_reason'])) + ')' if als.get('engine_reason') else ''}.</p>",
        f"<p>Publish gate: <b>{html.escape(verdict)}</b> (published: {html.escape(str(gate.get('published')))}).</p>",
        f"<p>Holdout: {html.escape(str(holdout.get('rule') or holdout.get('note') or 'n/a'))}"
        f"{' (from ' + html.escape(str(holdout['cutoff'])) + ')' if holdout.get('cutoff') else ''}; intervals: "
        f"bootstrap over users, {_fmt(gate.get('confidence'))}.</p>",
        _table(
            [
                "list",
                f"precision@{k}",
                f"recall@{k}",
                f"NDCG@{k}",
                f"MAP@{k}",
                f"{metric}@{k} interval",
                *[f"{metric}@{k} {s}" for s in segments],
                "catalogue coverage",
                "users",
            ],
            holdout_rows,
        ),
    ]
    if candidate_rows:
        sections += [
            f"<h3>Tuning: the {len(candidate_rows)} best of {len(candidates)} candidates "
            f"(validation {html.escape(metric)}@{k})</h3>",
            _table(["model", "parameters", f"validation {metric}", "seconds", ""], candidate_rows, numeric_from=2),
        ]
    by_source = als.get("recommendations_by_source") or {}
    if by_source:
        sections += [
            "<h3>Published rows by source</h3>",
            _table(["source", "rows"], list(map(list, by_source.items()))),
        ]
    return sections


def campaign_sections(campaigns: Mapping, calibration_svg: str | None) -> list[str]:
    """CTR calibration (scores, reliability diagram), tonight's audiences by group and the measured lift
    (precision_marketing/reporting/campaign_section.py computes them)."""
    if not campaigns:
        return []
    calibration = dict(campaigns.get("calibration") or {})
    method = calibration.pop("method", "none")
    sections = [
        "<h2>Campaigns</h2>",
        f"<h3>CTR calibration (applied tonight: {html.escape(str(method))})</h3>",
        _table(
            ["score", "Brier", "ECE", "log loss", "AUC"],
            [
                ["raw" if name == "none" else name, *[c.get(k) for k in ("brier", "ece", "log_loss", "auc")]]
                for name, c in calibration.items()
            ],
        ),
        _plot_block(
            "calibration",
            "Reliability: observed click rate per bin of predicted p (diagonal = perfectly calibrated)",
            calibration_svg,
        ),
    ]
    audiences = campaigns.get("audiences") or {}
    if audiences:
        sections += [
            "<h3>Audiences tonight</h3>",
            _table(
                ["campaign", "audience", "treatment", "control", "short (cap)", "mean p_click", "expected value"],
                [
                    [
                        c,
                        a.get("audience"),
                        a.get("treatment"),
                        a.get("control"),
                        a.get("capped_short"),
                        a.get("mean_p_click"),
                        a.get("expected_value"),
                    ]
                    for c, a in audiences.items()
                ],
            ),
        ]
    lift = campaigns.get("lift") or []
    sections += [
        "<h3>Measured lift (treatment − control, after each user's first night in the audience)</h3>",
        _table(
            [
                "campaign",
                "window (days)",
                "metric",
                "treatment",
                "control",
                "rate T",
                "rate C",
                "lift",
                "CI low",
                "CI high",
                "p",
                "status",
            ],
            [
                [
                    r["campaign_id"],
                    r["window_days"],
                    r["metric"],
                    r["n_treatment"],
                    r["n_control"],
                    r["rate_treatment"],
                    r["rate_control"],
                    r["abs_lift"],
                    r["ci_low"],
                    r["ci_high"],
                    r["p_value"],
                    r["status"],
                ]
                for r in lift
            ],
            numeric_from=3,
        )
        if lift
        else "<p>No campaign to measure.</p>",
    ]
    return sections


def dbt_sections(dbt: Mapping) -> list[str]:
    """Each dbt layer's build: models and tests, any node that did not pass with dbt's message, the slowest models."""
    if not dbt.get("layers"):
        return []
    failed = dbt.get("not_passed") or []
    return [
        "<h2>dbt: models and tests per layer</h2>",
        _table(
            ["layer", "models", "tests", "not passed", "seconds"],
            [[r["layer"], r["models"], r["tests"], r["not_passed"], r["seconds"]] for r in dbt["layers"]],
        ),
        *(
            [
                "<h3>Not passed</h3>",
                _table(
                    ["layer", "node", "status", "message"],
                    [[n["layer"], n["unique_id"], n["status"], n.get("message")] for n in failed],
                    numeric_from=4,
                ),
            ]
            if failed
            else ["<p>Every model built and every test passed.</p>"]
        ),
        "<h3>Slowest models</h3>",
        _table(
            ["layer", "model", "seconds"],
            [[n["layer"], n["unique_id"].split(".")[-1], n["seconds"]] for n in dbt.get("slowest_models") or []],
            numeric_from=2,
        ),
    ]


def render_html(report: Mapping, history: list[Mapping], calibration_svg: str | None = None) -> str:
    """The page for `report`, with trends over `history` (earlier nights' report.json) plus this night."""
    nights = sorted([h for h in history if h.get("ds") != report["ds"]] + [report], key=lambda n: n["ds"])
    metrics = report.get("metrics") or {}
    headline_rows = []
    for model, key, label, baseline in HEADLINES:
        value = (metrics.get(model) or {}).get(key)
        base = (metrics.get(model) or {}).get(baseline) if baseline else None
        if baseline is None and value is None:
            continue  # a descriptive key the model does not (yet) write
        lift = value / base if isinstance(value, (int, float)) and isinstance(base, (int, float)) and base else None
        headline_rows.append([label, value, base if baseline else "", lift])
    all_metrics = []
    for model in sorted(metrics):
        values = metrics[model] or {}
        for key in sorted(values):
            value = values[key]
            shown = json.dumps(value, default=str)[:300] if isinstance(value, (dict, list)) else value
            all_metrics.append([model, key, shown])

    reconciliation = (report.get("data_quality") or {}).get("reconciliation") or []
    rates = quarantine_rates(reconciliation)
    recon_rows = [
        [
            r["source"],
            r["raw_rows"],
            r["clean_rows"],
            r["quarantined_rows"],
            r["duplicate_rows"],
            f"{100 * rates[r['source']]:.2f} %" if rates.get(r["source"]) is not None else None,
        ]
        for r in reconciliation
    ]
    audiences = report.get("audience_sizes") or {}
    tasks = report.get("task_seconds") or []
    k = (metrics.get("als") or {}).get("k")

    sections = [
        f"<h1>Nightly run report — ds {html.escape(report['ds'])}</h1>",
        f"<p>run id <code>{html.escape(str(report.get('run_id')))}</code>; "
        f"{len(nights)} night(s) of history shown.</p>",
        *(
            [f"<h2>Notes</h2><ul>{''.join(f'<li>{html.escape(note)}</li>' for note in report['notes'])}</ul>"]
            if report.get("notes")
            else []
        ),
        "<h2>Published tables</h2>",
        _table(["table", "rows"], [[t, n] for t, n in (report.get("published") or {}).items()]),
        "<h2>Models</h2>",
        _table(["metric", "value", "baseline", "lift"], headline_rows),
        '<div class="grid">',
        _plot_block(
            "ranking",
            f"Recommendations: precision@{_fmt(k)} vs the strongest non-personalised ranking, per night",
            _trend_plot(
                nights,
                [
                    ("als", "precision_at_k", "served precision@K"),
                    ("als", "baseline_precision_at_k", "baseline precision@K"),
                ],
                "precision@K",
            ),
        ),
        _plot_block(
            "ctr",
            "CTR model: AUC vs placement prior, per night",
            _trend_plot(
                nights,
                [("ctr", "auc", "logistic regression AUC"), ("ctr", "baseline_auc", "placement-prior AUC")],
                "AUC",
            ),
        ),
        "</div>",
        *recommendation_sections(metrics.get("als") or {}),
        *campaign_sections(report.get("campaigns") or {}, calibration_svg),
        "<h2>Audiences</h2>",
        _table(["campaign", "users"], [[c, n] for c, n in audiences.items()]),
        _plot_block(
            "audiences",
            "Audience size per campaign",
            _bar_plot(list(audiences), list(audiences.values()), "users in the audience"),
        ),
        "<h2>Data quality: raw rows = clean + quarantined + duplicates</h2>",
        _table(["source", "raw", "clean", "quarantined", "duplicates", "quarantine rate"], recon_rows),
        _plot_block("quarantine", "Quarantine rate per source, per night", _quarantine_plot(nights)),
        "<h2>Time per task</h2>",
        _table(
            ["task", "state", "seconds"],
            [[t["task_id"], t.get("state"), t.get("seconds")] for t in tasks],
            numeric_from=2,
        ),
        _plot_block(
            "tasks",
            "Seconds per task (this run)",
            _bar_plot([t["task_id"] for t in tasks], [t.get("seconds") or 0 for t in tasks], "seconds"),
        ),
        *dbt_sections(report.get("dbt") or {}),
        "<h2>All model metrics</h2>",
        _table(["model", "key", "value"], all_metrics, numeric_from=2),
        "<h2>Validation</h2>",
        '<p>Great Expectations Data Docs: <a href="data_docs/marts/index.html">marts</a>, '
        '<a href="data_docs/outputs/index.html">outputs</a>.</p>',
    ]
    return (
        "<!DOCTYPE html><html lang=en><head><meta charset=utf-8>"
        f"<title>Run report {html.escape(report['ds'])}</title><style>{CSS}</style></head><body>"
        + "\n".join(sections)
        + "</body></html>\n"
    )


def render_markdown(report: Mapping, campaign_lines: Sequence[str] = ()) -> str:
    metrics = report.get("metrics") or {}
    als, ctr, seg = metrics.get("als") or {}, metrics.get("ctr") or {}, metrics.get("segments") or {}
    reconciliation = (report.get("data_quality") or {}).get("reconciliation") or []
    notes = report.get("notes") or []
    dbt_layers = (report.get("dbt") or {}).get("layers") or []
    lines = [
        f"# Nightly run report — ds {report['ds']}",
        f"run id: `{report.get('run_id')}`",
        "",
        *(["## Notes", *[f"- {note}" for note in notes], ""] if notes else []),
        "## Published tables",
        "| table | rows |",
        "|---|---|",
        *[
            f"| {t} | {_fmt(rows) if rows is not None else 'not built by this run (see notes)'} |"
            for t, rows in report["published"].items()
        ],
        "",
        "## Models",
        f"- Recommendations top-{_fmt(als.get('k'))} ({_fmt(als.get('model'))}, engine {_fmt(als.get('engine'))}): "
        f"NDCG@K {_fmt(als.get('ndcg_at_k'))} vs {_fmt(als.get('baseline'))} {_fmt(als.get('baseline_ndcg_at_k'))}, "
        f"precision@K {_fmt(als.get('precision_at_k'))} vs {_fmt(als.get('baseline_precision_at_k'))}, "
        f"{_fmt(als.get('n_eval_users'))} holdout users; gate: {_fmt((als.get('gate') or {}).get('verdict'))}",
        (
            f"- CTR logistic regression: AUC {_fmt(ctr.get('auc'))} vs placement-prior baseline "
            f"{_fmt(ctr.get('baseline_auc'))} on {_fmt(ctr.get('n_test'))} holdout impressions"
        )
        if "ctr" in metrics
        else "- CTR logistic regression: skipped (see notes)",
        f"- Segments (k={_fmt(seg.get('k'))}): silhouette {_fmt(seg.get('silhouette'))}",
        "",
        *campaign_lines,
        "## Data quality: raw rows = clean + quarantined + duplicates",
        "| source | delivered | raw | clean | quarantined | duplicates |",
        "|---|---|---|---|---|---|",
        *[
            f"| {r['source']} | {'yes' if r.get('delivered', True) else 'no'} | {r['raw_rows']} | {r['clean_rows']} | "
            f"{r['quarantined_rows']} | {r['duplicate_rows']} |"
            for r in reconciliation
        ],
        "",
        *(
            [
                "## dbt",
                *[
                    f"- {r['layer']}: {r['models']} models, {r['tests']} tests, {r['not_passed']} not passed, "
                    f"{r['seconds']} s"
                    for r in dbt_layers
                ],
                "",
            ]
            if dbt_layers
            else []
        ),
        "The full report with plots: `report.html`. Great Expectations Data Docs: `data_docs/marts/index.html`, "
        "`data_docs/outputs/index.html`.",
    ]
    return "\n".join(lines) + "\n"


def build_report(
    *,
    ds: str,
    run_id: str,
    manifests: Mapping[str, dict | None],
    metrics: Mapping[str, dict],
    reconciliation_path: Path,
    out_dir: Path,
    history: list[Mapping] = (),
    audience_sizes: Mapping[str, int] | None = None,
    task_seconds: list[dict] = (),
    dbt_layers: Sequence[Mapping] = (),
    notes: Sequence[str] = (),
    campaign_lift_path: Path | None = None,
) -> dict:
    from precision_marketing.reporting.campaign_section import campaign_section, read_lift

    reconciliation = pq.read_table(reconciliation_path).to_pylist()  # one row per raw source: tiny
    campaigns = campaign_section(metrics.get("ctr", {}), read_lift(campaign_lift_path))
    report = {
        "ds": ds,
        "run_id": run_id,
        "published": {t: (m["row_count"] if m else None) for t, m in manifests.items()},
        "metrics": dict(metrics),
        "campaigns": campaigns["data"],
        "data_quality": {"reconciliation": reconciliation},
        "audience_sizes": dict(audience_sizes or {}),
        "task_seconds": list(task_seconds),
        "dbt": dbt_summary(dbt_layers),
        "notes": list(notes),  # what was not delivered, skipped or derived, and why
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    if campaigns["svg"]:
        (out_dir / "calibration.svg").write_text(campaigns["svg"])
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=str))
    (out_dir / "report.md").write_text(render_markdown(report, campaigns["markdown"]))
    (out_dir / "report.html").write_text(render_html(report, list(history), campaigns["svg"]))
    return report
