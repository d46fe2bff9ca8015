"""The recommendation decisions in numpy (spark_jobs/recommender.py), without Spark: ranking metrics against a
textbook reference, intervals, the evidence-sized splits, recent popularity, the search's coverage of its
space, the gate's verdicts, and the in-process serving path against the evaluation path (what is evaluated is
what is published)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy import sparse

from spark_jobs import als_recommendations as job
from spark_jobs import recommender as rec
from spark_jobs.topk import ItemSide, ServePolicy, TopK

pytestmark = pytest.mark.fast  # make test-fast: no Spark session, Airflow run or browser

HOUR0 = 480_000  # some hour since the epoch (2024-10-05)


def ranking_reference(recs: dict[int, list[int]], relevant: dict[int, set[int]], k: int) -> dict[str, float]:
    """Textbook precision / recall / NDCG / MAP @k, averaged over users with relevant items."""
    totals = dict.fromkeys(rec.METRICS, 0.0)
    for user, items in relevant.items():
        hits = [1 if item in items else 0 for item in recs.get(user, [])[:k]]
        totals["precision"] += sum(hits) / k
        totals["recall"] += sum(hits) / len(items)
        ideal = sum(1 / np.log2(i + 2) for i in range(min(k, len(items))))
        totals["ndcg"] += sum(h / np.log2(i + 2) for i, h in enumerate(hits)) / ideal
        totals["map"] += sum(sum(hits[: i + 1]) / (i + 1) for i, h in enumerate(hits) if h) / min(k, len(items))
    return {metric: value / len(relevant) for metric, value in totals.items()}


def random_lists(seed: int = 7, n_users: int = 25, n_items: int = 30):
    rng = np.random.default_rng(seed)
    recs = {u: [int(i) for i in rng.choice(n_items, size=8, replace=False)] for u in range(20)}
    relevant = {
        u: {int(i) for i in rng.choice(n_items, size=rng.integers(1, 9), replace=False)} for u in range(n_users)
    }  # users 20..24 have relevant items and no recommendations
    lists = np.full((n_users, 8), -1, np.int64)
    for u, items in recs.items():
        lists[u] = items
    matrix = sparse.lil_matrix((n_users, n_items), dtype=np.float32)
    for u, items in relevant.items():
        matrix[u, sorted(items)] = 1
    return recs, relevant, lists, matrix.tocsr()


@pytest.mark.parametrize("k", [3, 8, 10])
def test_metrics_per_user_match_the_textbook_reference(k):
    recs, relevant, lists, matrix = random_lists()
    per_user = rec.metrics_per_user(lists, matrix, k)
    expected = ranking_reference(recs, relevant, k)
    for metric in rec.METRICS:
        assert per_user[metric].mean() == pytest.approx(expected[metric], abs=1e-12), metric
    assert per_user["ndcg"][20:].sum() == 0  # no list: nothing found


def test_intervals_cover_the_mean_and_the_paired_difference_sees_what_unpaired_means_hide():
    rng = np.random.default_rng(0)
    base = rng.random(2000)
    interval = rec.mean_interval(base, confidence=0.95, seed=1)
    assert interval["low"] < base.mean() < interval["high"] and interval["n_users"] == 2000
    assert interval["high"] - interval["low"] == pytest.approx(2 * 1.96 * base.std() / np.sqrt(2000), rel=0.15)
    better = base + 0.01  # the same users, a little better each: invisible unpaired, certain paired
    difference = rec.paired_difference(better, base, seed=1)
    assert difference["low"] == pytest.approx(0.01) and difference["low"] > 0
    assert rec.mean_interval(np.empty(0))["mean"] is None


# ------------------------------------------------------------------------------------------------ data
def make_log(rows: list[tuple[int, int, int, float, int]], categories: dict[int, str] | None = None) -> rec.Log:
    """rows: (user_id, product_id, hour offset, weight, purchases)."""
    frame = pd.DataFrame(rows, columns=["user_id", "product_id", "hour", "weight", "n_purchases"])
    frame["event_hour"] = pd.to_datetime((HOUR0 + frame["hour"]) * 3600, unit="s")
    catalogue = pd.DataFrame(
        {"product_id": list((categories or {}).keys()), "category": list((categories or {}).values())}
    )
    return rec.Log.from_frames(frame, users=frame["user_id"].unique(), item_categories=catalogue)


def test_train_aggregates_pairs_and_popularity_follows_recency():
    # item 1: three users long ago; item 2: two users in the last day; user 10 bought item 1
    log = make_log(
        [
            (10, 1, 0, 1.0, 1),
            (10, 1, 5, 2.0, 0),
            (11, 1, 1, 1.0, 0),
            (12, 1, 2, 1.0, 0),
            (13, 2, 499, 1.0, 0),
            (14, 2, 498, 1.0, 0),
            (14, 3, 100, 1.0, 0),
        ]
    )
    train = rec.Train.build(log)
    assert train.n_pairs == 6 and train.end == HOUR0 + 500
    assert train.matrix[0, 0] == 3.0 and train.purchased[0, 0] == 1 and train.purchased.nnz == 1
    assert list(train.n_history) == [1, 1, 1, 1, 2]
    all_time, last_day = train.popularity({}), train.popularity({"window_hours": 24})
    assert np.argmax(all_time) == 0 and np.argmax(last_day) == 1
    decayed = train.popularity({"half_life_hours": 24})
    assert decayed[1] == pytest.approx(2 ** (-0 / 24) + 2 ** (-1 / 24), rel=1e-5) and decayed[1] > decayed[0]
    variants = train.popularity_variants()
    assert {} in variants and {"window_hours": 24} in variants and {"half_life_hours": 168} in variants
    assert all(v.get("window_hours", 0) < train.span_hours for v in variants)


def test_latest_per_user_holds_out_each_users_latest_hours():
    log = make_log(
        [(1, p, h, 1.0, 0) for p, h in enumerate(range(0, 100, 10))]  # 10 hours
        + [(2, 1, 3, 1.0, 0), (2, 2, 3, 1.0, 0)]  # one hour: kept whole
        + [(3, 1, 50, 1.0, 0), (3, 2, 60, 1.0, 0), (3, 3, 60, 1.0, 0)]
    )  # two hours
    held = rec.latest_per_user(log, 0.2)
    by_user = pd.DataFrame({"user": log.user_ids[log.user], "hour": log.hour - HOUR0, "held": held})
    assert sorted(by_user.query("user == 1 and held")["hour"]) == [80, 90]
    assert not by_user.query("user == 2")["held"].any()
    assert sorted(by_user.query("user == 3 and held")["hour"]) == [60, 60]


def test_the_time_holdout_grows_until_it_holds_enough_users():
    # 1,000 users each active once, one an hour: the last 7 days (168 h) hold 168 users
    log = make_log([(u, u % 7, u, 1.0, 0) for u in range(1000)])
    cutoff, record = rec.evidence_cutoff(log, rec.SplitRule("7d", min_eval_users=300, min_eval_share=0.9))
    assert record["needed_users"] == 300 and record["n_users"] == 336 and cutoff == HOUR0 + 1000 - 336
    assert "grown from 7d to reach 300 users" in record["rule"]
    _, capped = rec.evidence_cutoff(log, rec.SplitRule("7d", min_eval_users=10_000, min_eval_share=1.0))
    assert capped["hours"] == 500 and "grown to 50% of the span: fewer than 1000 users" in capped["rule"]
    _, enough = rec.evidence_cutoff(log, rec.SplitRule("7d", min_eval_users=10, min_eval_share=0.01))
    assert enough["hours"] == 168 and "grown" not in enough["rule"]
    _, share = rec.evidence_cutoff(log, rec.SplitRule("20%", min_eval_users=10))
    assert share["hours"] == 200
    assert rec.evidence_cutoff(make_log([(1, 1, 0, 1.0, 0)]), rec.SplitRule())[0] is None
    with pytest.raises(ValueError, match="7d', '36h' or '20%'"):
        rec.parse_holdout("a week")


# ------------------------------------------------------------------------------------------------ search
def test_the_search_plan_explores_every_axis_early():
    space = rec.SearchSpace(rank_range=(16, 128))
    plan = rec.model_plan(space, seed=42)
    first = [next(plan) for _ in range(16)]
    als = [params for model, params in first if model == "als"]
    assert {p["rank"] for p in als} == {16, 32, 64, 128}
    assert {p["weight_transform"] for p in als} == {"raw", "log1p"}
    alphas = sorted(p["alpha"] for p in als)
    assert alphas[0] < 2 and alphas[-1] > 15  # both ends of the log-uniform range
    assert [p["neighbours"] for m, p in first if m == "item_cf"] == [50, 20, 100, 200]
    assert rec.SearchBudget(min_seconds=20, seconds_per_million_pairs=60).seconds(100_000) == pytest.approx(26)
    assert rec.SearchBudget(max_seconds=90).seconds(10**9) == 90


def planted(n_per_group: int = 60, seed: int = 3) -> rec.Log:
    """Two taste groups with their own 12 items; each user touches 8 of their group's items early and 3 more
    in the last days; group A is larger, so popularity favours its items."""
    rng = np.random.default_rng(seed)
    rows = []
    for users, items in (
        (range(0, 2 * n_per_group), range(100, 112)),
        (range(1000, 1000 + n_per_group), range(200, 212)),
    ):
        for user in users:
            chosen = rng.permutation(list(items))
            for position, item in enumerate(chosen[:8]):
                rows.append((user, int(item), int(rng.integers(0, 400)), 1.0, int(position == 0)))
            for item in chosen[8:11]:
                rows.append((user, int(item), int(rng.integers(420, 480)), 1.0, 0))
    return make_log(rows, {i: "odd" if i % 2 else "even" for i in [*range(100, 112), *range(200, 212)]})


def test_the_search_finds_the_taste_groups_and_records_every_candidate():
    log = planted()
    folds = []
    for name, held in (
        ("user_latest", rec.latest_per_user(log, 0.3)),
        ("time", log.hour >= rec.evidence_cutoff(log, rec.SplitRule("3d", min_eval_users=50))[0]),
    ):
        train = rec.Train.build(log.select(~held))
        folds.append(rec.Fold(name, train, rec.eval_set(train, log.select(held), max_users=10_000, seed=0)))
    engine = rec.implicit_engine(iterations=10, seed=0, max_user_items=100)
    record = rec.search(
        folds,
        engine,
        rec.SearchSpace(rank_range=(4, 16)),
        rec.SearchBudget(max_fits=6, min_seconds=60),
        k=3,
        metric="ndcg",
        min_history="auto",
        min_score=1e-6,
        seed=0,
        log=lambda _: None,
    )
    assert record["n_fits"] == 6 and record["n_candidates"] >= 30  # fits, their blends, the popularity rankings
    assert [f["name"] for f in record["folds"]] == ["user_latest", "time"]
    models = {c["model"] for c in record["candidates"]}
    assert {"popularity", "category_popularity", "als", "item_cf", "blend"} <= models
    assert all(
        c["validation_ndcg_user_latest"] is not None and c["validation_ndcg_time"] is not None and c["seconds"] >= 0
        for c in record["candidates"]
    )
    chosen = record["chosen"]
    assert chosen["model"] in ("als", "item_cf", "blend") and chosen["min_history"] in rec.HISTORY_THRESHOLDS
    # scores are in units of each fold's best non-personalised ranking: the taste groups double it
    best_popularity = max(c["validation_ndcg"] for c in record["candidates"] if c["model"] == "popularity")
    assert 0.95 < best_popularity <= 1  # 1 when one ranking is the best on both folds
    assert chosen["validation_ndcg"] > 1.5


# ------------------------------------------------------------------------------------------------ gate
def holdout_record(served: np.ndarray, baseline: np.ndarray) -> dict:
    lists = {
        "served": {"all": {"ndcg": served.mean(), "ndcg_low": None, "ndcg_high": served.mean()}},
        "recent_popularity": {"all": {"ndcg": baseline.mean()}},
    }
    difference = rec.paired_difference(served, baseline, seed=0)
    return {
        "split": "user_latest",
        "lists": lists,
        "served_vs_baseline": {"baseline": "recent_popularity", **difference},
    }


def test_the_gate_falls_back_only_on_evidence():
    rng = np.random.default_rng(1)
    baseline = rng.random(400)
    settings = dict(metric="ndcg", max_drop=0.2, action="fallback", level="warn", confidence=0.95)
    noisy = rec.gate(holdout_record(baseline - 0.005 + rng.normal(0, 0.3, 400), baseline), None, **settings)
    assert noisy["passed"] and noisy["verdict"].startswith("model kept: no evidence it is worse")
    worse = rec.gate(holdout_record(baseline - 0.05, baseline), None, **settings)
    assert not worse["passed"] and worse["verdict"].startswith("fallback: worse than recent_popularity by 0.0500")
    assert "400 users" in worse["reasons"][0] and worse["difference_high"] < 0
    better = rec.gate(holdout_record(baseline + 0.05, baseline), None, **settings)
    assert better["passed"] and better["verdict"].startswith("model kept: better than recent_popularity")
    previous = {"ds": "2026-11-21", "holdout": {"split": "user_latest", "lists": {"served": {"all": {"ndcg": 10.0}}}}}
    dropped = rec.gate(holdout_record(baseline + 0.05, baseline), previous, **settings)
    assert not dropped["passed"] and "below the last published run (2026-11-21: 10.0000)" in dropped["reasons"][0]
    other_protocol = {**previous, "holdout": {**previous["holdout"], "split": "time"}}
    assert rec.gate(holdout_record(baseline + 0.05, baseline), other_protocol, **settings)["passed"]
    assert rec.gate({"lists": {}}, None, **settings)["passed"]  # nothing to evaluate on: publish, with a note


def test_a_tuned_choice_is_reused_within_the_cadence():
    chosen = {"model": "als", "fallback": {"popularity": {}, "use_category": False}}
    previous = {
        "k": 3,
        "ds": "2026-11-20",
        "tuning": {"tuned_on": "2026-11-18", "engine": "implicit", "chosen": chosen},
    }
    ds = pd.Timestamp("2026-11-22").date()
    config = job.RecConfig.defaults(top_k=3, tune_every_days=7, engine="implicit")
    assert job.reusable_choice(previous, ds, config) == chosen
    assert job.reusable_choice(previous, ds, job.RecConfig.defaults(top_k=3, tune_every_days=4)) is None  # 4 days old
    assert job.reusable_choice(previous, ds, job.RecConfig.defaults(top_k=5, tune_every_days=7)) is None  # other K
    assert job.reusable_choice(previous, ds, job.RecConfig.defaults(top_k=3, engine="mllib")) is None  # other engine
    assert job.reusable_choice(None, ds, config) is None


# ------------------------------------------------------------------------------------------------ serving
@pytest.mark.parametrize("model", ["als", "item_cf", "blend"])
def test_in_process_serving_publishes_exactly_the_evaluated_lists(model):
    """serve_inprocess (the top-K engine, items in popularity order) and the evaluation path (dense scores in
    catalogue order) give each user the same list, recent-popularity blend and category fallback included."""
    log = planted(n_per_group=20)
    log = log.select(~((log.user < 10) & (log.hour - HOUR0 >= 420)))  # 10 users with 8 history items: fallback
    full = rec.Train.build(log)
    engine = rec.implicit_engine(iterations=5, seed=0, max_user_items=100)
    als = {"alpha": 5.0, "reg_param": 0.1, "rank": 8, "weight_transform": "raw"}
    params = {
        "als": als,
        "item_cf": {"neighbours": 5},
        "blend": {"weight": 0.4, "als": als, "item_cf": {"neighbours": 5}},
    }[model]
    fallback = {"popularity": {"half_life_hours": 24}, "use_category": True}
    choice = {
        "model": model,
        "params": {**params, "popularity": fallback["popularity"], "popularity_weight": 0.3},
        "min_history": 9,
        "fallback": fallback,
    }
    config = job.RecConfig.defaults(top_k=4, min_score=1e-6)
    served = job.serve_inprocess(full, choice, engine, config, block_users=17)

    users = np.arange(log.n_users)
    scorer = rec.scorer_for(choice, full, rec.Models(full, engine))
    model_lists = rec.top_lists(scorer, full, users, 4, floor=1e-6)[0]
    fallback_lists = rec.fallback_lists(full, users, 4, fallback["popularity"], True)
    expected = rec.served_lists(model_lists, fallback_lists, full.n_history, 9)
    got = served.sort_values(["user_id", "rank"]).groupby("user_id")["product_id"].apply(list)
    for user in users:
        assert got[log.user_ids[user]] == [int(log.item_ids[i]) for i in expected[user] if i >= 0], user
    assert set(served["source"]) >= {model, "category_popularity"}  # users below 9 history items: the fallback


def test_the_popularity_blend_is_one_more_als_factor():
    rng = np.random.default_rng(2)
    factors, users = rng.standard_normal((300, 6), dtype=np.float32), rng.standard_normal((5, 6), dtype=np.float32)
    popularity = np.sort(rng.random(300).astype(np.float32))[::-1]
    items = ItemSide(
        product_ids=np.arange(300),
        popularity=popularity,
        category=np.zeros(300, np.int32),
        n_categories=1,
        factors=factors,
    )
    frame = pd.DataFrame(
        {
            "user_id": range(5),
            "n_history": 1,
            "history": [[0]] * 5,
            "history_weights": [[1.0]] * 5,
            "purchased": [[True]] * 5,
            "factors": list(users),
        }
    )
    engine = TopK(items, ServePolicy(k=5, model="als", min_score=-np.inf, popularity_weight=0.7))
    top, _ = engine.model_tier(frame, engine._history(frame))
    scores = users @ factors.T + 0.7 * popularity / popularity.max()
    scores[:, 0] = -np.inf  # bought
    np.testing.assert_array_equal(top, np.argsort(-scores, axis=1, kind="stable")[:, :5])


def test_only_the_users_of_user_features_are_served():
    frame = pd.DataFrame(
        {
            "user_id": [1, 1, 2, 3],
            "product_id": [10, 11, 10, 12],
            "weight": 1.0,
            "n_purchases": 0,
            "event_hour": pd.Timestamp("2026-11-01"),
        }
    )
    log = rec.Log.from_frames(
        frame, users=[1, 2, 4], item_categories=pd.DataFrame({"product_id": [10, 11, 12, 13], "category": None})
    )
    assert list(log.user_ids) == [1, 2, 3, 4] and list(log.served) == [True, True, False, True]
    served = job.serve_inprocess(
        rec.Train.build(log),
        job.popularity_choice(),
        rec.implicit_engine(iterations=1, seed=0, max_user_items=10),
        job.RecConfig.defaults(top_k=2),
    )
    assert sorted(served["user_id"].unique()) == [1, 2, 4]  # user 3 interacted but is not a user to serve
    assert (served.groupby("user_id").size() == 2).all()


def test_one_ranking_for_everyone_takes_the_shortcut_to_the_same_lists():
    log = planted(n_per_group=30)
    train = rec.Train.build(log)
    users = np.arange(log.n_users)
    popularity = train.popularity({"half_life_hours": 48})
    popularity[5] = popularity[6]  # a tie: the lower item index first either way
    fast = rec.top_lists(rec.popularity_scorer(popularity), train, users, 5, floor=0.0)
    dense = rec.top_lists(lambda u: np.repeat(popularity[None, :], len(u), axis=0), train, users, 5, floor=0.0)
    np.testing.assert_array_equal(fast[0], dense[0])
    np.testing.assert_allclose(fast[1], dense[1])
    assert (fast[0] >= 0).all() and train.purchased.nnz > 0
