"""The consent guard: a night whose consent export looks cut, partial or shifted builds no audiences.

The consent ledger already keeps every earlier opt-out (a short export releases nobody), but a short export also
misses tonight's new opt-outs, and a shifted column or a new id format makes rows name nobody. So tonight's
export is compared with the last night whose audiences the guard let through: when its rows or its opt-outs
drop by more than `consent.max_drop_share`, or more than `consent.max_unknown_user_share` of its rows name no
known user, audiences are blocked (skipped, with an alert naming the figures) and recommendations still publish.
Nights with fewer than `consent.min_rows` rows on either side are not judged on shares (noise, not evidence).
A night whose warehouse lost the ledger, with no backup in the lake to restore, is blocked as well.
"""

from __future__ import annotations

from collections.abc import Mapping


def consent_guard(
    tonight: Mapping,
    last_good: Mapping | None,
    *,
    max_drop_share: float,
    max_unknown_user_share: float,
    min_rows: int,
    ledger_lost: bool = False,
) -> dict:
    """{passed, reasons, tonight, last_good}: the verdict on tonight's consent export (consent_delivery rows)."""
    reasons = []
    if ledger_lost:
        reasons.append(
            "the consent ledger was lost: the warehouse had none and the lake holds no backup "
            "(features/consent_ledger/) although earlier nights ran, so earlier opt-outs are unknown tonight; "
            "restore a backup into marts.consent_ledger (docs/data_contract.md, 'Consent fails safe')"
        )
    rows, unknown = int(tonight["consent_rows"]), int(tonight["unknown_user_rows"])
    if rows >= min_rows and unknown / rows > max_unknown_user_share:
        reasons.append(
            f"{unknown:,} of {rows:,} consent rows ({unknown / rows:.1%}) name no known user (limit "
            f"{max_unknown_user_share:.0%}): a shifted column or another id format?"
        )
    if last_good is not None:
        for column, what in (("consent_rows", "consent rows"), ("opt_out_rows", "opt-outs")):
            before, now = int(last_good[column]), int(tonight[column])
            if before >= min_rows and now < (1 - max_drop_share) * before:
                reasons.append(
                    f"{what} fell from {before:,} (ds={last_good['ds']}) to {now:,} ({now / before - 1:+.0%}, limit "
                    f"-{max_drop_share:.0%}): a cut or partial consent export?"
                )
    return {
        "passed": not reasons,
        "reasons": reasons,
        "tonight": {k: (str(v) if k == "ds" else v) for k, v in tonight.items()},
        "last_good": None if last_good is None else {k: (str(v) if k == "ds" else v) for k, v in last_good.items()},
    }
