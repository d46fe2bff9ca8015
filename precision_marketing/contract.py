"""The raw-zone data contract: which sources exist, what each is for (dimension, behaviour, audience),
which columns they carry and which values are allowed (with their built-in synonyms).

docs/data_contract.md documents it (a test keeps the two in agreement), the synthetic generator writes it,
ingest/ reads landing files into it through a mapping, and dbt staging enforces the row-level rules."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

SNAPSHOT = "snapshot"
INCREMENT = "increment"

# What a source is for. At least one behaviour source is required; dimensions are derived from behaviour
# when not delivered; the audience sources together enable the CTR model and audiences.
DIMENSION = "dimension"
BEHAVIOUR = "behaviour"
AUDIENCE = "audience"

EVENT_TYPES = ("view", "cart", "purchase", "favourite")
PLACEMENTS = ("homepage_banner", "product_page", "search_results", "email", "push")
CAMPAIGN_CHANNELS = ("email", "push", "onsite")
CONSENT_CHANNELS = ("email", "push", "onsite", "all")
CONSENT_STATUSES = ("opt_in", "opt_out")
CLICKED_VALUES = ("0", "1")
TIMESTAMP_FORMAT = "%Y-%m-%d %H:%M:%S"
DATE_FORMAT = "%Y-%m-%d"

# Built-in synonyms of the enumerations (compared after trim + lower case, like the values themselves).
# A mapping file can add its own (docs/data_contract.md, "Mapping file").
CHANNEL_SYNONYMS = {"e-mail": "email", "mail": "email", "newsletter": "email", "push_notification": "push",
                    "push notification": "push", "mobile_push": "push", "web": "onsite", "site": "onsite",
                    "on-site": "onsite", "on_site": "onsite"}
SYNONYMS: dict[str, dict[str, str]] = {
    "event_type": {"favorite": "favourite", "add_to_cart": "cart", "addtocart": "cart",
                   "transaction": "purchase", "pageview": "view", "page_view": "view"},
    "clicked": {"true": "1", "false": "0", "yes": "1", "no": "0", "y": "1", "n": "0", "t": "1", "f": "0",
                "1.0": "1", "0.0": "0"},
    "campaign_channel": CHANNEL_SYNONYMS,
    "consent_channel": {**CHANNEL_SYNONYMS, "any": "all", "every": "all", "global": "all", "*": "all"},
    "status": {"optin": "opt_in", "opt-in": "opt_in", "opt in": "opt_in", "subscribed": "opt_in",
               "granted": "opt_in", "yes": "opt_in", "true": "opt_in", "y": "opt_in", "1": "opt_in",
               "optout": "opt_out", "opt-out": "opt_out", "opt out": "opt_out", "unsubscribed": "opt_out",
               "revoked": "opt_out", "denied": "opt_out", "withdrawn": "opt_out", "no": "opt_out",
               "false": "opt_out", "n": "opt_out", "0": "opt_out"},
}


class RawContractError(Exception):
    """The raw zone breaks the contract; `problems` lists every problem, one line each."""

    def __init__(self, ds: str, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"raw data contract failed for ds={ds} ({len(self.problems)} problem(s)):\n{lines}")


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # id | string | integer | decimal | date | timestamp (enumerations: string with `allowed`)
    required: bool = True
    allowed: tuple[str, ...] = ()
    rule: str = ""
    synonyms: str = ""  # key of SYNONYMS applied before the allowed values are checked

    @property
    def is_enum(self) -> bool:
        return bool(self.allowed)


@dataclass(frozen=True)
class SourceContract:
    name: str
    kind: str  # SNAPSHOT or INCREMENT
    role: str  # DIMENSION, BEHAVIOUR or AUDIENCE
    columns: tuple[Column, ...]
    key: tuple[str, ...] = field(default=())

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]

    @property
    def required_columns(self) -> list[str]:
        return [column.name for column in self.columns if column.required]

    def column(self, name: str) -> Column:
        return next(column for column in self.columns if column.name == name)

    def partition_dir(self, ds: str) -> Path:
        return Path(self.name) / f"ds={ds}"

    def relative_path(self, ds: str) -> Path:
        """Where the generator (and the contract's default mapping) puts the landing file of ds."""
        return self.partition_dir(ds) / f"{self.name}.csv"


SOURCES: dict[str, SourceContract] = {
    source.name: source
    for source in (
        SourceContract("users", SNAPSHOT, DIMENSION, (
            Column("user_id", "id", rule="unique, not null"),
            Column("email", "string", rule="not null"),
            Column("country", "string", rule="ISO-3166 alpha-2"),
            Column("signup_date", "date", rule="valid date"),
        ), key=("user_id",)),
        SourceContract("products", SNAPSHOT, DIMENSION, (
            Column("product_id", "id", rule="unique, not null"),
            Column("title", "string", required=False),
            Column("category", "string", rule="not null"),
            Column("brand", "string"),
            Column("price", "decimal", rule="> 0, at most 1,000,000"),
        ), key=("product_id",)),
        SourceContract("events", INCREMENT, BEHAVIOUR, (
            Column("event_id", "string", required=False, rule="unique; without it a row is identified by its content"),
            Column("user_id", "id", rule="known user"),
            Column("product_id", "id", rule="known product"),
            Column("event_type", "string", allowed=EVENT_TYPES, rule="one of the values", synonyms="event_type"),
            Column("event_ts", "timestamp", rule="valid, not in the future"),
            Column("session_id", "string", required=False, rule="empty = one session per user and day"),
        ), key=("event_id",)),
        SourceContract("orders", INCREMENT, BEHAVIOUR, (
            Column("order_id", "string", rule="not null"),
            Column("line", "string", required=False,
                   rule="(order_id, line) unique; without it a line is identified by its content"),
            Column("user_id", "id", rule="known user"),
            Column("product_id", "id", rule="known product"),
            Column("quantity", "integer", rule="not 0, at most 100,000 either way; < 0 = a return"),
            Column("unit_price", "decimal", rule="> 0, at most 1,000,000"),
            Column("order_ts", "timestamp", rule="valid, not in the future"),
        ), key=("order_id", "line")),
        SourceContract("impressions", INCREMENT, AUDIENCE, (
            Column("impression_id", "string", rule="unique, not null"),
            Column("user_id", "id", rule="known user"),
            Column("campaign_id", "string", rule="known campaign"),
            Column("placement", "string", allowed=PLACEMENTS, rule="one of the values"),
            Column("impression_ts", "timestamp", rule="valid, not in the future"),
            Column("clicked", "integer", allowed=CLICKED_VALUES, rule="one of the values", synonyms="clicked"),
        ), key=("impression_id",)),
        SourceContract("campaigns", SNAPSHOT, AUDIENCE, (
            Column("campaign_id", "string", rule="unique, not null"),
            Column("name", "string"),
            Column("target_category", "string"),
            Column("channel", "string", allowed=CAMPAIGN_CHANNELS, rule="one of the values",
                   synonyms="campaign_channel"),
            Column("placement", "string", allowed=PLACEMENTS, rule="one of the values"),
            Column("start_date", "date", rule="valid date"),
            Column("end_date", "date", rule=">= start_date"),
            Column("audience_size", "integer", rule="> 0, at most 100,000,000"),
        ), key=("campaign_id",)),
        SourceContract("consent", SNAPSHOT, AUDIENCE, (
            Column("user_id", "id", rule="known user"),
            Column("channel", "string", allowed=CONSENT_CHANNELS, rule="one of the values; invalid = all channels",
                   synonyms="consent_channel"),
            Column("status", "string", allowed=CONSENT_STATUSES, rule="one of the values; invalid = opt_out",
                   synonyms="status"),
            Column("updated_ts", "timestamp", rule="valid; the latest row per (user_id, channel) wins"),
        ), key=("user_id", "channel", "updated_ts")),
    )
}
BEHAVIOUR_SOURCES = tuple(name for name, source in SOURCES.items() if source.role == BEHAVIOUR)
AUDIENCE_SOURCES = tuple(name for name, source in SOURCES.items() if source.role == AUDIENCE)
