"""campaign_lift: did targeting work? Treatment vs control, measured from what happened after the audiences.

Unit: one (campaign, user) pair, from its *first* night in the campaign's published audience within the
behaviour window (selection happened before any message, and a pair's group never changes: the group is a
salted hash of the pair). For a window of W days, the pairs whose W days after that first night have all
passed (first_ds + W <= ds) are counted; outcomes in (first_ds, first_ds + W]:
  click       at least one clicked impression of the campaign (control users are not messaged, so their
              rate shows leakage: impressions that reached them some other way)
  conversion  at least one purchase in the campaign's target category (the incremental effect)
Per campaign, window and outcome: rates, absolute lift (treatment - control) with Newcombe's hybrid score
interval (statsmodels; it keeps its nominal coverage where the Wald interval falls short: small or unbalanced
groups and rare outcomes, which a 10 % control group with a few % conversion is), the score test's p-value
(the pooled two-proportion z-test), relative lift = absolute / control rate. Lift, interval and p-value are
NULL with a status saying why when either group is smaller than min_group_size.

The heavy part (joins over audiences history, impressions, purchases) is DuckDB SQL over Parquet; the
statistics run on a handful of aggregated rows.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from pathlib import Path

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from statsmodels.stats.proportion import confint_proportions_2indep, test_proportions_2indep

from precision_marketing.publish.catalog import open_catalog, parquet_source_sql
from precision_marketing.storage import Storage

METRICS = ("click", "conversion")
LIFT_SCHEMA = pa.schema(
    [
        ("campaign_id", pa.string()),
        ("window_days", pa.int32()),
        ("metric", pa.string()),
        ("first_exposure_from", pa.date32()),
        ("first_exposure_to", pa.date32()),
        ("n_treatment", pa.int64()),
        ("n_control", pa.int64()),
        ("successes_treatment", pa.int64()),
        ("successes_control", pa.int64()),
        ("rate_treatment", pa.float64()),
        ("rate_control", pa.float64()),
        ("abs_lift", pa.float64()),
        ("rel_lift", pa.float64()),
        ("ci_low", pa.float64()),
        ("ci_high", pa.float64()),
        ("p_value", pa.float64()),
        ("status", pa.string()),
    ]
)


def two_proportion_test(
    successes_t: int, n_t: int, successes_c: int, n_c: int, *, confidence: float = 0.95, min_group_size: int = 100
) -> dict:
    """Treatment vs control proportions: rates, abs/rel lift, Newcombe interval of the difference, score-test
    p-value; the numbers are None with a status when a group is smaller than min_group_size."""
    rate_t = successes_t / n_t if n_t else None
    rate_c = successes_c / n_c if n_c else None
    result = {
        "rate_treatment": rate_t,
        "rate_control": rate_c,
        "abs_lift": None,
        "rel_lift": None,
        "ci_low": None,
        "ci_high": None,
        "p_value": None,
    }
    if min(n_t, n_c) < min_group_size:
        return {
            **result,
            "status": f"not enough data: {n_t} treatment and {n_c} control users "
            f"(at least {min_group_size} each needed)",
        }
    diff = rate_t - rate_c
    with np.errstate(divide="ignore", invalid="ignore"):  # a group with no (or only) successes: handled below
        ci_low, ci_high = confint_proportions_2indep(
            successes_t, n_t, successes_c, n_c, method="newcomb", compare="diff", alpha=1 - confidence
        )
        test = test_proportions_2indep(
            successes_t, n_t, successes_c, n_c, method="score", compare="diff", correction=False
        )
    pooled = (successes_t + successes_c) / (n_t + n_c)
    return {
        **result,
        "abs_lift": diff,
        "rel_lift": diff / rate_c if rate_c else None,
        "ci_low": float(ci_low),
        "ci_high": float(ci_high),
        # both groups all successes or none: nothing tells them apart
        "p_value": 1.0 if pooled in (0.0, 1.0) else float(test.pvalue),
        "status": "ok",
    }


def cohort_counts(
    con: duckdb.DuckDBPyConnection,
    *,
    ds: str,
    windows: Iterable[int],
    history_days: int,
    ctr_train: Path,
    interactions: Path,
    item_features: Path,
    campaigns: Path,
    user_keys: Path,
) -> list[tuple]:
    """(campaign_id, window_days, experiment_group, users, clicked, converted, first_from, first_to) from the
    `audiences_history` view on `con` and the behaviour marts. Published audiences carry the delivered user
    ids; the marts carry internal keys: `user_keys` (dbt's append-only key table) translates."""
    windows_sql = ", ".join(str(int(w)) for w in windows)
    sql = f"""
    with exposures as (
        select audiences.campaign_id, user_keys.user_key as user_id, min(audiences.ds) as first_ds,
               arg_min(audiences.experiment_group, audiences.ds) as experiment_group
        from audiences_history as audiences
        join read_parquet({parquet_source_sql(user_keys)}) as user_keys
          on cast(user_keys.user_id as varchar) = cast(audiences.user_id as varchar)
        where audiences.ds < date '{ds}' and audiences.ds >= date '{ds}' - {int(history_days)}
        group by audiences.campaign_id, user_keys.user_key
    ),
    cohort as (
        select exposures.*, window_days
        from exposures cross join (select unnest([{windows_sql}]) as window_days)
        where first_ds + window_days <= date '{ds}'
    ),
    clicks as (
        select distinct user_id, campaign_id, impression_date
        from read_parquet({parquet_source_sql(ctr_train)}) where clicked = 1
    ),
    purchases as (
        select distinct interactions.user_id, items.category, interactions.event_date
        from read_parquet({parquet_source_sql(interactions)}) as interactions
        join read_parquet({parquet_source_sql(item_features)}) as items using (product_id)
        where interactions.n_purchases > 0
    ),
    targets as (
        select campaign_id, target_category from read_parquet({parquet_source_sql(campaigns)})
    ),
    clicked as (
        select cohort.campaign_id, cohort.user_id, cohort.window_days, count(clicks.user_id) > 0 as clicked
        from cohort
        left join clicks
            on clicks.user_id = cohort.user_id and clicks.campaign_id = cohort.campaign_id
            and clicks.impression_date > cohort.first_ds
            and clicks.impression_date <= cohort.first_ds + cohort.window_days
        group by all
    ),
    converted as (
        select cohort.campaign_id, cohort.user_id, cohort.window_days, count(purchases.user_id) > 0 as converted
        from cohort
        left join targets on targets.campaign_id = cohort.campaign_id
        left join purchases
            on purchases.user_id = cohort.user_id and purchases.category = targets.target_category
            and purchases.event_date > cohort.first_ds
            and purchases.event_date <= cohort.first_ds + cohort.window_days
        group by all
    )
    select cohort.campaign_id, cohort.window_days, cohort.experiment_group, count(*) as users,
           count(*) filter (where clicked.clicked) as clicked,
           count(*) filter (where converted.converted) as converted,
           min(cohort.first_ds) as first_from, max(cohort.first_ds) as first_to
    from cohort
    join clicked using (campaign_id, user_id, window_days)
    join converted using (campaign_id, user_id, window_days)
    group by all
    """
    return con.execute(sql).fetchall()


def lift_rows(
    counts: list[tuple], campaign_ids: Iterable[str], windows: Iterable[int], *, confidence: float, min_group_size: int
) -> list[dict]:
    """One row per (campaign, window, metric) of `campaign_ids` x `windows` (and any campaign in `counts`)."""
    by_key: dict[tuple, dict] = {}
    for campaign, window, group, users, clicked, converted, first_from, first_to in counts:
        entry = by_key.setdefault((campaign, int(window)), {"from": first_from, "to": first_to})
        entry[group] = {"users": users, "click": clicked, "conversion": converted}
        entry["from"], entry["to"] = min(entry["from"], first_from), max(entry["to"], first_to)
    keys = sorted({(c, int(w)) for c in campaign_ids for w in windows} | set(by_key))
    rows = []
    for campaign, window in keys:
        entry = by_key.get((campaign, window), {})
        treatment = entry.get("treatment", {"users": 0, "click": 0, "conversion": 0})
        control = entry.get("control", {"users": 0, "click": 0, "conversion": 0})
        for metric in METRICS:
            stats = two_proportion_test(
                treatment[metric],
                treatment["users"],
                control[metric],
                control["users"],
                confidence=confidence,
                min_group_size=min_group_size,
            )
            if not entry:
                stats["status"] = f"not enough data: no audience member's {window}-day window has ended yet"
            rows.append(
                {
                    "campaign_id": campaign,
                    "window_days": window,
                    "metric": metric,
                    "first_exposure_from": entry.get("from"),
                    "first_exposure_to": entry.get("to"),
                    "n_treatment": treatment["users"],
                    "n_control": control["users"],
                    "successes_treatment": treatment[metric],
                    "successes_control": control[metric],
                    **stats,
                }
            )
    return rows


def measure_campaign_lift(
    storage: Storage,
    *,
    ds: str,
    ctr_train: Path,
    interactions: Path,
    item_features: Path,
    campaigns: Path,
    user_keys: Path,
    out: Path,
    windows: Iterable[int] = (7,),
    history_days: int = 30,
    confidence: float = 0.95,
    min_group_size: int = 100,
) -> dict:
    """Write campaign_lift for ds to `out` (one Parquet file) from the audiences published before ds."""
    windows = sorted({int(w) for w in windows})
    if not windows or windows[0] < 1 or not 0 < confidence < 1:
        raise ValueError(
            f"lift windows must be positive days and confidence within (0, 1), got {windows}, {confidence}"
        )
    dt.date.fromisoformat(ds)
    con = open_catalog(storage, ["audiences"])
    try:
        active = [
            r[0]
            for r in con.execute(
                f"select campaign_id from read_parquet({parquet_source_sql(campaigns)}) "
                f"where date '{ds}' between start_date and end_date order by 1"
            ).fetchall()
        ]
        has_history = (
            con.execute(
                "select count(*) from information_schema.tables where table_name = 'audiences_history'"
            ).fetchone()[0]
            > 0
        )
        counts = (
            cohort_counts(
                con,
                ds=ds,
                windows=windows,
                history_days=history_days,
                ctr_train=ctr_train,
                interactions=interactions,
                item_features=item_features,
                campaigns=campaigns,
                user_keys=user_keys,
            )
            if has_history
            else []
        )
    finally:
        con.close()
    rows = lift_rows(counts, active, windows, confidence=confidence, min_group_size=min_group_size)
    out.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=LIFT_SCHEMA), out)
    measured = [r for r in rows if r["status"] == "ok"]
    return {"rows": len(rows), "measured": len(measured), "published_audience_history": has_history, "windows": windows}
