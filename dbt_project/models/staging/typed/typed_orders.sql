-- Every landed order line of the history window, typed, with its line key: incremental by landing partition
-- (macros/incremental.sql). The contract's rules are checked in checked_orders.
{{ config(landed_source='orders') }}

{%- set typed_select %}
    select
        typed.*,
        -- without a line number, a line is identified by its content: an exact repeat is a duplicate
        coalesce(typed.line, 'row:' || md5(concat_ws('|', typed.user_id, typed.product_id, typed.quantity,
                                                     typed.unit_price, typed.order_ts))) as line_key
    from (
        select
            raw_values.order_id                                 as order_id,
            raw_values.line                                     as line,
            {{ parse_id('raw_values.user_id', 'user_id') }}     as user_id,
            {{ parse_id('raw_values.product_id', 'product_id') }} as product_id,
            {{ parse_integer('raw_values.quantity') }}          as quantity,
            {{ parse_decimal('raw_values.unit_price') }}        as unit_price,
            {{ parse_timestamp('raw_values.order_ts') }}        as order_ts,
            cast(order_ts as date)                              as order_date,
            {{ typed_lineage_columns() }}
        from raw_rows
    ) as typed
{%- endset %}

{{ typed_increment('orders', typed_select) }}
