-- Internal integer key of every user ever seen: append-only, so a user keeps its key across nights. Marts and the
-- Spark jobs use the key (32-bit, whatever the shape of the delivered id); publishing joins the original id back.
{{ append_keys('int_users', 'user_id', 'user_key') }}
