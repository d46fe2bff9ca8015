"""Campaigns: what happens after the audiences are scored. `content` turns each campaign's audience into
activation-ready exports (hashed identifiers, templated content); `lift` measures treatment against the
deterministic control group with intervals, once the outcome window has closed."""
