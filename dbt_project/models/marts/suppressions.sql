-- Users who may not be contacted on a channel, by internal user key. Per (user, channel) the newest row wins
-- among the valid consent rows and the rows that broke a rule but suppress (checked_consent fails safe):
-- a suppressing row without a valid time counts as the newest, and at equal times opt_out wins.
with valid_consent as (
    select user_id, channel, status, updated_ts from {{ ref('stg_consent') }}
),

suppressing_rows as (
    select user_id, suppress_channel as channel, 'opt_out' as status, suppress_ts as updated_ts
    from {{ ref('checked_consent') }}
    where suppress_channel is not null
),

consent_rows as (
    select * from valid_consent
    union all
    select * from suppressing_rows
),

latest_consent as (
    select user_id, channel, status
    from consent_rows
    qualify row_number() over (
        partition by user_id, channel
        order by updated_ts desc nulls first, status = 'opt_out' desc
    ) = 1
),

user_keys as (
    select user_key, user_id from {{ ref('user_keys') }}
)

-- a consent row of a user without a key (never seen in users or behaviour) has nobody to suppress yet
select user_keys.user_key as user_id, latest_consent.channel
from latest_consent
inner join user_keys on latest_consent.user_id = user_keys.user_id
where latest_consent.status = 'opt_out'
