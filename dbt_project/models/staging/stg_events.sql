-- Clean events: valid rows of checked_events, one per event_key (the event_id, or the row content without one);
-- a repeated key is a duplicate of the first delivered row. Incremental: only rows that stopped or started being
-- the first of their key are written (macros/incremental.sql).
{{ first_delivered_rows(ref('checked_events'), ['event_key'],
                        ['raw_values', 'reject_reason', 'ingest_error', 'landing_fingerprint', 'typing_fingerprint']) }}
