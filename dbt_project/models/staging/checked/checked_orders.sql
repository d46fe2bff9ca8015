-- Every landed order line of the history window (typed_orders), with the first contract rule it breaks (NULL =
-- valid). A negative quantity is a return. Known users/products as for events.
{% call checked_increment('orders', known=[('users', 'user_id'), ('products', 'product_id')]) %}
        when typed.order_id is null then 'order_id is null'
        {{ id_reasons('user_id', 'typed.user_id', 'known_users.user_id', 'delivery.users_delivered') }}
        {{ id_reasons('product_id', 'typed.product_id', 'known_products.product_id', 'delivery.products_delivered') }}
        when raw_values.quantity is null then 'quantity is null'
        when typed.quantity is null then 'malformed quantity'
        when typed.quantity = 0 then 'zero quantity'
        when abs(typed.quantity) > {{ max_abs_quantity() }} then 'absurd quantity (beyond {{ max_abs_quantity() }} either way)'
        when raw_values.unit_price is null then 'unit_price is null'
        when typed.unit_price is null then 'malformed unit_price'
        when typed.unit_price <= 0 then 'non-positive unit_price'
        when typed.unit_price > {{ max_price() }} then 'absurd unit_price (above {{ max_price() }})'
        when raw_values.order_ts is null then 'order_ts is null'
        when typed.order_ts is null then 'malformed order_ts'
        when typed.order_ts > {{ future_limit('typed.partition_date') }} then 'order_ts in the future'
{% endcall %}
