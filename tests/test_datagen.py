"""The synthetic generator: reproducible, planted structure visible in the files, planted dirt counted exactly."""

import json
from datetime import date, timedelta
from pathlib import Path

import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from expectations.raw_contract import check_raw
from precision_marketing.contract import EVENT_TYPES, PLACEMENTS, SOURCES
from precision_marketing.datagen import GENERATED_SOURCES, generate, main

pytestmark = pytest.mark.fast  # make test-fast: no Spark session, Airflow run or browser

END_DS = "2026-11-23"
SMALL = dict(users=300, items=120, days=14, campaigns=6, seed=7)
TIMESTAMP = "%Y-%m-%d %H:%M:%S"


def read_source(root: Path, source: str, ds: str | None = None) -> pd.DataFrame:
    """All files of a source (or one day) as text, in file then row order, NULL as NaN."""
    pattern = f"ds={ds}/{source}.csv" if ds else f"ds=*/{source}.csv"
    files = sorted((root / source).glob(pattern))
    return pd.concat(
        [pd.read_csv(f, dtype=str, keep_default_na=False, na_values=[""]).assign(_file=f.parent.name) for f in files],
        ignore_index=True,
    )


def file_bytes(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.csv"))}


@pytest.fixture(scope="module")
def dirty_lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("dirty") / "raw"
    return root, generate(root, END_DS, dirty_rate=0.05, **SMALL)


@pytest.fixture(scope="module")
def clean_lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("clean") / "raw"
    return root, generate(root, END_DS, dirty_rate=0.0, users=500, items=120, days=14, seed=11)


def test_same_seed_gives_identical_bytes_and_another_seed_differs(tmp_path, dirty_lake):
    root, _ = dirty_lake
    again = tmp_path / "again"
    generate(again, date.fromisoformat(END_DS), dirty_rate=0.05, **SMALL)
    assert file_bytes(again) == file_bytes(root)

    other = tmp_path / "other"
    generate(other, END_DS, dirty_rate=0.05, **{**SMALL, "seed": 8})
    assert file_bytes(other)[f"events/ds={END_DS}/events.csv"] != file_bytes(root)[f"events/ds={END_DS}/events.csv"]


def test_every_day_has_snapshots_and_increments_holding_only_that_day(dirty_lake):
    root, summary = dirty_lake
    days = [(date.fromisoformat(END_DS) - timedelta(days=i)).isoformat() for i in range(SMALL["days"])]
    assert sorted(p.name for p in (root / "events").iterdir()) == sorted(f"ds={d}" for d in days)
    for source in GENERATED_SOURCES:
        for day in days:
            assert (root / source / f"ds={day}" / f"{source}.csv").stat().st_size > 0
    assert (root / "users" / f"ds={days[0]}" / "users.csv").read_bytes() == (
        root / "users" / f"ds={days[-1]}" / "users.csv"
    ).read_bytes()

    for source, ts_column in (("events", "event_ts"), ("impressions", "impression_ts")):
        rows = read_source(root, source)
        parsed = pd.to_datetime(rows[ts_column], format=TIMESTAMP, errors="coerce")
        valid = parsed.notna()
        assert (parsed[valid].dt.strftime("ds=%Y-%m-%d") == rows.loc[valid, "_file"]).all()
        malformed_per_day = (~valid).groupby(rows["_file"]).sum()
        expected = {f"ds={d}": kinds["malformed_ts"] for d, kinds in summary["dirty_by_ds"][source].items()}
        assert malformed_per_day.to_dict() == expected


def planted_defects(root: Path, source: str) -> pd.DataFrame:
    """One boolean column per dirt kind, found from the files alone."""
    rows = read_source(root, source, END_DS if SOURCES[source].kind == "snapshot" else None)
    data = rows.drop(columns="_file")
    defects = pd.DataFrame({"duplicate": data.duplicated()})
    if "user_id" in data:
        defects["null_user_id"] = data["user_id"].isna() & ~defects["duplicate"]
    if source == "events":
        products = set(read_source(root, "products", END_DS)["product_id"])
        defects["unknown_product_id"] = data["product_id"].notna() & ~data["product_id"].isin(products)
        defects["malformed_ts"] = pd.to_datetime(data["event_ts"], format=TIMESTAMP, errors="coerce").isna()
        defects["invalid_event_type"] = ~data["event_type"].isin(EVENT_TYPES)
    elif source == "impressions":
        campaigns = set(read_source(root, "campaigns", END_DS)["campaign_id"])
        defects["unknown_campaign_id"] = ~data["campaign_id"].isin(campaigns)
        defects["malformed_ts"] = pd.to_datetime(data["impression_ts"], format=TIMESTAMP, errors="coerce").isna()
        defects["invalid_placement"] = ~data["placement"].isin(PLACEMENTS)
    elif source == "users":
        defects["malformed_signup_date"] = pd.to_datetime(
            data["signup_date"], format="%Y-%m-%d", errors="coerce"
        ).isna()
    elif source == "products":
        defects["non_positive_price"] = pd.to_numeric(data["price"]) <= 0
    return defects


@pytest.mark.parametrize("source", ["events", "impressions", "users", "products"])
def test_planted_dirt_found_in_files_matches_the_summary(dirty_lake, source):
    root, summary = dirty_lake
    defects = planted_defects(root, source)
    assert defects.sum().to_dict() == summary["dirty"][source]
    assert sum(summary["dirty"][source].values()) > 0
    assert defects.sum(axis=1).max() == 1, "each dirty row breaks exactly one rule"
    assert len(defects) == summary["rows"][source]


def test_dirty_rate_zero_plants_nothing_and_dirt_scales_with_the_rate(tmp_path):
    small = dict(users=200, items=60, days=7, seed=3)
    clean_summary = generate(tmp_path / "r0", END_DS, dirty_rate=0.0, **small)
    dirty_summary = generate(tmp_path / "r10", END_DS, dirty_rate=0.10, **small)
    for source in ("events", "impressions", "users", "products"):
        assert planted_defects(tmp_path / "r0", source).to_numpy().sum() == 0
        assert sum(clean_summary["dirty"][source].values()) == 0
    clean_events = read_source(tmp_path / "r0", "events")
    dirty_events = read_source(tmp_path / "r10", "events")
    planted = sum(dirty_summary["dirty"]["events"].values())
    assert len(dirty_events) == len(clean_events) + planted
    assert planted == pytest.approx(0.10 * len(clean_events), abs=small["days"])
    # Dirt is added beside the clean rows, which stay exactly the same.
    kept = dirty_events[~dirty_events["event_id"].str.contains("-x")].drop_duplicates()
    pd.testing.assert_frame_equal(kept.reset_index(drop=True), clean_events)


def test_funnel_narrows_from_views_to_carts_to_purchases(clean_lake):
    root, _ = clean_lake
    events = read_source(root, "events")
    counts = events["event_type"].value_counts()
    assert counts["view"] > counts["cart"] > counts["purchase"] > 0
    assert 0.2 < counts["cart"] / counts["view"] < 0.4
    assert 0.3 < counts["purchase"] / counts["cart"] < 0.5
    assert 0.02 < counts["favourite"] / counts["view"] < 0.08
    carted = set(zip(*events.loc[events["event_type"] == "cart", ["session_id", "product_id"]].to_numpy().T))
    purchased = set(zip(*events.loc[events["event_type"] == "purchase", ["session_id", "product_id"]].to_numpy().T))
    assert purchased <= carted
    assert events["event_id"].is_unique


def test_users_concentrate_on_few_categories_and_popularity_is_skewed(clean_lake):
    root, _ = clean_lake
    events = read_source(root, "events").merge(read_source(root, "products", END_DS)[["product_id", "category"]])
    per_user = events.groupby(["user_id", "category"]).size()
    top3_share = per_user.groupby(level=0).apply(lambda s: s.nlargest(3).sum() / s.sum())
    assert top3_share.median() > 0.9
    views = events[events["event_type"] == "view"].groupby("product_id").size().sort_values(ascending=False)
    assert views.head(len(views) // 5).sum() > 0.5 * views.sum()
    users = read_source(root, "users", END_DS)
    cold_share = 1 - events["user_id"].nunique() / len(users)
    assert 0.05 < cold_share < 0.25


def test_clicks_follow_behaviour_derived_category_affinity(clean_lake):
    root, _ = clean_lake
    events = read_source(root, "events").merge(read_source(root, "products", END_DS)[["product_id", "category"]])
    affinity = (
        (events.groupby(["user_id", "category"]).size() / events.groupby("user_id").size())
        .rename("affinity")
        .reset_index()
    )
    campaigns = read_source(root, "campaigns", END_DS)[["campaign_id", "target_category"]]
    impressions = (
        read_source(root, "impressions")
        .merge(campaigns)
        .merge(affinity, how="left", left_on=["user_id", "target_category"], right_on=["user_id", "category"])
    )
    impressions["affinity"] = impressions["affinity"].fillna(0.0)
    clicked = impressions["clicked"].astype(int)
    assert 0.01 < clicked.mean() < 0.10, "base CTR is a few percent"
    matching = impressions["affinity"] >= 0.3
    assert clicked[matching].mean() > 2 * clicked[~matching].mean()
    assert roc_auc_score(clicked, impressions["affinity"]) > 0.6


def test_campaigns_and_consent_have_the_planted_shape(clean_lake):
    root, summary = clean_lake
    campaigns = read_source(root, "campaigns", END_DS)
    start, end = pd.to_datetime(campaigns["start_date"]), pd.to_datetime(campaigns["end_date"])
    ds = pd.Timestamp(END_DS)
    assert ((start <= ds) & (end >= ds)).sum() >= 4
    assert (end < ds).sum() >= 1 and (end >= start).all()
    assert (campaigns["audience_size"].astype(int) > 0).all()
    assert set(campaigns["channel"]) == {"email", "push", "onsite"}

    consent = read_source(root, "consent", END_DS)
    users = read_source(root, "users", END_DS)
    opted_out = consent.loc[consent["status"] == "opt_out", "user_id"].nunique() / len(users)
    assert 0.05 < opted_out < 0.15
    history = consent.sort_values("updated_ts").groupby(["user_id", "channel"])["status"].agg(list)
    assert (history.map(lambda statuses: statuses[-1] == "opt_in" and "opt_out" in statuses)).sum() > 0, (
        "some users opted out and back in: the latest row must win"
    )
    assert (history.map(lambda statuses: statuses[-1]) == "opt_out").sum() > 0
    assert (pd.to_datetime(consent["updated_ts"], format=TIMESTAMP) < ds + pd.Timedelta(days=1)).all()


def test_generated_data_passes_the_raw_contract(dirty_lake):
    root, summary = dirty_lake
    report = check_raw(root, END_DS, history_days=SMALL["days"])
    assert report["warnings"] == []
    assert report["files_checked"] == 4 + 2 * SMALL["days"]
    rows = {}
    for entry in report["files"]:
        rows[entry["source"]] = rows.get(entry["source"], 0) + entry["rows"]
    assert rows == summary["rows"]


def test_cli_prints_the_summary_and_rejects_bad_arguments(tmp_path, capsys):
    assert (
        main(
            [
                "--raw-root",
                str(tmp_path),
                "--ds",
                END_DS,
                "--users",
                "40",
                "--items",
                "20",
                "--days",
                "2",
                "--seed",
                "5",
            ]
        )
        == 0
    )
    summary = json.loads(capsys.readouterr().out)
    assert summary["rows"]["users"] == len(read_source(tmp_path, "users", END_DS))
    assert summary["rows"]["events"] == len(read_source(tmp_path, "events"))

    assert main(["--raw-root", str(tmp_path), "--ds", "2026-02-30"]) == 2
    assert "end_ds must be a date YYYY-MM-DD, got '2026-02-30'" in capsys.readouterr().err
    with pytest.raises(ValueError, match="dirty_rate must be between 0 and 0.5"):
        generate(tmp_path, END_DS, dirty_rate=2.0)


def test_true_click_probabilities_explain_the_clicks(tmp_path):
    summary = generate(tmp_path / "raw", END_DS, dirty_rate=0.02, truth_root=tmp_path / "truth", **SMALL)
    truth = pd.concat([pd.read_csv(p) for p in sorted((tmp_path / "truth" / "impressions").glob("ds=*/*.csv"))])
    impressions = read_source(tmp_path / "raw", "impressions").drop_duplicates("impression_id")
    clean = impressions.merge(truth, on="impression_id", how="inner")
    # one truth row per clean impression; dirty rows (fresh ids with -x) have none
    assert len(truth) == truth["impression_id"].nunique() == len(clean)
    assert (
        not impressions.loc[~impressions["impression_id"].isin(truth["impression_id"]), "impression_id"]
        .str.contains(r"^i\d{8}-\d{7}$")
        .any()
    )
    clicked = clean["clicked"].astype(int)
    assert clean["p_click"].between(0, 1).all()
    assert clicked.mean() == pytest.approx(
        clean["p_click"].mean(), abs=3 * (clean["p_click"].mean() / len(clean)) ** 0.5
    )
    assert roc_auc_score(clicked, clean["p_click"]) > 0.65
    hour = pd.to_datetime(clean["impression_ts"], format=TIMESTAMP).dt.hour
    assert clean.loc[hour.between(18, 22), "p_click"].mean() > clean.loc[hour < 6, "p_click"].mean()
    assert summary["planted"]["send_impressions"] == 0


def test_planted_effect_reaches_exported_users_only_after_their_first_export(tmp_path):
    exports = pd.DataFrame(
        {
            "campaign_id": ["cmp_002"] * 100 + ["cmp_002"] * 100,
            "user_id": list(range(1, 101)) * 2,
            "ds": ["2026-11-15"] * 100 + ["2026-11-16"] * 100,
        }
    )
    generate(tmp_path / "base", END_DS, dirty_rate=0.0, **SMALL)
    planted = generate(
        tmp_path / "planted", END_DS, dirty_rate=0.0, exports=exports, treatment_effect=0.5, effect_days=3, **SMALL
    )
    assert planted["planted"]["send_impressions"] == 200  # one per export row, the next day
    assert 30 < planted["planted"]["planted_purchases"] < 70  # once per exported pair, p = 0.5
    events = read_source(tmp_path / "planted", "events")
    extra = events[events["event_id"].str.contains("-t")]
    buys = extra[extra["event_type"] == "purchase"]
    assert len(buys) == planted["planted"]["planted_purchases"] and buys["user_id"].astype(int).between(1, 100).all()
    days = pd.to_datetime(buys["event_ts"], format=TIMESTAMP).dt.strftime("%Y-%m-%d")
    assert days.between("2026-11-16", "2026-11-18").all()  # within effect_days of the first export (11-15)
    campaigns = read_source(tmp_path / "planted", "campaigns", END_DS).set_index("campaign_id")
    products = read_source(tmp_path / "planted", "products", END_DS).set_index("product_id")
    assert (products.loc[buys["product_id"], "category"] == campaigns.loc["cmp_002", "target_category"]).all()
    # everything else is exactly the base data
    base_events = read_source(tmp_path / "base", "events")
    pd.testing.assert_frame_equal(events[~events["event_id"].str.contains("-t")].reset_index(drop=True), base_events)
