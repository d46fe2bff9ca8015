-- Internal integer key of every user ever seen: append-only (materialized incremental, never fully refreshed),
-- so a user keeps its key across nights. New ids get the next keys in id order (numeric order for integer ids). Marts and the Spark jobs use
-- the key (32-bit, whatever the shape of the delivered id); publishing joins the original id back.
with run_users as (
    select distinct user_id from {{ ref('int_users') }}
),

{% if is_incremental() %}
new_users as (
    select user_id from run_users
    where user_id not in (select user_id from {{ this }})
),

last_key as (
    select coalesce(max(user_key), 0) as max_key from {{ this }}
)
{% else %}
new_users as (
    select user_id from run_users
),

last_key as (
    select 0 as max_key
)
{% endif %}

select
    cast(last_key.max_key + row_number() over (
        order by try_cast(new_users.user_id as hugeint) nulls last, new_users.user_id) as integer) as user_key,
    new_users.user_id,
    date '{{ run_ds() }}' as first_seen_ds
from new_users
cross join last_key
