-- Nothing is lost silently: for every raw source and every landing partition of the run, raw = clean + quarantined
-- + duplicates: per partition (so an incremental night that kept a stale first row or missed a new one fails here)
-- and for the window (its clean rows are all of stg_<source>: a row left from a partition the window no longer
-- has fails too), and every source of the contract has its row.
select source, null as partition_date, raw_rows, clean_rows, quarantined_rows, duplicate_rows
from {{ ref('data_reconciliation') }}
where raw_rows != clean_rows + quarantined_rows + duplicate_rows
union all
select source, partition_date, raw_rows, clean_rows, quarantined_rows, duplicate_rows
from {{ ref('data_reconciliation_partitions') }}
where raw_rows != clean_rows + quarantined_rows + duplicate_rows
union all
select expected.source, null, null, null, null, null
from (
    values
    {%- for s in raw_sources() %}
    ('{{ s }}'){{ "," if not loop.last }}
    {%- endfor %}
) as expected (source)
where expected.source not in (select reconciled.source from {{ ref('data_reconciliation') }} as reconciled)
