-- Clean products: valid rows of checked_products, one per (product_id); a repeated key is a duplicate of the first
-- delivered row. A snapshot model (a table), so first_delivered_rows (macros/incremental.sql) selects them all.
{{ first_delivered_rows(ref('checked_products'), ['product_id'], ['raw_values', 'reject_reason', 'ingest_error']) }}
