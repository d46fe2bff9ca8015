-- Every user of the run: the clean users snapshot when users are delivered, else every user seen in the clean
-- behaviour or impressions of the window (no e-mail, country or signup date then). Ids are the delivered
-- (canonical) ids.
with users as (
    select user_id, email, country, signup_date from {{ ref('stg_users') }}
),

behaviour_users as (
    select user_id from {{ ref('stg_events') }}
    union
    select user_id from {{ ref('stg_orders') }}
    union
    select user_id from {{ ref('stg_impressions') }}
)

select user_id, email, country, signup_date, true as delivered
from users
union all
select user_id, null, null, cast(null as date), false
from behaviour_users
where not {{ delivered('users') }}
