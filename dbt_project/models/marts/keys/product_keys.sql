-- Internal integer key of every product ever seen: append-only, so a product keeps its key across nights. Marts and
-- the Spark jobs use the key (32-bit, whatever the shape of the delivered id); publishing joins the original id back.
{{ append_keys('int_products', 'product_id', 'product_key') }}
