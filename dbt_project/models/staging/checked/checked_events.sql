-- Every landed events row of the history window (typed_events), with the first contract rule it breaks (NULL =
-- valid). Known users/products are the clean snapshots of ds (when delivered; otherwise they derive from behaviour).
{% call checked_increment('events', known=[('users', 'user_id'), ('products', 'product_id')]) %}
        {{ id_reasons('user_id', 'typed.user_id', 'known_users.user_id', 'delivery.users_delivered') }}
        {{ id_reasons('product_id', 'typed.product_id', 'known_products.product_id', 'delivery.products_delivered') }}
        when typed.event_type is null then 'event_type is null'
        when typed.event_type not in {{ sql_values(event_types()) }} then 'invalid event_type'
        when raw_values.event_ts is null then 'event_ts is null'
        when typed.event_ts is null then 'malformed event_ts'
        when typed.event_ts > {{ future_limit('typed.partition_date') }} then 'event_ts in the future'
{% endcall %}
