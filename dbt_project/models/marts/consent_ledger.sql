{{ config(materialized='incremental', unique_key=['user_id', 'channel'], incremental_strategy='delete+insert',
          full_refresh=false, on_schema_change='fail') }}
-- The consent state of every (user, channel) ever stated, by delivered user id: the newest row wins, at equal
-- times opt_out. It persists across nights: a user missing from tonight's export (a short, partial or header-only
-- snapshot) keeps the state they had; only a later explicit opt_in releases an opt_out. Never rebuilt by
-- --full-refresh (full_refresh=false): a rebuild from one night's file would release everyone it lacks.
-- Tonight's rows are the valid consent rows and the broken rows that suppress (checked_consent fails safe); a
-- suppressing row without a valid time is dated at the latest valid time of the night, so it wins the night and
-- only a later delivery can release it.
with tonight as (
    select
        user_id,
        channel,
        status,
        updated_ts
    from {{ ref('stg_consent') }}
    union all
    select
        user_id,
        suppress_channel as channel,
        'opt_out' as status,
        coalesce(suppress_ts, {{ future_limit("date '" ~ run_ds() ~ "'") }}) as updated_ts
    from {{ ref('checked_consent') }}
    where suppress_channel is not null
),

candidates as (
    select
        *,
        date '{{ run_ds() }}' as stated_on
    from tonight
    {%- if is_incremental() %}
    union all
    select
        user_id,
        channel,
        status,
        updated_ts,
        stated_on
    from {{ this }}
    {%- endif %}
)

select
    user_id,
    channel,
    status,
    updated_ts,
    stated_on
from candidates
qualify row_number() over (
    partition by user_id, channel
    order by updated_ts desc, status = 'opt_out' desc, stated_on asc
) = 1
