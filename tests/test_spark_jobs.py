"""Spark jobs on tiny planted data: ALS recommendations and CTR audiences, run in-process on the shared
`spark` fixture, plus metric parity with pandas references, failure paths and the spark-submit CLI."""
from __future__ import annotations

import datetime as dt
import json
import math
import os
import random
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spark_jobs import als_recommendations as als_job
from spark_jobs import ctr_audiences as ctr_job

REPO_ROOT = Path(__file__).resolve().parents[1]
DS = dt.date(2026, 11, 22)
TOP_K = 3


def write_feature(features_dir: Path, table: str, frame: pd.DataFrame) -> Path:
    """One Parquet file per table per ds, the layout dbt exports."""
    partition = features_dir / table / f"ds={DS.isoformat()}"
    partition.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(partition / f"{table}.parquet", index=False)
    return partition


# --------------------------------------------------------------------------------------- metric parity
def precision_recall_reference(recs: pd.DataFrame, relevant: pd.DataFrame, k: int) -> tuple[float, float]:
    """Plain pandas/python precision@k and recall@k averaged over users with relevant items."""
    top = recs[recs["rank"] <= k].groupby("user_id")["product_id"].apply(set).to_dict()
    precisions, recalls = [], []
    for user, items in relevant.groupby("user_id")["product_id"]:
        hits = len(top.get(user, set()) & set(items))
        precisions.append(hits / k)
        recalls.append(hits / len(set(items)))
    return float(np.mean(precisions)), float(np.mean(recalls))


def test_ranking_metrics_match_pandas_reference(spark):
    rng = np.random.default_rng(7)
    recs = pd.DataFrame(
        [
            (user, rank, int(item))
            for user in range(1, 21)  # users 21..25 have relevant items but no recommendations
            for rank, item in enumerate(rng.choice(30, size=8, replace=False), start=1)
        ],
        columns=["user_id", "rank", "product_id"],
    )
    relevant = pd.DataFrame(
        [(user, int(item)) for user in range(1, 26) for item in rng.choice(30, size=rng.integers(1, 9), replace=False)],
        columns=["user_id", "product_id"],
    )
    recs_df, relevant_df = spark.createDataFrame(recs), spark.createDataFrame(relevant)
    for k in (2, 8):
        expected_precision, expected_recall = precision_recall_reference(recs, relevant, k)
        assert als_job.precision_at_k(recs_df, relevant_df, k=k) == pytest.approx(expected_precision, abs=1e-9)
        assert als_job.recall_at_k(recs_df, relevant_df, k=k) == pytest.approx(expected_recall, abs=1e-9)


def test_log_loss_matches_numpy_reference(spark):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, size=200)
    probabilities = rng.uniform(0, 1, size=200)
    probabilities[:3] = [0.0, 1.0, 0.5]  # the clipping path
    frame = spark.createDataFrame(
        pd.DataFrame({"clicked": labels.astype("int32"), "p_click": probabilities})
    )
    clipped = np.clip(probabilities, 1e-15, 1 - 1e-15)
    expected = float(-np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped)))
    assert ctr_job.log_loss(frame) == pytest.approx(expected, rel=1e-9)


def test_top_k_recommendations_tops_up_from_popularity(spark):
    users = spark.createDataFrame([(1,), (2,)], "user_id bigint")
    candidates = spark.createDataFrame(
        [(1, 10, 0.9), (1, 11, 0.8), (1, 12, 0.7)], "user_id bigint, product_id bigint, score double"
    )
    purchased = spark.createDataFrame([(1, 11)], "user_id bigint, product_id bigint")
    popular = spark.createDataFrame(
        [(11, 0.5), (20, 0.4), (10, 0.3), (21, 0.2)], "product_id bigint, score double"
    )
    result = als_job.top_k_recommendations(users, popular, purchased, top_k=3, candidates=candidates)
    rows = sorted((r.user_id, r.rank, r.product_id, r.source) for r in result.collect())
    assert rows == [
        (1, 1, 10, "als"), (1, 2, 12, "als"), (1, 3, 20, "popularity"),  # 11 purchased, 10 already from ALS
        (2, 1, 11, "popularity"), (2, 2, 20, "popularity"), (2, 3, 10, "popularity"),
    ]


# ---------------------------------------------------------------------------------------------- ALS
GROUP_A_USERS, GROUP_B_USERS, COLD_USERS = range(1, 31), range(31, 46), range(46, 49)
GROUP_A_ITEMS, GROUP_B_ITEMS, UNSEEN_ITEMS = range(101, 109), range(201, 209), (301, 302)


def planted_interactions() -> pd.DataFrame:
    """Two taste groups (a larger one, so popularity favours its items); each user views 5 of the group's
    items before the holdout cutoff (buying one) and 4 of its non-purchased items after it."""
    rng = random.Random(11)
    rows = []
    for users, items in ((GROUP_A_USERS, GROUP_A_ITEMS), (GROUP_B_USERS, GROUP_B_ITEMS)):
        for user in users:
            shuffled = rng.sample(list(items), len(items))
            for position, item in enumerate(shuffled[:5]):
                bought = position == 0
                rows.append((user, item, DS - dt.timedelta(days=rng.randint(9, 20)), 6.0 if bought else 1.0, int(bought)))
            for item in rng.sample(shuffled[1:], 4):
                rows.append((user, item, DS - dt.timedelta(days=rng.randint(0, 5)), 1.0, 0))
    frame = pd.DataFrame(rows, columns=["user_id", "product_id", "event_date", "weight", "n_purchases"])
    frame = frame.groupby(["user_id", "product_id", "event_date"], as_index=False).agg(
        weight=("weight", "sum"), n_purchases=("n_purchases", "sum")
    )
    return frame.astype({"n_purchases": "int32"})


@pytest.fixture(scope="module")
def als_features(tmp_path_factory) -> Path:
    features_dir = tmp_path_factory.mktemp("als") / "features"
    write_feature(features_dir, "interactions", planted_interactions())
    all_users = [*GROUP_A_USERS, *GROUP_B_USERS, *COLD_USERS]
    write_feature(features_dir, "user_features", pd.DataFrame({"user_id": all_users, "country": "DE"}))
    all_items = [*GROUP_A_ITEMS, *GROUP_B_ITEMS, *UNSEEN_ITEMS]
    write_feature(features_dir, "item_features", pd.DataFrame({"product_id": all_items, "price": 9.5}))
    return features_dir


def als_args(features_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--features-dir", str(features_dir), "--ds", DS.isoformat(), "--output-dir", str(output_dir),
        "--top-k", str(TOP_K), "--rank", "8", "--max-iter", "6", "--candidate-buffer", "5", *extra,
    ]


@pytest.fixture(scope="module")
def als_run(spark, als_features, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("als_out")
    metrics = als_job.main(als_args(als_features, output_dir))
    recommendations = spark.read.parquet(str(output_dir / "recommendations")).toPandas()
    return metrics, recommendations, output_dir


def test_als_beats_popularity_on_planted_groups(als_run):
    metrics, _, output_dir = als_run
    assert metrics["n_eval_users"] == len(GROUP_A_USERS) + len(GROUP_B_USERS)
    # popularity serves only the larger group; ALS should serve both
    assert metrics["precision_at_k"] > metrics["baseline_precision_at_k"] + 0.1
    assert metrics["recall_at_k"] > metrics["baseline_recall_at_k"]
    assert metrics["lift"] > 1.2
    assert json.loads((output_dir / "metrics.json").read_text()) == metrics
    assert metrics["n_users"] == 48 and metrics["n_items"] == 18 and metrics["k"] == TOP_K
    assert metrics["n_train_interactions"] > 0 and metrics["train_seconds"] > 0
    assert 0 < metrics["catalog_coverage"] <= 1


def test_every_user_gets_k_distinct_products(als_run):
    _, recs, _ = als_run
    assert set(recs["user_id"]) == {*GROUP_A_USERS, *GROUP_B_USERS, *COLD_USERS}
    per_user = recs.groupby("user_id").agg(
        rows=("product_id", "size"), distinct=("product_id", "nunique"), ranks=("rank", lambda r: sorted(r))
    )
    assert (per_user["rows"] == TOP_K).all() and (per_user["distinct"] == TOP_K).all()
    assert all(ranks == list(range(1, TOP_K + 1)) for ranks in per_user["ranks"])
    assert set(recs["source"]) <= {"als", "popularity"}
    assert (recs.loc[recs["user_id"].isin(COLD_USERS), "source"] == "popularity").all()
    assert (recs.loc[~recs["user_id"].isin(COLD_USERS), "source"] == "als").any()


def test_purchased_items_are_never_recommended(als_run):
    _, recs, _ = als_run
    interactions = planted_interactions()
    purchases = interactions.loc[interactions["n_purchases"] > 0, ["user_id", "product_id"]]
    assert len(purchases) == len(GROUP_A_USERS) + len(GROUP_B_USERS)
    assert recs.merge(purchases, on=["user_id", "product_id"]).empty


def test_als_groups_get_their_own_items(als_run):
    _, recs, _ = als_run
    als_recs = recs[recs["source"] == "als"]
    group_b = als_recs[als_recs["user_id"].isin(GROUP_B_USERS)]
    assert not group_b.empty and group_b["product_id"].isin(GROUP_B_ITEMS).mean() > 0.9


def test_als_without_test_period_writes_recs_and_null_metrics(spark, als_features, tmp_path):
    metrics = als_job.main(als_args(als_features, tmp_path, "--holdout-days", "0"))
    assert metrics["precision_at_k"] is None and metrics["lift"] is None
    assert "no test-period interactions" in metrics["note"]
    recs = spark.read.parquet(str(tmp_path / "recommendations"))
    assert recs.count() == 48 * TOP_K


def test_als_without_interactions_fails_clearly(spark, tmp_path):
    features_dir = tmp_path / "features"
    empty = spark.createDataFrame(
        [], "user_id bigint, product_id bigint, event_date date, weight double, n_purchases int"
    )
    empty.write.parquet(str(features_dir / "interactions" / f"ds={DS}"))
    write_feature(features_dir, "user_features", pd.DataFrame({"user_id": [1, 2]}))
    write_feature(features_dir, "item_features", pd.DataFrame({"product_id": [7]}))
    with pytest.raises(SystemExit, match=r"'interactions' at .*interactions/ds=2026-11-22 has no rows"):
        als_job.main(als_args(features_dir, tmp_path / "out"))


def test_als_missing_input_names_table_and_path(tmp_path):
    features_dir = tmp_path / "features"
    write_feature(features_dir, "interactions", planted_interactions())
    with pytest.raises(SystemExit, match=r"'user_features' cannot be read at .*user_features/ds=2026-11-22"):
        als_job.main(als_args(features_dir, tmp_path / "out"))


# ---------------------------------------------------------------------------------------------- CTR
def planted_users(n_users: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(5)
    return pd.DataFrame(
        {
            "user_id": np.arange(1, n_users + 1),
            "affinity": rng.uniform(0, 1, n_users),
            "recency_days": rng.integers(0, 30, n_users).astype("int32"),
            "frequency": rng.integers(0, 6, n_users).astype("int32"),
            "monetary": rng.uniform(0, 500, n_users),
        }
    )


def planted_impressions(users: pd.DataFrame, n: int = 3000) -> pd.DataFrame:
    """Clicks driven mostly by affinity, a little by placement, so the model must beat placement CTR."""
    rng = np.random.default_rng(9)
    sample = users.iloc[rng.integers(0, len(users), n)].reset_index(drop=True)
    placement = rng.choice(["banner", "newsletter"], n)
    logit = -2.5 + 4.0 * sample["affinity"] + 0.5 * (placement == "banner")
    clicked = (rng.uniform(0, 1, n) < 1 / (1 + np.exp(-logit))).astype("int32")
    return sample.assign(
        impression_id=[f"i{i}" for i in range(n)],
        campaign_id=rng.choice(["old1", "old2"], n),
        impression_date=[DS - dt.timedelta(days=int(d)) for d in rng.integers(0, 20, n)],
        placement=placement,
        channel=np.where(placement == "banner", "onsite", "email"),
        target_category="shoes",
        clicked=clicked,
    )


def score_rows(users: pd.DataFrame, campaign_id: str, placement: str, channel: str) -> pd.DataFrame:
    return users.assign(
        campaign_id=campaign_id, placement=placement, channel=channel, target_category="shoes",
        email_sha256=[f"sha-{u}" for u in users["user_id"]],
    )


@pytest.fixture(scope="module")
def ctr_features(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ctr")
    features_dir = root / "features"
    users = planted_users()
    write_feature(features_dir, "ctr_train", planted_impressions(users))
    score = pd.concat(
        [score_rows(users.iloc[0:30], "big", "banner", "onsite"), score_rows(users.iloc[30:50], "small", "newsletter", "email")]
    )
    write_feature(features_dir, "ctr_score", score)
    write_feature(
        features_dir, "campaigns",
        pd.DataFrame({"campaign_id": ["big", "small", "ended"], "audience_size": np.array([5, 100, 10], "int32")}),
    )
    segments = pd.DataFrame({"user_id": np.arange(1, 41), "segment_id": 1, "segment": "champions"})
    segments.to_parquet(root / "user_segments.parquet", index=False)
    return features_dir


def ctr_args(features_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--features-dir", str(features_dir), "--ds", DS.isoformat(), "--output-dir", str(output_dir),
        "--segments", str(features_dir.parent / "user_segments.parquet"), "--max-iter", "25", *extra,
    ]


@pytest.fixture(scope="module")
def ctr_run(spark, ctr_features, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("ctr_out")
    metrics = ctr_job.main(ctr_args(ctr_features, output_dir))
    audiences = spark.read.parquet(str(output_dir / "audiences")).toPandas()
    return metrics, audiences, output_dir


def test_ctr_model_beats_placement_baseline(ctr_run):
    metrics, _, output_dir = ctr_run
    assert metrics["auc"] > 0.65 and metrics["auc"] > metrics["baseline_auc"] + 0.05
    assert metrics["n_train"] + metrics["n_test"] == 3000 and metrics["n_test"] > 0
    assert 0 < metrics["train_ctr"] < 1 and 0 < metrics["test_ctr"] < 1
    assert 0 < metrics["log_loss"] < math.log(2)  # better than a coin flip
    assert json.loads((output_dir / "metrics.json").read_text()) == metrics


def test_audiences_have_sizes_ranks_deciles_and_segments(ctr_run):
    _, audiences, _ = ctr_run
    assert list(audiences.columns) == list(ctr_job.AUDIENCE_COLS)
    assert audiences.groupby("campaign_id").size().to_dict() == {"big": 5, "small": 20}  # min(size, scored)
    users = planted_users()
    for campaign, group in audiences.groupby("campaign_id"):
        group = group.sort_values("rank")
        assert list(group["rank"]) == list(range(1, len(group) + 1))
        assert group["p_click"].is_monotonic_decreasing
        assert group["user_id"].is_unique
    big = audiences[audiences["campaign_id"] == "big"].sort_values("rank")
    assert list(big["decile"]) == [1, 1, 1, 2, 2]  # ntile(10) over its 30 scored users
    small = audiences[audiences["campaign_id"] == "small"].sort_values("rank")
    assert list(small["decile"]) == [(rank + 1) // 2 for rank in small["rank"]]  # 20 users, 2 per decile
    # the planted signal: the chosen 5 of 30 have higher affinity than the campaign's candidates on average
    affinity = users.set_index("user_id")["affinity"]
    assert affinity[big["user_id"]].mean() > affinity.iloc[0:30].mean()
    assert (audiences.loc[audiences["user_id"] <= 40, "segment"] == "champions").all()
    assert (audiences.loc[audiences["user_id"] > 40, "segment"] == "unknown").all()
    assert (audiences["email_sha256"] == "sha-" + audiences["user_id"].astype(str)).all()
    assert set(zip(audiences["campaign_id"], audiences["channel"])) == {("big", "onsite"), ("small", "email")}


def test_ctr_missing_campaigns_names_table_and_path(ctr_features, tmp_path):
    features_dir = tmp_path / "features"
    for table in ("ctr_train", "ctr_score"):
        frame = pd.read_parquet(ctr_features / table / f"ds={DS}")
        write_feature(features_dir, table, frame)
    with pytest.raises(SystemExit, match=r"'campaigns' cannot be read at .*campaigns/ds=2026-11-22"):
        ctr_job.main(ctr_args(features_dir, tmp_path / "out"))


def test_ctr_bad_label_names_table_column_and_rule(ctr_features, tmp_path):
    features_dir = tmp_path / "features"
    for table in ("ctr_score", "campaigns"):
        write_feature(features_dir, table, pd.read_parquet(ctr_features / table / f"ds={DS}"))
    train = pd.read_parquet(ctr_features / "ctr_train" / f"ds={DS}")
    train.loc[0, "clicked"] = 2
    write_feature(features_dir, "ctr_train", train)
    (tmp_path / "user_segments.parquet").write_bytes((ctr_features.parent / "user_segments.parquet").read_bytes())
    with pytest.raises(SystemExit, match=r"'ctr_train' at .* 1 row\(s\) where clicked not in \[0, 1\]"):
        ctr_job.main(ctr_args(features_dir, tmp_path / "out"))


# ---------------------------------------------------------------------------------------------- CLI
def test_spark_submit_help_exits_zero():
    venv_bin = Path(sys.executable).parent
    env = {**os.environ, "PYSPARK_PYTHON": sys.executable, "PATH": f"{venv_bin}{os.pathsep}{os.environ['PATH']}"}
    completed = subprocess.run(
        [str(venv_bin / "spark-submit"), "spark_jobs/als_recommendations.py", "--help"],
        cwd=REPO_ROOT, env=env, capture_output=True, text=True, timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "--candidate-buffer" in completed.stdout and "spark-submit --master" in completed.stdout


def test_ctr_help_and_bad_date_do_not_need_spark(capsys):
    with pytest.raises(SystemExit) as exited:
        ctr_job.main(["--help"])
    assert exited.value.code == 0 and "--segments" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        ctr_job.main(["--features-dir", "x", "--ds", "22/11/2026", "--segments", "s", "--output-dir", "o"])
    assert exited.value.code == 2 and "expected a date YYYY-MM-DD" in capsys.readouterr().err
