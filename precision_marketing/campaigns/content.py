"""audience_exports: what an e-mail / push tool sends as is — the treatment rows of the audiences, with
personalised content.

Per exported row (experiment_group = 'treatment'; control users are never exported):
- top_product_ids / top_product_titles: the user's recommended products (recommendations, best rank first)
  inside the campaign's target category, at most `content_products`; empty when none is in the category;
- subject_line: the campaign's Jinja template rendered with the row's fields; when the template needs a
  field the row does not have (e.g. no recommended product in the category), the campaign's fallback
  template is rendered instead (subject_is_fallback = true).

Template fields: campaign_name, category, channel, segment, first_product (title), products (list of
titles), n_products. Templates run in Jinja's sandbox with StrictUndefined, so a missing field is detected
instead of rendered as an empty string.

The join runs in DuckDB over the Parquet outputs and the rows are rendered batch by batch (never the
whole table in memory).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
from jinja2 import StrictUndefined, TemplateSyntaxError, UndefinedError
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from precision_marketing.publish.catalog import parquet_source_sql

EXPORT_SCHEMA = pa.schema(
    [
        ("campaign_id", pa.string()),
        ("user_id", pa.int64()),
        ("email_sha256", pa.string()),
        ("channel", pa.string()),
        ("rank", pa.int32()),
        ("p_click", pa.float64()),
        ("expected_value", pa.float64()),
        ("bid_hint", pa.float64()),
        ("segment", pa.string()),
        ("top_product_ids", pa.list_(pa.int64())),
        ("top_product_titles", pa.list_(pa.string())),
        ("subject_line", pa.string()),
        ("subject_is_fallback", pa.bool_()),
    ]
)
BATCH_ROWS = 50_000


MAX_TEMPLATE_CHARS = 1_000  # a subject template is a line, not a document
MAX_SUBJECT_CHARS = 200  # what a mail or push tool shows; longer rendered subjects are cut


class BoundedEnvironment(SandboxedEnvironment):
    """The sandbox, plus no way to build a huge value from a short template (`'x' * 10**8`)."""

    intercepted_binops = frozenset({"*", "**"})

    def call_binop(self, context, operator, left, right):
        if operator == "**":
            raise SecurityError("'**' is not allowed in a subject template")
        sized = (
            left if isinstance(left, (str, list, tuple)) else right if isinstance(right, (str, list, tuple)) else None
        )
        count = right if sized is left else left
        if sized is not None and isinstance(count, int) and len(sized) * count > MAX_SUBJECT_CHARS:
            raise SecurityError(f"a repetition longer than {MAX_SUBJECT_CHARS} characters in a subject template")
        return super().call_binop(context, operator, left, right)


def one_line(text: str) -> str:
    """A subject is one line: CR, LF and other whitespace runs become one space (no header injection in the tools
    that send it), and it is cut to MAX_SUBJECT_CHARS."""
    return " ".join(text.split())[:MAX_SUBJECT_CHARS]


class ContentError(ValueError):
    """A campaign's template cannot be used; the message names the campaign and the setting."""


def campaign_setting(activation: Mapping, campaign_id: str, key: str):
    """A campaign's activation setting: activation.campaigns.<campaign_id>.<key>, else activation.<key>."""
    override = (activation.get("campaigns") or {}).get(campaign_id) or {}
    return activation[key] if override.get(key) is None else override[key]  # the schema fills unset keys with None


class SubjectRenderer:
    """Compiled templates per campaign; render(row) -> (subject, used_fallback)."""

    def __init__(self, activation: Mapping):
        self.activation = activation
        self.environment = BoundedEnvironment(undefined=StrictUndefined, autoescape=False)
        self.compiled: dict[str, tuple] = {}

    def _templates(self, campaign_id: str):
        if campaign_id not in self.compiled:
            templates = []
            for key in ("subject_template", "subject_fallback"):
                source = campaign_setting(self.activation, campaign_id, key)
                if len(str(source)) > MAX_TEMPLATE_CHARS:
                    raise ContentError(
                        f"campaign {campaign_id!r}: activation {key} has {len(str(source)):,} characters, "
                        f"at most {MAX_TEMPLATE_CHARS:,} (a subject line)"
                    )
                try:
                    templates.append(self.environment.from_string(str(source)))
                except TemplateSyntaxError as error:
                    raise ContentError(
                        f"campaign {campaign_id!r}: activation {key} {source!r} is not a valid Jinja template: {error}"
                    ) from None
            self.compiled[campaign_id] = tuple(templates)
        return self.compiled[campaign_id]

    def render(self, row: Mapping) -> tuple[str, bool]:
        template, fallback = self._templates(row["campaign_id"])
        titles = [t for t in (row.get("top_product_titles") or []) if t]
        fields = {
            "campaign_name": row.get("campaign_name"),
            "category": row.get("category"),
            "channel": row.get("channel"),
            "segment": row.get("segment"),
            "first_product": titles[0] if titles else None,
            "products": titles or None,
            "n_products": len(titles),
        }
        context = {k: v for k, v in fields.items() if v is not None}  # missing = undefined, not "None"
        try:
            return one_line(template.render(context)), False
        except UndefinedError:
            pass
        except SecurityError as error:
            raise ContentError(f"campaign {row['campaign_id']!r}: subject_template refused: {error}") from None
        try:
            return one_line(fallback.render(context)), True
        except SecurityError as error:
            raise ContentError(f"campaign {row['campaign_id']!r}: subject_fallback refused: {error}") from None
        except UndefinedError as error:
            raise ContentError(
                f"campaign {row['campaign_id']!r}: the fallback subject template needs a field the "
                f"row does not have ({error}); use only campaign_name, category, channel"
            ) from None


def build_audience_exports(
    *,
    audiences: Path,
    recommendations: Path | None,
    item_features: Path,
    campaigns: Path,
    out: Path,
    activation: Mapping,
) -> dict:
    """Write audience_exports (one Parquet file at `out`) and return counts (no recommendations: no products)."""
    n_products = int(activation["content_products"])
    if n_products < 0:
        raise ContentError(f"activation content_products must be >= 0, got {n_products}")
    renderer = SubjectRenderer(activation)
    recommendations_sql = (
        f"read_parquet({parquet_source_sql(recommendations)})"
        if recommendations is not None
        else "(select null::bigint as user_id, null::bigint as product_id, null::int as rank where false)"
    )
    sql = f"""
    with exported as (
        select * from read_parquet({parquet_source_sql(audiences)}) where experiment_group = 'treatment'
    ),
    campaigns as (
        select campaign_id, name as campaign_name, target_category from read_parquet({parquet_source_sql(campaigns)})
    ),
    items as (
        select product_id, title, category from read_parquet({parquet_source_sql(item_features)})
    ),
    in_category as (
        select exported.campaign_id, exported.user_id, recs.product_id, items.title, recs.rank
        from exported
        join campaigns using (campaign_id)
        join {recommendations_sql} as recs on recs.user_id = exported.user_id
        join items on items.product_id = recs.product_id and items.category = campaigns.target_category
        qualify row_number() over (partition by exported.campaign_id, exported.user_id order by recs.rank)
            <= {n_products}
    ),
    picks as (
        select campaign_id, user_id, list(product_id order by rank) as top_product_ids,
               list(title order by rank) as top_product_titles
        from in_category group by campaign_id, user_id
    )
    select exported.campaign_id, exported.user_id, exported.email_sha256, exported.channel, exported.rank,
           exported.p_click, exported.expected_value, exported.bid_hint, exported.segment,
           coalesce(picks.top_product_ids, []) as top_product_ids,
           coalesce(picks.top_product_titles, []) as top_product_titles,
           campaigns.campaign_name, campaigns.target_category as category
    from exported
    left join campaigns using (campaign_id)
    left join picks using (campaign_id, user_id)
    order by exported.campaign_id, exported.rank
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    counts = {"rows": 0, "with_products": 0, "fallback_subjects": 0}
    con = duckdb.connect()
    try:
        reader = con.execute(sql).fetch_record_batch(BATCH_ROWS)
        with pq.ParquetWriter(out, EXPORT_SCHEMA) as writer:
            for batch in reader:
                rows = batch.to_pylist()
                subjects = [renderer.render(row) for row in rows]
                columns = {name: batch.column(name) for name in EXPORT_SCHEMA.names if name in batch.schema.names}
                columns["subject_line"] = pa.array([s for s, _ in subjects], pa.string())
                columns["subject_is_fallback"] = pa.array([f for _, f in subjects], pa.bool_())
                writer.write_table(pa.table({n: columns[n] for n in EXPORT_SCHEMA.names}).cast(EXPORT_SCHEMA))
                counts["rows"] += len(rows)
                counts["with_products"] += sum(1 for row in rows if row["top_product_ids"])
                counts["fallback_subjects"] += sum(1 for _, fallback in subjects if fallback)
    finally:
        con.close()
    return counts
