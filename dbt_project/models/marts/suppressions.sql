-- Users who may not be contacted on a channel, by internal user key: the (user, channel) pairs whose state in the
-- consent ledger is opt_out. The ledger persists across nights (consent_ledger.sql): a consent export that lacks
-- someone never releases them.
with ledger as (
    select
        user_id,
        channel
    from {{ ref('consent_ledger') }}
    where status = 'opt_out'
),

user_keys as (
    select
        user_key,
        user_id
    from {{ ref('user_keys') }}
)

-- a consent row of a user without a key (never seen in users or behaviour) has nobody to suppress yet
select
    user_keys.user_key as user_id,
    ledger.channel
from ledger
inner join user_keys on ledger.user_id = user_keys.user_id
