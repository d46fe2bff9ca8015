-- Every landed consent row of the ds snapshot, typed, with the first contract rule it breaks (NULL = valid).
-- Consent fails safe: a row that breaks a rule but names a usable user suppresses that user on every
-- channel it could mean (its channel when that is valid, else all channels), from its time when that is
-- valid, else for good (suppress_channel, suppress_ts; the suppressions mart reads them). Its
-- reject_reason says so. An opt-out naming a well-formed id that no users file knows (yet) is quarantined too,
-- but kept as an opt-out for that id: the ledger holds it, so it suppresses them if they appear on a later night.
-- Any other row without a usable user suppresses nobody.
with raw_rows as (
    {{ read_landed('consent') }}
),

known_users as (
    select user_id from {{ ref('stg_users') }}
),

delivery as (
    select {{ delivered('users') }} as users_delivered
),

typed as (
    select
        {{ parse_id('raw_values.user_id', 'user_id') }} as user_id,
        raw_values.channel                              as channel,
        raw_values.status                               as status,
        {{ parse_timestamp('raw_values.updated_ts') }}  as updated_ts,
        {{ snapshot_lineage_columns() | indent(8) }}
    from raw_rows
),

checked as (
    select
        typed.*,
        typed.user_id is not null
            and (known_users.user_id is not null or not delivery.users_delivered) as has_usable_user,
        case
            when typed.ingest_error is not null then typed.ingest_error
            {{ id_reasons('user_id', 'typed.user_id', 'known_users.user_id', 'delivery.users_delivered') }}
            when typed.channel is null then 'channel is null'
            when typed.channel not in {{ sql_values(var('consent_channels')) }} then 'invalid channel'
            when typed.status is null then 'status is null'
            when typed.status not in {{ sql_values(var('consent_statuses')) }} then 'invalid status'
            when raw_values.updated_ts is null then 'updated_ts is null'
            when typed.updated_ts is null then 'malformed updated_ts'
            when typed.updated_ts > {{ future_limit("date '" ~ run_ds() ~ "'") }} then 'updated_ts in the future'
        end as rule_broken
    from typed
    cross join delivery
    left join known_users on typed.user_id = known_users.user_id
),

fail_safe as (
    select
        *,
        case
            when rule_broken is null then null
            when not has_usable_user then
                case
                    when
                        ingest_error is null and user_id is not null and status = 'opt_out'
                        and channel in {{ sql_values(var('consent_channels')) }}
                        and updated_ts <= {{ future_limit("date '" ~ run_ds() ~ "'") }}
                        then channel
                end
            -- a garbled row (ingest_error) may have its values in the wrong columns: suppress everywhere
            when ingest_error is null and channel in {{ sql_values(var('consent_channels')) }} then channel
            else 'all'
        end as suppress_channel
    from checked
)

select
    * exclude (rule_broken, has_usable_user),
    case when suppress_channel is not null
         and updated_ts is not null and updated_ts <= {{ future_limit("date '" ~ run_ds() ~ "'") }}
         then updated_ts end as suppress_ts,
    case
        when suppress_channel = 'all' then rule_broken || '; user suppressed on all channels'
        when suppress_channel is not null then rule_broken || '; user suppressed on ' || suppress_channel
        else rule_broken
    end as reject_reason
from fail_safe
