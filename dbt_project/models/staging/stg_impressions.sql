-- Clean impressions: valid rows of checked_impressions, one per impression_id; a repeated key is a duplicate of the
-- first delivered row. Incremental: only rows that stopped or started being the first of their key are written
-- (macros/incremental.sql).
{{ first_delivered_rows(ref('checked_impressions'), ['impression_id'],
                        ['raw_values', 'reject_reason', 'ingest_error', 'landing_fingerprint', 'typing_fingerprint']) }}
