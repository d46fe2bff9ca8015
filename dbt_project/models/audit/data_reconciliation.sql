-- One row per contract source: every raw row of the run is clean, quarantined or a duplicate of an accepted row.
-- Raw, quarantined and duplicate rows are the sums of data_reconciliation_partitions, clean rows all rows of
-- stg_<source> (a row left there from a partition outside the window breaks the balance); zeros without rows.
-- ds_raw_rows / ds_quarantined_rows count the delivery of ds alone (the snapshot, or the increment of ds):
-- the quarantine-share check of the run (ingest.max_quarantine_share) is made on them.
with partitions as (
    select * from {{ ref('data_reconciliation_partitions') }}
),

sources as (
    select source, delivered from {{ ref('landed_sources') }}
),

clean as (
    {%- for source_name in raw_sources() %}
    select '{{ source_name }}' as source, count(*) as clean_rows from {{ ref('stg_' ~ source_name) }}
    {{ "union all" if not loop.last }}
    {%- endfor %}
)

select
    sources.source,
    sources.delivered,
    cast(coalesce(sum(partitions.raw_rows), 0) as bigint) as raw_rows,
    cast(any_value(clean.clean_rows) as bigint) as clean_rows,
    cast(coalesce(sum(partitions.quarantined_rows), 0) as bigint) as quarantined_rows,
    cast(coalesce(sum(partitions.duplicate_rows), 0) as bigint) as duplicate_rows,
    cast(coalesce(sum(partitions.raw_rows) filter (where partitions.partition_date = date '{{ run_ds() }}'), 0)
        as bigint) as ds_raw_rows,
    cast(coalesce(sum(partitions.quarantined_rows) filter (where partitions.partition_date = date '{{ run_ds() }}'), 0)
        as bigint) as ds_quarantined_rows
from sources
left join partitions on sources.source = partitions.source
left join clean on sources.source = clean.source
group by sources.source, sources.delivered
