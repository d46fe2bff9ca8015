-- Clean order lines: valid rows of checked_orders, one per (order_id, line_key); a repeated key is a duplicate
-- of the first delivered row. quantity < 0 is a return.
with valid_rows as (
    select * exclude (raw_values, reject_reason, ingest_error)
    from {{ ref('checked_orders') }}
    where reject_reason is null
)

select *, quantity < 0 as is_return
from valid_rows
qualify row_number() over (partition by order_id, line_key order by source_file, source_row) = 1
