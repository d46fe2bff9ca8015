-- Every landed users row of the ds snapshot, typed, with the first contract rule it breaks (NULL = valid).
with raw_rows as (
    {{ read_landed('users') }}
),

typed as (
    select
        {{ parse_id('raw_values.user_id', 'user_id') }}     as user_id,
        raw_values.email                                    as email,
        upper(trim(raw_values.country))                     as country,
        {{ parse_date('raw_values.signup_date') }}          as signup_date,
        {{ snapshot_lineage_columns() | indent(8) }}
    from raw_rows
)

select
    *,
    case
        when ingest_error is not null then ingest_error
        when raw_values.user_id is null then 'user_id is null'
        when user_id is null then {{ id_problem('raw_values.user_id', 'user_id', 'user_id') }}
        when email is null then 'email is null'
        when country is null then 'country is null'
        when not regexp_full_match(country, '[A-Z]{2}') then 'invalid country'
        when raw_values.signup_date is null then 'signup_date is null'
        when signup_date is null then 'malformed signup_date'
        when signup_date > date '{{ run_ds() }}' then 'signup_date in the future'
    end as reject_reason
from typed
