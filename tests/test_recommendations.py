"""Recommendations with Spark: the top-K engine against plain references, the numpy metrics against Spark's
RankingEvaluator, item-CF in Spark against a dense cosine and the in-process one, and the job end to end on
tiny planted data (shared `spark` fixture): the in-process engine, tuning, evaluation with intervals,
fallbacks, the publish gate's branches, the MLlib engine (parity), item-blocked scoring, a 3-hour data set.
The decisions themselves are tested without Spark in test_recommender.py."""

from __future__ import annotations

import datetime as dt
import json
import random
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spark_jobs import als_recommendations as job
from spark_jobs import recommender as rec
from spark_jobs.topk import CHUNK, ItemSide, ServePolicy, TopK, top_k_per_column

DS = dt.date(2026, 11, 22)
TOP_K = 3
GROUP_A_USERS, GROUP_B_USERS, COLD_USERS = range(1, 41), range(41, 61), range(61, 64)
GROUP_A_ITEMS, GROUP_B_ITEMS, UNSEEN_ITEMS = range(101, 113), range(201, 213), (301, 302)


def write_feature(features_dir: Path, table: str, frame: pd.DataFrame) -> Path:
    partition = features_dir / table / f"ds={DS.isoformat()}"
    partition.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(
        partition / f"{table}.parquet", index=False, coerce_timestamps="us", allow_truncated_timestamps=True
    )
    return partition


# ------------------------------------------------------------------------------------ ranking metrics
def test_numpy_metrics_match_sparks_ranking_evaluator(spark):
    from pyspark.ml.evaluation import RankingEvaluator
    from scipy import sparse

    rng = np.random.default_rng(7)
    n_users, n_items = 25, 30
    lists = np.full((n_users, 8), -1, np.int64)
    lists[:20] = [rng.choice(n_items, size=8, replace=False) for _ in range(20)]  # users 20..24: no list
    relevant = [
        sorted(int(i) for i in rng.choice(n_items, size=rng.integers(1, 9), replace=False)) for _ in range(n_users)
    ]
    matrix = sparse.csr_matrix(
        (
            np.ones(sum(map(len, relevant))),
            (np.repeat(np.arange(n_users), list(map(len, relevant))), np.concatenate(relevant)),
        ),
        shape=(n_users, n_items),
    )
    frame = spark.createDataFrame(
        [([float(i) for i in row if i >= 0], [float(i) for i in rel]) for row, rel in zip(lists, relevant)],
        "prediction array<double>, label array<double>",
    )
    for k in (3, 8):
        per_user = rec.metrics_per_user(lists, matrix, k)
        for metric, spark_name in (
            ("precision", "precisionAtK"),
            ("recall", "recallAtK"),
            ("ndcg", "ndcgAtK"),
            ("map", "meanAveragePrecisionAtK"),
        ):
            evaluator = RankingEvaluator(metricName=spark_name, k=k)
            assert per_user[metric].mean() == pytest.approx(evaluator.evaluate(frame), abs=1e-12), (k, metric)


# ------------------------------------------------------------------------------------- top-K engine
@pytest.mark.parametrize("n_items", [50, 40 * CHUNK, 40 * CHUNK + 17])
def test_top_k_per_column_matches_a_full_sort(n_items):
    rng = np.random.default_rng(n_items)
    scores = rng.standard_normal((n_items, 37)).astype(np.float32)
    scores[rng.random(scores.shape) < 0.3] = -np.inf
    scores[:, 0] = -np.inf  # a user with nothing allowed
    scores[: n_items - 2, 1] = -np.inf  # a user with fewer than k allowed
    padded = np.full((-(-n_items // CHUNK) * CHUNK, 37), -np.inf, np.float32)
    padded[:n_items] = scores
    items, values = top_k_per_column(padded, 5)
    for user in range(37):
        finite = [(-scores[i, user], i) for i in range(n_items) if np.isfinite(scores[i, user])]
        expected = [i for _, i in sorted(finite)[:5]]
        assert list(items[user][items[user] >= 0]) == expected
        assert list(values[user][: len(expected)]) == [scores[i, user] for i in expected]


@pytest.mark.parametrize("n_items", [300, 1000, 1003])
def test_tiled_als_top_k_equals_scoring_the_whole_matrix(n_items, monkeypatch):
    from spark_jobs import topk
    from spark_jobs.topk import als_top_k

    monkeypatch.setattr(topk, "TILE_BYTES", 4 * 50 * 64)  # 64-item tiles: many tiles, a partial last one

    rng = np.random.default_rng(n_items)
    items, users = rng.standard_normal((n_items, 8), dtype=np.float32), rng.standard_normal((50, 8), dtype=np.float32)
    excluded_users = np.repeat(np.arange(50), 20)
    excluded_items = rng.integers(0, n_items, 1000)
    scores = np.full((-(-n_items // CHUNK) * CHUNK, 50), -np.inf, np.float32)
    scores[:n_items] = items @ users.T
    scores[excluded_items, excluded_users] = -np.inf
    expected = top_k_per_column(scores, 7, floor=0.5)
    tiled = als_top_k(items, users, excluded_users, excluded_items, 7, floor=0.5)
    np.testing.assert_array_equal(tiled[0], expected[0])
    np.testing.assert_allclose(tiled[1], expected[1], rtol=1e-5)


def engine(model: str | None, **policy) -> TopK:
    """6 items in popularity order; categories: items 0, 2, 4 in category 0, items 1, 3 in 1, item 5 unknown."""
    items = ItemSide(
        product_ids=np.array([10, 11, 12, 13, 14, 15]),
        popularity=np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], np.float32),
        category=np.array([0, 1, 0, 1, 0, -1], np.int32),
        n_categories=2,
        factors=np.array([[0, 0], [0, 0], [0, 0], [1, 0], [0, 1], [0.5, 0.5]], np.float32),
    )
    return TopK(items, ServePolicy(k=4, model=model, **policy))


def users_frame(rows) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["user_id", "n_history", "history", "history_weights", "purchased", "factors"])


def test_served_lists_fill_model_then_category_then_popularity():
    frame = users_frame(
        [
            # likes item 13 (factor 0): model tier 13, 15; bought 13 -> excluded; category of history: 1
            (1, 2, [3, 1], [5.0, 1.0], [True, False], [1.0, 0.0]),
            # cold: no history, no factors -> popularity only
            (2, 0, [], [], [], None),
            # one history item, but min_history=2 -> no model tier; history in category 0, bought item 0
            (3, 1, [0], [3.0], [True], [0.0, 1.0]),
            # scores all at or below min_score -> fallback
            (4, 2, [4, 2], [1.0, 1.0], [False, False], [1e-9, 0.0]),
        ]
    )
    rows = engine("als", min_history=2).served(frame)
    lists = {u: list(zip(g["product_id"], g["source"])) for u, g in rows.groupby("user_id")}
    assert lists[1] == [(15, "als"), (11, "category_popularity"), (10, "popularity"), (12, "popularity")]
    assert lists[2] == [(10, "popularity"), (11, "popularity"), (12, "popularity"), (13, "popularity")]
    assert lists[3] == [
        (12, "category_popularity"),
        (14, "category_popularity"),
        (11, "popularity"),
        (13, "popularity"),
    ]
    assert [s for _, s in lists[4]] == ["category_popularity"] * 3 + ["popularity"]
    assert all(list(g["rank"]) == [1, 2, 3, 4] for _, g in rows.groupby("user_id"))


def test_item_blocks_give_the_same_model_tier_as_one_broadcast():
    rng = np.random.default_rng(3)
    n_items, rank = 700, 8
    factors = rng.standard_normal((n_items, rank)).astype(np.float32)
    full = ItemSide(
        product_ids=np.arange(1000, 1000 + n_items),
        popularity=np.linspace(1, 0.1, n_items, dtype=np.float32),
        category=np.zeros(n_items, np.int32),
        n_categories=1,
        factors=factors,
    )
    frame = users_frame(
        [
            (
                u,
                3,
                list(rng.choice(n_items, 3, replace=False)),
                [1.0] * 3,
                [True, False, True],
                list(rng.standard_normal(rank)),
            )
            for u in range(25)
        ]
    )
    policy = ServePolicy(k=5, model="als", min_score=-np.inf)
    whole = TopK(full, policy).model_tier(frame, TopK(full, policy)._history(frame))
    parts = []
    for start in range(0, n_items, 300):
        block = ItemSide(full.product_ids, full.popularity, full.category, 1, factors[start : start + 300], start)
        parts.append(TopK(block, policy).candidates(frame))
    merged = pd.concat(parts).sort_values(["user_id", "score"], ascending=[True, False]).groupby("user_id").head(5)
    for user, group in merged.groupby("user_id"):
        assert list(group["item_index"]) == list(whole[0][user])


# ------------------------------------------------------------------------------------------ item-CF
def test_item_neighbours_match_a_dense_cosine(spark):
    from spark_jobs.item_cf import item_neighbours

    rng = np.random.default_rng(5)
    n_users, n_items = 40, 12
    dense = (rng.random((n_users, n_items)) < 0.3) * rng.integers(1, 6, (n_users, n_items))
    rows = [
        (u, [int(i) for i in np.flatnonzero(dense[u])], [float(w) for w in dense[u][dense[u] > 0]])
        for u in range(n_users)
    ]
    frame = spark.createDataFrame(rows, "user_id long, history array<int>, history_weights array<float>")
    similarity = item_neighbours(frame, n_items, neighbours=3).toarray()
    values = np.log1p(dense)
    norms = np.linalg.norm(values, axis=0)
    cosine = (values.T @ values) / np.outer(norms, norms)
    np.fill_diagonal(cosine, -1)
    for item in range(n_items):
        expected = sorted(range(n_items), key=lambda j: (-cosine[item, j], j))[:3]
        assert sorted(np.flatnonzero(similarity[item])) == sorted(expected)
        assert similarity[item, expected] == pytest.approx(cosine[item, expected], rel=1e-5)


def test_in_process_item_cf_equals_sparks(spark):
    """The same similarities from implicit's all-pairs k-NN in this process as from the Spark job's
    co-occurrence sums (log weights, each user's strongest items capped)."""
    from spark_jobs.item_cf import item_neighbours

    rng = np.random.default_rng(9)
    # distinct weights: which items a capped user keeps must not depend on tie-breaking
    rows = [(u, int(i), 0, float(rng.uniform(1, 6)), 0) for u in range(60) for i in rng.choice(25, 7, replace=False)]
    frame = pd.DataFrame(rows, columns=["user_id", "product_id", "hour", "weight", "n_purchases"])
    frame["event_hour"] = pd.Timestamp("2026-11-01")
    train = rec.Train.build(rec.Log.from_frames(frame))
    in_process = rec.fit_item_cf(train, {"neighbours": 4}, max_user_items=5).toarray()
    user_rows = spark.createDataFrame(
        [
            (int(u), [int(i) for i in train.matrix[u].indices], [float(w) for w in train.matrix[u].data])
            for u in range(train.log.n_users)
        ],
        "user_id long, history array<int>, history_weights array<float>",
    )
    in_spark = item_neighbours(user_rows, train.log.n_items, neighbours=4, max_user_items=5).toarray()
    np.testing.assert_allclose(in_process, in_spark, rtol=1e-4, atol=1e-6)
    assert (np.count_nonzero(in_process, axis=1) == 4).all() and not np.diag(in_process).any()


# ------------------------------------------------------------------------------------- the job (Spark)
def planted_interactions(hours: int | None = None) -> pd.DataFrame:
    """Two taste groups with their own items (categories cut across groups, so the category fallback
    cannot tell them apart; group A is larger, so popularity favours its items). Each user views 8 of the
    group's items over days ds-20..ds-8 (buying the first) and 4 others in the last 5 days. With `hours`,
    the same story squeezed into the last `hours` hours of ds."""
    rng = random.Random(11)
    rows = []
    end = dt.datetime.combine(DS, dt.time(23))
    for users, items in ((GROUP_A_USERS, GROUP_A_ITEMS), (GROUP_B_USERS, GROUP_B_ITEMS)):
        for user in users:
            shuffled = rng.sample(list(items), len(items))
            for position, item in enumerate(shuffled[:8]):
                ago = rng.randint(1, hours - 1) if hours else rng.randint(8 * 24, 20 * 24)
                rows.append(
                    (user, item, end - dt.timedelta(hours=ago), 6.0 if position == 0 else 1.0, int(position == 0))
                )
            for item in shuffled[8:12]:
                ago = 0 if hours else rng.randint(0, 5 * 24)
                rows.append((user, item, end - dt.timedelta(hours=ago), 1.0, 0))
    frame = pd.DataFrame(rows, columns=["user_id", "product_id", "event_hour", "weight", "n_purchases"])
    frame["event_date"] = frame["event_hour"].dt.date
    frame = frame.groupby(["user_id", "product_id", "event_date", "event_hour"], as_index=False).agg(
        weight=("weight", "sum"), n_purchases=("n_purchases", "sum")
    )
    return frame.astype({"n_purchases": "int32", "event_hour": "datetime64[us]"})


def write_features(features_dir: Path, interactions: pd.DataFrame) -> Path:
    write_feature(features_dir, "interactions", interactions)
    write_feature(
        features_dir, "user_features", pd.DataFrame({"user_id": [*GROUP_A_USERS, *GROUP_B_USERS, *COLD_USERS]})
    )
    items = [*GROUP_A_ITEMS, *GROUP_B_ITEMS, *UNSEEN_ITEMS]
    write_feature(
        features_dir,
        "item_features",
        pd.DataFrame({"product_id": items, "category": ["odd" if i % 2 else "even" for i in items]}),
    )
    return features_dir


def job_args(features_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--features-dir",
        str(features_dir),
        "--ds",
        DS.isoformat(),
        "--output-dir",
        str(output_dir),
        "--top-k",
        str(TOP_K),
        "--set",
        "als.max_iter=5",
        "--set",
        "als.search.rank=[8, 16]",
        "--set",
        "als.tuning.max_fits=4",
        *extra,
    ]


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> Path:
    return write_features(tmp_path_factory.mktemp("recs") / "features", planted_interactions())


@pytest.fixture(scope="module")
def tuned_run(spark, features, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("recs_out")
    metrics = job.main(job_args(features, output_dir))
    recommendations = spark.read.parquet(str(output_dir / "recommendations")).toPandas()
    return metrics, recommendations, output_dir


def test_tuned_model_beats_every_baseline_on_the_holdout_with_intervals(tuned_run):
    metrics, _, output_dir = tuned_run
    assert metrics["engine"] == "implicit" and "fit the driver" in metrics["engine_reason"]
    lists = metrics["holdout"]["lists"]
    for baseline in ("popularity", "recent_popularity", "category_popularity"):
        assert lists["served"]["all"]["ndcg"] > lists[baseline]["all"]["ndcg"] + 0.1, baseline
    served = lists["served"]["all"]
    assert served["ndcg_low"] < served["ndcg"] < served["ndcg_high"] and served["n_users"] == 60
    assert metrics["ndcg_at_k"] == served["ndcg"] and metrics["n_eval_users"] == 60
    difference = metrics["holdout"]["served_vs_baseline"]
    assert difference["low"] > 0 and difference["n_users"] == 60 and difference["baseline"] == metrics["baseline"]
    assert metrics["lift"] > 1.2
    assert "cold" not in lists["served"] and "all" in lists["served"]  # every holdout user has history
    assert set(metrics["holdout"]["coverage"]) == set(lists)
    assert metrics["gate"]["passed"] and metrics["gate"]["published"] == "model"
    assert metrics["gate"]["verdict"].startswith("model kept: better than")
    assert json.loads((output_dir / "metrics.json").read_text()) == metrics


def test_tuning_records_candidates_scores_and_the_choice(tuned_run):
    metrics, _, _ = tuned_run
    tuning = metrics["tuning"]
    assert tuning["tuned"] and tuning["tuned_on"] == DS.isoformat() and tuning["engine"] == "implicit"
    assert tuning["n_fits"] == 4 and tuning["n_candidates"] == len(tuning["candidates"]) >= 20
    assert all(c["validation_ndcg"] is not None for c in tuning["candidates"])
    assert tuning["chosen"]["model"] == metrics["model"] in ("als", "item_cf", "blend")
    assert tuning["chosen"]["min_history"] in rec.HISTORY_THRESHOLDS
    assert (
        "user_latest: each user's latest 20%" in tuning["validation_rule"] and "time: last" in tuning["validation_rule"]
    )
    assert all(fold["n_fit_pairs"] < metrics["holdout"]["n_train_pairs"] for fold in tuning["folds"])


def test_every_user_gets_k_distinct_products_and_cold_users_the_fallback(tuned_run):
    metrics, recs, _ = tuned_run
    assert set(recs["user_id"]) == {*GROUP_A_USERS, *GROUP_B_USERS, *COLD_USERS}
    per_user = recs.groupby("user_id").agg(
        n=("product_id", "size"), distinct=("product_id", "nunique"), ranks=("rank", sorted)
    )
    assert (per_user["n"] == TOP_K).all() and (per_user["distinct"] == TOP_K).all()
    assert all(ranks == list(range(1, TOP_K + 1)) for ranks in per_user["ranks"])
    cold = recs[recs["user_id"].isin(COLD_USERS)]
    assert set(cold["source"]) == {"popularity"}
    warm = recs[~recs["user_id"].isin(COLD_USERS)]
    assert (warm["source"] == metrics["model"]).mean() > 0.9
    assert metrics["recommendations_by_source"] == recs["source"].value_counts().to_dict()


def test_purchased_items_are_never_recommended_and_groups_get_their_own_items(tuned_run):
    _, recs, _ = tuned_run
    interactions = planted_interactions()
    purchases = interactions.loc[interactions["n_purchases"] > 0, ["user_id", "product_id"]]
    assert len(purchases) == len(GROUP_A_USERS) + len(GROUP_B_USERS)
    assert recs.merge(purchases, on=["user_id", "product_id"]).empty
    group_b = recs[recs["user_id"].isin(GROUP_B_USERS)]
    assert group_b["product_id"].isin(GROUP_B_ITEMS).mean() > 0.9


def test_gate_failure_publishes_the_fallback_or_keeps_the_last_partition(spark, features, tuned_run, tmp_path):
    previous = json.loads((tuned_run[2] / "metrics.json").read_text())  # reused choice: no tuning in these runs
    previous["holdout"]["lists"]["served"]["all"]["ndcg"] = 10.0  # a last run no model could come near
    (tmp_path / "previous.json").write_text(json.dumps(previous))
    fallback = job.main(
        job_args(features, tmp_path / "fallback", "--previous-metrics", str(tmp_path / "previous.json"))
    )
    assert fallback["tuning"]["reused_from"] == DS.isoformat() and "candidates" not in fallback["tuning"]
    assert not fallback["gate"]["passed"] and fallback["gate"]["published"] == "fallback"
    assert "below the last published run" in fallback["gate"]["reasons"][0] and fallback["model"] == "fallback"
    recs = spark.read.parquet(str(tmp_path / "fallback" / "recommendations")).toPandas()
    assert set(recs["source"]) <= {"category_popularity", "popularity"} and len(recs) == 63 * TOP_K

    kept = job.main(
        job_args(
            features,
            tmp_path / "kept",
            "--previous-metrics",
            str(tmp_path / "previous.json"),
            "--set",
            "als.gate.action=keep_last",
            "--set",
            "als.gate.level=fail",
        )
    )
    assert kept["gate"]["published"] == "none" and kept["gate"]["level"] == "fail"
    assert not (tmp_path / "kept" / "recommendations").exists() and kept["recommendations_path"] is None


def test_the_mllib_engine_agrees_with_the_in_process_one(spark, features, tuned_run, tmp_path):
    """Same data, same protocol, each engine tuning its own ALS: holdout NDCG within 0.1 of each other (the
    planted groups are easy: both find them), lists served by the Spark top-K path, checkpoints removed."""
    in_process = tuned_run[0]
    mllib = job.main(
        job_args(
            features,
            tmp_path / "out",
            "--engine",
            "mllib",
            "--set",
            "als.tuning.max_fits=2",
            "--set",
            "als.search.item_cf_neighbours=[20]",
        )
    )
    assert mllib["engine"] == "mllib" and mllib["tuning"]["engine"] == "mllib"
    served = mllib["holdout"]["lists"]["served"]["all"]["ndcg"]
    assert abs(served - in_process["holdout"]["lists"]["served"]["all"]["ndcg"]) < 0.1
    assert mllib["gate"]["published"] == "model"
    recs = spark.read.parquet(str(tmp_path / "out" / "recommendations")).toPandas()
    assert len(recs) == 63 * TOP_K and recs.groupby("user_id")["product_id"].nunique().eq(TOP_K).all()
    group_b = recs[recs["user_id"].isin(GROUP_B_USERS)]
    assert group_b["product_id"].isin(GROUP_B_ITEMS).mean() > 0.9
    assert not (tmp_path / "out" / "_checkpoints").exists()


def test_a_three_hour_data_set_is_evaluated(spark, tmp_path):
    features = write_features(tmp_path / "features", planted_interactions(hours=3))
    metrics = job.main(
        job_args(features, tmp_path / "out", "--set", "als.split=time", "--set", "als.tuning.max_fits=1")
    )
    assert metrics["holdout"]["rule"] == "last 1 h of 3 h, the requested 7d cut to 50% of the span"
    assert metrics["n_eval_users"] == 60 and metrics["ndcg_at_k"] is not None


def test_item_blocked_scoring_serves_the_same_lists(spark, features, tmp_path):
    interactions = spark.read.parquet(str(features / "interactions"))
    items = spark.read.parquet(str(features / "item_features"))
    users = spark.read.parquet(str(features / "user_features"))
    choice = {
        "model": "als",
        "params": {
            "alpha": 5.0,
            "reg_param": 0.05,
            "rank": 4,
            "weight_transform": "raw",
            "popularity": {},
            "popularity_weight": 0.1,
        },
        "min_history": 1,
        "fallback": {"popularity": {}, "use_category": True},
    }
    config = job.RecConfig.defaults(top_k=TOP_K, max_iter=5, broadcast_max_mb=0.0001)  # 5 items per block
    spark.sparkContext.setCheckpointDir(str(tmp_path / "checkpoints"))
    blocked = job.serve_mllib(spark, interactions, users, items, choice, config).toPandas()
    whole = job.serve_mllib(
        spark, interactions, users, items, choice, dataclasses_replace(config, broadcast_max_mb=256)
    ).toPandas()
    assert len(job._item_blocks(26, 4, config)) > 3
    key = ["user_id", "rank"]
    pd.testing.assert_frame_equal(
        blocked.sort_values(key).reset_index(drop=True)[["user_id", "rank", "product_id"]],
        whole.sort_values(key).reset_index(drop=True)[["user_id", "rank", "product_id"]],
    )
    assert len(whole) == 63 * TOP_K


def dataclasses_replace(config, **changes):
    import dataclasses

    return dataclasses.replace(config, **changes)


def test_no_interactions_and_missing_inputs_fail_clearly(spark, tmp_path):
    features_dir = tmp_path / "features"
    empty = spark.createDataFrame(
        [], "user_id bigint, product_id bigint, event_date date, event_hour timestamp, weight double, n_purchases int"
    )
    empty.write.parquet(str(features_dir / "interactions" / f"ds={DS}"))
    write_feature(features_dir, "user_features", pd.DataFrame({"user_id": [1, 2]}))
    write_feature(features_dir, "item_features", pd.DataFrame({"product_id": [7], "category": ["x"]}))
    with pytest.raises(SystemExit, match=r"'interactions' at .*interactions/ds=2026-11-22 has no rows"):
        job.main(job_args(features_dir, tmp_path / "out"))
    other = tmp_path / "other"
    write_feature(other, "interactions", planted_interactions())
    with pytest.raises(SystemExit, match=r"'user_features' cannot be read at .*user_features/ds=2026-11-22"):
        job.main(job_args(other, tmp_path / "out"))


def test_bad_arguments_are_one_clear_line(capsys, tmp_path):
    with pytest.raises(SystemExit) as exited:
        job.parse_args(
            ["--features-dir", "f", "--ds", DS.isoformat(), "--output-dir", "o", "--set", "als.holdout=soon"]
        )
    assert exited.value.code == 2 and "holdout must look like '7d', '36h' or '20%'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        job.parse_args(
            ["--features-dir", "f", "--ds", DS.isoformat(), "--output-dir", "o", "--set", "als.tuning.max_fit=4"]
        )
    assert "unknown setting als.tuning.max_fit (known here: max_fits," in capsys.readouterr().err
    settings = tmp_path / "als.json"
    settings.write_text(json.dumps({"ctr": {}}))
    with pytest.raises(SystemExit):
        job.parse_args(["--features-dir", "f", "--ds", DS.isoformat(), "--output-dir", "o", "--config", str(settings)])
    assert f"--config {settings}: no section als" in capsys.readouterr().err


def test_the_job_reads_the_settings_the_step_writes(tmp_path):
    """One source per setting: the checked configuration's als section, as the step writes it, is the job's
    RecConfig; a changed setting reaches the job without a flag of its own."""
    from precision_marketing.config import load_config
    from precision_marketing.training.spark_submit import write_job_settings

    config = load_config({"als": {"tuning": {"max_fits": 7}, "gate": {"level": "fail"}, "min_history": 3}})
    path = write_job_settings(config, "als_recommendations", tmp_path / "als.json")
    args = job.parse_args(
        ["--features-dir", "f", "--ds", DS.isoformat(), "--output-dir", "o", "--config", str(path), "--top-k", "4"]
    )
    assert args.settings == job.RecConfig.defaults(tune_max_fits=7, gate_level="fail", min_history=3, top_k=4)
    assert job.RecConfig.defaults() == job.RecConfig.from_settings(load_config()["als"])


def test_a_failed_gate_alerts_and_with_level_fail_fails_the_task(webhook, monkeypatch, tmp_path):
    from precision_marketing.pipeline import RecommendationGateError, report_gate

    url, received = webhook
    received.clear()
    base, token = url.split("/hooks/")  # the alert channel: a Slack webhook connection (reporting/alerts.py)
    monkeypatch.setenv("AIRFLOW_HOME", str(tmp_path / "airflow"))
    monkeypatch.setenv(
        "AIRFLOW_CONN_PM_ALERTS_SLACK",
        json.dumps({"conn_type": "slackwebhook", "host": base, "password": "hooks/" + token}),
    )
    report_gate(DS.isoformat(), {"passed": True, "published": "model", "level": "fail", "reasons": []})
    assert received == []
    failed = {
        "passed": False,
        "published": "fallback",
        "level": "warn",
        "reasons": ["served ndcg@K 0.0100 is worse than recent_popularity 0.0200 by 0.0100"],
    }
    report_gate(DS.isoformat(), failed)  # warn: the run goes on
    [warning] = received
    assert warning["body"]["text"].startswith("[WARNING]")
    assert "publishing the popularity fallback lists): served ndcg@K 0.0100" in warning["body"]["text"]
    with pytest.raises(RecommendationGateError, match="keeping the last published partition"):
        report_gate(DS.isoformat(), {**failed, "level": "fail", "published": "none"})
    text = received[-1]["body"]["text"]
    assert text.startswith("[ERROR]") and "\npublished: none" in text
