"""Privacy: what the platform forgets and when. `erasure` is `pm forget --user ID`: the person's rows leave every
zone of the lake (the delivered landing files too, unless configured otherwise), the work dir, the warehouse and
the published history, their digest joins the erasure register so later deliveries never bring them back, and an
audit record without personal data says what was removed. `retention` deletes each zone's ds partitions older
than `retention.days`, nightly."""
