-- Clean consent: valid rows of checked_consent, one per (user_id, channel, updated_ts, status); a repeated key is a
-- duplicate of the first delivered row. A snapshot model (a table), so first_delivered_rows (macros/incremental.sql)
-- selects them all.
{{ first_delivered_rows(ref('checked_consent'), var('raw_contract')['consent']['checked_key'],
                        ['raw_values', 'reject_reason', 'ingest_error', 'suppress_channel', 'suppress_ts']) }}
