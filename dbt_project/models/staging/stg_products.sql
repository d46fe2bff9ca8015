-- Clean products: valid rows of checked_products, one per (product_id); a repeated key is a duplicate of the first delivered row.
with valid_rows as (
    select * exclude (raw_values, reject_reason, ingest_error)
    from {{ ref('checked_products') }}
    where reject_reason is null
)

select *
from valid_rows
qualify row_number() over (partition by product_id order by source_file, source_row) = 1
