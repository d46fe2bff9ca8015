-- Every raw campaigns row of the ds snapshot, typed, with the first contract rule it breaks (NULL = valid).
with raw_rows as (
    {{ read_raw('campaigns') }}
),

typed as (
    select
        raw_values.campaign_id                          as campaign_id,
        raw_values.name                                 as name,
        raw_values.target_category                      as target_category,
        raw_values.channel                              as channel,
        raw_values.placement                            as placement,
        {{ parse_date('raw_values.start_date') }}       as start_date,
        {{ parse_date('raw_values.end_date') }}         as end_date,
        cast({{ parse_integer('raw_values.audience_size') }} as integer) as audience_size,
        source_file,
        source_row,
        raw_values
    from raw_rows
)

select
    *,
    case
        when campaign_id is null then 'campaign_id is null'
        when channel is null then 'channel is null'
        when channel not in ('email', 'push', 'onsite') then 'invalid channel'
        when placement is null then 'placement is null'
        when placement not in ('homepage_banner', 'product_page', 'search_results', 'email', 'push')
            then 'invalid placement'
        when raw_values.start_date is null then 'start_date is null'
        when start_date is null then 'malformed start_date'
        when raw_values.end_date is null then 'end_date is null'
        when end_date is null then 'malformed end_date'
        when end_date < start_date then 'end_date before start_date'
        when raw_values.audience_size is null then 'audience_size is null'
        when audience_size is null then 'malformed audience_size'
        when audience_size <= 0 then 'non-positive audience_size'
    end as reject_reason
from typed
