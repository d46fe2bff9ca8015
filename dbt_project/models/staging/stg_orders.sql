-- Clean order lines: valid rows of checked_orders, one per (order_id, line_key); a repeated key is a duplicate
-- of the first delivered row. quantity < 0 is a return (is_return). Incremental: only rows that stopped or started
-- being the first of their key are written (macros/incremental.sql).
with first_rows as (
    {{ first_delivered_rows(ref('checked_orders'), ['order_id', 'line_key'],
                            ['raw_values', 'reject_reason', 'ingest_error', 'landing_fingerprint', 'typing_fingerprint']) }}
)

select *, quantity < 0 as is_return
from first_rows
