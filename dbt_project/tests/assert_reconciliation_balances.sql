-- Nothing is lost silently: for every raw source, raw = clean + quarantined + duplicates,
-- and every source of the contract has its row.
select source, raw_rows, clean_rows, quarantined_rows, duplicate_rows
from {{ ref('data_reconciliation') }}
where raw_rows != clean_rows + quarantined_rows + duplicate_rows
union all
select expected.source, null, null, null, null
from (values {% for s in raw_sources() %}('{{ s }}'){{ "," if not loop.last }}{% endfor %}) as expected(source)
where expected.source not in (select source from {{ ref('data_reconciliation') }})
