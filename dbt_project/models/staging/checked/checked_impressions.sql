-- Every landed impressions row of the history window (typed_impressions), with the first contract rule it breaks
-- (NULL = valid). Known users/campaigns are the clean snapshots of ds (users: when delivered).
{% call checked_increment('impressions', known=[('users', 'user_id'), ('campaigns', 'campaign_id')]) %}
        when typed.impression_id is null then 'impression_id is null'
        {{ id_reasons('user_id', 'typed.user_id', 'known_users.user_id', 'delivery.users_delivered') }}
        when typed.campaign_id is null then 'campaign_id is null'
        when known_campaigns.campaign_id is null then 'unknown campaign_id'
        when typed.placement is null then 'placement is null'
        when typed.placement not in {{ sql_values(var('placements')) }}
            then 'invalid placement'
        when raw_values.impression_ts is null then 'impression_ts is null'
        when typed.impression_ts is null then 'malformed impression_ts'
        when typed.impression_ts > {{ future_limit('typed.partition_date') }} then 'impression_ts in the future'
        when raw_values.clicked is null then 'clicked is null'
        when typed.clicked is null then 'invalid clicked'
{% endcall %}
