-- Every landed impressions row of the history window, typed: incremental by landing partition
-- (macros/incremental.sql). The contract's rules are checked in checked_impressions.
{{ config(landed_source='impressions') }}

{%- set typed_select %}
    select
        raw_values.impression_id                            as impression_id,
        {{ parse_id('raw_values.user_id', 'user_id') }}     as user_id,
        raw_values.campaign_id                              as campaign_id,
        raw_values.placement                                as placement,
        {{ parse_timestamp('raw_values.impression_ts') }}   as impression_ts,
        cast(impression_ts as date)                         as impression_date,
        case raw_values.clicked when '0' then 0 when '1' then 1 end as clicked,
        {{ typed_lineage_columns() }}
    from raw_rows
{%- endset %}

{{ typed_increment('impressions', typed_select) }}
