-- Users who may not be contacted on a channel, by internal user key: the (user, channel) pairs whose state in the
-- consent ledger is opt_out (the ledger persists across nights, consent_ledger.sql: a consent export that lacks
-- someone never releases them). On a channel of var explicit_opt_in_channels (config
-- consent.explicit_opt_in_channels) silence is not consent: every user without an opt_in for it (or for all) is
-- suppressed there too.
{%- set explicit = var('explicit_opt_in_channels', []) %}
{%- for channel in explicit if channel not in var('campaign_channels') %}
    {{ exceptions.raise_compiler_error("explicit_opt_in_channels: '" ~ channel ~ "' is not a campaign channel") }}
{%- endfor %}
with consent as (
    select
        user_id,
        channel,
        status
    from {{ ref('consent_ledger') }}
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
    consent.channel
from consent
inner join user_keys on consent.user_id = user_keys.user_id
where consent.status = 'opt_out'
{%- if explicit %}

union

select
    user_keys.user_key as user_id,
    explicit.channel
from user_keys
cross join (
    values {% for channel in explicit %}('{{ channel }}'){{ ", " if not loop.last }}{% endfor %}
) as explicit (channel)
left join consent as on_channel
    on user_keys.user_id = on_channel.user_id and explicit.channel = on_channel.channel
left join consent as on_all
    on user_keys.user_id = on_all.user_id and on_all.channel = 'all'
where coalesce(on_channel.status, on_all.status, 'none') <> 'opt_in'
{%- endif %}
