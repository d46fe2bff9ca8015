"""The run's tolerance for bad rows: one bad row never stops a night, a bad delivery does.

For each delivered source, the share of the ds delivery's rows (the snapshot of ds, or the increment of ds)
that went to quarantine is compared with its limit: the mapping's `sources.<source>.max_quarantine_share`,
else config `ingest.max_quarantine_share`. Deliveries smaller than `ingest.quarantine_min_rows` are never
failed on their share alone. Above the limit the run stops before anything is trained or published, with a
message naming the source, the share, the limit, the most frequent reasons and where the rows are.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping


class QuarantineShareError(Exception):
    """One or more sources quarantined more of the ds delivery than their limit allows."""


def check_quarantine_share(
    reconciliation: Iterable[Mapping],
    *,
    limits: Mapping[str, float],
    default_limit: float,
    min_rows: int,
    reasons: Mapping[str, list[tuple[str, int]]] | None = None,
    where: Mapping[str, str] | None = None,
    ds: str = "",
) -> dict:
    """Per source: {share, limit, checked}. Raises QuarantineShareError listing every source above its limit.

    reconciliation: rows of data_reconciliation (source, delivered, ds_raw_rows, ds_quarantined_rows).
    reasons: per source the most frequent reject reasons of the ds delivery with their counts.
    """
    summary, failures = {}, []
    for row in reconciliation:
        source = row["source"]
        delivered_rows, quarantined = int(row["ds_raw_rows"] or 0), int(row["ds_quarantined_rows"] or 0)
        limit = float(limits.get(source, default_limit))
        share = quarantined / delivered_rows if delivered_rows else 0.0
        checked = bool(row.get("delivered", True)) and delivered_rows >= min_rows
        summary[source] = {
            "share": round(share, 6),
            "limit": limit,
            "rows": delivered_rows,
            "quarantined": quarantined,
            "checked": checked,
        }
        if checked and share > limit:
            top = ", ".join(f"{reason} ({count})" for reason, count in (reasons or {}).get(source, [])[:3])
            failures.append(
                f"source '{source}': {quarantined} of {delivered_rows} rows of the ds={ds} delivery quarantined "
                f"({share:.1%}), above max_quarantine_share {limit:.1%}"
                + (f"; most frequent reasons: {top}" if top else "")
                + (f"; rows in {where[source]}" if where and source in where else "")
            )
    if failures:
        raise QuarantineShareError(
            "too many bad rows, the run stops before training or publishing (the last good tables stay "
            "published):\n"
            + "\n".join(f"  - {failure}" for failure in failures)
            + "\nFix the delivery, or the mapping file (encoding, delimiter, formats), or raise the limit "
            "(config ingest.max_quarantine_share, mapping sources.<source>.max_quarantine_share)."
        )
    return summary
