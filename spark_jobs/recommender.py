"""The recommendation decisions on the driver, in numpy: time splits sized by evidence, every candidate's
validation score, intervals, the gate; and the in-process engine (`implicit` ALS, item-CF, recent popularity).

Everything here works on one driver-side copy of the interactions (`Log`): all of them when they fit the
driver, a sample of users otherwise (the Spark job decides; see als_recommendations.py). Models come in as
*scorers*: a function from a block of user indices to a dense block of scores (users x items). The engine that
fitted them (`implicit` in this process, or Spark MLlib on a cluster) does not matter past that point, so the
candidates, the evaluation, the history threshold and the gate are one code path for both engines.

Protocol (documented in the README, "Recommendations"):
- **Holdout sized by evidence.** Each user's latest share of active hours (`latest_per_user`: every user
  active in two or more hours is evaluated), or the end of the data (`evidence_cutoff`): at least `holdout`
  long, grown (doubling) until it holds `min_eval_users` users with something new to find, or
  `min_eval_share` of the active users, whichever is fewer, never more than half the span.
- **Validation folds.** Tuning carves one fold per protocol from the training part (never the holdout) and
  scores every candidate on each, in units of the fold's best non-personalised ranking, averaged: lists are
  read by people coming back for their next items and by people shopping in the next days.
- **Candidates.** Non-personalised rankings (all-time popularity, popularity over recent windows and with
  exponential decay, each user's categories weighted by one of them), ALS over (alpha, reg, rank, weight
  transform), item-CF over neighbours, each collaborative model blended with the best recent popularity at
  several weights, and the best ALS and item-CF blended together.
- **Intervals.** Each holdout metric is a mean over users with a percentile bootstrap interval; model against
  baseline is a *paired* bootstrap over the same users (the difference per user, resampled).
- **Gate.** The served lists fall back only when their difference to the best non-personalised ranking is
  below zero with confidence (the whole interval below zero).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Mapping

import numpy as np
import pandas as pd
from scipy import sparse

METRICS = ("precision", "recall", "ndcg", "map")
ACTIVITY_NAMES = ("cold", "light", "heavy")
HOURS_PER_DAY = 24
# recency windows and half-lives tried for the popularity rankings: days that shops think in, and fractions of
# the data's span so data of a few hours or of years gets windows of its own scale
RECENCY_DAYS = (1, 3, 7, 14, 30, 90)
RECENCY_SPAN_FRACTIONS = (1 / 64, 1 / 16, 1 / 4)
BLEND_SHARES = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)  # weight of recent popularity relative to the model's typical top score
SCORE_BLOCK_FLOATS = 1 << 23  # users x items floats per scoring block (32 MB)


# ------------------------------------------------------------------------------------------------ data
@dataclasses.dataclass
class Log:
    """Interactions at hour grain with users and items as indices. Index spaces are fixed for a job (every
    known user and catalogue item), so splits of one log share them."""

    user: np.ndarray  # (rows,) int32
    item: np.ndarray  # (rows,) int32
    hour: np.ndarray  # (rows,) int64 hours since the epoch
    weight: np.ndarray  # (rows,) float32
    purchases: np.ndarray  # (rows,) int32
    user_ids: np.ndarray  # (n_users,) int64
    item_ids: np.ndarray  # (n_items,) int64
    category: np.ndarray  # (n_items,) int32, -1 = unknown
    n_categories: int
    served: np.ndarray | None = None  # (n_users,) bool: the users to serve (user_features); None = all

    @property
    def n_users(self) -> int:
        return len(self.user_ids)

    @property
    def n_items(self) -> int:
        return len(self.item_ids)

    @property
    def n_rows(self) -> int:
        return len(self.user)

    def bounds(self) -> tuple[int, int]:
        """[first hour, last hour + 1)."""
        return int(self.hour.min()), int(self.hour.max()) + 1

    def select(self, mask: np.ndarray) -> Log:
        return dataclasses.replace(
            self,
            user=self.user[mask],
            item=self.item[mask],
            hour=self.hour[mask],
            weight=self.weight[mask],
            purchases=self.purchases[mask],
        )

    @classmethod
    def from_frames(
        cls, interactions: pd.DataFrame, users: Iterable[int] = (), item_categories: pd.DataFrame | None = None
    ) -> Log:
        """`interactions`: user_id, product_id, event_hour, weight, n_purchases; `users`: every user to serve;
        `item_categories`: product_id, category (the catalogue)."""
        catalogue = (
            item_categories
            if item_categories is not None
            else pd.DataFrame({"product_id": np.empty(0, np.int64), "category": pd.Series([], dtype=object)})
        )
        listed = np.asarray(list(users), np.int64)
        user_ids = np.unique(np.concatenate([interactions["user_id"].to_numpy(np.int64), listed]))
        item_ids = np.unique(
            np.concatenate([interactions["product_id"].to_numpy(np.int64), catalogue["product_id"].to_numpy(np.int64)])
        )
        categories = catalogue.drop_duplicates("product_id").set_index("product_id")["category"]
        names = sorted(c for c in categories.dropna().unique())
        code = {name: i for i, name in enumerate(names)}
        category = categories.reindex(item_ids).map(lambda c: code.get(c, -1) if isinstance(c, str) else -1)
        hours = pd.to_datetime(interactions["event_hour"]).to_numpy("datetime64[h]").astype(np.int64)
        return cls(
            user=np.searchsorted(user_ids, interactions["user_id"].to_numpy(np.int64)).astype(np.int32),
            item=np.searchsorted(item_ids, interactions["product_id"].to_numpy(np.int64)).astype(np.int32),
            hour=hours,
            weight=interactions["weight"].to_numpy(np.float32),
            purchases=interactions["n_purchases"].to_numpy(np.int32),
            user_ids=user_ids,
            item_ids=item_ids,
            category=category.to_numpy(np.int32),
            n_categories=len(names),
            served=np.isin(user_ids, listed) if len(listed) else None,
        )


@dataclasses.dataclass
class Train:
    """One training period, one entry per (user, item): summed weight, purchased, last hour seen."""

    log: Log
    end: int  # first hour after the period (recency is measured from here)
    pair_user: np.ndarray
    pair_item: np.ndarray
    pair_weight: np.ndarray  # float32
    pair_last: np.ndarray  # int64 hour
    matrix: sparse.csr_matrix  # users x items summed weight
    purchased: sparse.csr_matrix  # users x items, 1 where bought

    @property
    def n_pairs(self) -> int:
        return len(self.pair_user)

    @property
    def n_history(self) -> np.ndarray:
        return np.diff(self.matrix.indptr)

    @property
    def span_hours(self) -> int:
        return max(1, self.end - int(self.pair_last.min())) if self.n_pairs else 1

    @classmethod
    def build(cls, log: Log, end: int | None = None) -> Train:
        end = log.bounds()[1] if end is None else end
        n_items = log.n_items
        key = log.user.astype(np.int64) * n_items + log.item
        order = np.argsort(key, kind="stable")
        key = key[order]
        starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]]) if len(key) else np.empty(0, np.int64)
        unique = key[starts]
        weight = np.add.reduceat(log.weight[order], starts) if len(key) else np.empty(0, np.float32)
        bought = np.add.reduceat(log.purchases[order], starts) > 0 if len(key) else np.empty(0, bool)
        last = np.maximum.reduceat(log.hour[order], starts) if len(key) else np.empty(0, np.int64)
        users, items = (unique // n_items).astype(np.int32), (unique % n_items).astype(np.int32)
        shape = (log.n_users, n_items)
        matrix = sparse.csr_matrix((weight.astype(np.float32), (users, items)), shape=shape)
        purchased = sparse.csr_matrix(
            (np.ones(int(bought.sum()), np.float32), (users[bought], items[bought])), shape=shape
        )
        return cls(log, end, users, items, weight.astype(np.float32), last, matrix, purchased)

    # -- non-personalised rankings (one score per item)
    def popularity(self, params: Mapping) -> np.ndarray:
        """Users per item, all time (`{}`), within the last `window_hours`, or each user weighted by
        0.5 ** (age / `half_life_hours`) of their last interaction with the item."""
        age = (self.end - 1 - self.pair_last).astype(np.float64)
        if "window_hours" in params:
            weights = (age < float(params["window_hours"])).astype(np.float64)
        elif "half_life_hours" in params:
            weights = np.exp2(-age / float(params["half_life_hours"]))
        else:
            weights = None
        scores = np.bincount(self.pair_item, weights=weights, minlength=self.log.n_items).astype(np.float64)
        # ties (and items nobody touched in the window) ordered by all-time popularity
        overall = np.bincount(self.pair_item, minlength=self.log.n_items).astype(np.float64)
        return (scores + 1e-9 * overall / max(overall.max(initial=0), 1)).astype(np.float32)

    def popularity_variants(self) -> list[dict]:
        """All-time, windows and half-lives (hours) shorter than the training span, no two alike."""
        span = self.span_hours
        lengths = sorted(
            {round(d * HOURS_PER_DAY) for d in RECENCY_DAYS} | {max(1, round(f * span)) for f in RECENCY_SPAN_FRACTIONS}
        )
        lengths = [h for h in lengths if 1 <= h < span]
        return [{}] + [{"window_hours": h} for h in lengths] + [{"half_life_hours": h} for h in lengths]


def relevant_matrix(train: Train, test: Log) -> sparse.csr_matrix:
    """Users x items, 1 where the user interacted with the item in `test` and had not bought it in `train`
    (bought items are never recommended, so they cannot be found)."""
    shape = (train.log.n_users, train.log.n_items)
    seen = sparse.csr_matrix((np.ones(test.n_rows, np.float32), (test.user, test.item)), shape=shape)
    seen.data[:] = 1
    relevant = (seen - seen.multiply(train.purchased)).tocsr()
    relevant.eliminate_zeros()
    return relevant


# ------------------------------------------------------------------------------------------------ splits
def parse_holdout(spec: str | int) -> tuple[str, float]:
    """'7d' -> ('hours', 168), '36h' -> ('hours', 36), '20%' -> ('share', 0.2); a bare number means days."""
    text = str(spec).strip().lower()
    try:
        if text.endswith("%"):
            share = float(text[:-1]) / 100
            if 0 < share < 1:
                return "share", share
        elif text.endswith("h"):
            return "hours", float(text[:-1])
        elif text.endswith("d"):
            return "hours", 24 * float(text[:-1])
        else:
            return "hours", 24 * float(text)
    except ValueError:
        pass
    raise ValueError(f"holdout must look like '7d', '36h' or '20%', got {spec!r}")


@dataclasses.dataclass(frozen=True)
class SplitRule:
    holdout: str = "7d"
    min_eval_users: int = 1000
    min_eval_share: float = 0.2
    max_share: float = 0.5

    def needed_users(self, n_active: int) -> int:
        return max(1, min(self.min_eval_users, math.ceil(self.min_eval_share * n_active)))


def evidence_cutoff(log: Log, rule: SplitRule) -> tuple[int | None, dict]:
    """The first hour of the held-out end of `log`: the configured holdout, doubled until it holds enough
    users with a relevant item (see SplitRule), at most max_share of the span. (None, record) when the data
    cannot be split (a single hour, or a holdout of 0)."""
    start, end = log.bounds()
    span = end - start
    kind, value = parse_holdout(rule.holdout)
    hours = value * span if kind == "share" else value
    record = {"requested": str(rule.holdout), "span_hours": span}
    if hours <= 0 or span < 2:
        return None, {**record, "rule": "no holdout" if hours <= 0 else f"no split: the data spans {span} h"}
    n_active = len(np.unique(log.user))
    needed = rule.needed_users(n_active)
    longest = max(1, math.floor(rule.max_share * span))
    hours = min(max(1, math.ceil(hours)), longest)
    while True:
        cutoff = end - hours
        n_users = _users_with_relevant(log, cutoff)
        if n_users >= needed or hours >= longest:
            break
        hours = min(longest, hours * 2)
    requested = max(1, math.ceil(value * span if kind == "share" else value))
    if hours < requested:
        grown = f", the requested {rule.holdout} cut to {rule.max_share:.0%} of the span"
    elif hours > requested:
        grown = (
            f", grown from {rule.holdout} to reach {needed} users"
            if n_users >= needed
            else f", grown to {rule.max_share:.0%} of the span: fewer than {needed} users"
        )
    else:
        grown = ""
    record.update(
        hours=hours,
        cutoff_hour=cutoff,
        n_users=n_users,
        needed_users=needed,
        n_active_users=n_active,
        rule=f"last {_duration(hours)} of {_duration(span)}{grown}",
    )
    return cutoff, record


def latest_per_user(log: Log, share: float = 0.2, min_hours: int = 2) -> np.ndarray:
    """Rows to hold out: each user's latest `share` of their active hours (at least one hour), for users
    active in at least `min_hours` distinct hours; the rest stays for training."""
    key = log.user.astype(np.int64) << 32 | (log.hour - log.hour.min())
    unique_key = np.unique(key)
    users = (unique_key >> 32).astype(np.int64)
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]])
    counts = np.diff(np.r_[starts, len(users)])
    held_count = np.where(counts >= min_hours, np.maximum(1, np.floor(share * counts)).astype(np.int64), 0)
    position = np.arange(len(users)) - np.repeat(starts, counts)
    held_key = unique_key[position >= np.repeat(counts - held_count, counts)]
    return np.isin(key, held_key)


def _users_with_relevant(log: Log, cutoff: int) -> int:
    """Users with an item after `cutoff` they had not bought before it (relevant_matrix without a Train)."""
    before = log.hour < cutoff
    key = log.user.astype(np.int64) * log.n_items + log.item
    bought = np.unique(key[before & (log.purchases > 0)])
    after = np.unique(key[~before])
    return len(np.unique(after[~np.isin(after, bought)] // log.n_items))


def _duration(hours: float) -> str:
    return f"{hours / 24:g} d" if hours >= 48 and hours % 24 == 0 else f"{hours:g} h"


# ------------------------------------------------------------------------------------------------ evaluation
@dataclasses.dataclass
class EvalSet:
    """The users of a test period with something to find, sampled to max_users, with their history length."""

    users: np.ndarray  # user indices, sorted
    relevant: sparse.csr_matrix  # len(users) x items
    n_history: np.ndarray
    n_relevant_users: int

    @property
    def n_users(self) -> int:
        return len(self.users)

    def activity(self, heavy_min_items: int) -> np.ndarray:
        return np.where(self.n_history == 0, 0, np.where(self.n_history < heavy_min_items, 1, 2))


def eval_set(train: Train, test: Log, *, max_users: int, seed: int) -> EvalSet:
    relevant = relevant_matrix(train, test)
    users = np.flatnonzero(np.diff(relevant.indptr) > 0)
    n_relevant = len(users)
    if len(users) > max_users:
        users = np.sort(np.random.default_rng(seed).choice(users, max_users, replace=False))
    return EvalSet(users, relevant[users], train.n_history[users], n_relevant)


def contains(matrix: sparse.csr_matrix, items: np.ndarray) -> np.ndarray:
    """items (rows x n, item indices, -1 = none) -> whether each is stored in that row of `matrix`."""
    n_rows, n_items = matrix.shape
    coo = matrix.tocoo()
    keys = np.sort(coo.row.astype(np.int64) * n_items + coo.col)
    wanted = np.arange(n_rows, dtype=np.int64)[:, None] * n_items + np.where(items >= 0, items, 0)
    if not len(keys):
        return np.zeros(items.shape, bool)
    position = np.minimum(np.searchsorted(keys, wanted), len(keys) - 1)
    return (keys[position] == wanted) & (items >= 0)


def metrics_per_user(lists: np.ndarray, relevant: sparse.csr_matrix, k: int) -> dict[str, np.ndarray]:
    """precision / recall / NDCG / MAP @k per user (rows of `lists`, item indices best first, -1 = empty),
    binary relevance, the definitions of Spark's RankingEvaluator (the tests check against it):
    precision = hits / k; recall = hits / |relevant|; NDCG = sum over hit positions i of 1/log2(i + 2), over the
    same sum for the first min(k, |relevant|) positions; MAP = sum over hit positions of (hits so far)/(i + 1),
    over min(k, |relevant|)."""
    hits = contains(relevant, lists[:, :k]).astype(np.float64)
    if hits.shape[1] < k:
        hits = np.pad(hits, ((0, 0), (0, k - hits.shape[1])))
    n_relevant = np.diff(relevant.indptr).astype(np.float64)
    ideal_n = np.minimum(k, n_relevant)
    discount = 1 / np.log2(np.arange(k) + 2)
    ideal = np.cumsum(discount)[np.maximum(ideal_n.astype(int) - 1, 0)]
    cumulative = np.cumsum(hits, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return {
            "precision": hits.sum(axis=1) / k,
            "recall": np.where(n_relevant > 0, hits.sum(axis=1) / n_relevant, 0.0),
            "ndcg": np.where(ideal_n > 0, (hits * discount).sum(axis=1) / ideal, 0.0),
            "map": np.where(ideal_n > 0, (hits * cumulative / np.arange(1, k + 1)).sum(axis=1) / ideal_n, 0.0),
        }


def bootstrap_indices(n: int, n_resamples: int, seed: int) -> Iterable[np.ndarray]:
    rng = np.random.default_rng(seed)
    chunk = max(1, min(n_resamples, 4_000_000 // max(n, 1)))
    done = 0
    while done < n_resamples:
        size = min(chunk, n_resamples - done)
        yield rng.integers(0, n, (size, n))
        done += size


def mean_interval(values: np.ndarray, *, confidence: float = 0.95, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Mean with a percentile bootstrap interval (resampling users)."""
    n = len(values)
    if n == 0:
        return {"n_users": 0, "mean": None, "low": None, "high": None}
    means = np.concatenate([values[index].mean(axis=1) for index in bootstrap_indices(n, n_resamples, seed)])
    tail = (1 - confidence) / 2 * 100
    return {
        "n_users": n,
        "mean": float(values.mean()),
        "low": float(np.percentile(means, tail)),
        "high": float(np.percentile(means, 100 - tail)),
    }


def paired_difference(a: np.ndarray, b: np.ndarray, **kwargs) -> dict:
    """mean(a - b) over the same users with a paired bootstrap interval."""
    return mean_interval(np.asarray(a, np.float64) - np.asarray(b, np.float64), **kwargs)


# ------------------------------------------------------------------------------------------------ scoring
Scorer = Callable[[np.ndarray], np.ndarray]  # user indices -> (len, n_items) float32 scores


class PopularityScorer:
    """One score per item for every user: top_lists ranks it once and only skips each user's purchases."""

    def __init__(self, scores: np.ndarray):
        self.vector = scores.astype(np.float32)

    def __call__(self, users: np.ndarray) -> np.ndarray:
        return np.repeat(self.vector[None, :], len(users), axis=0)


def popularity_scorer(scores: np.ndarray) -> Scorer:
    return PopularityScorer(scores)


def _top_of_one_ranking(
    vector: np.ndarray, train: Train, users: np.ndarray, k: int, floor: float
) -> tuple[np.ndarray, np.ndarray]:
    """top_lists for a ranking shared by all users: the first k + (most purchases of a user) items of the
    ranking, minus each user's purchases, cut to k (same result, ties by lower item index)."""
    bought = train.purchased[users]
    depth = min(len(vector), k + int(np.diff(bought.indptr).max(initial=0)))
    order = np.lexsort((np.arange(len(vector)), -vector))[:depth]
    candidates = np.broadcast_to(order, (len(users), depth))
    allowed = ~contains(bought, candidates) & (vector[candidates] > floor)
    rank = np.cumsum(allowed, axis=1)
    keep = allowed & (rank <= k)
    items = np.full((len(users), k), -1, np.int64)
    scores = np.full((len(users), k), -np.inf, np.float32)
    rows, cols = np.nonzero(keep)
    items[rows, rank[rows, cols] - 1] = candidates[rows, cols]
    scores[rows, rank[rows, cols] - 1] = vector[candidates[rows, cols]]
    return items, scores


def category_scorer(train: Train, popularity: np.ndarray, top_categories: int = 3) -> Scorer:
    """A user's top categories (by history weight, their shares) x the item's popularity: the category fallback
    of the top-K engine (topk.TopK.category_tier), items outside the user's top categories at 0."""
    log = train.log
    n_cat = log.n_categories
    category = np.where(log.category >= 0, log.category, n_cat)

    def score(users: np.ndarray) -> np.ndarray:
        history = train.matrix[users].tocoo()
        affinity = np.zeros((len(users), n_cat + 1), np.float32)
        known = log.category[history.col] >= 0
        np.add.at(affinity, (history.row[known], log.category[history.col[known]]), history.data[known])
        if top_categories < n_cat:
            cut = -np.sort(-affinity[:, :n_cat], axis=1)[:, top_categories - 1 : top_categories]
            affinity[:, :n_cat][affinity[:, :n_cat] < cut] = 0
        totals = affinity.sum(axis=1, keepdims=True)
        np.divide(affinity, totals, out=affinity, where=totals > 0)
        return affinity[:, category] * popularity[None, :].astype(np.float32)

    return score


def factor_scorer(user_factors: np.ndarray, item_factors: np.ndarray) -> Scorer:
    return lambda users: user_factors[users] @ item_factors.T


def cf_scorer(train: Train, similarity: sparse.csr_matrix) -> Scorer:
    """A user's scores = log(1 + weight) of their history x item-item similarities (topk.TopK.cf_values)."""

    def score(users: np.ndarray) -> np.ndarray:
        history = train.matrix[users].astype(np.float32)
        history.data = np.log1p(history.data)
        return (history @ similarity).toarray().astype(np.float32)

    return score


def scaled(scores: np.ndarray) -> np.ndarray:
    """Each user's scores divided by their best positive score (topk._scaled, per row)."""
    best = scores.max(axis=1, keepdims=True)
    return scores / np.where(best > 0, best, 1)


def blend_scorer(parts: list[tuple[float, Scorer]]) -> Scorer:
    """w1 * scaled(scorer1) + w2 * scaled(scorer2) + ..."""

    def score(users: np.ndarray) -> np.ndarray:
        total = None
        for weight, scorer in parts:
            part = weight * scaled(scorer(users))
            total = part if total is None else total + part
        return total.astype(np.float32)

    return score


def with_popularity(scorer: Scorer, popularity: np.ndarray, weight: float) -> Scorer:
    """The model's raw scores + weight x popularity scaled to a best of 1: the blend the top-K engine serves
    (ServePolicy.popularity_weight), so what is evaluated is what is published."""
    row = (popularity / max(float(popularity.max(initial=0)), 1e-12)).astype(np.float32)[None, :]
    return lambda users: scorer(users) + np.float32(weight) * row


def top_lists(
    scorer: Scorer, train: Train, users: np.ndarray, k: int, *, floor: float = -np.inf
) -> tuple[np.ndarray, np.ndarray]:
    """(items, scores) len(users) x k, best first (ties: lower item index), purchased items excluded,
    -1 where fewer than k items score above `floor`."""
    if isinstance(scorer, PopularityScorer):
        return _top_of_one_ranking(scorer.vector, train, users, k, floor)
    n_items = train.log.n_items
    block = max(1, SCORE_BLOCK_FLOATS // max(n_items, 1))
    items_out = np.full((len(users), k), -1, np.int64)
    scores_out = np.full((len(users), k), -np.inf, np.float32)
    for start in range(0, len(users), block):
        part = users[start : start + block]
        scores = np.array(scorer(part), dtype=np.float32, copy=True)
        bought = train.purchased[part].tocoo()
        scores[bought.row, bought.col] = -np.inf
        k_eff = min(k, n_items)
        if k_eff < n_items:
            candidates = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff]
        else:
            candidates = np.broadcast_to(np.arange(n_items), scores.shape).copy()
        values = np.take_along_axis(scores, candidates, axis=1)
        order = np.lexsort((candidates, -values), axis=1)
        candidates = np.take_along_axis(candidates, order, axis=1)
        values = np.take_along_axis(values, order, axis=1)
        dropped = ~(values > floor)
        candidates[dropped], values[dropped] = -1, -np.inf
        items_out[start : start + len(part), :k_eff] = candidates
        scores_out[start : start + len(part), :k_eff] = values
    return items_out, scores_out


def compose(primary: np.ndarray, *fills: np.ndarray) -> np.ndarray:
    """Each row: primary's items, then each fill's items not already there, cut to the row length."""
    k = primary.shape[1]
    out = primary.copy()
    for fill in fills:
        short = np.flatnonzero((out < 0).any(axis=1))
        for row in short:
            have = out[row][out[row] >= 0].tolist()
            seen = set(have)
            have += [i for i in fill[row].tolist() if i >= 0 and i not in seen][: k - len(have)]
            out[row] = -1
            out[row, : len(have)] = have
    return out


# ------------------------------------------------------------------------------------------------ in-process fits
def confidence_matrix(train: Train, alpha: float, transform: str) -> sparse.csr_matrix:
    """1 + alpha * r (r = weight or log(1 + weight)): the confidence of Spark's implicit ALS (Hu, Koren,
    Volinsky), so alpha means the same in both engines."""
    matrix = train.matrix.astype(np.float32, copy=True)
    values = np.log1p(matrix.data) if transform == "log1p" else matrix.data
    matrix.data = (1 + alpha * values).astype(np.float32)
    return matrix


def fit_implicit_als(train: Train, params: Mapping, *, iterations: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """`implicit`'s ALS (conjugate gradient; its GPU build when one is present): (user factors, item factors)."""
    import implicit.gpu
    from implicit.als import AlternatingLeastSquares
    from threadpoolctl import threadpool_limits

    with threadpool_limits(1, "blas"):  # implicit parallelises over users itself; nested BLAS threads only cost
        model = AlternatingLeastSquares(
            factors=int(params["rank"]),
            regularization=float(params["reg_param"]),
            alpha=1.0,
            iterations=iterations,
            random_state=seed,
            use_gpu=implicit.gpu.HAS_CUDA,
            calculate_training_loss=False,
        )
        model.fit(
            confidence_matrix(train, float(params["alpha"]), params.get("weight_transform", "raw")), show_progress=False
        )
    if implicit.gpu.HAS_CUDA:
        model = model.to_cpu()
    return np.asarray(model.user_factors, np.float32), np.asarray(model.item_factors, np.float32)


def cf_values(train: Train, max_user_items: int) -> sparse.csr_matrix:
    """log(1 + weight) per (user, item), each user's `max_user_items` strongest items only (item_cf.py)."""
    values = train.matrix.astype(np.float32, copy=True)
    values.data = np.log1p(values.data)
    lengths = np.diff(values.indptr)
    for row in np.flatnonzero(lengths > max_user_items):
        start, stop = values.indptr[row], values.indptr[row + 1]
        data = values.data[start:stop]
        weakest = np.argpartition(-data, max_user_items)[max_user_items:]
        data[weakest] = 0
    values.eliminate_zeros()
    return values


def fit_item_cf(train: Train, params: Mapping, *, max_user_items: int) -> sparse.csr_matrix:
    """Item-item cosine similarity, the `neighbours` most similar other items per item (items x items CSR):
    the same numbers as item_cf.item_neighbours in Spark, computed by `implicit`'s all-pairs k-NN."""
    from implicit.nearest_neighbours import all_pairs_knn

    neighbours = int(params["neighbours"])
    values = cf_values(train, max_user_items).tocsc()
    norms = np.sqrt(np.asarray(values.multiply(values).sum(axis=0)).ravel())
    normalised = (values @ sparse.diags(np.where(norms > 0, 1 / np.where(norms > 0, norms, 1), 0))).tocsr()
    similarity = all_pairs_knn(
        normalised.astype(np.float64), neighbours + 1, num_threads=0, show_progress=False
    ).tocsr()
    similarity.setdiag(0)  # an item is not its own neighbour
    similarity.eliminate_zeros()
    return _keep_top_per_row(similarity, neighbours).astype(np.float32)


def _keep_top_per_row(matrix: sparse.csr_matrix, n: int) -> sparse.csr_matrix:
    matrix = matrix.tocsr()
    for row in np.flatnonzero(np.diff(matrix.indptr) > n):
        start, stop = matrix.indptr[row], matrix.indptr[row + 1]
        data, cols = matrix.data[start:stop], matrix.indices[start:stop]
        order = np.lexsort((cols, -data))
        data[order[n:]] = 0
    matrix.eliminate_zeros()
    return matrix


# ------------------------------------------------------------------------------------------------ candidates
@dataclasses.dataclass(frozen=True)
class SearchSpace:
    alpha_range: tuple[float, float] = (0.5, 40.0)
    reg_range: tuple[float, float] = (0.001, 10.0)
    rank_range: tuple[int, int] = (16, 128)
    neighbours_choices: tuple[int, ...] = (20, 50, 100, 200)


@dataclasses.dataclass
class Engine:
    """How collaborative models are fitted: in this process (`implicit`) or by Spark MLlib. Everything
    downstream (scoring, evaluation, serving) sees factors and a similarity matrix either way."""

    name: str
    fit_als: Callable[[Train, Mapping], tuple[np.ndarray, np.ndarray]]
    fit_item_cf: Callable[[Train, Mapping], sparse.csr_matrix]


def implicit_engine(*, iterations: int, seed: int, max_user_items: int) -> Engine:
    return Engine(
        "implicit",
        lambda train, params: fit_implicit_als(train, params, iterations=iterations, seed=seed),
        lambda train, params: fit_item_cf(train, params, max_user_items=max_user_items),
    )


def halton(index: int, base: int) -> float:
    result, fraction = 0.0, 1.0
    while index > 0:
        fraction /= base
        result += fraction * (index % base)
        index //= base
    return result


def _log_scale(u: float, low: float, high: float) -> float:
    return float(math.exp(math.log(low) + u * (math.log(high) - math.log(low))))


def als_params(point: tuple[float, float, float, float], space: SearchSpace) -> dict:
    """A point of [0,1]^4 -> log-uniform alpha and reg, a power-of-two rank, the weight transform."""
    low, high = math.log2(space.rank_range[0]), math.log2(space.rank_range[1])
    steps = round(high - low)
    rank = int(2 ** (low + min(steps, math.floor(point[2] * (steps + 1))))) if steps > 0 else space.rank_range[0]
    return {
        "alpha": round(_log_scale(point[0], *space.alpha_range), 4),
        "reg_param": round(_log_scale(point[1], *space.reg_range), 5),
        "rank": rank,
        "weight_transform": "log1p" if point[3] >= 0.5 else "raw",
    }


def model_plan(space: SearchSpace, seed: int) -> Iterable[tuple[str, dict]]:
    """Collaborative fits in the order they are tried: ALS on a scrambled Halton sequence over all four axes
    (rank included from the first points), an item-CF variant every fourth slot while there are any."""
    shift = np.random.default_rng(seed).random(4)
    cf_choices = sorted(space.neighbours_choices, key=lambda n: abs(n - 50))
    index, slot = 1, 0
    while True:
        slot += 1
        if slot % 4 == 2 and cf_choices:
            yield "item_cf", {"neighbours": cf_choices.pop(0)}
            continue
        point = tuple((halton(index, base) + s) % 1.0 for base, s in zip((2, 3, 5, 7), shift))
        index += 1
        yield "als", als_params(point, space)


def refined_params(best: Mapping, index: int, space: SearchSpace) -> dict:
    """A point near the best ALS: alpha and reg within a factor of ~3, rank one power of two either way."""

    def around(value, low, high, u):
        return float(min(high, max(low, value * math.exp((u - 0.5) * 2.2))))

    ranks = [
        r
        for r in (best["rank"] // 2, best["rank"], best["rank"] * 2)
        if space.rank_range[0] <= r <= space.rank_range[1]
    ]
    return {
        **best,
        "alpha": round(around(best["alpha"], *space.alpha_range, halton(index, 2)), 4),
        "reg_param": round(around(best["reg_param"], *space.reg_range, halton(index, 3)), 5),
        "rank": ranks[index % len(ranks)],
    }


def _key(model: str, params: Mapping) -> str:
    import json

    return json.dumps({"model": model, "params": params}, sort_keys=True)


class Models:
    """Fitted collaborative models of one training period, by parameters (a blend reuses its parts)."""

    def __init__(self, train: Train, engine: Engine):
        self.train, self.engine, self.fitted, self.seconds = train, engine, {}, {}

    def get(self, model: str, params: Mapping):
        key = _key(model, params)
        if key not in self.fitted:
            started = time.perf_counter()
            if model == "als":
                self.fitted[key] = self.engine.fit_als(self.train, params)
            else:
                self.fitted[key] = self.engine.fit_item_cf(self.train, params)
            self.seconds[key] = time.perf_counter() - started
        return self.fitted[key]


def scorer_for(choice: Mapping, train: Train, models: Models) -> Scorer | None:
    """The scorer of a chosen candidate ({model, params}); None for a non-personalised choice."""
    model, params = choice["model"], choice["params"]
    if model in ("popularity", "category_popularity"):
        return None
    if model == "als":
        base = factor_scorer(*models.get("als", als_only(params)))
    elif model == "item_cf":
        base = cf_scorer(train, models.get("item_cf", {"neighbours": params["neighbours"]}))
    elif model == "blend":
        base = blend_scorer(
            [
                (params["weight"], factor_scorer(*models.get("als", params["als"]))),
                (1 - params["weight"], cf_scorer(train, models.get("item_cf", params["item_cf"]))),
            ]
        )
    else:
        raise ValueError(f"unknown model {model!r}")
    if params.get("popularity_weight"):
        base = with_popularity(base, train.popularity(params["popularity"]), params["popularity_weight"])
    return base


def als_only(params: Mapping) -> dict:
    return {key: params[key] for key in ("alpha", "reg_param", "rank", "weight_transform")}


def fallback_lists(
    train: Train, users: np.ndarray, k: int, popularity_params: Mapping, use_category: bool
) -> np.ndarray:
    """The non-personalised list: the user's categories by popularity, then popularity (topk.TopK.served)."""
    popularity = train.popularity(popularity_params)
    plain, _ = top_lists(popularity_scorer(popularity), train, users, k)
    if not use_category:
        return plain
    by_category, _ = top_lists(category_scorer(train, popularity), train, users, k, floor=0.0)
    return compose(by_category, plain)


def served_lists(
    model_lists: np.ndarray | None, fallback: np.ndarray, n_history: np.ndarray, min_history: int
) -> np.ndarray:
    """Model items first for users with at least `min_history` history items, the fallback fills the rest."""
    if model_lists is None:
        return fallback
    primary = np.where((n_history >= min_history)[:, None], model_lists, -1)
    return compose(primary, fallback)


@dataclasses.dataclass(frozen=True)
class SearchBudget:
    max_fits: int = 60
    min_seconds: float = 20.0
    seconds_per_million_pairs: float = 60.0
    max_seconds: float = 600.0

    def seconds(self, n_pairs: int) -> float:
        """The wall-time budget grows with the training pairs, between min_seconds and max_seconds."""
        return float(min(self.max_seconds, self.min_seconds + self.seconds_per_million_pairs * n_pairs / 1e6))


HISTORY_THRESHOLDS = (1, 2, 3, 5, 8, 13, 21, 34)


@dataclasses.dataclass
class Fold:
    """One validation protocol: a training part and the users whose held-out items it is scored on."""

    name: str
    train: Train
    evaluation: EvalSet
    models: Models | None = None
    warm: np.ndarray | None = None  # evaluation users with history
    baseline: float = 0.0  # the best non-personalised mean on warm users: the unit of this fold

    def __post_init__(self):
        self.warm = self.evaluation.n_history > 0
        self.warm_users = self.evaluation.users[self.warm]
        self.warm_relevant = self.evaluation.relevant[np.flatnonzero(self.warm)]


def search(
    folds: list[Fold],
    engine: Engine,
    space: SearchSpace,
    budget: SearchBudget,
    *,
    k: int,
    metric: str,
    min_history: str | int,
    min_score: float,
    seed: int,
    confidence: float = 0.9,
    log: Callable[[str], None] = print,
) -> dict:
    """Every candidate on every validation fold; a candidate's score is its mean `metric`@k over the fold's
    users with history divided by the fold's best non-personalised ranking, averaged over folds (so each
    protocol counts alike: each user's next items, and the next days). Among candidates not worse than the
    best with confidence (paired interval), the one leaning least on popularity wins: validation periods
    reward trends more than the lists' later life does. Then the history threshold below which users get the
    non-personalised list. Returns the record for metrics.json, with "chosen"."""
    started = time.perf_counter()
    seconds = budget.seconds(max(fold.train.n_pairs for fold in folds))
    for fold in folds:
        fold.models = Models(fold.train, engine)
    tried: list[dict] = []
    key_name = f"validation_{metric}"

    def per_user(fold: Fold, scorer: Scorer, users: np.ndarray, relevant) -> np.ndarray:
        return metrics_per_user(top_lists(scorer, fold.train, users, k)[0], relevant, k)[metric]

    def record(
        model: str,
        params: Mapping,
        values: list[np.ndarray],
        fit_seconds: float = 0.0,
        all_users: list[np.ndarray] | None = None,
    ) -> dict:
        """values: per fold, per warm user; the score is the mean over folds of mean / fold baseline."""
        ratios = [v.mean() / fold.baseline if fold.baseline > 0 and len(v) else 0.0 for v, fold in zip(values, folds)]
        entry = {
            "model": model,
            "params": dict(params),
            key_name: float(np.mean(ratios)),
            **{
                f"validation_{metric}_{fold.name}": float(v.mean()) if len(v) else None
                for v, fold in zip(values, folds)
            },
            "seconds": round(fit_seconds, 3),
            "_values": values,
        }
        if all_users is not None:
            entry["_all_users"] = all_users
        tried.append(entry)
        return entry

    # 1. non-personalised rankings: the fallback, and the unit every model is measured in
    variants = folds[0].train.popularity_variants()
    popular = {}
    for params in variants:
        warm_values, all_values = [], []
        for fold in folds:
            values = per_user(
                fold, popularity_scorer(fold.train.popularity(params)), fold.evaluation.users, fold.evaluation.relevant
            )
            all_values.append(values)
            warm_values.append(values[fold.warm])
        popular[_key("popularity", params)] = (params, warm_values, all_values)
    for index, fold in enumerate(folds):
        fold.baseline = max(float(v[1][index].mean()) if len(v[1][index]) else 0.0 for v in popular.values())
    for params, warm_values, all_values in popular.values():
        record("popularity", params, warm_values, all_users=all_values)
    best_all = [max(v[2][index].mean() for v in popular.values()) for index in range(len(folds))]

    def all_users_score(entry: Mapping) -> float:
        return float(np.mean([v.mean() / b if b > 0 else 0.0 for v, b in zip(entry["_all_users"], best_all)]))

    best_pop = max((e for e in tried if e["model"] == "popularity"), key=all_users_score)
    use_category = folds[0].train.log.n_categories > 0
    if use_category:
        warm_values, all_values = [], []
        for fold in folds:
            users = fold.evaluation.users
            lists = fallback_lists(fold.train, users, k, best_pop["params"], use_category=True)
            values = metrics_per_user(lists, fold.evaluation.relevant, k)[metric]
            all_values.append(values)
            warm_values.append(values[fold.warm])
        entry = record("category_popularity", best_pop["params"], warm_values, all_users=all_values)
        use_category = all_users_score(entry) >= all_users_score(best_pop)
    per_fold = ", ".join(
        f"{fold.name}: {metric}@{k} {v.mean():.4f}, {fold.evaluation.n_users} users"
        for v, fold in zip(best_pop["_all_users"], folds)
    )
    log(
        f"best non-personalised ranking on validation: popularity {best_pop['params']} ({per_fold}); "
        f"category fallback {'on' if use_category else 'off'}"
    )

    # 2. collaborative models, each alone and blended with that ranking, fitted once per fold
    best: dict[str, dict] = {}
    blend_popularity = [fold.train.popularity(best_pop["params"]) for fold in folds]

    def consider(model: str, params: dict, scorers: list[Scorer], fit_seconds: float) -> None:
        alone, tops = [], []
        for fold, scorer in zip(folds, scorers):
            lists, top = top_lists(scorer, fold.train, fold.warm_users, k)
            alone.append(metrics_per_user(lists, fold.warm_relevant, k)[metric])
            tops.append(top[:, 0][np.isfinite(top[:, 0])])
        entry = record(model, params, alone, fit_seconds)
        if model not in best or entry[key_name] > best[model][key_name]:
            best[model] = entry
        typical = float(np.median(tops[0])) if len(tops[0]) else 0.0  # the first fold's scale sets the weights
        for share in BLEND_SHARES if typical > 0 else ():
            weight = round(share * typical, 6)
            blended = {**params, "popularity": best_pop["params"], "popularity_weight": weight}
            values = [
                per_user(fold, with_popularity(scorer, popularity, weight), fold.warm_users, fold.warm_relevant)
                for fold, scorer, popularity in zip(folds, scorers, blend_popularity)
            ]
            entry = record(model, blended, values)
            entry["_share"] = share
            if entry[key_name] > best[model][key_name]:
                best[model] = entry

    fits, plan = 0, model_plan(space, seed)
    seen: set[str] = set()
    while fits < budget.max_fits and all(fold.warm.any() for fold in folds):
        elapsed = time.perf_counter() - started
        if fits and elapsed + elapsed / fits > seconds:
            break
        model, params = next(plan)
        if model == "als" and fits >= budget.max_fits // 2 and "als" in best:
            params = refined_params(als_only(best["als"]["params"]), fits, space)
        if _key(model, params) in seen:
            continue
        seen.add(_key(model, params))
        fit_started = time.perf_counter()
        scorers = [scorer_for({"model": model, "params": params}, fold.train, fold.models) for fold in folds]
        fits += 1
        own = len(tried)
        consider(model, params, scorers, time.perf_counter() - fit_started)
        log(
            f"fit {fits} {model} {params}: validation {metric}@{k} {tried[own][key_name]:.3f}x the best "
            f"non-personalised ranking alone, {max(e[key_name] for e in tried[own:]):.3f}x with recent popularity; "
            f"{time.perf_counter() - fit_started:.2f} s"
        )
    if "als" in best and "item_cf" in best:
        for weight in (0.3, 0.5, 0.7):
            params = {
                "weight": weight,
                "als": als_only(best["als"]["params"]),
                "item_cf": {"neighbours": best["item_cf"]["params"]["neighbours"]},
            }
            consider(
                "blend",
                params,
                [scorer_for({"model": "blend", "params": params}, fold.train, fold.models) for fold in folds],
                0.0,
            )

    # 3. the choice, and from how much history a user gets it
    personal = [e for e in tried if e["model"] not in ("popularity", "category_popularity")]
    baseline_value = max(e[key_name] for e in tried if e["model"] in ("popularity", "category_popularity"))
    chosen = simplest_not_worse(personal, folds, key=key_name, confidence=confidence) if personal else None
    fallback_spec = {"popularity": best_pop["params"], "use_category": bool(use_category)}
    if chosen is None or chosen[key_name] <= baseline_value:
        chosen = {
            "model": "category_popularity" if use_category else "popularity",
            "params": best_pop["params"],
            key_name: baseline_value,
        }
        threshold, options = 0, []
    elif min_history == "auto":
        totals = np.zeros(len(HISTORY_THRESHOLDS))
        for fold in folds:
            users, relevant = fold.evaluation.users, fold.evaluation.relevant
            fallback = fallback_lists(fold.train, users, k, best_pop["params"], use_category)
            model_lists = top_lists(scorer_for(chosen, fold.train, fold.models), fold.train, users, k, floor=min_score)[
                0
            ]
            model_values = metrics_per_user(compose(model_lists, fallback), relevant, k)[metric]
            fallback_values = metrics_per_user(fallback, relevant, k)[metric]
            scale = max(fold.baseline, 1e-12) * max(len(users), 1)
            for index, candidate in enumerate(HISTORY_THRESHOLDS):
                below = fold.evaluation.n_history < candidate
                totals[index] += (fallback_values[below].sum() + model_values[~below].sum()) / scale
        options = [
            {"min_history": t, f"mean_{metric}_ratio": round(float(v) / len(folds), 6)}
            for t, v in zip(HISTORY_THRESHOLDS, totals)
        ]
        threshold = max(options, key=lambda o: (o[f"mean_{metric}_ratio"], -o["min_history"]))["min_history"]
    else:
        threshold, options = int(min_history), []
    for entry in tried:
        for private in ("_values", "_all_users", "_share"):
            entry.pop(private, None)
    return {
        "tuned": True,
        "engine": engine.name,
        "selection_metric": metric,
        "score": f"mean over folds of validation {metric}@{k} / the fold's best non-personalised ranking",
        "folds": [
            {
                "name": fold.name,
                "n_validation_users": int(fold.evaluation.n_users),
                "n_users_with_history": int(fold.warm.sum()),
                "n_fit_pairs": int(fold.train.n_pairs),
                f"best_non_personalised_{metric}": round(fold.baseline, 6),
            }
            for fold in folds
        ],
        "n_fits": fits,
        "n_candidates": len(tried),
        "budget_seconds": round(seconds, 1),
        "candidates": tried,
        "history_thresholds": options,
        "fallback": fallback_spec,
        "chosen": {
            "model": chosen["model"],
            "params": chosen["params"],
            "min_history": threshold,
            "fallback": fallback_spec,
            key_name: chosen[key_name],
        },
        "seconds": round(time.perf_counter() - started, 1),
    }


def simplest_not_worse(entries: list[dict], folds: list[Fold], *, key: str, confidence: float) -> dict:
    """The best candidate by validation score, unless one leaning less on popularity is not worse with
    confidence: the top of the interval of its paired difference to the best (per user, each fold in units
    of its baseline, folds averaged as in the score; normal interval: hundreds of candidates are compared) is
    at or above zero."""
    from statistics import NormalDist

    best = max(entries, key=lambda e: e[key])
    z = NormalDist().inv_cdf((1 + confidence) / 2)

    def not_worse(entry: dict) -> bool:
        mean = variance = 0.0
        for fold, a, b in zip(folds, entry["_values"], best["_values"]):
            if len(a) > 1:
                difference = (a - b) / max(fold.baseline, 1e-12)
                mean += difference.mean() / len(folds)
                variance += difference.var(ddof=1) / len(difference) / len(folds) ** 2
        return entry is best or mean + z * math.sqrt(variance) >= 0

    tied = [e for e in entries if not_worse(e)]
    return min(tied, key=lambda e: (e.get("_share", 0.0), -e[key]))


# ------------------------------------------------------------------------------------------------ holdout
NON_PERSONAL = ("popularity", "recent_popularity", "category_popularity")


def summarise(
    values: Mapping[str, np.ndarray],
    activity: np.ndarray,
    *,
    metric: str,
    confidence: float,
    seed: int,
    all_intervals: bool,
) -> dict:
    """{"all" | "cold" | "light" | "heavy": {n_users, metrics..., <metric>_low/_high}} for one list."""
    out = {}
    segments = [("all", np.ones(len(activity), bool))] + [
        (name, activity == code) for code, name in enumerate(ACTIVITY_NAMES) if (activity == code).any()
    ]
    for name, mask in segments:
        entry = {"n_users": int(mask.sum()), **{m: float(values[m][mask].mean()) for m in METRICS}}
        for m in METRICS if all_intervals and name == "all" else (metric,):
            interval = mean_interval(values[m][mask], confidence=confidence, seed=seed)
            entry[f"{m}_low"], entry[f"{m}_high"] = interval["low"], interval["high"]
        out[name] = entry
    return out


def evaluate_holdout(
    train: Train,
    evaluation: EvalSet,
    choice: Mapping,
    models: Models | None,
    *,
    k: int,
    metric: str,
    min_score: float,
    heavy_min_items: int,
    confidence: float,
    seed: int,
) -> dict:
    """The served lists, the model alone and every non-personalised ranking on the holdout users, with
    intervals, per activity tier, coverage, and the paired difference of served vs the strongest baseline."""
    users, relevant, n_items = evaluation.users, evaluation.relevant, train.log.n_items
    fallback_spec = choice.get("fallback") or {"popularity": {}, "use_category": train.log.n_categories > 0}
    fallback = fallback_lists(train, users, k, fallback_spec["popularity"], fallback_spec["use_category"])
    scorer = scorer_for(choice, train, models) if models is not None else None
    model_lists = top_lists(scorer, train, users, k, floor=min_score)[0] if scorer is not None else None
    lists = {"served": served_lists(model_lists, fallback, evaluation.n_history, int(choice.get("min_history", 0)))}
    if model_lists is not None:
        lists[choice["model"]] = model_lists

    # non-personalised rankings: all-time, the best recent variant on this holdout, and by category
    variants = {}
    for params in train.popularity_variants():
        items, _ = top_lists(popularity_scorer(train.popularity(params)), train, users, k)
        variants[_key("popularity", params)] = (params, items, metrics_per_user(items, relevant, k))
    all_time = variants[_key("popularity", {})]
    recent = max(variants.values(), key=lambda v: v[2][metric].mean())
    lists["popularity"], lists["recent_popularity"] = all_time[1], recent[1]
    if train.log.n_categories:
        lists["category_popularity"] = fallback_lists(train, users, k, recent[0], True)
    per_user = {name: metrics_per_user(items, relevant, k) for name, items in lists.items()}
    activity = evaluation.activity(heavy_min_items)
    summary = {
        name: summarise(
            values, activity, metric=metric, confidence=confidence, seed=seed, all_intervals=name == "served"
        )
        for name, values in per_user.items()
    }
    coverage = {name: round(len(np.unique(items[items >= 0])) / max(n_items, 1), 6) for name, items in lists.items()}
    strongest = max((name for name in NON_PERSONAL if name in per_user), key=lambda n: per_user[n][metric].mean())
    difference = {
        "baseline": strongest,
        "metric": metric,
        **paired_difference(per_user["served"][metric], per_user[strongest][metric], confidence=confidence, seed=seed),
    }
    by_tier = {}
    for code, name in enumerate(ACTIVITY_NAMES):
        mask = activity == code
        if mask.any():
            by_tier[name] = paired_difference(
                per_user["served"][metric][mask], per_user[strongest][metric][mask], confidence=confidence, seed=seed
            )
    difference["by_activity"] = by_tier
    return {
        "lists": summary,
        "coverage": coverage,
        "recent_popularity": recent[0],
        "served_vs_baseline": difference,
        "n_eval_users": int(len(users)),
        "n_users_with_relevant_items": int(evaluation.n_relevant_users),
    }


def gate(
    holdout: Mapping,
    previous: Mapping | None,
    *,
    metric: str,
    max_drop: float,
    action: str,
    level: str,
    confidence: float,
) -> dict:
    """Fall back only on evidence: when the served lists are worse than the strongest non-personalised
    ranking with confidence (the paired interval of the difference entirely below 0), or when even the
    interval's top is more than max_drop below the last published run's figure."""
    result = {
        "metric": metric,
        "confidence": confidence,
        "max_drop": max_drop,
        "action": action,
        "level": level,
        "reasons": [],
    }
    difference = holdout.get("served_vs_baseline") or {}
    served = ((holdout.get("lists") or {}).get("served") or {}).get("all") or {}
    if not difference or difference.get("mean") is None:
        result.update(passed=True, verdict="model kept: not evaluated (no holdout users with relevant items)")
        return result
    baseline = difference["baseline"]
    base_value = holdout["lists"][baseline]["all"][metric]
    result.update(
        served=served.get(metric),
        served_low=served.get(f"{metric}_low"),
        served_high=served.get(f"{metric}_high"),
        baseline=baseline,
        baseline_value=base_value,
        difference=difference["mean"],
        difference_low=difference["low"],
        difference_high=difference["high"],
        n_users=difference["n_users"],
    )
    interval = f"{confidence:.0%} interval {difference['low']:+.4f} to {difference['high']:+.4f}, {difference['n_users']} users"
    if difference["high"] < 0:
        result["reasons"].append(
            f"served {metric}@K {served.get(metric):.4f} is worse than {baseline} "
            f"{base_value:.4f} by {-difference['mean']:.4f} ({interval})"
        )
        result["verdict"] = f"fallback: worse than {baseline} by {-difference['mean']:.4f} ({interval})"
    elif difference["low"] > 0:
        result["verdict"] = f"model kept: better than {baseline} by {difference['mean']:.4f} ({interval})"
    else:
        result["verdict"] = f"model kept: no evidence it is worse than {baseline} ({interval})"
    previous_holdout = (previous or {}).get("holdout") or {}
    previous_value = (previous_holdout.get("lists") or {}).get("served", {}).get("all", {}).get(metric)
    if previous_value and previous_holdout.get("split") == holdout.get("split"):  # figures of one protocol only
        result.update(previous_ds=(previous or {}).get("ds"), previous_value=previous_value)
        top = served.get(f"{metric}_high", served.get(metric))
        if top is not None and top < previous_value * (1 - max_drop):
            result["reasons"].append(
                f"served {metric}@K {served.get(metric):.4f} (interval top {top:.4f}) is more than {max_drop:.0%} "
                f"below the last published run ({previous.get('ds')}: {previous_value:.4f})"
            )
            if difference["high"] >= 0:
                result["verdict"] = f"fallback: more than {max_drop:.0%} below the last published run"
    result["passed"] = not result["reasons"]
    return result
