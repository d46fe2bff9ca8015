"""The CTR job on tiny planted data, run in-process on the shared `spark` fixture, plus metric parity with
a numpy reference, failure paths and the spark-submit CLI. (Recommendations: tests/test_recommendations.py.)"""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from spark_jobs import ctr_audiences as ctr_job

REPO_ROOT = Path(__file__).resolve().parents[1]
DS = dt.date(2026, 11, 22)


def write_feature(features_dir: Path, table: str, frame: pd.DataFrame) -> Path:
    """One Parquet file per table per ds, the layout dbt exports."""
    partition = features_dir / table / f"ds={DS.isoformat()}"
    partition.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(partition / f"{table}.parquet", index=False)
    return partition


def test_log_loss_matches_numpy_reference(spark):
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 2, size=200)
    probabilities = rng.uniform(0, 1, size=200)
    probabilities[:3] = [0.0, 1.0, 0.5]  # the clipping path
    frame = spark.createDataFrame(pd.DataFrame({"clicked": labels.astype("int32"), "p_click": probabilities}))
    clipped = np.clip(probabilities, 1e-15, 1 - 1e-15)
    expected = float(-np.mean(labels * np.log(clipped) + (1 - labels) * np.log(1 - clipped)))
    assert ctr_job.log_loss(frame) == pytest.approx(expected, rel=1e-9)


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
        impression_hour=rng.integers(0, 24, n).astype("int32"),
        category_recency_days=rng.integers(1, 32, n).astype("int32"),
        clicked=clicked,
    )


def score_rows(users: pd.DataFrame, campaign_id: str, placement: str, channel: str) -> pd.DataFrame:
    return users.assign(
        campaign_id=campaign_id,
        placement=placement,
        channel=channel,
        target_category="shoes",
        category_recency_days=np.int32(5),
        email_sha256=[f"sha-{u}" for u in users["user_id"]],
    )


@pytest.fixture(scope="module")
def ctr_features(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("ctr")
    features_dir = root / "features"
    users = planted_users()
    write_feature(features_dir, "ctr_train", planted_impressions(users))
    score = pd.concat(
        [
            score_rows(users.iloc[0:30], "big", "banner", "onsite"),
            score_rows(users.iloc[30:50], "small", "newsletter", "email"),
        ]
    )
    write_feature(features_dir, "ctr_score", score)
    write_feature(
        features_dir,
        "campaigns",
        pd.DataFrame({"campaign_id": ["big", "small", "ended"], "audience_size": np.array([5, 100, 10], "int32")}),
    )
    segments = pd.DataFrame({"user_id": np.arange(1, 41), "segment_id": 1, "segment": "champions"})
    segments.to_parquet(root / "user_segments.parquet", index=False)
    return features_dir


def ctr_args(features_dir: Path, output_dir: Path, *extra: str) -> list[str]:
    return [
        "--features-dir",
        str(features_dir),
        "--ds",
        DS.isoformat(),
        "--output-dir",
        str(output_dir),
        "--segments",
        str(features_dir.parent / "user_segments.parquet"),
        "--set",
        "ctr.max_iter=25",
        *extra,
    ]


@pytest.fixture(scope="module")
def ctr_run(spark, ctr_features, tmp_path_factory):
    output_dir = tmp_path_factory.mktemp("ctr_out")
    metrics = ctr_job.main(ctr_args(ctr_features, output_dir))
    audiences = spark.read.parquet(str(output_dir / "audiences")).toPandas()
    return metrics, audiences, output_dir


def test_ctr_model_beats_placement_baseline(ctr_run):
    metrics, _, output_dir = ctr_run
    assert metrics["engine"] == "sklearn" and "fit the driver" in metrics["engine_reason"]  # auto, local master
    assert metrics["auc"] > 0.65 and metrics["auc"] > metrics["baseline_auc"] + 0.05
    assert metrics["n_train"] + metrics["n_test"] == 3000 and metrics["n_test"] > 0
    assert 0 < metrics["train_ctr"] < 1 and 0 < metrics["test_ctr"] < 1
    assert 0 < metrics["log_loss"] < math.log(2)  # better than a coin flip
    assert json.loads((output_dir / "metrics.json").read_text()) == metrics


def test_ctr_reports_reliability_and_applies_the_chosen_calibration(ctr_run):
    metrics, audiences, _ = ctr_run
    calibration_report = metrics["calibration"]
    assert set(calibration_report["candidates"]) == {"none", "platt", "isotonic"}
    chosen = calibration_report["method"]
    briers = {m: c["brier"] for m, c in calibration_report["candidates"].items()}
    assert briers[chosen] == min(briers.values()) == metrics["brier"]
    for candidate in calibration_report["candidates"].values():
        assert 0 < candidate["brier"] < 0.25 and 0 <= candidate["ece"] < 0.2
        assert sum(b["n"] for b in candidate["curve"]) == metrics["n_test"]
    assert metrics["applied_calibration"]["method"] == chosen
    assert calibration_report["fitted_to"] == metrics["holdout_cutoff"]
    assert audiences["p_click"].between(0, 1).all()


def test_audiences_carry_groups_and_bid_hints(ctr_run):
    metrics, audiences, _ = ctr_run
    assert set(audiences["experiment_group"]) <= {"treatment", "control"}
    assert audiences["expected_value"].to_numpy() == pytest.approx(audiences["p_click"].to_numpy())  # value 1.0
    assert audiences["bid_hint"].between(0.0, 5.0).all()
    for campaign, summary in metrics["campaigns"].items():
        group = audiences[audiences["campaign_id"] == campaign]
        assert summary["audience"] == len(group)
        assert summary["control"] == (group["experiment_group"] == "control").sum()


def test_audiences_have_sizes_ranks_deciles_and_segments(ctr_run):
    _, audiences, _ = ctr_run
    assert list(audiences.columns) == list(ctr_job.AUDIENCE_COLS)
    assert audiences.groupby("campaign_id").size().to_dict() == {"big": 5, "small": 20}  # min(size, scored)
    users = planted_users()
    for _, group in audiences.groupby("campaign_id"):
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


def test_the_mllib_engine_agrees_with_the_in_process_one(spark, ctr_run, ctr_features, tmp_path):
    """Same features, same objective, same decisions: the two engines' holdout AUCs agree, they pick the same
    reg_param, and tonight's audiences are mostly the same people (the hashed keys land in other buckets)."""
    in_process, in_process_audiences, _ = ctr_run
    mllib = ctr_job.main(ctr_args(ctr_features, tmp_path / "out", "--set", "ctr.engine=mllib"))
    assert mllib["engine"] == "mllib" and mllib["engine_reason"] == "engine mllib configured"
    assert mllib["auc"] == pytest.approx(in_process["auc"], abs=0.02)
    assert mllib["baseline_auc"] == pytest.approx(in_process["baseline_auc"], abs=1e-9)  # one baseline formula
    assert mllib["reg_param"] == in_process["reg_param"]
    for method in ("none", "platt", "isotonic"):
        assert mllib["calibration"]["candidates"][method]["brier"] == pytest.approx(
            in_process["calibration"]["candidates"][method]["brier"], abs=0.005
        )
    audiences = spark.read.parquet(str(tmp_path / "out" / "audiences")).toPandas()
    assert list(audiences.columns) == list(ctr_job.AUDIENCE_COLS)
    for campaign in ("big", "small"):
        ours = set(audiences.loc[audiences["campaign_id"] == campaign, "user_id"])
        theirs = set(in_process_audiences.loc[in_process_audiences["campaign_id"] == campaign, "user_id"])
        assert len(ours) == len(theirs) and len(ours & theirs) >= 0.6 * len(ours), campaign


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
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr
    assert "--config" in completed.stdout and "spark-submit --master" in completed.stdout


def test_ctr_help_and_bad_date_do_not_need_spark(capsys):
    with pytest.raises(SystemExit) as exited:
        ctr_job.main(["--help"])
    assert exited.value.code == 0 and "--segments" in capsys.readouterr().out
    with pytest.raises(SystemExit) as exited:
        ctr_job.main(["--features-dir", "x", "--ds", "22/11/2026", "--segments", "s", "--output-dir", "o"])
    assert exited.value.code == 2 and "expected a date YYYY-MM-DD" in capsys.readouterr().err


# ------------------------------------------------------------------------------ audience rules and calibration
from spark_jobs import audience_rules, calibration  # noqa: E402


def test_control_groups_are_the_salted_hash_stable_and_near_the_share(spark):
    pairs = spark.range(1, 20001).selectExpr(
        "concat('cmp_', cast(id % 4 as string)) as campaign_id", "id as user_id", "0.1 as control_share"
    )
    grouped = audience_rules.assign_groups(pairs, salt="s1").withColumn("draw", audience_rules.control_draw(salt="s1"))
    rows = grouped.toPandas()
    sample = rows.sample(200, random_state=1)
    for campaign, user, draw in zip(sample["campaign_id"], sample["user_id"], sample["draw"]):
        assert draw == pytest.approx(audience_rules.control_draw_reference("s1", campaign, user), abs=1e-15)
    share = (rows["experiment_group"] == "control").mean()
    assert abs(share - 0.1) < 3 * math.sqrt(0.1 * 0.9 / len(rows))  # within 3 standard errors
    # rerun: identical; another salt reshuffles
    again = audience_rules.assign_groups(pairs, salt="s1").toPandas()
    assert (again["experiment_group"] == rows["experiment_group"]).all()
    other = audience_rules.assign_groups(pairs, salt="s2").toPandas()
    assert (other["experiment_group"] != rows["experiment_group"]).mean() > 0.1
    # the share is per campaign: 0 holds nobody out
    none_held = audience_rules.assign_groups(pairs.withColumn("control_share", pairs["control_share"] * 0), salt="s1")
    assert none_held.filter("experiment_group = 'control'").count() == 0


def test_frequency_cap_serves_priority_then_p_click(spark):
    # users 1..4 are candidates of three campaigns; 'urgent' (priority 1) first, then 'a' and 'b' (priority 5)
    scored = spark.createDataFrame(
        [("urgent", u, 0.5 - u / 100) for u in (1, 2, 3)]
        + [("a", u, p) for u, p in ((1, 0.9), (2, 0.3), (3, 0.8), (4, 0.7))]
        + [("b", u, p) for u, p in ((1, 0.8), (2, 0.4), (3, 0.2), (4, 0.6))],
        "campaign_id string, user_id bigint, p_click double",
    )
    campaigns = spark.createDataFrame(
        [("urgent", 3, 1), ("a", 4, 5), ("b", 4, 5)], "campaign_id string, audience_size int, priority int"
    )
    capped = audience_rules.select_audiences(scored, campaigns, max_audiences_per_user=2)
    got = sorted((r.campaign_id, r.user_id) for r in capped.collect())
    # urgent takes one slot of users 1-3; each keeps its best p_click among a/b; user 4 fits in both
    assert got == sorted(
        [("urgent", 1), ("urgent", 2), ("urgent", 3), ("a", 1), ("a", 3), ("b", 2), ("a", 4), ("b", 4)]
    )
    uncapped = audience_rules.select_audiences(scored, campaigns, max_audiences_per_user=0)
    assert uncapped.count() == 11
    sized = audience_rules.select_audiences(scored, campaigns.replace(4, 1, "audience_size"), max_audiences_per_user=1)
    assert sorted((r.campaign_id, r.user_id) for r in sized.collect()) == [
        ("a", 4),
        ("urgent", 1),
        ("urgent", 2),
        ("urgent", 3),
    ]  # b's best (user 1) is already capped: b runs short


def test_bid_hints_follow_the_documented_formula(spark):
    frame = spark.createDataFrame([(0.001, 2.0), (0.05, 2.0), (0.9, 20.0)], "p_click double, value_per_click double")
    rows = audience_rules.add_bid_hints(frame, bid_floor=0.01, bid_cap=5.0).collect()
    assert [r.expected_value for r in rows] == pytest.approx([0.002, 0.1, 18.0])
    assert [r.bid_hint for r in rows] == pytest.approx([0.01, 0.1, 5.0])


def reliability_reference(p: np.ndarray, y: np.ndarray, edges: list[float]) -> tuple[float, float, list[tuple]]:
    """numpy: Brier, ECE and (n, mean p, rate) per non-empty bin [edge_i, edge_i+1)."""
    bins = np.searchsorted(np.asarray(edges), p, side="right")
    curve = [(int((bins == b).sum()), float(p[bins == b].mean()), float(y[bins == b].mean())) for b in np.unique(bins)]
    ece = sum(n * abs(mp - r) for n, mp, r in curve) / len(p)
    return float(np.mean((p - y) ** 2)), ece, curve


def test_reliability_matches_numpy_and_calibrators_fix_overconfident_scores(spark):
    rng = np.random.default_rng(4)
    true_p = rng.uniform(0.01, 0.3, 4000)
    y = (rng.uniform(size=4000) < true_p).astype(float)
    overconfident = 1 / (1 + np.exp(-(2.5 * np.log(true_p / (1 - true_p)) + 2.0)))  # too extreme, too high
    frame = spark.createDataFrame(pd.DataFrame({"p_click": overconfident, "clicked": y}))

    edges = calibration.quantile_bin_edges(frame, p_col="p_click", n_bins=10, relative_error=0.0)
    assert len(edges) == 9
    curve = calibration.calibration_curve(frame, edges, p_col="p_click", label_col="clicked")
    brier, ece, reference_curve = reliability_reference(overconfident, y, edges)
    assert [(b["n"], b["mean_p"], b["rate"]) for b in curve] == [pytest.approx(c) for c in reference_curve]
    assert calibration.expected_calibration_error(curve) == pytest.approx(ece, rel=1e-9)
    assert calibration.brier_score(frame, p_col="p_click", label_col="clicked") == pytest.approx(brier, rel=1e-9)

    raw = calibration.reliability(frame, p_col="p_click", label_col="clicked")
    for method in ("platt", "isotonic"):
        fitted = calibration.fit_calibrator(frame, method, p_col="p_click", label_col="clicked")
        calibrated = fitted.apply(frame, p_col="p_click")
        after = calibration.reliability(calibrated, p_col="p_click", label_col="clicked")
        assert after["ece"] < raw["ece"] / 3 and after["brier"] < raw["brier"], (method, raw["ece"], after["ece"])
        values = calibrated.select("p_click").toPandas()["p_click"].to_numpy()
        order = np.argsort(overconfident, kind="stable")
        assert np.all(np.diff(values[order]) >= -1e-12), f"{method} keeps the order of the scores"
    a, _ = calibration.fit_calibrator(frame, "platt", p_col="p_click", label_col="clicked").platt
    assert a == pytest.approx(1 / 2.5, abs=0.1)  # undoes the planted stretch of the logit

    # the in-process engine's numpy versions: the same bins, scores and calibrators
    arrays = calibration.reliability_arrays(overconfident, y)
    assert arrays["brier"] == pytest.approx(brier, rel=1e-9) and arrays["ece"] == pytest.approx(ece, rel=1e-9)
    assert [(b["n"], b["mean_p"], b["rate"]) for b in arrays["curve"]] == [pytest.approx(c) for c in reference_curve]
    for method in ("platt", "isotonic"):
        spark_fit = calibration.fit_calibrator(frame, method, p_col="p_click", label_col="clicked")
        spark_p = spark_fit.apply(frame, p_col="p_click").select("p_click").toPandas()["p_click"].to_numpy()
        numpy_fit = calibration.fit_calibrator_arrays(overconfident, y, method)
        assert numpy_fit.apply_arrays(overconfident) == pytest.approx(spark_p, abs=1e-4), method
        assert numpy_fit.describe().keys() == spark_fit.describe().keys()
