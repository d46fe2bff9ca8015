-- One row per contract source: every raw row is clean, quarantined or a duplicate of an accepted row.
-- Duplicates are counted from the keys of the valid rows, independently of the stg_ de-duplication,
-- so the singular test assert_reconciliation_balances checks the stg_ models rather than restating them.
-- ds_raw_rows / ds_quarantined_rows count the delivery of ds alone (the snapshot, or the increment of ds):
-- the quarantine-share check of the run (ingest.max_quarantine_share) is made on them.
{%- set sources = raw_sources() %}
{% for source_name, source in sources.items() %}
select
    '{{ source_name }}' as source,
    {{ delivered(source_name) }} as delivered,
    (select count(*) from {{ ref('checked_' ~ source_name) }}) as raw_rows,
    (select count(*) from {{ ref('stg_' ~ source_name) }}) as clean_rows,
    (select count(*) from {{ ref('checked_' ~ source_name) }} where reject_reason is not null) as quarantined_rows,
    (
        select count(*) - count(distinct ({{ source.key | join(', ') }}))
        from {{ ref('checked_' ~ source_name) }}
        where reject_reason is null
    ) as duplicate_rows,
    (select count(*) from {{ ref('checked_' ~ source_name) }}
     where partition_date = date '{{ run_ds() }}') as ds_raw_rows,
    (select count(*) from {{ ref('checked_' ~ source_name) }}
     where partition_date = date '{{ run_ds() }}' and reject_reason is not null) as ds_quarantined_rows
{% if not loop.last %}union all{% endif %}
{%- endfor %}
