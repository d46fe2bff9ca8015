"""Great Expectations suites as code: one function per table, returning its list of expectations.

Layers: "marts" (dbt feature tables, validated before any model trains) and "outputs" (model outputs,
validated before anything is published). The schemas are in docs/tables.md.

Cross-table rules cannot be stated on one table, so the checkpoint runner (expectations/checkpoints.py)
derives columns or small frames and the rule is stated here on the derived value:
  data_reconciliation.reconciles          raw_rows = clean_rows + quarantined_rows + duplicate_rows
  recommendations.purchased_in_window     (user_id, product_id) has n_purchases > 0 in interactions
  recommendations_per_user                one row per user of user_features with n_recommendations
  audiences.is_suppressed                 (user_id, channel) or (user_id, 'all') is in suppressions
  audiences_per_campaign                  n_users per campaign next to the campaign's audience_size
  audiences_per_user                      n_audiences per user (the frequency cap)
  audience_exports.exported_control       (campaign_id, user_id) is not a treatment row of audiences
"""

from __future__ import annotations

from collections.abc import Callable

import great_expectations.expectations as gxe
from great_expectations.expectations import Expectation

from precision_marketing.contract import CAMPAIGN_CHANNELS, CONSENT_CHANNELS, CONSENT_STATUSES
from precision_marketing.contract import PLACEMENTS as CONTRACT_PLACEMENTS

# The vocabulary is the contract's (dbt_project.yml vars, read by precision_marketing/contract.py)
CHANNELS = list(CAMPAIGN_CHANNELS)
PLACEMENTS = list(CONTRACT_PLACEMENTS)
RECOMMENDATION_SOURCES = ["als", "item_cf", "blend", "category_popularity", "popularity"]
EXPERIMENT_GROUPS = ["treatment", "control"]
LIFT_METRICS = ["click", "conversion"]
SHA256_HEX = r"^[0-9a-f]{64}$"


# --- building blocks -------------------------------------------------------------------------------
def _columns(*names: str) -> list[Expectation]:
    # extra columns are allowed: the runner adds derived ones and producers may add more
    return [gxe.ExpectTableColumnsToMatchSet(column_set=list(names), exact_match=False)]


def _key(*columns: str) -> list[Expectation]:
    not_null = [gxe.ExpectColumnValuesToNotBeNull(column=c) for c in columns]
    if len(columns) == 1:
        return [*not_null, gxe.ExpectColumnValuesToBeUnique(column=columns[0])]
    return [*not_null, gxe.ExpectCompoundColumnsToBeUnique(column_list=list(columns))]


def _not_empty() -> list[Expectation]:
    return [gxe.ExpectTableRowCountToBeBetween(min_value=1)]


def _between(column: str, low=None, high=None, *, strict_low: bool = False) -> Expectation:
    return gxe.ExpectColumnValuesToBeBetween(column=column, min_value=low, max_value=high, strict_min=strict_low)


def _non_negative(*columns: str) -> list[Expectation]:
    return [_between(c, 0) for c in columns]


def _in_set(column: str, values: list) -> Expectation:
    return gxe.ExpectColumnValuesToBeInSet(column=column, value_set=values)


def _all_false(column: str, rule: str) -> Expectation:
    return gxe.ExpectColumnValuesToBeInSet(column=column, value_set=[False], description=rule)


# --- layer "marts" ---------------------------------------------------------------------------------
def user_features() -> list[Expectation]:
    return [
        *_columns(
            "user_id",
            "country",
            "signup_date",
            "email_sha256",
            "has_history",
            "recency_days",
            "frequency",
            "monetary",
            "n_views",
            "n_carts",
            "n_purchases",
            "n_favourites",
            "top_category",
            "top_category_affinity",
        ),
        *_not_empty(),
        *_key("user_id"),
        gxe.ExpectColumnValuesToMatchRegex(column="email_sha256", regex=SHA256_HEX),
        gxe.ExpectColumnValuesToNotBeNull(column="has_history"),
        *_non_negative("recency_days", "frequency", "monetary", "n_views", "n_carts", "n_purchases", "n_favourites"),
        _between("top_category_affinity", 0, 1),
    ]


def user_category_affinity() -> list[Expectation]:
    return [
        *_columns("user_id", "category", "affinity"),
        *_key("user_id", "category"),
        _between("affinity", 0, 1, strict_low=True),
    ]


def item_features() -> list[Expectation]:
    return [
        *_columns(
            "product_id",
            "category",
            "brand",
            "price",
            "n_views",
            "n_carts",
            "n_purchases",
            "n_users",
            "popularity_rank",
        ),
        *_not_empty(),
        *_key("product_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="category"),
        _between("price", 0, strict_low=True),
        *_non_negative("n_views", "n_carts", "n_purchases", "n_users"),
        _between("popularity_rank", 1),
    ]


def interactions() -> list[Expectation]:
    return [
        *_columns("user_id", "product_id", "event_date", "event_hour", "weight", "n_purchases"),
        *_not_empty(),
        *_key("user_id", "product_id", "event_hour"),
        _between("weight", 0, strict_low=True),
        *_non_negative("n_purchases"),
    ]


def ctr_train() -> list[Expectation]:
    return [
        *_columns(
            "impression_id",
            "user_id",
            "campaign_id",
            "impression_date",
            "placement",
            "channel",
            "target_category",
            "affinity",
            "recency_days",
            "frequency",
            "monetary",
            "impression_hour",
            "category_recency_days",
            "clicked",
        ),
        *_not_empty(),
        *_key("impression_id"),
        *[gxe.ExpectColumnValuesToNotBeNull(column=c) for c in ("user_id", "campaign_id", "clicked")],
        _in_set("clicked", [0, 1]),
        _in_set("placement", PLACEMENTS),
        _in_set("channel", CHANNELS),
        _between("affinity", 0, 1),
        _between("impression_hour", 0, 23),
        _between("category_recency_days", 1),
        *_non_negative("recency_days", "frequency", "monetary"),
    ]


def ctr_score() -> list[Expectation]:
    # may be empty: no campaign active on ds is a valid day
    return [
        *_columns(
            "user_id",
            "campaign_id",
            "placement",
            "channel",
            "target_category",
            "affinity",
            "recency_days",
            "frequency",
            "monetary",
            "category_recency_days",
            "email_sha256",
        ),
        *_key("user_id", "campaign_id"),
        _in_set("channel", CHANNELS),
        _between("affinity", 0, 1),
        _between("category_recency_days", 1),
        *_non_negative("recency_days", "frequency", "monetary"),
    ]


def campaigns() -> list[Expectation]:
    return [
        *_columns(
            "campaign_id", "name", "target_category", "channel", "placement", "start_date", "end_date", "audience_size"
        ),
        *_not_empty(),
        *_key("campaign_id"),
        _in_set("channel", CHANNELS),
        _in_set("placement", PLACEMENTS),
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(column_A="end_date", column_B="start_date", or_equal=True),
        _between("audience_size", 1),
    ]


def suppressions() -> list[Expectation]:
    # may be empty: nobody opted out
    return [*_columns("user_id", "channel"), *_key("user_id", "channel"), _in_set("channel", list(CONSENT_CHANNELS))]


def consent_ledger() -> list[Expectation]:
    # the backup a lost warehouse is restored from (pipeline.carry_consent_ledger): one state per (user, channel)
    return [
        *_columns("user_id", "channel", "status", "updated_ts", "stated_on"),
        *_key("user_id", "channel"),
        _in_set("channel", list(CONSENT_CHANNELS)),
        _in_set("status", list(CONSENT_STATUSES)),
    ]


def user_keys() -> list[Expectation]:
    # the internal keys Spark's ALS needs: 32-bit, one per delivered id
    return [
        *_columns("user_key", "user_id", "first_seen_ds"),
        *_key("user_key"),
        *_key("user_id"),
        _between("user_key", 1, 2**31 - 1),
    ]


def product_keys() -> list[Expectation]:
    return [
        *_columns("product_key", "product_id", "first_seen_ds"),
        *_key("product_key"),
        *_key("product_id"),
        _between("product_key", 1, 2**31 - 1),
    ]


def consent_delivery() -> list[Expectation]:
    return [
        *_columns("ds", "delivered", "consent_rows", "opt_out_rows", "unknown_user_rows"),
        *_not_empty(),
        *_non_negative("consent_rows", "opt_out_rows", "unknown_user_rows"),
    ]


def data_reconciliation() -> list[Expectation]:
    return [
        *_columns(
            "source",
            "delivered",
            "raw_rows",
            "clean_rows",
            "quarantined_rows",
            "duplicate_rows",
            "ds_raw_rows",
            "ds_quarantined_rows",
        ),
        *_not_empty(),
        *_key("source"),
        *_non_negative("raw_rows", "clean_rows", "quarantined_rows", "duplicate_rows"),
        gxe.ExpectColumnValuesToBeInSet(
            column="reconciles",
            value_set=[True],
            description="raw_rows = clean_rows + quarantined_rows + duplicate_rows",
        ),
    ]


# --- layer "outputs" -------------------------------------------------------------------------------
def recommendations(*, top_k: int) -> list[Expectation]:
    return [
        *_columns("user_id", "rank", "product_id", "score", "source"),
        *_not_empty(),
        *_key("user_id", "rank"),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["user_id", "product_id"]),
        gxe.ExpectColumnValuesToNotBeNull(column="product_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="score"),
        _between("rank", 1, top_k),
        _in_set("source", RECOMMENDATION_SOURCES),
        _all_false("purchased_in_window", "never recommend a product the user purchased in the window"),
    ]


def recommendations_per_user(*, top_k: int) -> list[Expectation]:
    # users of user_features without recommendations have n_recommendations = 0
    return [
        gxe.ExpectColumnValuesToBeBetween(
            column="n_recommendations",
            min_value=top_k,
            max_value=top_k,
            description=f"every user of user_features gets exactly top_k={top_k} recommendations",
        )
    ]


def audiences() -> list[Expectation]:
    # may be empty: no campaign active on ds
    return [
        *_columns(
            "campaign_id",
            "user_id",
            "rank",
            "p_click",
            "decile",
            "segment",
            "email_sha256",
            "channel",
            "experiment_group",
            "expected_value",
            "bid_hint",
        ),
        *_key("campaign_id", "user_id"),
        gxe.ExpectCompoundColumnsToBeUnique(column_list=["campaign_id", "rank"]),
        _between("rank", 1),
        _between("p_click", 0, 1),
        _in_set("experiment_group", EXPERIMENT_GROUPS),
        *_non_negative("expected_value", "bid_hint"),
        _between("decile", 1, 10),
        _in_set("channel", CHANNELS),
        gxe.ExpectColumnValuesToMatchRegex(column="email_sha256", regex=SHA256_HEX),
        _all_false("is_suppressed", "never target a user suppressed for the campaign's channel or 'all'"),
    ]


def audiences_per_campaign() -> list[Expectation]:
    return [
        gxe.ExpectColumnPairValuesAToBeGreaterThanB(
            column_A="audience_size",
            column_B="n_users",
            or_equal=True,
            description="a campaign's audience holds at most audience_size users (campaigns.audience_size)",
        )
    ]


def audiences_per_user(*, max_audiences_per_user: int | None = None) -> list[Expectation]:
    if not max_audiences_per_user:  # no cap configured
        return [_between("n_audiences", 1)]
    return [
        gxe.ExpectColumnValuesToBeBetween(
            column="n_audiences",
            min_value=1,
            max_value=max_audiences_per_user,
            description=f"a user sits in at most max_audiences_per_user={max_audiences_per_user} audiences per night",
        )
    ]


def audience_exports() -> list[Expectation]:
    # may be empty: no campaign active on ds
    return [
        *_columns(
            "campaign_id",
            "user_id",
            "email_sha256",
            "channel",
            "rank",
            "p_click",
            "expected_value",
            "bid_hint",
            "segment",
            "top_product_ids",
            "top_product_titles",
            "subject_line",
            "subject_is_fallback",
        ),
        *_key("campaign_id", "user_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="subject_line"),
        gxe.ExpectColumnValuesToMatchRegex(column="email_sha256", regex=SHA256_HEX),
        _all_false("exported_control", "only treatment rows of audiences are exported (never a control user)"),
    ]


def campaign_lift() -> list[Expectation]:
    # may be empty: no campaign active and none measured
    return [
        *_columns(
            "campaign_id",
            "window_days",
            "metric",
            "n_treatment",
            "n_control",
            "successes_treatment",
            "successes_control",
            "rate_treatment",
            "rate_control",
            "abs_lift",
            "rel_lift",
            "ci_low",
            "ci_high",
            "p_value",
            "status",
        ),
        *_key("campaign_id", "window_days", "metric"),
        _in_set("metric", LIFT_METRICS),
        _between("window_days", 1),
        *_non_negative("n_treatment", "n_control", "successes_treatment", "successes_control"),
        _between("p_value", 0, 1),
        gxe.ExpectColumnValuesToNotBeNull(column="status"),
    ]


def user_segments() -> list[Expectation]:
    return [
        *_columns("user_id", "segment_id", "segment", "recency_days", "frequency", "monetary"),
        *_not_empty(),
        *_key("user_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="segment_id"),
        gxe.ExpectColumnValuesToNotBeNull(column="segment"),
    ]


SuiteFunction = Callable[..., list[Expectation]]

# layer -> validated table -> suite; derived frames (recommendations_per_user, audiences_per_campaign)
# are validated whenever their base table is.
LAYERS: dict[str, dict[str, SuiteFunction]] = {
    "marts": {
        "user_features": user_features,
        "user_category_affinity": user_category_affinity,
        "item_features": item_features,
        "interactions": interactions,
        "ctr_train": ctr_train,
        "ctr_score": ctr_score,
        "campaigns": campaigns,
        "suppressions": suppressions,
        "user_keys": user_keys,
        "consent_ledger": consent_ledger,
        "product_keys": product_keys,
        "data_reconciliation": data_reconciliation,
        "consent_delivery": consent_delivery,
    },
    "outputs": {
        "recommendations": recommendations,
        "recommendations_per_user": recommendations_per_user,
        "audiences": audiences,
        "audiences_per_campaign": audiences_per_campaign,
        "audiences_per_user": audiences_per_user,
        "audience_exports": audience_exports,
        "campaign_lift": campaign_lift,
        "user_segments": user_segments,
    },
}
NEEDS_TOP_K = {recommendations, recommendations_per_user}


def expectations_for(
    layer: str, table: str, *, top_k: int | None = None, max_audiences_per_user: int | None = None
) -> list[Expectation]:
    """The expectations of one table of a layer (top_k is required by the recommendations suites)."""
    suite = LAYERS[layer][table]
    if suite is audiences_per_user:
        return suite(max_audiences_per_user=max_audiences_per_user)
    if suite in NEEDS_TOP_K:
        if top_k is None:
            raise ValueError(f"{layer}.{table}: top_k is required to validate recommendations")
        return suite(top_k=top_k)
    return suite()
