"""Who goes into which campaign audience, who is held out, and what a message is worth. Spark transforms.

1. select_audiences: per campaign, the top `audience_size` eligible users by p_click; a user sits in at most
   `max_audiences_per_user` audiences per night, served in order of campaign priority (lower first), then p_click.
   Campaigns of one priority level are filled together: a user in too many of them keeps the ones where his
   p_click is highest, and the others run short rather than reach further down their ranking.
2. assign_groups: a deterministic, salted hash of (campaign, user) puts each audience member in `control`
   (never exported: the baseline for lift) with probability control_share, else `treatment`:
       u = int(first 13 hex digits of sha256("<salt>|<campaign_id>|<user_id>"), 16) / 16^13,  control if u < share
   Stable across nights and reruns (no state, no randomness); any engine with sha256 can recompute it.
3. add_bid_hints: expected_value = p_click * value_per_click; bid_hint = min(bid_cap, max(bid_floor, expected_value)).
"""

from __future__ import annotations

import hashlib

from pyspark.sql import DataFrame, Window
from pyspark.sql import functions as F

USER_COL, CAMPAIGN_COL, P_CLICK_COL = "user_id", "campaign_id", "p_click"
GROUP_COL = "experiment_group"
TREATMENT, CONTROL = "treatment", "control"
HASH_HEX_DIGITS = 13  # 52 bits: exact in a double


def control_draw_reference(salt: str, campaign_id: str, user_id: int) -> float:
    """The group hash in plain Python (the generator, tests and any auditor use the same formula)."""
    digest = hashlib.sha256(f"{salt}|{campaign_id}|{user_id}".encode()).hexdigest()
    return int(digest[:HASH_HEX_DIGITS], 16) / 16**HASH_HEX_DIGITS


def control_draw(*, salt: str):
    """Column in [0, 1): the salted hash of (campaign_id, user_id)."""
    key = F.concat_ws("|", F.lit(salt), F.col(CAMPAIGN_COL).cast("string"), F.col(USER_COL).cast("string"))
    digits = F.substring(F.sha2(key, 256), 1, HASH_HEX_DIGITS)
    return F.conv(digits, 16, 10).cast("double") / float(16**HASH_HEX_DIGITS)


def assign_groups(frame: DataFrame, *, salt: str, share_col: str = "control_share") -> DataFrame:
    return frame.withColumn(
        GROUP_COL, F.when(control_draw(salt=salt) < F.col(share_col), F.lit(CONTROL)).otherwise(F.lit(TREATMENT))
    )


def select_audiences(scored: DataFrame, campaigns: DataFrame, *, max_audiences_per_user: int | None) -> DataFrame:
    """Rows of `scored` (campaign_id, user_id, p_click, ...) that make their campaign's audience.
    `campaigns` holds campaign_id, audience_size, priority (a small table). No cap when max_audiences_per_user
    is None or < 1."""
    settings = campaigns.select(CAMPAIGN_COL, "audience_size", "priority")
    candidates = scored.join(F.broadcast(settings), CAMPAIGN_COL, "inner")
    by_p_click = Window.partitionBy(CAMPAIGN_COL).orderBy(F.desc(P_CLICK_COL), F.asc(USER_COL))
    if not max_audiences_per_user or max_audiences_per_user < 1:
        return (
            candidates.withColumn("_rank", F.row_number().over(by_p_click))
            .filter(F.col("_rank") <= F.col("audience_size"))
            .drop("_rank")
        )

    levels = sorted(row[0] for row in settings.select("priority").distinct().collect())  # a few values
    chosen: DataFrame | None = None
    for level in levels:
        level_candidates = candidates.filter(F.col("priority") == level)
        if chosen is None:
            level_candidates = level_candidates.withColumn("_free", F.lit(max_audiences_per_user))
        else:
            used = chosen.groupBy(USER_COL).agg(F.count(F.lit(1)).alias("_used"))
            level_candidates = (
                level_candidates.join(used, USER_COL, "left")
                .withColumn("_free", F.lit(max_audiences_per_user) - F.coalesce("_used", F.lit(0)))
                .drop("_used")
                .filter(F.col("_free") > 0)
            )
        by_user = Window.partitionBy(USER_COL).orderBy(F.desc(P_CLICK_COL), F.asc(CAMPAIGN_COL))
        picked = (
            level_candidates.withColumn("_rank", F.row_number().over(by_p_click))
            .filter(F.col("_rank") <= F.col("audience_size"))
            .withColumn("_slot", F.row_number().over(by_user))
            .filter(F.col("_slot") <= F.col("_free"))
            .drop("_rank", "_slot", "_free")
        )
        chosen = picked if chosen is None else chosen.unionByName(picked)
        if len(levels) > 1:
            chosen = chosen.localCheckpoint()  # each level reads the previous ones: keep the plan short
    return chosen


def add_bid_hints(
    frame: DataFrame, *, bid_floor: float, bid_cap: float, value_col: str = "value_per_click"
) -> DataFrame:
    expected = F.col(P_CLICK_COL) * F.col(value_col)
    return frame.withColumn("expected_value", expected).withColumn(
        "bid_hint", F.least(F.lit(float(bid_cap)), F.greatest(F.lit(float(bid_floor)), expected))
    )
