"""Synthetic e-commerce landing files with planted structure and planted dirt.

Writes the six raw sources of docs/data_contract.md (expectations/raw_contract.py) for every day of
a window ending at `end_ds`: snapshots (users, products, campaigns, consent) every day and daily
increments (events, impressions). The structure is there for the models to find:

- users prefer 1-3 of ~12 categories (Dirichlet, small alpha) and have a lognormal activity level;
  ~10 % never act (cold start);
- sessions ~ Poisson(activity) per day browse one preferred category by Zipf popularity, with a
  view -> cart (~30 %) -> purchase (~40 % of carts) funnel and ~5 % favourites;
- P(click) of a campaign impression rises with the user's latent preference for its target category,
  differs by placement and by time of day (evenings click more, nights less).

Side outputs the pipeline never reads (for benchmarks and tests):
- `truth_root` (optional): each clean impression's true click probability,
  `<truth_root>/impressions/ds=D/impression_truth.csv` (impression_id, p_click) — the CTR model's ceiling;
- `exports` + `treatment_effect`: a planted campaign effect on *exported* users (audience_exports rows
  of earlier nights, treatment group only). Every export row gets a send impression on the next day; each
  exported (campaign, user) pair, with probability `treatment_effect`, buys once in the campaign's target
  category on a day drawn uniformly from the `effect_days` days after its first export. Control users get
  neither, so the lift measurement (precision_marketing/campaigns/lift.py) can be checked against a known effect.

Dirty rows (duplicates, NULL user_id, unknown ids, malformed timestamps, invalid enum values,
non-positive prices) are *added* beside the clean rows, one defect each, and counted in the summary so
that quarantine and duplicate counts downstream can be reconciled exactly. Dirty users/products use
fresh ids that no event references, so rejecting them never cascades. Each component draws from
its own seeded stream: the clean rows do not change with `dirty_rate`.

    python -m precision_marketing.datagen --raw-root lake/raw --ds 2026-11-23 --users 5000
"""

from __future__ import annotations

import argparse
import json
import sys
import zlib
from dataclasses import dataclass
from datetime import date, timedelta
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from precision_marketing.contract import EVENT_TYPES, SOURCES

CATEGORIES = (
    "electronics",
    "fashion",
    "home",
    "beauty",
    "sports",
    "toys",
    "books",
    "grocery",
    "garden",
    "automotive",
    "pets",
    "health",
)
COUNTRIES = ("US", "GB", "DE", "FR", "NL", "ES", "IT", "PL", "SE", "CA")
COUNTRY_WEIGHTS = (0.30, 0.15, 0.12, 0.10, 0.07, 0.07, 0.06, 0.05, 0.04, 0.04)
ONSITE_PLACEMENTS = ("homepage_banner", "product_page", "search_results")
# Added to the click logit: on-site intent placements click more than pushed messages.
PLACEMENT_EFFECT = {"homepage_banner": 0.0, "product_page": 0.3, "search_results": 0.5, "email": -0.3, "push": -0.2}
CLICK_BASE_LOGIT = -3.8  # ~2 % CTR for users without interest in the category
CLICK_PREFERENCE_WEIGHT = 3.2  # a user devoted to the category clicks ~30-40 %
# Added to the click logit by hour of the impression (UTC): evenings click more, nights less.
HOUR_EFFECT = np.array([-0.4] * 6 + [0.0] * 12 + [0.4] * 5 + [0.0])
PREFERENCE_ALPHA = 0.12
COLD_START_SHARE = 0.10
CART_RATE, PURCHASE_RATE, FAVOURITE_RATE = 0.30, 0.40, 0.05
DAILY_IMPRESSIONS_PER_USER_PER_CAMPAIGN = 0.04
SECONDS_PER_DAY = 86_400

EVENT_DIRT = ("duplicate", "null_user_id", "unknown_product_id", "malformed_ts", "invalid_event_type")
IMPRESSION_DIRT = ("duplicate", "null_user_id", "unknown_campaign_id", "malformed_ts", "invalid_placement")
USER_DIRT = ("duplicate", "null_user_id", "malformed_signup_date")
PRODUCT_DIRT = ("duplicate", "non_positive_price")
MALFORMED_TIMESTAMPS = ("2026-13-45 25:61:00", "yesterday", "not a timestamp", "31/12/2025 10:00")
INVALID_EVENT_TYPES = ("click", "wishlist", "refund")
INVALID_PLACEMENTS = ("sidebar", "popup", "footer")
UNKNOWN_ID_BASE = 900_000_000  # far above any generated product id
# the contract sources the generator writes (an e-commerce site with events; orders are a real export's source)
GENERATED_SOURCES = ("users", "products", "events", "impressions", "campaigns", "consent")


def _rng(seed: int, component: str) -> np.random.Generator:
    """An independent, reproducible stream per component (stable across Python runs, unlike hash())."""
    return np.random.default_rng([seed, zlib.crc32(component.encode())])


def _ts_strings(epoch_seconds: np.ndarray) -> pa.Array:
    """The contract's 'YYYY-MM-DD HH:MM:SS': Arrow's cast writes exactly that, 20x faster than strftime."""
    return pc.cast(pa.array(epoch_seconds.astype("datetime64[s]")), pa.string())


def _prefixed_ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers, pa.int64()), pa.string()), width, padding="0")
    return pc.binary_join_element_wise(prefix, digits, "")


def _epoch_seconds(day: date) -> int:
    return (day - date(1970, 1, 1)).days * SECONDS_PER_DAY


def _split_counts(rng: np.random.Generator, total: int, kinds: tuple[str, ...]) -> dict[str, int]:
    """Spread `total` dirty rows evenly over kinds, the remainder to random kinds."""
    base, remainder = divmod(total, len(kinds))
    counts = np.full(len(kinds), base)
    counts[rng.choice(len(kinds), remainder, replace=False)] += 1
    return dict(zip(kinds, counts.tolist()))


@dataclass
class _World:
    """The latent state every source is drawn from (small: users x categories, never users x items)."""

    window_start: date
    end: date
    days: int
    user_ids: np.ndarray
    preferences: np.ndarray  # users x categories, rows sum to 1
    activity: np.ndarray  # expected sessions per day
    signup_seconds: np.ndarray
    product_ids: np.ndarray  # sorted by category
    popularity_cdf: np.ndarray  # category index + within-category CDF, increasing
    categories: tuple[str, ...]


def _build_users(rng: np.random.Generator, users: int, n_categories: int, window_start: date):
    preferences = rng.dirichlet(np.full(n_categories, PREFERENCE_ALPHA), size=users)
    activity = rng.lognormal(mean=np.log(0.2), sigma=0.8, size=users)
    activity[rng.random(users) < COLD_START_SHARE] = 0.0
    signup_days_before = rng.integers(1, 730, size=users)
    signup_seconds = (
        _epoch_seconds(window_start)
        - signup_days_before * SECONDS_PER_DAY
        + rng.integers(0, SECONDS_PER_DAY, size=users)
    )
    user_ids = np.arange(1, users + 1)
    emails = pc.binary_join_element_wise("user", pc.cast(pa.array(user_ids), pa.string()), "@example.com", "")
    # Some addresses arrive in mixed case: the hashed identifier must normalise them.
    shouty = pa.array(rng.random(users) < 0.1)
    emails = pc.if_else(shouty, pc.utf8_capitalize(emails), emails)
    table = pa.table(
        {
            "user_id": pa.array(user_ids, pa.int64()),
            "email": emails,
            "country": pa.array(np.array(COUNTRIES)[rng.choice(len(COUNTRIES), users, p=COUNTRY_WEIGHTS)]),
            "signup_date": pc.cast(pa.array((signup_seconds // SECONDS_PER_DAY).astype("datetime64[D]")), pa.string()),
        }
    )
    return table, preferences, activity, signup_seconds


def _build_products(rng: np.random.Generator, items: int, categories: tuple[str, ...]):
    n_categories = len(categories)
    # Every category gets at least one product; the rest are spread unevenly.
    category = np.concatenate(
        [
            np.arange(n_categories),
            rng.choice(n_categories, items - n_categories, p=rng.dirichlet(np.full(n_categories, 5.0))),
        ]
    )
    category = np.sort(category)
    product_ids = np.arange(1, items + 1)
    log_price_mean = rng.uniform(np.log(8), np.log(400), size=n_categories)
    price = np.round(rng.lognormal(log_price_mean[category], 0.5), 2).clip(0.5)
    brands_per_category = rng.integers(3, 9, size=n_categories)
    brand_number = (rng.random(items) * brands_per_category[category]).astype(int)
    # Zipf-like popularity: a random popularity rank within the category, weight 1 / rank^1.1.
    counts = np.bincount(category, minlength=n_categories)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    within_cdf = np.empty(items)
    for c in range(n_categories):  # a loop over ~12 categories, not over items
        segment = slice(starts[c], starts[c] + counts[c])
        cumulative = np.cumsum(1.0 / (rng.permutation(counts[c]) + 1) ** 1.1)
        within_cdf[segment] = cumulative / cumulative[-1]
        within_cdf[starts[c] + counts[c] - 1] = 1.0  # exactly 1 so searchsorted never spills into the next category
    category_names = np.array(categories)[category]
    brands = pc.binary_join_element_wise(
        pa.array(np.char.capitalize(category_names.astype(str))),
        " Brand ",
        pc.cast(pa.array(brand_number + 1), pa.string()),
        "",
    )
    titles = pc.binary_join_element_wise(
        brands, " ", pa.array(category_names), " #", pc.cast(pa.array(product_ids), pa.string()), ""
    )
    table = pa.table(
        {
            "product_id": pa.array(product_ids, pa.int64()),
            "title": titles,
            "category": pa.array(category_names),
            "brand": brands,
            "price": pa.array(price),
        }
    )
    return table, product_ids, category + within_cdf


def _build_campaigns(rng: np.random.Generator, campaigns: int, users: int, world: _World) -> pa.Table:
    n_categories = len(world.categories)
    target = rng.choice(n_categories, campaigns, replace=campaigns > n_categories)
    channel = np.array(("email", "push", "onsite"))[np.arange(campaigns) % 3]
    placement = np.where(channel == "onsite", np.array(ONSITE_PLACEMENTS)[rng.integers(0, 3, campaigns)], channel)
    # At least one campaign ended inside the window (when there are two or more); the rest run on end_ds.
    n_ended = max(1, campaigns // 6) if campaigns >= 2 else 0
    half = max(1, world.days // 2)
    start = np.empty(campaigns, dtype=object)
    end = np.empty(campaigns, dtype=object)
    for i in range(campaigns):
        if i < n_ended:
            start[i] = world.window_start - timedelta(days=int(rng.integers(0, 15)))
            end[i] = min(world.window_start + timedelta(days=int(rng.integers(0, half))), world.end - timedelta(days=1))
            end[i] = max(end[i], start[i])
        else:
            start[i] = world.window_start + timedelta(days=int(rng.integers(0, half)))
            end[i] = world.end + timedelta(days=int(rng.integers(7, 60)))
    names = [
        f"{world.categories[t].capitalize()} picks #{i + 1} ({c})" for i, (t, c) in enumerate(zip(target, channel))
    ]
    audience = np.maximum(10, np.round(users * rng.uniform(0.04, 0.10, campaigns))).astype(np.int64)
    return pa.table(
        {
            "campaign_id": [f"cmp_{i + 1:03d}" for i in range(campaigns)],
            "name": names,
            "target_category": pa.array(np.array(world.categories)[target]),
            "channel": pa.array(channel),
            "placement": pa.array(placement),
            "start_date": [d.isoformat() for d in start],
            "end_date": [d.isoformat() for d in end],
            "audience_size": pa.array(audience),
            "_target_index": pa.array(target),
        }
    )


def _build_consent(rng: np.random.Generator, world: _World) -> tuple[pa.Table, np.ndarray]:
    """Everyone opts in to 'all' at signup; ~10 % later opt out of a channel, a third of them opt back in."""
    users = len(world.user_ids)
    window_end = _epoch_seconds(world.end) + SECONDS_PER_DAY - 1
    user = [world.user_ids]
    channel = [np.full(users, "all")]
    status = [np.full(users, "opt_in")]
    seconds = [world.signup_seconds]
    changers = np.flatnonzero(rng.random(users) < 0.10)
    out_channel = np.array(("email", "push", "onsite", "all"))[rng.choice(4, len(changers), p=(0.5, 0.25, 0.1, 0.15))]
    out_seconds = (
        world.signup_seconds[changers]
        + 1
        + (rng.random(len(changers)) * (window_end - world.signup_seconds[changers] - 2)).astype(np.int64)
    )
    user.append(world.user_ids[changers])
    channel.append(out_channel)
    status.append(np.full(len(changers), "opt_out"))
    seconds.append(out_seconds)
    back = rng.random(len(changers)) < 1 / 3
    back_seconds = (
        out_seconds[back] + 1 + (rng.random(back.sum()) * (window_end - out_seconds[back] - 1)).astype(np.int64)
    )
    user.append(world.user_ids[changers][back])
    channel.append(out_channel[back])
    status.append(np.full(back.sum(), "opt_in"))
    seconds.append(back_seconds)
    all_seconds = np.concatenate(seconds)
    order = np.lexsort((all_seconds, np.concatenate(user)))
    table = pa.table(
        {
            "user_id": pa.array(np.concatenate(user)[order], pa.int64()),
            "channel": pa.array(np.concatenate(channel)[order]),
            "status": pa.array(np.concatenate(status)[order]),
            "updated_ts": _ts_strings(all_seconds[order]),
        }
    )
    return table, all_seconds[order]


def _build_events(rng: np.random.Generator, world: _World) -> tuple[pa.Table, np.ndarray]:
    """All clean events of the window, sorted by time; returns the table and each row's day index."""
    sessions_per_user = rng.poisson(world.activity * world.days)
    session_user = np.repeat(np.arange(len(world.user_ids)), sessions_per_user)
    n_sessions = len(session_user)
    session_day = rng.integers(0, world.days, n_sessions)
    session_start = rng.integers(0, SECONDS_PER_DAY - 3600, n_sessions)
    cumulative_pref = np.cumsum(world.preferences, axis=1)
    pick = rng.random(n_sessions)
    session_category = np.minimum(
        (cumulative_pref[session_user] < pick[:, None]).sum(axis=1), world.preferences.shape[1] - 1
    )
    views_per_session = np.minimum(1 + rng.poisson(2.5, n_sessions), 20)
    view_session = np.repeat(np.arange(n_sessions), views_per_session)
    n_views = len(view_session)
    view_category = session_category[view_session]
    view_product = np.searchsorted(world.popularity_cdf, view_category + rng.random(n_views), side="right")
    view_product = np.minimum(view_product, len(world.product_ids) - 1)
    gaps = rng.exponential(45.0, n_views) + 5.0
    elapsed = np.cumsum(gaps)
    first_view = np.concatenate([[0], np.cumsum(views_per_session)[:-1]])
    offset = elapsed - (elapsed[first_view] - gaps[first_view])[view_session]
    view_seconds = session_start[view_session] + offset.astype(np.int64)

    is_cart = rng.random(n_views) < CART_RATE
    is_purchase = is_cart & (rng.random(n_views) < PURCHASE_RATE)
    is_favourite = rng.random(n_views) < FAVOURITE_RATE
    cart_seconds = view_seconds + 1 + rng.exponential(30.0, n_views).astype(np.int64)
    purchase_seconds = cart_seconds + 1 + rng.exponential(60.0, n_views).astype(np.int64)
    parts = [
        (np.ones(n_views, bool), view_seconds, 0),
        (is_cart, cart_seconds, 1),
        (is_purchase, purchase_seconds, 2),
        (is_favourite, view_seconds + 2, 3),
    ]
    source_view = np.concatenate([np.flatnonzero(mask) for mask, _, _ in parts])
    second_of_day = np.minimum(np.concatenate([secs[mask] for mask, secs, _ in parts]), SECONDS_PER_DAY - 1)
    event_type = np.concatenate([np.full(mask.sum(), code, np.int8) for mask, _, code in parts])
    session = view_session[source_view]
    day = session_day[session]
    order = np.lexsort((event_type, second_of_day, day))
    source_view, second_of_day, event_type, session, day = (
        source_view[order],
        second_of_day[order],
        event_type[order],
        session[order],
        day[order],
    )
    epoch = _epoch_seconds(world.window_start) + day * SECONDS_PER_DAY + second_of_day
    table = pa.table(
        {
            "user_id": pa.array(world.user_ids[session_user[session]], pa.int64()),
            "product_id": pa.array(world.product_ids[view_product[source_view]], pa.int64()),
            "event_type": pa.array(np.array(EVENT_TYPES)[event_type]),
            "event_ts": _ts_strings(epoch),
            "session_id": _prefixed_ids("s", session + 1, 8),
        }
    )
    return table, day


def click_probability(
    world: _World, user_index: np.ndarray, target_index: np.ndarray, placement: np.ndarray, second_of_day: np.ndarray
) -> np.ndarray:
    """The true P(click) of impressions: latent category preference, placement and hour of day."""
    effect = np.array([PLACEMENT_EFFECT[p] for p in placement], dtype=float) if len(placement) else np.zeros(0)
    logit = (
        CLICK_BASE_LOGIT
        + CLICK_PREFERENCE_WEIGHT * world.preferences[user_index, target_index]
        + effect
        + HOUR_EFFECT[second_of_day // 3600]
    )
    return 1.0 / (1.0 + np.exp(-logit))


def _build_impressions(
    rng: np.random.Generator, world: _World, campaigns: pa.Table, impression_rate: float
) -> tuple[pa.Table, np.ndarray]:
    """All clean impressions, sorted by time, with their true click probability in `_p_click`."""
    users = len(world.user_ids)
    per_campaign_day = max(1, round(users * impression_rate))
    start = np.array([date.fromisoformat(d) for d in campaigns["start_date"].to_pylist()], dtype="datetime64[D]")
    end = np.array([date.fromisoformat(d) for d in campaigns["end_date"].to_pylist()], dtype="datetime64[D]")
    window_days = np.datetime64(world.window_start) + np.arange(world.days)
    active = (window_days[:, None] >= start[None, :]) & (window_days[:, None] <= end[None, :])  # days x campaigns
    day_index, campaign_index = np.nonzero(active)
    day = np.repeat(day_index, per_campaign_day)
    campaign = np.repeat(campaign_index, per_campaign_day)
    n = len(day)
    user = rng.integers(0, users, n)
    second_of_day = rng.integers(0, SECONDS_PER_DAY, n)
    placement = np.array(campaigns["placement"].to_pylist(), dtype=object)[campaign] if n else np.array([], object)
    target = campaigns["_target_index"].to_numpy()[campaign]
    p_click = click_probability(world, user, target, placement, second_of_day)
    clicked = (rng.random(n) < p_click).astype(np.int64)
    order = np.lexsort((campaign, second_of_day, day))
    epoch = _epoch_seconds(world.window_start) + day[order] * SECONDS_PER_DAY + second_of_day[order]
    table = pa.table(
        {
            "user_id": pa.array(world.user_ids[user[order]], pa.int64()),
            "campaign_id": campaigns["campaign_id"].take(pa.array(campaign[order], pa.int64())),
            "placement": pa.array(placement[order].astype(str) if n else [], pa.string()),
            "impression_ts": _ts_strings(epoch),
            "clicked": pa.array(clicked[order]),
            "_p_click": pa.array(p_click[order], pa.float64()),
        }
    )
    return table, day[order]


def _exports_frame(exports, campaigns: pa.Table, world: _World) -> dict[str, np.ndarray]:
    """Export rows (campaign_id, user_id, ds) of known campaigns and users as index arrays, sorted."""
    table = exports if isinstance(exports, pa.Table) else pa.Table.from_pandas(exports, preserve_index=False)
    campaign_ids = campaigns["campaign_id"].to_pylist()
    campaign_pos = {c: i for i, c in enumerate(campaign_ids)}
    user_pos = {int(u): i for i, u in enumerate(world.user_ids)}
    rows = [
        (campaign_pos[c], user_pos[int(u)], (date.fromisoformat(str(d)[:10]) - world.window_start).days)
        for c, u, d in zip(table["campaign_id"].to_pylist(), table["user_id"].to_pylist(), table["ds"].to_pylist())
        if c in campaign_pos and u is not None and int(u) in user_pos
    ]
    rows.sort()
    arr = np.array(rows, dtype=np.int64).reshape(-1, 3)
    return {"campaign": arr[:, 0], "user": arr[:, 1], "export_day": arr[:, 2]}


def _planted_campaign_effect(
    rng: np.random.Generator, world: _World, campaigns: pa.Table, exports, treatment_effect: float, effect_days: int
) -> tuple[pa.Table, np.ndarray, pa.Table, np.ndarray]:
    """Send impressions (next day) for every export row and, per exported pair, the planted purchase.
    Returns (impressions, their day index, events, their day index); days outside the window are dropped."""
    frame = _exports_frame(exports, campaigns, world)
    # sends: the day after each export
    send_day = frame["export_day"] + 1
    keep = (send_day >= 0) & (send_day < world.days)
    user, campaign, send_day = frame["user"][keep], frame["campaign"][keep], send_day[keep]
    second = rng.integers(0, SECONDS_PER_DAY, len(user))
    placement = np.array(campaigns["placement"].to_pylist(), dtype=object)[campaign]
    target = campaigns["_target_index"].to_numpy()[campaign]
    p_click = click_probability(world, user, target, placement, second)
    clicked = (rng.random(len(user)) < p_click).astype(np.int64)
    sends = pa.table(
        {
            "user_id": pa.array(world.user_ids[user], pa.int64()),
            "campaign_id": campaigns["campaign_id"].take(pa.array(campaign, pa.int64())),
            "placement": pa.array(placement.astype(str), pa.string()),
            "impression_ts": _ts_strings(_epoch_seconds(world.window_start) + send_day * SECONDS_PER_DAY + second),
            "clicked": pa.array(clicked),
            "_p_click": pa.array(p_click, pa.float64()),
        }
    )
    # the planted purchase: once per exported (campaign, user), counted from the pair's first export
    pair = frame["campaign"] * len(world.user_ids) + frame["user"]
    _, first = np.unique(pair, return_index=True)  # rows are sorted by (campaign, user, day): first export
    p_user, p_campaign = frame["user"][first], frame["campaign"][first]
    buys = rng.random(len(first)) < treatment_effect
    buy_day = frame["export_day"][first] + rng.integers(1, max(1, effect_days) + 1, len(first))
    keep = buys & (buy_day >= 0) & (buy_day < world.days)
    p_user, p_campaign, buy_day = p_user[keep], p_campaign[keep], buy_day[keep]
    category = campaigns["_target_index"].to_numpy()[p_campaign]
    product = np.searchsorted(world.popularity_cdf, category + rng.random(len(p_user)), side="right")
    product = np.minimum(product, len(world.product_ids) - 1)
    start = rng.integers(0, SECONDS_PER_DAY - 600, len(p_user))
    sessions = _prefixed_ids("t", np.arange(1, len(p_user) + 1), 8)
    steps = [("view", 0), ("cart", 60), ("purchase", 120)]
    events = pa.concat_tables(
        [
            pa.table(
                {
                    "user_id": pa.array(world.user_ids[p_user], pa.int64()),
                    "product_id": pa.array(world.product_ids[product], pa.int64()),
                    "event_type": pa.array([kind] * len(p_user), pa.string()),
                    "event_ts": _ts_strings(
                        _epoch_seconds(world.window_start) + buy_day * SECONDS_PER_DAY + start + offset
                    ),
                    "session_id": sessions,
                }
            )
            for kind, offset in steps
        ]
    )
    event_day = np.tile(buy_day, len(steps))
    order_i, order_e = np.argsort(send_day, kind="stable"), np.argsort(event_day, kind="stable")
    return (sends.take(pa.array(order_i)), send_day[order_i], events.take(pa.array(order_e)), event_day[order_e])


def _as_strings(table: pa.Table) -> pa.Table:
    """Dirty rows need text where the contract wants numbers or timestamps, so day files are written as text."""
    return pa.table({name: pc.cast(table[name], pa.string()) for name in table.column_names})


def _with_dirt(
    rng: np.random.Generator, clean: pa.Table, kinds: tuple[str, ...], total: int, make_row_dirty
) -> tuple[pa.Table, dict[str, int]]:
    """Add `total` dirty rows, each a copy of a random clean row with one defect (duplicates verbatim,
    placed right after their original, so 'first delivered wins' keeps the clean row)."""
    n_clean = clean.num_rows
    if not total or n_clean == 0:
        return clean, {kind: 0 for kind in kinds}
    counts = _split_counts(rng, total, kinds)
    text = _as_strings(clean)
    pieces, positions = [text], [np.arange(n_clean, dtype=float)]
    serial = 0
    for kind in kinds:
        if not counts[kind]:
            continue
        source = rng.integers(0, n_clean, counts[kind])
        rows = text.take(pa.array(source))
        if kind != "duplicate":
            rows = make_row_dirty(kind, rows, rng, np.arange(serial, serial + len(source)))
            serial += len(source)
            positions.append(rng.uniform(0, n_clean, len(source)))
        else:
            positions.append(source + 0.5)
        pieces.append(rows)
    order = np.argsort(np.concatenate(positions), kind="stable")
    return pa.concat_tables(pieces).take(pa.array(order)), counts


def _set(rows: pa.Table, column: str, values) -> pa.Table:
    return rows.set_column(rows.column_names.index(column), column, pa.array(values, pa.string()))


def _choose(rng: np.random.Generator, options: tuple[str, ...], n: int) -> list[str]:
    return [options[i] for i in rng.integers(0, len(options), n)]


def _dirty_behaviour(id_column: str, ts_column: str, unknown_ref: str, enum_column: str, invalid_values):
    def make_row_dirty(kind: str, rows: pa.Table, rng: np.random.Generator, serial: np.ndarray) -> pa.Table:
        n = rows.num_rows
        # A fresh id per dirty row: each row breaks exactly one rule, never the key rule.
        rows = _set(
            rows, id_column, pc.binary_join_element_wise(rows[id_column], pa.array([f"-x{s}" for s in serial]), "")
        )
        if kind == "null_user_id":
            return _set(rows, "user_id", [None] * n)
        if kind == "malformed_ts":
            return _set(rows, ts_column, _choose(rng, MALFORMED_TIMESTAMPS, n))
        if kind == "unknown_product_id":
            return _set(rows, unknown_ref, [str(UNKNOWN_ID_BASE + s) for s in serial])
        if kind == "unknown_campaign_id":
            return _set(rows, unknown_ref, [f"cmp_unknown_{s}" for s in serial])
        if kind.startswith("invalid_"):
            return _set(rows, enum_column, _choose(rng, invalid_values, n))
        raise ValueError(f"unknown dirt kind {kind!r}")

    return make_row_dirty


def _dirty_users(kind, rows, rng, serial):
    fresh = [str(UNKNOWN_ID_BASE + s) for s in serial]  # ids no event references
    if kind == "null_user_id":
        return _set(_set(rows, "user_id", [None] * rows.num_rows), "email", [f"orphan{s}@example.com" for s in serial])
    if kind == "malformed_signup_date":
        rows = _set(_set(rows, "user_id", fresh), "email", [f"late{s}@example.com" for s in serial])
        return _set(rows, "signup_date", _choose(rng, ("2026-02-30", "soon", "20260101"), rows.num_rows))
    raise ValueError(f"unknown dirt kind {kind!r}")


def _dirty_products(kind, rows, rng, serial):
    if kind == "non_positive_price":
        rows = _set(rows, "product_id", [str(UNKNOWN_ID_BASE + s) for s in serial])
        return _set(rows, "price", _choose(rng, ("0", "-9.99", "-1"), rows.num_rows))
    raise ValueError(f"unknown dirt kind {kind!r}")


def _snapshot_dirt_total(dirty_rate: float, n_rows: int, kinds: tuple[str, ...]) -> int:
    """Snapshots get only a few dirty rows: a tenth of the rate, at least one per kind."""
    return max(1, round(dirty_rate * n_rows / 10)) * len(kinds) if dirty_rate > 0 else 0


def _csv_bytes(table: pa.Table, source: str) -> bytes:
    table = table.select(SOURCES[source].column_names)
    sink = pa.BufferOutputStream()
    pacsv.write_csv(table, sink, pacsv.WriteOptions(quoting_style="none", quoting_header="none", batch_size=1 << 16))
    return sink.getvalue().to_pybytes()


def _write(raw_root: Path, source: str, ds: str, payload: bytes) -> None:
    path = raw_root / SOURCES[source].relative_path(ds)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)


def _write_truth(truth_root: Path, ds: str, truth: pa.Table) -> None:
    path = truth_root / "impressions" / f"ds={ds}" / "impression_truth.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    sink = pa.BufferOutputStream()
    pacsv.write_csv(truth, sink)
    path.write_bytes(sink.getvalue().to_pybytes())


def generate(
    raw_root: Path,
    end_ds: str | date,
    *,
    users: int = 5000,
    items: int = 800,
    days: int = 30,
    campaigns: int = 6,
    dirty_rate: float = 0.02,
    seed: int = 42,
    impression_rate: float = DAILY_IMPRESSIONS_PER_USER_PER_CAMPAIGN,
    truth_root: Path | None = None,
    exports=None,
    treatment_effect: float = 0.0,
    effect_days: int = 7,
) -> dict:
    """Write every source for each day of the `days`-day window ending at `end_ds`; return the summary.

    impression_rate: impressions per user per active campaign per day. truth_root: where the true click
    probabilities go (not written when None). exports: a table (pyarrow or pandas) of exported audience
    rows (campaign_id, user_id, ds) that receive sends and the planted `treatment_effect` (module docstring).

    Summary: `rows` (rows in the files a run for end_ds with history_days=days reads: each snapshot
    of end_ds plus every increment day), `rows_written` (all files), `dirty` (planted dirty rows per
    source and kind, same scope as `rows`) and `dirty_by_ds` (per increment day).
    """
    try:
        end = end_ds if isinstance(end_ds, date) else date.fromisoformat(end_ds)
    except ValueError:
        raise ValueError(f"end_ds must be a date YYYY-MM-DD, got {end_ds!r}") from None
    for name, value, minimum in (
        ("users", users, 1),
        ("items", items, 1),
        ("days", days, 1),
        ("campaigns", campaigns, 1),
    ):
        if value < minimum:
            raise ValueError(f"{name} must be >= {minimum}, got {value}")
    if not 0 <= dirty_rate <= 0.5:
        raise ValueError(f"dirty_rate must be between 0 and 0.5, got {dirty_rate}")
    if not 0 <= treatment_effect <= 1 or impression_rate <= 0 or effect_days < 1:
        raise ValueError(
            "treatment_effect must be within [0, 1], impression_rate > 0 and effect_days >= 1, got "
            f"{treatment_effect}, {impression_rate}, {effect_days}"
        )
    raw_root = Path(raw_root)
    window_start = end - timedelta(days=days - 1)
    categories = CATEGORIES[: min(len(CATEGORIES), items)]

    user_table, preferences, activity, signup_seconds = _build_users(
        _rng(seed, "users"), users, len(categories), window_start
    )
    product_table, product_ids, popularity_cdf = _build_products(_rng(seed, "products"), items, categories)
    world = _World(
        window_start,
        end,
        days,
        user_table["user_id"].to_numpy(),
        preferences,
        activity,
        signup_seconds,
        product_ids,
        popularity_cdf,
        categories,
    )
    campaign_table = _build_campaigns(_rng(seed, "campaigns"), campaigns, users, world)
    consent_table, consent_seconds = _build_consent(_rng(seed, "consent"), world)
    event_table, event_day = _build_events(_rng(seed, "events"), world)
    impression_table, impression_day = _build_impressions(
        _rng(seed, "impressions"), world, campaign_table, impression_rate
    )
    planted = {"events": None, "impressions": None}
    if exports is not None and len(exports):
        sends, send_day, bought, bought_day = _planted_campaign_effect(
            _rng(seed, "treatment"), world, campaign_table, exports, treatment_effect, effect_days
        )
        planted = {"events": (bought, bought_day, "t"), "impressions": (sends, send_day, "t")}

    dirt_rng = _rng(seed, "dirt")
    user_table, user_dirt = _with_dirt(
        dirt_rng, user_table, USER_DIRT, _snapshot_dirt_total(dirty_rate, users, USER_DIRT), _dirty_users
    )
    product_table, product_dirt = _with_dirt(
        dirt_rng, product_table, PRODUCT_DIRT, _snapshot_dirt_total(dirty_rate, items, PRODUCT_DIRT), _dirty_products
    )
    snapshot_payloads = {
        "users": _csv_bytes(user_table, "users"),
        "products": _csv_bytes(product_table, "products"),
        "campaigns": _csv_bytes(campaign_table, "campaigns"),
    }
    summary = {
        "raw_root": str(raw_root),
        "start_ds": window_start.isoformat(),
        "end_ds": end.isoformat(),
        "days": days,
        "seed": seed,
        "dirty_rate": dirty_rate,
        "rows": {name: 0 for name in GENERATED_SOURCES},
        "rows_written": {name: 0 for name in GENERATED_SOURCES},
        "dirty": {
            "users": user_dirt,
            "products": product_dirt,
            "campaigns": {},
            "consent": {},
            "events": {kind: 0 for kind in EVENT_DIRT},
            "impressions": {kind: 0 for kind in IMPRESSION_DIRT},
        },
        "dirty_by_ds": {"events": {}, "impressions": {}},
        "planted": {
            "treatment_effect": treatment_effect,
            "effect_days": effect_days,
            "send_impressions": 0,
            "planted_purchases": 0,
        },
    }
    snapshot_rows = {
        "users": user_table.num_rows,
        "products": product_table.num_rows,
        "campaigns": campaign_table.num_rows,
    }

    increments = {
        "events": (
            event_table,
            event_day,
            "event_id",
            "e",
            EVENT_DIRT,
            _dirty_behaviour("event_id", "event_ts", "product_id", "event_type", INVALID_EVENT_TYPES),
        ),
        "impressions": (
            impression_table,
            impression_day,
            "impression_id",
            "i",
            IMPRESSION_DIRT,
            _dirty_behaviour("impression_id", "impression_ts", "campaign_id", "placement", INVALID_PLACEMENTS),
        ),
    }
    event_bounds = {
        name: np.searchsorted(day_of_row, np.arange(days + 1)) for name, (_, day_of_row, *_) in increments.items()
    }
    for offset in range(days):
        day = window_start + timedelta(days=offset)
        ds = day.isoformat()
        for source, payload in snapshot_payloads.items():
            _write(raw_root, source, ds, payload)
            summary["rows_written"][source] += snapshot_rows[source]
        visible = consent_seconds < _epoch_seconds(day) + SECONDS_PER_DAY  # a snapshot holds no future changes
        consent_today = consent_table.filter(pa.array(visible))
        _write(raw_root, "consent", ds, _csv_bytes(consent_today, "consent"))
        summary["rows_written"]["consent"] += consent_today.num_rows
        if day == end:
            summary["rows"].update(snapshot_rows, consent=consent_today.num_rows)

        for source, (table, _, id_column, prefix, kinds, make_dirty) in increments.items():
            lo, hi = event_bounds[source][offset], event_bounds[source][offset + 1]
            today = table.slice(lo, hi - lo)
            ids = _prefixed_ids(f"{prefix}{day:%Y%m%d}-", np.arange(1, today.num_rows + 1), 7)
            today = today.add_column(0, id_column, ids)
            truth = today.select([id_column, "_p_click"]) if "_p_click" in today.column_names else None
            today, dirt = _with_dirt(dirt_rng, today, kinds, round(dirty_rate * today.num_rows), make_dirty)
            if planted[source] is not None:
                # after the base and dirty rows, with their own ids, so those rows stay exactly the same
                extra_table, extra_day, extra_prefix = planted[source]
                lo_x, hi_x = np.searchsorted(extra_day, [offset, offset + 1])
                extra = extra_table.slice(lo_x, hi_x - lo_x)
                extra = extra.add_column(
                    0,
                    id_column,
                    _prefixed_ids(f"{prefix}{day:%Y%m%d}-{extra_prefix}", np.arange(1, extra.num_rows + 1), 7),
                )
                if truth is not None:
                    truth = pa.concat_tables([truth, extra.select([id_column, "_p_click"])])
                key = "send_impressions" if source == "impressions" else "planted_purchases"
                summary["planted"][key] += extra.num_rows if source == "impressions" else extra.num_rows // 3
                columns = list(today.select([c for c in today.column_names if not c.startswith("_")]).column_names)
                today = pa.concat_tables([_as_strings(today.select(columns)), _as_strings(extra.select(columns))])
            if truth is not None and truth_root is not None:
                _write_truth(Path(truth_root), ds, truth.rename_columns(["impression_id", "p_click"]))
            _write(raw_root, source, ds, _csv_bytes(today, source))
            summary["rows_written"][source] += today.num_rows
            summary["rows"][source] += today.num_rows
            summary["dirty_by_ds"][source][ds] = dirt
            for kind, count in dirt.items():
                summary["dirty"][source][kind] += count
    return summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m precision_marketing.datagen", description=__doc__.split("\n")[0])
    parser.add_argument("--raw-root", required=True, type=Path, help="folder to write <source>/ds=YYYY-MM-DD/ into")
    parser.add_argument("--ds", required=True, help="last day of the window, YYYY-MM-DD")
    parser.add_argument("--users", type=int, default=5000)
    parser.add_argument("--items", type=int, default=800)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--campaigns", type=int, default=6)
    parser.add_argument("--dirty-rate", type=float, default=0.02)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)
    try:
        summary = generate(
            args.raw_root,
            args.ds,
            users=args.users,
            items=args.items,
            days=args.days,
            campaigns=args.campaigns,
            dirty_rate=args.dirty_rate,
            seed=args.seed,
        )
    except ValueError as error:
        print(f"datagen: {error}", file=sys.stderr)
        return 2
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
