"""Streamed RFM segmentation on planted, well-separated user groups."""

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sklearn.metrics import adjusted_rand_score

from precision_marketing.training.segmentation import main, segment_users

pytestmark = pytest.mark.fast  # make test-fast: no Spark session, Airflow run or browser

# planted groups: (recency_days, frequency, monetary) centres
PLANTED = {
    "big_spenders": (2, 20, 2000.0),
    "regulars": (12, 8, 500.0),
    "newcomers": (5, 1, 40.0),
    "lapsing": (90, 10, 800.0),
    "gone": (300, 0, 0.0),
}
USERS_PER_GROUP = 300


def planted_users(seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frames = []
    for group, (recency, frequency, monetary) in PLANTED.items():
        n = USERS_PER_GROUP
        frames.append(
            pd.DataFrame(
                {
                    "recency_days": np.clip(recency + rng.integers(-2, 3, n), 0, None).astype("int32"),
                    "frequency": np.clip(frequency + rng.integers(-1, 2, n), 0, None).astype("int32")
                    if frequency
                    else np.zeros(n, "int32"),
                    "monetary": monetary * rng.uniform(0.95, 1.05, n),
                    "group": group,
                }
            )
        )
    users = pd.concat(frames).sample(frac=1.0, random_state=seed).reset_index(drop=True)  # groups interleaved
    users.insert(0, "user_id", np.arange(1, len(users) + 1, dtype="int64"))
    users["country"] = "DE"
    return users


@pytest.fixture(scope="module")
def users():
    return planted_users()


@pytest.fixture(scope="module")
def user_features_path(tmp_path_factory, users):
    path = tmp_path_factory.mktemp("features") / "user_features.parquet"
    # small row groups: the reader must re-chunk batches across them
    pq.write_table(pa.Table.from_pandas(users.drop(columns="group"), preserve_index=False), path, row_group_size=170)
    return path


def read_segments(path):
    return pd.read_parquet(path).sort_values("user_id").reset_index(drop=True)


@pytest.fixture(scope="module")
def streamed(tmp_path_factory, user_features_path):
    out = tmp_path_factory.mktemp("streamed") / "user_segments.parquet"
    metrics = segment_users(user_features_path, out, k=5, seed=42, batch_size=256)
    return metrics, read_segments(out), out


def test_planted_groups_are_recovered(streamed, users):
    metrics, segments, _ = streamed
    assert list(segments.columns) == ["user_id", "segment_id", "segment", "recency_days", "frequency", "monetary"]
    assert segments["user_id"].tolist() == users["user_id"].tolist()
    assert adjusted_rand_score(users["group"], segments["segment"]) > 0.95
    assert metrics["silhouette"] > 0.5
    assert sum(metrics["segment_sizes"].values()) == len(users)


def test_segments_named_by_value(streamed, users):
    _, segments, _ = streamed
    named = users.assign(segment=segments["segment"], segment_id=segments["segment_id"])
    majority = named.groupby("group")["segment"].agg(lambda s: s.mode()[0])
    assert majority.to_dict() == {
        "big_spenders": "champions",
        "regulars": "loyal",
        "newcomers": "promising",
        "lapsing": "at_risk",
        "gone": "hibernating",
    }
    # segment_id is the value rank: 1 = champions
    assert (named.loc[named["segment"] == "champions", "segment_id"] == 1).all()
    assert (named.loc[named["segment"] == "hibernating", "segment_id"] == 5).all()


def test_metrics_written_next_to_output(streamed, users):
    metrics, _, out = streamed
    on_disk = json.loads((out.parent / "metrics.json").read_text())
    assert on_disk == metrics
    assert on_disk["k"] == 5 and on_disk["n_users"] == len(users)
    assert on_disk["silhouette_sample_size"] == len(users)  # fewer users than the 10_000 sample cap
    assert on_disk["inertia"] > 0
    assert on_disk["centroids"]["champions"]["frequency"] > on_disk["centroids"]["hibernating"]["frequency"]


def test_same_seed_gives_same_segments(tmp_path, user_features_path, streamed):
    _, first, _ = streamed
    segment_users(user_features_path, tmp_path / "again.parquet", k=5, seed=42, batch_size=256)
    pd.testing.assert_frame_equal(read_segments(tmp_path / "again.parquet"), first)


def test_streaming_matches_one_big_batch(tmp_path, user_features_path, streamed, users):
    streamed_metrics, streamed_segments, _ = streamed
    metrics = segment_users(user_features_path, tmp_path / "one_batch.parquet", k=5, seed=42, batch_size=1_000_000)
    one_batch = read_segments(tmp_path / "one_batch.parquet")
    assert adjusted_rand_score(one_batch["segment"], streamed_segments["segment"]) > 0.99
    assert (one_batch["segment"] == streamed_segments["segment"]).mean() > 0.99  # same names too
    assert metrics["inertia"] == pytest.approx(streamed_metrics["inertia"], rel=0.05)


def test_other_k_gets_generic_ranked_names(tmp_path, user_features_path):
    metrics = segment_users(user_features_path, tmp_path / "k3.parquet", k=3, seed=1, batch_size=500)
    assert set(metrics["segment_sizes"]) == {"value_rank_1", "value_rank_2", "value_rank_3"}
    segments = read_segments(tmp_path / "k3.parquet")
    assert sorted(segments["segment_id"].unique()) == [1, 2, 3]


def test_missing_column_names_file_and_column(tmp_path, users):
    path = tmp_path / "no_monetary.parquet"
    users.drop(columns=["group", "monetary"]).to_parquet(path)
    with pytest.raises(ValueError, match=r"no_monetary\.parquet: missing column 'monetary'"):
        segment_users(path, tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()


def test_empty_table_is_a_clear_error(tmp_path, users):
    path = tmp_path / "empty.parquet"
    users.drop(columns="group").iloc[0:0].to_parquet(path)
    with pytest.raises(ValueError, match=r"empty\.parquet: user_features is empty"):
        segment_users(path, tmp_path / "out.parquet")


def test_null_feature_names_column_and_row(tmp_path, users):
    broken = users.drop(columns="group").astype({"frequency": "float64"})
    broken.loc[6, "frequency"] = np.nan
    path = tmp_path / "null_frequency.parquet"
    broken.to_parquet(path)
    with pytest.raises(
        ValueError,
        match=r"null_frequency\.parquet: column 'frequency' must be a non-negative "
        r"number, got nan at row 7",
    ):
        segment_users(path, tmp_path / "out.parquet", batch_size=4)


def test_cli(tmp_path, user_features_path, capsys):
    out = tmp_path / "cli" / "user_segments.parquet"
    assert main(["--user-features", str(user_features_path), "--output", str(out), "--k", "5", "--seed", "7"]) == 0
    assert json.loads(capsys.readouterr().out)["k"] == 5
    assert len(pd.read_parquet(out)) == len(planted_users())

    assert main(["--user-features", str(tmp_path / "missing.parquet"), "--output", str(out)]) == 1
    assert "user features not found" in capsys.readouterr().err
