-- Every landed events row of the history window, typed (ids canonical, timestamps parsed) with its key: incremental
-- by landing partition (macros/incremental.sql). The contract's rules are checked in checked_events.
{{ config(landed_source='events') }}

{%- set typed_select %}
    select
        typed.*,
        -- a row without an event_id is identified by its content: an exact repeat is a duplicate
        coalesce(typed.event_id, 'row:' || md5(concat_ws('|', typed.user_id, typed.product_id, typed.event_type,
                                                         typed.event_ts, typed.session_id))) as event_key
    from (
        select
            raw_values.event_id                                 as event_id,
            {{ parse_id('raw_values.user_id', 'user_id') }}     as user_id,
            {{ parse_id('raw_values.product_id', 'product_id') }} as product_id,
            raw_values.session_id                               as session_id,
            raw_values.event_type                               as event_type,
            {{ parse_timestamp('raw_values.event_ts') }}        as event_ts,
            cast(event_ts as date)                              as event_date,
            {{ typed_lineage_columns() }}
        from raw_rows
    ) as typed
{%- endset %}

{{ typed_increment('events', typed_select) }}
