-- Every raw consent row of the ds snapshot, typed, with the first contract rule it breaks (NULL = valid).
with raw_rows as (
    {{ read_raw('consent') }}
),

known_users as (
    select user_id from {{ ref('stg_users') }}
),

typed as (
    select
        {{ parse_integer('raw_values.user_id') }}       as user_id,
        raw_values.channel                              as channel,
        raw_values.status                               as status,
        {{ parse_timestamp('raw_values.updated_ts') }}  as updated_ts,
        source_file,
        source_row,
        raw_values
    from raw_rows
)

select
    typed.*,
    case
        when raw_values.user_id is null then 'user_id is null'
        when typed.user_id is null then 'malformed user_id'
        when known_users.user_id is null then 'unknown user_id'
        when typed.channel is null then 'channel is null'
        when typed.channel not in ('email', 'push', 'onsite', 'all') then 'invalid channel'
        when typed.status is null then 'status is null'
        when typed.status not in ('opt_in', 'opt_out') then 'invalid status'
        when raw_values.updated_ts is null then 'updated_ts is null'
        when typed.updated_ts is null then 'malformed updated_ts'
    end as reject_reason
from typed
left join known_users on typed.user_id = known_users.user_id
