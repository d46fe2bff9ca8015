-- One row per contract source and landing partition of the run (snapshots: ds; increments: every partition of the
-- window): raw = clean + quarantined + duplicates. Duplicates are ranked again here from checked_<source> (a valid
-- row that is not the first delivered of its key), independently of the incremental stg_ models, so the singular
-- test assert_reconciliation_balances checks what the stg_ models kept rather than restating it.
{%- set sources = raw_sources() %}
{% for source_name, source in sources.items() %}
{%- set key = source.key | join(', ') %}
select
    '{{ source_name }}' as source,
    checked.partition_date,
    count(*) as raw_rows,
    coalesce(any_value(clean.clean_rows), 0) as clean_rows,
    count(*) filter (where not checked.valid) as quarantined_rows,
    count(*) filter (where checked.valid and checked.rank_in_key > 1) as duplicate_rows
from (
    select
        partition_date,
        reject_reason is null as valid,
        row_number() over (
            partition by reject_reason is null, {{ key }} order by source_file, source_row
        ) as rank_in_key
    from {{ ref('checked_' ~ source_name) }}
) as checked
-- a subquery, not a CTE: each source is one branch of the union all
left join (  -- noqa: ST05
    select partition_date, count(*) as clean_rows from {{ ref('stg_' ~ source_name) }}
    group by partition_date
) as clean on checked.partition_date = clean.partition_date
group by checked.partition_date
{% if not loop.last %}union all{% endif %}
{%- endfor %}
