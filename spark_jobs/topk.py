"""Top-K recommendations for every user at the speed of BLAS, with exclusions and fallbacks in the same pass.

Users arrive in Spark partitions (mapInPandas); each partition is cut into blocks of users. For a block the
model's scores against the catalogue (or one block of it) are one matrix product: item factors x user factors
(ALS) or user history x item-item neighbours (item-CF). Already-purchased items are set to -inf in place, and
the K best per user are found without sorting the catalogue: the maximum of every chunk of CHUNK (16) items is
taken (one cheap pass), only the K chunks with the largest maxima can hold the top K, and those K x 16 candidates
are ranked. Never a users x items table in Spark: a block's score matrix lives in one task's memory.

Each user's list has up to three tiers, labelled in `source`:
1. the model (`als`, `item_cf` or `blend`): for users with at least `min_history` items of history, items
   whose score is above `min_score`;
2. `category_popularity`: popular items of the user's top categories (affinity x popularity);
3. `popularity`: the most popular items overall.
Later tiers only fill what earlier ones left; no item repeats; purchased items never appear.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import numpy as np
import pandas as pd

CHUNK = 16  # items per chunk for the chunk-maximum pre-selection
SOURCE_CATEGORY = "category_popularity"
SOURCE_POPULARITY = "popularity"

# per-user input columns (one row per user)
USER, HISTORY, WEIGHTS, PURCHASED, FACTORS = "user_id", "history", "history_weights", "purchased", "factors"


@dataclasses.dataclass
class ItemSide:
    """What every task needs about the items, indexed 0..n-1 (index order = popularity order, most popular
    first): broadcast once per job. `factors` may hold only the item block [block_start, block_start + len)."""

    product_ids: np.ndarray  # (n,) int64
    popularity: np.ndarray  # (n,) float32, share of active users who interacted with the item
    category: np.ndarray  # (n,) int32, -1 = unknown
    n_categories: int
    factors: np.ndarray | None = None  # (n_block, rank) float32, ALS
    block_start: int = 0
    neighbours: object | None = None  # scipy.sparse.csr_matrix (n, n) float32, item-CF similarities

    @property
    def n_items(self) -> int:
        return len(self.product_ids)


@dataclasses.dataclass(frozen=True)
class ServePolicy:
    k: int
    model: str | None = "als"  # als | item_cf | blend | None (fallback tiers only)
    min_history: int = 1  # fewer items of history -> no model tier
    min_score: float = 1e-6  # model scores at or below this are noise, not a recommendation
    blend_weight: float = 0.5  # blend = w * als + (1 - w) * item_cf, each scaled to its user's best
    popularity_weight: float = 0.0  # + this x the item's popularity (scaled to a best of 1) on model scores
    use_category: bool = True  # the category tier fills before popularity
    top_categories: int = 3
    block_floats: int = 1 << 24  # score-matrix floats per user block (64 MB)


# ------------------------------------------------------------------------------------------ selection
def top_k_per_column(scores: np.ndarray, k: int, *, floor: float = -np.inf) -> tuple[np.ndarray, np.ndarray]:
    """The k best rows of every column of `scores` (n_items x n_users, -inf = not allowed) whose value is
    above `floor`: (items, values), each n_users x k, best first, ties by lower item index; item -1 where a
    column has fewer. When n_items is a multiple of CHUNK and large, only the k chunks with the largest
    maxima are ranked: one pass over the matrix, then work on k x CHUNK values per user."""
    n, b = scores.shape
    k_eff = min(k, n)
    if b == 0 or k_eff == 0:
        return np.full((b, k), -1, np.int64), np.full((b, k), -np.inf, np.float32)
    columns = np.arange(b)[:, None]
    if n % CHUNK == 0 and n >= 4 * CHUNK * k_eff:
        chunk_max = scores.reshape(n // CHUNK, CHUNK, b).max(axis=1).T  # (b, n_chunks)
        best_chunks = np.argpartition(chunk_max, -k_eff, axis=1)[:, -k_eff:]  # (b, k)
        candidates = (best_chunks[:, :, None] * CHUNK + np.arange(CHUNK)).reshape(b, -1)  # (b, k * CHUNK)
        values = scores[candidates, columns]
    else:
        candidates = np.broadcast_to(np.arange(n), (b, n))
        values = np.ascontiguousarray(scores.T)
    if candidates.shape[1] > k_eff:
        keep = np.argpartition(values, -k_eff, axis=1)[:, -k_eff:]
        candidates = np.take_along_axis(candidates, keep, axis=1)
        values = np.take_along_axis(values, keep, axis=1)
    order = np.lexsort((candidates, -values), axis=1)
    items = np.take_along_axis(candidates, order, axis=1).astype(np.int64)
    values = np.take_along_axis(values, order, axis=1).astype(np.float32)
    dropped = ~(values > floor)
    items[dropped], values[dropped] = -1, -np.inf
    if k_eff < k:
        items = np.pad(items, ((0, 0), (0, k - k_eff)), constant_values=-1)
        values = np.pad(values, ((0, 0), (0, k - k_eff)), constant_values=-np.inf)
    return items, values


TILE_BYTES = 1 << 22  # an item tile's scores stay in cache while their chunk maxima are taken
RESCORE_USERS = 128


def als_top_k(
    item_factors: np.ndarray,
    user_factors: np.ndarray,
    excluded_users: np.ndarray,
    excluded_items: np.ndarray,
    k: int,
    *,
    floor: float = -np.inf,
) -> tuple[np.ndarray, np.ndarray]:
    """top_k_per_column(item_factors @ user_factors.T with the excluded (item, user) pairs at -inf) without
    writing the items x users score matrix to memory: the product is taken one cache-sized tile of items at
    a time and only each chunk's maximum is kept; the k best chunks' items are then scored again exactly
    (k x CHUNK dot products per user). Same result, ties by lower item index."""
    n, b = len(item_factors), len(user_factors)
    if n < 4 * CHUNK * k or b == 0:
        scores = np.full((_padded(n), b), -np.inf, np.float32)
        np.matmul(item_factors, user_factors.T, out=scores[:n])
        scores[excluded_items, excluded_users] = -np.inf
        return top_k_per_column(scores, k, floor=floor)
    order = np.argsort(excluded_items, kind="stable")
    ex_items, ex_users = excluded_items[order], excluded_users[order]
    n_chunks = -(-n // CHUNK)
    tile = max(CHUNK, min(n_chunks * CHUNK, TILE_BYTES // (4 * b) // CHUNK * CHUNK))
    buffer = np.empty((tile, b), np.float32)
    chunk_max = np.empty((b, n_chunks), np.float32)  # users x chunks: each user's row contiguous
    for start in range(0, n, tile):
        stop = min(n, start + tile)
        scores = buffer[: -(-(stop - start) // CHUNK) * CHUNK]
        np.matmul(item_factors[start:stop], user_factors.T, out=scores[: stop - start])
        scores[stop - start :] = -np.inf
        low, high = np.searchsorted(ex_items, (start, stop))
        scores[ex_items[low:high] - start, ex_users[low:high]] = -np.inf
        chunk_max[:, start // CHUNK : start // CHUNK + len(scores) // CHUNK] = (
            scores.reshape(-1, CHUNK, b).max(axis=1).T
        )
    best_chunks = np.argpartition(chunk_max, -k, axis=1)[:, -k:]
    candidates = (best_chunks[:, :, None] * CHUNK + np.arange(CHUNK)).reshape(b, -1)
    inside = candidates < n
    values = np.empty(candidates.shape, np.float32)
    for start in range(0, b, RESCORE_USERS):  # small batches: the gathered factors stay in cache
        part = slice(start, start + RESCORE_USERS)
        values[part] = np.einsum("ucr,ur->uc", item_factors[np.minimum(candidates[part], n - 1)], user_factors[part])
    keys = np.sort(ex_users.astype(np.int64) * n + ex_items)
    wanted = np.arange(b)[:, None] * n + candidates
    position = np.minimum(np.searchsorted(keys, wanted), max(len(keys) - 1, 0))
    excluded = keys[position] == wanted if len(keys) else np.zeros_like(inside)
    values[~inside | excluded] = -np.inf
    keep = np.argpartition(values, -k, axis=1)[:, -k:]
    candidates, values = np.take_along_axis(candidates, keep, axis=1), np.take_along_axis(values, keep, axis=1)
    ranked = np.lexsort((candidates, -values), axis=1)
    items = np.take_along_axis(candidates, ranked, axis=1).astype(np.int64)
    values = np.take_along_axis(values, ranked, axis=1).astype(np.float32)
    dropped = ~(values > floor)
    items[dropped], values[dropped] = -1, -np.inf
    return items, values


def _padded(n: int) -> int:
    return -(-n // CHUNK) * CHUNK


def _ragged(column: pd.Series, dtype) -> tuple[np.ndarray, np.ndarray]:
    """A column of arrays (None = empty) as (row index, flat values)."""
    arrays = [np.asarray(a if a is not None else (), dtype=dtype) for a in column]
    lengths = np.fromiter((len(a) for a in arrays), np.int64, len(arrays))
    flat = np.concatenate(arrays) if len(arrays) and lengths.sum() else np.empty(0, dtype)
    return np.repeat(np.arange(len(arrays)), lengths), flat


# ------------------------------------------------------------------------------------------ the engine
class TopK:
    """Scores blocks of users (pandas frames of the per-user columns) against the ItemSide."""

    def __init__(self, items: ItemSide, policy: ServePolicy):
        if policy.popularity_weight and policy.model == "als" and items.factors is not None:
            # model + w x popularity as one more factor: the tiled ALS scoring stays one matrix product
            block = self.scaled_popularity(items)[items.block_start : items.block_start + len(items.factors)]
            items = dataclasses.replace(items, factors=np.hstack([items.factors, block[:, None]]).astype(np.float32))
        self.items, self.policy = items, policy
        n = items.n_items
        self.pop_order = np.arange(n)  # items are indexed in popularity order
        n_block = len(items.factors) if items.factors is not None else n
        if policy.model == "als" and items.factors is not None:  # chunk maxima + k x CHUNK rescored factors
            per_user = -(-n_block // CHUNK) + CHUNK * policy.k * items.factors.shape[1]
        else:  # a whole score column per user
            per_user = _padded(n_block)
        self.block_users = max(1, policy.block_floats // max(per_user, 1))

    @staticmethod
    def scaled_popularity(items: ItemSide) -> np.ndarray:
        best = float(items.popularity.max(initial=0))
        return (items.popularity / best if best > 0 else items.popularity).astype(np.float32)

    def _user_factors(self, block: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
        factors = np.stack(block[FACTORS].to_numpy()[rows]).astype(np.float32, copy=False)
        if self.policy.popularity_weight and self.policy.model == "als":
            factors = np.hstack([factors, np.full((len(rows), 1), self.policy.popularity_weight, np.float32)])
        return factors

    # -- per-user inputs of a block
    def _history(self, block: pd.DataFrame):
        rows, items = _ragged(block[HISTORY], np.int64)
        _, weights = _ragged(block[WEIGHTS], np.float32)
        _, purchased = _ragged(block[PURCHASED], bool)
        return rows, items, weights, purchased

    def _affinity(self, rows, items, weights, n_rows) -> np.ndarray:
        """Users x (categories + 1) weighted share of the user's top categories; the last column stays 0
        (where unknown-category items point)."""
        n_cat = self.items.n_categories
        affinity = np.zeros((n_rows, n_cat + 1), np.float32)
        category = self.items.category[items]
        known = category >= 0
        np.add.at(affinity, (rows[known], category[known]), weights[known])
        if self.policy.top_categories < n_cat:
            cutoff = -np.sort(-affinity[:, :n_cat], axis=1)[
                :, self.policy.top_categories - 1 : self.policy.top_categories
            ]
            affinity[:, :n_cat][affinity[:, :n_cat] < cutoff] = 0
        totals = affinity.sum(axis=1, keepdims=True)
        np.divide(affinity, totals, out=affinity, where=totals > 0)
        return affinity

    # -- score matrices (items x users), padded to a multiple of CHUNK with -inf rows
    def _als_scores(self, factors: np.ndarray) -> np.ndarray:
        item_factors = self.items.factors
        n_block = len(item_factors)
        scores = np.empty((_padded(n_block), len(factors)), np.float32)
        np.matmul(item_factors, factors.T, out=scores[:n_block])
        scores[n_block:] = -np.inf
        return scores

    def _cf_scores(self, rows, items, values, n_rows) -> np.ndarray:
        from scipy import sparse

        n = self.items.n_items
        history = sparse.csr_matrix((values, (rows, items)), shape=(n_rows, n), dtype=np.float32)
        scores = np.full((_padded(n), n_rows), -np.inf, np.float32)
        scores[:n] = (history @ self.items.neighbours).T.toarray()
        return scores

    def _model_scores(self, block: pd.DataFrame, model_rows: np.ndarray, history) -> np.ndarray:
        kind = self.policy.model
        rows, items, weights, _ = history
        subset = np.isin(rows, model_rows)
        remap = np.full(len(block), -1)
        remap[model_rows] = np.arange(len(model_rows))
        sub_rows, sub_items = remap[rows[subset]], items[subset]
        if kind in ("als", "blend"):
            als = self._als_scores(self._user_factors(block, model_rows))
            if kind == "als":
                return als
        cf = self._cf_scores(sub_rows, sub_items, self.cf_values(weights[subset]), len(model_rows))
        if kind == "item_cf":
            scores = cf
        else:
            w = self.policy.blend_weight
            scores = w * _scaled(als) + (1 - w) * _scaled(cf)
        if self.policy.popularity_weight:
            scores[: self.items.n_items] += self.policy.popularity_weight * self.scaled_popularity(self.items)[:, None]
        return scores

    @staticmethod
    def cf_values(weights: np.ndarray) -> np.ndarray:
        return np.log1p(weights).astype(np.float32)

    # -- one block of users
    def _mask(self, scores: np.ndarray, rows: np.ndarray, items: np.ndarray, offset: int = 0) -> None:
        """-inf at (item, user) pairs; `items` are global indices, `scores` may cover an item block."""
        local = items - offset
        inside = (local >= 0) & (local < len(scores))
        scores[local[inside], rows[inside]] = -np.inf

    def model_tier(self, block: pd.DataFrame, history) -> tuple[np.ndarray, np.ndarray]:
        """(items, scores) n_users x k of the model tier; -1 where a user gets fewer (or no) model items."""
        k = self.policy.k
        items_out = np.full((len(block), k), -1, np.int64)
        scores_out = np.full((len(block), k), -np.inf, np.float32)
        if self.policy.model is None:
            return items_out, scores_out
        eligible = block["n_history"].to_numpy() >= max(self.policy.min_history, 1)
        if self.policy.model in ("als", "blend"):
            eligible &= block[FACTORS].notna().to_numpy()
        model_rows = np.flatnonzero(eligible)
        if len(model_rows) == 0:
            return items_out, scores_out
        rows, items, _, purchased = history
        remap = np.full(len(block), -1)
        remap[model_rows] = np.arange(len(model_rows))
        bought = purchased & (remap[rows] >= 0)
        if self.policy.model == "als":
            factors = self._user_factors(block, model_rows)
            local = items[bought] - self.items.block_start
            inside = (local >= 0) & (local < len(self.items.factors))
            top_items, top_scores = als_top_k(
                self.items.factors, factors, remap[rows[bought]][inside], local[inside], k, floor=self.policy.min_score
            )
        else:
            scores = self._model_scores(block, model_rows, history)
            self._mask(scores, remap[rows[bought]], items[bought], self.items.block_start)
            top_items, top_scores = top_k_per_column(scores, k, floor=self.policy.min_score)
        top_items[top_items >= 0] += self.items.block_start
        items_out[model_rows], scores_out[model_rows] = top_items, top_scores
        return items_out, scores_out

    def category_tier(self, history, n_rows, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows, items, weights, purchased = history
        affinity = self._affinity(rows, items, weights, n_rows)  # users x (C + 1)
        category = np.where(self.items.category >= 0, self.items.category, self.items.n_categories)
        n = self.items.n_items
        scores = np.full((_padded(n), n_rows), -np.inf, np.float32)
        scores[:n] = affinity.T[category] * self.items.popularity[:, None]
        self._mask(scores, rows[purchased], items[purchased])
        chosen_rows, chosen_items = np.nonzero(chosen >= 0)
        self._mask(scores, chosen_rows, chosen[chosen_rows, chosen_items])
        return top_k_per_column(scores, self.policy.k, floor=0.0)  # 0: outside the user's top categories

    def popularity_tier(self, history, n_rows, chosen: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The most popular items the user neither purchased nor already got (a short walk per user)."""
        k = self.policy.k
        rows, items, _, purchased = history
        items_out = np.full((n_rows, k), -1, np.int64)
        excluded = [set() for _ in range(n_rows)]
        for row, item in zip(rows[purchased], items[purchased]):
            excluded[row].add(int(item))
        for row in range(n_rows):
            excluded[row].update(int(i) for i in chosen[row] if i >= 0)
        plain = self.pop_order[:k]
        for row in range(n_rows):
            if not excluded[row]:
                items_out[row, : len(plain)] = plain
                continue
            picks = [i for i in self.pop_order[: k + len(excluded[row])] if int(i) not in excluded[row]][:k]
            items_out[row, : len(picks)] = picks
        scores = np.where(items_out >= 0, self.items.popularity[np.maximum(items_out, 0)], -np.inf)
        return items_out, scores.astype(np.float32)

    # -- outputs
    def _model_or_precomputed(self, block: pd.DataFrame, history) -> tuple[np.ndarray, np.ndarray]:
        """The model tier, or the one item-blocked scoring already merged into `model_items`/`model_scores`."""
        if "model_items" not in block:
            return self.model_tier(block, history)
        k = self.policy.k
        items = np.full((len(block), k), -1, np.int64)
        scores = np.full((len(block), k), -np.inf, np.float32)
        for row, (its, scs) in enumerate(zip(block["model_items"], block["model_scores"])):
            if its is not None and len(its):
                items[row, : min(len(its), k)], scores[row, : min(len(its), k)] = its[:k], scs[:k]
        return items, scores

    def tiers(self, block: pd.DataFrame) -> pd.DataFrame:
        """Per user, each tier computed on its own (only purchases excluded): for evaluation, where the
        served list for any history threshold is composed from the tiers afterwards."""
        history = self._history(block)
        none = np.full((len(block), self.policy.k), -1, np.int64)
        model = self._model_or_precomputed(block, history)
        category = self.category_tier(history, len(block), none)
        popularity = self.popularity_tier(history, len(block), none)
        out = {USER: block[USER].to_numpy()}
        for name, (items, scores) in zip(("model", "category", "popularity"), (model, category, popularity)):
            out[f"{name}_items"] = self._ids_lists(items)
            out[f"{name}_scores"] = [s[i >= 0].tolist() for i, s in zip(items, scores)]
        return pd.DataFrame(out)

    def candidates(self, block: pd.DataFrame) -> pd.DataFrame:
        """Model-tier candidates against the current item block (item-blocked scoring): exploded rows."""
        items, scores = self.model_tier(block, self._history(block))
        keep = items >= 0
        return pd.DataFrame(
            {
                USER: np.repeat(block[USER].to_numpy(), keep.sum(axis=1)),
                "item_index": items[keep],
                "score": scores[keep].astype(np.float64),
            }
        )

    def served(self, block: pd.DataFrame) -> pd.DataFrame:
        """The final lists as rows (user_id, rank, product_id, score, source)."""
        n_rows = len(block)
        history = self._history(block)
        items, scores = self._model_or_precomputed(block, history)
        sources = np.where(items >= 0, self.policy.model or "", "").astype(object)
        fills = ((self.category_tier, SOURCE_CATEGORY),) if self.policy.use_category else ()
        for fill, source in (*fills, (self.popularity_tier, SOURCE_POPULARITY)):
            short = np.flatnonzero((items < 0).any(axis=1))
            if len(short) == 0:
                break
            sub_history = _subset_history(history, short, n_rows)
            fill_items, fill_scores = fill(sub_history, len(short), items[short])
            for local, row in enumerate(short):
                free = np.flatnonzero(items[row] < 0)
                got = fill_items[local][fill_items[local] >= 0][: len(free)]
                slots = free[: len(got)]
                items[row, slots] = got
                scores[row, slots] = fill_scores[local][fill_items[local] >= 0][: len(got)]
                sources[row, slots] = source
        keep = items >= 0
        ranks = np.cumsum(keep, axis=1)
        return pd.DataFrame(
            {
                USER: np.repeat(block[USER].to_numpy(), keep.sum(axis=1)),
                "rank": ranks[keep].astype(np.int32),
                "product_id": self.items.product_ids[items[keep]],
                "score": scores[keep].astype(np.float64),
                "source": sources[keep].astype(str),
            }
        )

    def _ids_lists(self, items: np.ndarray) -> list[list[int]]:
        ids = self.items.product_ids
        return [ids[row[row >= 0]].tolist() for row in items]

    def run(self, frames: Iterator[pd.DataFrame], mode: str) -> Iterator[pd.DataFrame]:
        step = getattr(self, mode)
        for frame in frames:
            for start in range(0, len(frame), self.block_users):
                yield step(frame.iloc[start : start + self.block_users].reset_index(drop=True))


def _scaled(scores: np.ndarray) -> np.ndarray:
    """Each user's (column's) finite scores divided by its best, so two models' scores can be blended."""
    finite = np.where(np.isfinite(scores), scores, 0)
    best = finite.max(axis=0, keepdims=True)
    return np.where(np.isfinite(scores), finite / np.where(best > 0, best, 1), -np.inf).astype(np.float32)


def _subset_history(history, subset_rows: np.ndarray, n_rows: int):
    rows, items, weights, purchased = history
    remap = np.full(n_rows, -1)
    remap[subset_rows] = np.arange(len(subset_rows))
    keep = remap[rows] >= 0
    return remap[rows[keep]], items[keep], weights[keep], purchased[keep]
