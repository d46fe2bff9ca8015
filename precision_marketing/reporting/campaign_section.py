"""The campaign part of the run report: CTR calibration (reliability curve, Brier, ECE) and measured lift.

`campaign_section` returns plain data, Markdown lines and an SVG reliability diagram, so any report
format (Markdown today, HTML later) can embed them without recomputing anything.
"""

from __future__ import annotations

from collections.abc import Mapping
from html import escape
from pathlib import Path

import pyarrow.parquet as pq

SVG_SIZE, SVG_MARGIN = 320, 40
CURVE_COLOURS = {"none": "#999999", "platt": "#1f77b4", "isotonic": "#d62728"}


def _fmt(value, digits: int = 4) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def reliability_svg(curves: Mapping[str, list[dict]]) -> str:
    """Observed click rate against mean predicted p per bin, one polyline per score, and the diagonal.
    Both axes run to the largest value shown, so small CTRs are not squeezed into a corner."""
    points = [(b["mean_p"], b["rate"]) for curve in curves.values() for b in curve]
    top = max([max(p, r) for p, r in points] + [1e-6]) * 1.05
    plot = SVG_SIZE - 2 * SVG_MARGIN

    def xy(p: float, r: float) -> str:
        return f"{SVG_MARGIN + p / top * plot:.1f},{SVG_SIZE - SVG_MARGIN - r / top * plot:.1f}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_SIZE}" height="{SVG_SIZE}" font-family="sans-serif" '
        f'font-size="10">',
        f'<rect x="{SVG_MARGIN}" y="{SVG_MARGIN}" width="{plot}" height="{plot}" fill="none" stroke="#333"/>',
        f'<line x1="{SVG_MARGIN}" y1="{SVG_SIZE - SVG_MARGIN}" x2="{SVG_SIZE - SVG_MARGIN}" y2="{SVG_MARGIN}" '
        'stroke="#bbb" stroke-dasharray="4 3"/>',
        f'<text x="{SVG_SIZE / 2}" y="{SVG_SIZE - 8}" text-anchor="middle">mean predicted p_click (max {top:.3f})</text>',
        f'<text x="12" y="{SVG_SIZE / 2}" transform="rotate(-90 12 {SVG_SIZE / 2})" text-anchor="middle">'
        'observed click rate</text>',
    ]
    for index, (name, curve) in enumerate(curves.items()):
        colour = CURVE_COLOURS.get(name, "#2ca02c")
        coordinates = " ".join(xy(b["mean_p"], b["rate"]) for b in curve)
        parts.append(f'<polyline points="{coordinates}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
        parts += [
            f'<circle cx="{xy(b["mean_p"], b["rate"]).split(",")[0]}" cy="{xy(b["mean_p"], b["rate"]).split(",")[1]}" '
            f'r="2" fill="{colour}"/>'
            for b in curve
        ]
        parts.append(
            f'<text x="{SVG_MARGIN + 6}" y="{SVG_MARGIN + 14 + 12 * index}" fill="{colour}">'
            f'{escape("raw" if name == "none" else name)}</text>'
        )
    parts.append("</svg>")
    return "\n".join(parts)


def read_lift(path: Path | None) -> list[dict]:
    if path is None or not Path(path).exists():
        return []
    return pq.read_table(path).to_pylist()  # campaigns x windows x 2 metrics: small


def campaign_section(ctr_metrics: Mapping, lift: list[dict]) -> dict:
    """{'data': ..., 'markdown': [lines], 'svg': reliability diagram or None} for the run report."""
    calibration = ctr_metrics.get("calibration") or {}
    candidates = calibration.get("candidates") or {}
    chosen = calibration.get("method", "none")
    curves = {name: c["curve"] for name, c in candidates.items() if c.get("curve") and name in ("none", chosen)}
    lines = ["## Campaigns", "", f"### CTR calibration (holdout of {_fmt(ctr_metrics.get('n_test'))} impressions)", ""]
    if candidates:
        lines += [
            f"Applied to tonight's scores: **{chosen}** (lowest holdout Brier score under `auto`).",
            "",
            "| score | Brier | ECE | log loss | AUC |",
            "|---|---|---|---|---|",
            *[
                f"| {'raw' if name == 'none' else name} | {_fmt(c.get('brier'))} | {_fmt(c.get('ece'))} | "
                f"{_fmt(c.get('log_loss'))} | {_fmt(c.get('auc'))} |"
                for name, c in candidates.items()
            ],
            "",
            "Reliability diagram: `calibration.svg` (observed click rate per bin of predicted p; the "
            "diagonal is perfect calibration).",
            "",
        ]
    else:
        lines += [f"Not evaluated: {ctr_metrics.get('note') or 'no holdout'}", ""]

    audiences = ctr_metrics.get("campaigns") or {}
    if audiences:
        lines += [
            "### Audiences tonight",
            "",
            "| campaign | audience | treatment | control | short (cap) | mean p_click | expected value |",
            "|---|---|---|---|---|---|---|",
            *[
                f"| {c} | {a['audience']} | {a['treatment']} | {a['control']} | {a['capped_short']} | "
                f"{_fmt(a['mean_p_click'])} | {_fmt(a['expected_value'], 2)} |"
                for c, a in audiences.items()
            ],
            "",
        ]

    lines += ["### Measured lift (treatment - control, after each user's first night in the audience)", ""]
    if lift:
        lines += [
            "| campaign | window | metric | treatment | control | rate T | rate C | lift | CI | p | status |",
            "|---|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in lift:
            ci = f"[{_fmt(r['ci_low'])}, {_fmt(r['ci_high'])}]" if r["ci_low"] is not None else "n/a"
            lines.append(
                f"| {r['campaign_id']} | {r['window_days']} d | {r['metric']} | {r['n_treatment']} | "
                f"{r['n_control']} | {_fmt(r['rate_treatment'])} | {_fmt(r['rate_control'])} | "
                f"{_fmt(r['abs_lift'])} | {ci} | {_fmt(r['p_value'])} | {r['status']} |"
            )
    else:
        lines.append("No campaign to measure.")
    lines.append("")
    data = {
        "calibration": {
            "method": chosen,
            **{name: {k: c.get(k) for k in ("brier", "ece", "log_loss", "auc")} for name, c in candidates.items()},
        },
        "audiences": dict(audiences),
        "lift": lift,
    }
    return {"data": data, "markdown": lines, "svg": reliability_svg(curves) if curves else None}
