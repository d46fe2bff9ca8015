-- One row per raw source: every raw row is clean, quarantined or a duplicate of an accepted row.
-- Duplicates are counted from the keys of the valid rows, independently of the stg_ de-duplication,
-- so the singular test assert_reconciliation_balances checks the stg_ models rather than restating them.
{%- set sources = raw_sources() %}
{% for source_name, source in sources.items() %}
select
    '{{ source_name }}' as source,
    (select count(*) from {{ ref('checked_' ~ source_name) }}) as raw_rows,
    (select count(*) from {{ ref('stg_' ~ source_name) }}) as clean_rows,
    (select count(*) from {{ ref('checked_' ~ source_name) }} where reject_reason is not null) as quarantined_rows,
    (
        select count(*) - count(distinct ({{ source.key | join(', ') }}))
        from {{ ref('checked_' ~ source_name) }}
        where reject_reason is null
    ) as duplicate_rows
{% if not loop.last %}union all{% endif %}
{%- endfor %}
