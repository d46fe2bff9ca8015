-- Every landed campaigns row of the ds snapshot, typed, with the first contract rule it breaks (NULL = valid).
with raw_rows as (
    {{ read_landed('campaigns') }}
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
        cast(case when {{ parse_integer('raw_values.audience_size') }} between 1 and {{ max_audience_size() }}
                  then {{ parse_integer('raw_values.audience_size') }} end as integer) as audience_size,
        {{ parse_integer('raw_values.audience_size') }} as delivered_audience_size,
        {{ snapshot_lineage_columns() | indent(8) }}
    from raw_rows
)

select
    * exclude (delivered_audience_size),
    case
        when ingest_error is not null then ingest_error
        when campaign_id is null then 'campaign_id is null'
        when channel is null then 'channel is null'
        when channel not in {{ sql_values(var('campaign_channels')) }} then 'invalid channel'
        when placement is null then 'placement is null'
        when placement not in {{ sql_values(var('placements')) }}
            then 'invalid placement'
        when raw_values.start_date is null then 'start_date is null'
        when start_date is null then 'malformed start_date'
        when raw_values.end_date is null then 'end_date is null'
        when end_date is null then 'malformed end_date'
        when end_date < start_date then 'end_date before start_date'
        when raw_values.audience_size is null then 'audience_size is null'
        when delivered_audience_size is null then 'malformed audience_size'
        when delivered_audience_size <= 0 then 'non-positive audience_size'
        when delivered_audience_size > {{ max_audience_size() }}
            then 'absurd audience_size (above {{ max_audience_size() }})'
    end as reject_reason
from typed
