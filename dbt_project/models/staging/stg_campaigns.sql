-- Clean campaigns: valid rows of checked_campaigns, one per (campaign_id); a repeated key is a duplicate of the first
-- delivered row. A snapshot model (a table), so first_delivered_rows (macros/incremental.sql) selects them all.
{{ first_delivered_rows(ref('checked_campaigns'), ['campaign_id'], ['raw_values', 'reject_reason', 'ingest_error']) }}
