"""Great Expectations suites + checkpoint runner on tiny Parquet files.

GX costs seconds per checkpoint, so each broken layer is validated once (module fixtures) and several
tests read the one failure message.
"""

import datetime as dt
import hashlib
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from expectations.checkpoints import DataQualityError, main, run_checkpoint

DS = "2026-11-20"
TOP_K = 2
REPO_ROOT = Path(__file__).resolve().parents[1]


def sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def good_marts() -> dict[str, pd.DataFrame]:
    day = dt.date(2026, 11, 20)
    return {
        "user_features": pd.DataFrame(
            {
                "user_id": [1, 2, 3],
                "country": ["DE", "FR", "PL"],
                "signup_date": [dt.date(2026, 1, 1)] * 3,
                "email_sha256": [sha("a"), sha("b"), sha("c")],
                "has_history": [True, True, False],
                "recency_days": [1, 3, 200],
                "frequency": [2, 0, 0],
                "monetary": [30.0, 0.0, 0.0],
                "n_views": [3, 1, 0],
                "n_carts": [1, 0, 0],
                "n_purchases": [2, 0, 0],
                "n_favourites": [0, 1, 0],
                "top_category": ["shoes", "bags", None],
                "top_category_affinity": [0.8, 1.0, 0.0],
            }
        ),
        "item_features": pd.DataFrame(
            {
                "product_id": [10, 11, 12],
                "category": ["shoes", "bags", "shoes"],
                "brand": ["x", "y", "z"],
                "price": [15.0, 20.0, 5.0],
                "n_views": [2, 1, 1],
                "n_carts": [1, 0, 0],
                "n_purchases": [2, 0, 0],
                "n_users": [1, 1, 1],
                "popularity_rank": [1, 2, 3],
            }
        ),
        "interactions": pd.DataFrame(
            {
                "user_id": [1, 1, 2],
                "product_id": [10, 12, 11],
                "event_date": [day] * 3,
                "event_hour": [dt.datetime(day.year, day.month, day.day, 9)] * 3,
                "weight": [13.0, 1.0, 3.0],
                "n_purchases": [2, 0, 0],
            }
        ),
        "ctr_train": pd.DataFrame(
            {
                "impression_id": ["i1", "i2"],
                "user_id": [1, 2],
                "campaign_id": ["C1", "C1"],
                "impression_date": [day] * 2,
                "placement": ["email"] * 2,
                "channel": ["email"] * 2,
                "target_category": ["shoes"] * 2,
                "affinity": [0.8, 0.0],
                "recency_days": [1, 3],
                "frequency": [2, 0],
                "monetary": [30.0, 0.0],
                "impression_hour": [9, 21],
                "category_recency_days": [2, 31],
                "clicked": [1, 0],
            }
        ),
        "ctr_score": pd.DataFrame(
            {
                "user_id": [1],
                "campaign_id": ["C1"],
                "placement": ["email"],
                "channel": ["email"],
                "target_category": ["shoes"],
                "affinity": [0.8],
                "recency_days": [1],
                "frequency": [2],
                "monetary": [30.0],
                "category_recency_days": [1],
                "email_sha256": [sha("a")],
            }
        ),
        "campaigns": pd.DataFrame(
            {
                "campaign_id": ["C1", "C2"],
                "name": ["shoe sale", "bag push"],
                "target_category": ["shoes", "bags"],
                "channel": ["email", "push"],
                "placement": ["email", "push"],
                "start_date": [dt.date(2026, 11, 1)] * 2,
                "end_date": [dt.date(2026, 11, 30)] * 2,
                "audience_size": [2, 5],
            }
        ),
        "suppressions": pd.DataFrame({"user_id": [2, 3], "channel": ["email", "all"]}),
        "data_reconciliation": pd.DataFrame(
            {
                "source": ["users", "events"],
                "raw_rows": [4, 10],
                "clean_rows": [3, 7],
                "quarantined_rows": [1, 2],
                "duplicate_rows": [0, 1],
                "delivered": [True, True],
                "ds_raw_rows": [4, 3],
                "ds_quarantined_rows": [1, 0],
            }
        ),
        "user_keys": pd.DataFrame(
            {"user_key": [1, 2, 3], "user_id": ["1", "2", "3"], "first_seen_ds": [dt.date(2026, 11, 1)] * 3}
        ),
        "consent_ledger": pd.DataFrame(
            {
                "user_id": ["2", "3"],
                "channel": ["email", "all"],
                "status": ["opt_out", "opt_out"],
                "updated_ts": [dt.datetime(2026, 11, 20, 10)] * 2,
                "stated_on": [dt.date(2026, 11, 20)] * 2,
            }
        ),
    }


def good_outputs() -> dict[str, pd.DataFrame]:
    return {
        # user 1 bought product 10: never recommended to them
        "recommendations": pd.DataFrame(
            {
                "user_id": [1, 1, 2, 2, 3, 3],
                "rank": [1, 2, 1, 2, 1, 2],
                "product_id": [11, 12, 10, 12, 10, 11],
                "score": [0.9, 0.5, 0.8, 0.4, 0.7, 0.6],
                "source": ["als"] * 4 + ["popularity"] * 2,
            }
        ),
        # user 2 opted out of email only, user 3 of everything
        "audiences": pd.DataFrame(
            {
                "campaign_id": ["C1", "C2", "C2"],
                "user_id": [1, 1, 2],
                "rank": [1, 1, 2],
                "p_click": [0.3, 0.2, 0.1],
                "decile": [1, 1, 6],
                "segment": ["champions", "champions", "loyal"],
                "email_sha256": [sha("a"), sha("a"), sha("b")],
                "channel": ["email", "push", "push"],
                "experiment_group": ["treatment", "control", "treatment"],
                "expected_value": [0.3, 0.2, 0.1],
                "bid_hint": [0.3, 0.2, 0.1],
            }
        ),
        # control rows are never exported
        "audience_exports": pd.DataFrame(
            {
                "campaign_id": ["C1", "C2"],
                "user_id": [1, 2],
                "email_sha256": [sha("a"), sha("b")],
                "channel": ["email", "push"],
                "rank": [1, 2],
                "p_click": [0.3, 0.1],
                "expected_value": [0.3, 0.1],
                "bid_hint": [0.3, 0.1],
                "segment": ["champions", "loyal"],
                "top_product_ids": [[10], []],
                "top_product_titles": [["Shoe"], []],
                "subject_line": ["Shoe for you", "New in bags"],
                "subject_is_fallback": [False, True],
            }
        ),
        "campaign_lift": pd.DataFrame(
            {
                "campaign_id": ["C1", "C1"],
                "window_days": [7, 7],
                "metric": ["click", "conversion"],
                "n_treatment": [900, 900],
                "n_control": [100, 100],
                "successes_treatment": [90, 45],
                "successes_control": [1, 3],
                "rate_treatment": [0.1, 0.05],
                "rate_control": [0.01, 0.03],
                "abs_lift": [0.09, None],
                "rel_lift": [9.0, None],
                "ci_low": [0.07, None],
                "ci_high": [0.11, None],
                "p_value": [0.001, None],
                "status": ["ok", "not enough data: ..."],
            }
        ),
        "user_segments": pd.DataFrame(
            {
                "user_id": [1, 2, 3],
                "segment_id": [0, 1, 2],
                "segment": ["champions", "loyal", "hibernating"],
                "recency_days": [1, 3, 200],
                "frequency": [2, 0, 0],
                "monetary": [30.0, 0.0, 0.0],
            }
        ),
    }


OUTPUT_REFERENCES = ("user_features", "interactions", "suppressions", "campaigns")


def write_tables(root: Path, frames: dict[str, pd.DataFrame], spark_dirs: tuple[str, ...] = ()) -> dict[str, Path]:
    """One Parquet file per table, or a Spark-style folder (part file + _SUCCESS) for spark_dirs."""
    root.mkdir(parents=True, exist_ok=True)
    paths = {}
    for table, frame in frames.items():
        if table in spark_dirs:
            folder = root / table
            folder.mkdir()
            frame.to_parquet(folder / "part-00000.parquet", index=False)
            (folder / "_SUCCESS").touch()
            paths[table] = folder
        else:
            paths[table] = root / f"{table}.parquet"
            frame.to_parquet(paths[table], index=False)
    return paths


def output_tables(root: Path, outputs: dict[str, pd.DataFrame], marts: dict | None = None) -> dict[str, Path]:
    marts = marts or good_marts()
    return write_tables(
        root, {**outputs, **{t: marts[t] for t in OUTPUT_REFERENCES}}, spark_dirs=("recommendations", "audiences")
    )


def failure_lines(error: DataQualityError) -> list[str]:
    return str(error).splitlines()[1:]


# --- passing data --------------------------------------------------------------------------------
def test_good_marts_pass_and_build_data_docs(tmp_path):
    docs = tmp_path / "docs"
    summary = run_checkpoint("marts", write_tables(tmp_path / "in", good_marts()), docs_dir=docs, ds=DS)

    assert summary["success"] is True
    assert set(summary["tables"]) == set(good_marts())
    assert all(t["success"] and t["failed_expectations"] == 0 for t in summary["tables"].values())
    assert summary["tables"]["interactions"]["evaluated_expectations"] >= 6
    assert (docs / "index.html").is_file()
    assert "marts.user_features" in (docs / "index.html").read_text()


def test_good_outputs_pass_with_derived_frames(tmp_path):
    docs = tmp_path / "docs"
    tables = output_tables(tmp_path / "in", good_outputs())
    summary = run_checkpoint("outputs", tables, docs_dir=docs, ds=DS, top_k=TOP_K)

    assert summary["success"] is True
    assert set(summary["tables"]) == {
        "recommendations",
        "recommendations_per_user",
        "audiences",
        "audiences_per_campaign",
        "audiences_per_user",
        "audience_exports",
        "campaign_lift",
        "user_segments",
    }
    assert summary["tables"]["recommendations_per_user"]["rows"] == 3  # one per user of user_features
    assert summary["tables"]["audience_exports"]["evaluated_expectations"] >= 5
    assert (docs / "index.html").is_file()


# --- broken marts: one checkpoint, several assertions ----------------------------------------------
def broken_marts() -> dict[str, pd.DataFrame]:
    frames = good_marts()
    frames["user_features"].loc[1, "user_id"] = None  # NULL key
    frames["item_features"].loc[2, "product_id"] = 10  # duplicate key
    frames["interactions"].loc[2, ["user_id", "product_id"]] = [1, 10]  # duplicate compound key
    frames["interactions"].loc[2, "event_hour"] = frames["interactions"].loc[0, "event_hour"]
    frames["ctr_train"].loc[1, "clicked"] = 2
    frames["data_reconciliation"].loc[1, "raw_rows"] = 11  # 11 != 7 + 2 + 1
    return frames


@pytest.fixture(scope="module")
def broken_marts_error(tmp_path_factory):
    frames = broken_marts()
    root = tmp_path_factory.mktemp("broken_marts")
    with pytest.raises(DataQualityError) as caught:
        run_checkpoint("marts", write_tables(root / "in", frames), docs_dir=root / "docs", ds=DS)
    caught.value.docs_dir = root / "docs"
    return caught.value


def test_data_docs_show_counts_not_the_values(broken_marts_error):
    """The task's error names a few bad values for whoever runs the night; the Data Docs every DAG reader can open
    show which rule failed and how often, never the rows' values (user ids, hashed e-mails)."""
    assert "ctr_train" in str(broken_marts_error) and "e.g. [2]" in str(broken_marts_error)
    pages = [p.read_text() for p in broken_marts_error.docs_dir.rglob("*.html") if "validations" in p.parts]
    assert pages and any("marts.ctr_train" in page for page in pages)
    for page in pages:
        assert "Unexpected Value" not in page  # the table of sampled values GX renders under a failure


def test_null_key_fails_naming_table_and_column(broken_marts_error):
    assert (
        "marts.user_features: expect_column_values_to_not_be_null on column 'user_id' failed "
        "(1 unexpected values of 3 rows"
    ) in str(broken_marts_error)


def test_duplicate_keys_fail_naming_table_and_columns(broken_marts_error):
    lines = failure_lines(broken_marts_error)
    assert any(
        line.startswith("marts.item_features: expect_column_values_to_be_unique on column 'product_id'")
        and "[10, 10]" in line
        for line in lines
    )
    assert any(
        line.startswith(
            "marts.interactions: expect_compound_columns_to_be_unique on columns "
            "['user_id', 'product_id', 'event_hour']"
        )
        for line in lines
    )


def test_value_set_and_reconciliation_failures(broken_marts_error):
    lines = failure_lines(broken_marts_error)
    assert any(
        line.startswith("marts.ctr_train: expect_column_values_to_be_in_set on column 'clicked'") and "e.g. [2]" in line
        for line in lines
    )
    assert any(
        line.startswith("marts.data_reconciliation: expect_column_values_to_be_in_set on column 'reconciles'")
        and "raw_rows = clean_rows" in line
        for line in lines
    )


def test_failure_summary_counts_only_broken_tables(broken_marts_error):
    tables = broken_marts_error.summary["tables"]
    assert tables["campaigns"] == {**tables["campaigns"], "success": True, "failed_expectations": 0}
    assert tables["user_features"]["success"] is False
    assert tables["interactions"]["failed_expectations"] == 1
    # the message lists exactly the failed expectations
    assert len(failure_lines(broken_marts_error)) == sum(t["failed_expectations"] for t in tables.values())


def test_large_tables_are_validated_with_spark_to_the_same_verdicts(broken_marts_error, spark, tmp_path):
    """Above spark_min_rows a table is validated by GX's Spark datasource (never loaded into pandas): the same
    suites give the same failures, and the Data Docs list every table whichever engine validated it."""
    subset = ("user_features", "item_features", "interactions", "data_reconciliation", "suppressions")
    frames = {table: frame for table, frame in broken_marts().items() if table in subset}
    docs = tmp_path / "docs"
    with pytest.raises(DataQualityError) as caught:
        run_checkpoint("marts", write_tables(tmp_path / "in", frames), docs_dir=docs, ds=DS, spark_min_rows=2)
    tables = caught.value.summary["tables"]
    assert {t for t, summary in tables.items() if summary["engine"] == "spark"} == {
        "user_features",
        "item_features",
        "interactions",
    }  # 3 rows each; the others have 2
    expected = [line for line in failure_lines(broken_marts_error) if line.split(":")[0].split(".")[1] in subset]
    assert sorted(failure_lines(caught.value)) == sorted(expected) and len(expected) == 4
    assert {t: (v["success"], v["rows"]) for t, v in tables.items()} == {
        t: (v["success"], v["rows"]) for t, v in broken_marts_error.summary["tables"].items() if t in subset
    }
    assert "marts.interactions" in (docs / "index.html").read_text()


# --- broken outputs: one checkpoint, several assertions --------------------------------------------
@pytest.fixture(scope="module")
def broken_outputs_error(tmp_path_factory):
    outputs = good_outputs()
    recs = outputs["recommendations"]
    recs.loc[1, "product_id"] = 10  # user 1 purchased product 10 in the window
    outputs["recommendations"] = recs.drop(index=5)  # user 3 gets 1 of 2 recommendations
    outputs["audiences"] = pd.concat(
        [
            outputs["audiences"],
            pd.DataFrame(
                {
                    "campaign_id": ["C1", "C1"],
                    "user_id": [2, 3],
                    "rank": [2, 3],
                    "p_click": [0.2, 0.1],
                    "decile": [5, 9],
                    "segment": ["loyal", "hibernating"],
                    "email_sha256": [sha("b"), sha("c")],
                    "channel": ["email", "email"],
                    "experiment_group": ["treatment", "treatment"],
                    "expected_value": [0.2, 0.1],
                    "bid_hint": [0.2, 0.1],
                }
            ),
        ],
        ignore_index=True,
    )  # user 2 opted out of email, user 3 of all; C1 now has 3 > audience_size 2
    exports = outputs["audience_exports"]
    outputs["audience_exports"] = pd.concat(
        [exports, exports.iloc[[0]].assign(campaign_id="C2")], ignore_index=True
    )  # (C2, 1) is a control row of audiences
    marts = good_marts()
    new_user = marts["user_features"].iloc[[0]].assign(user_id=4)  # a clean user without recommendations
    marts["user_features"] = pd.concat([marts["user_features"], new_user], ignore_index=True)
    root = tmp_path_factory.mktemp("broken_outputs")
    with pytest.raises(DataQualityError) as caught:
        run_checkpoint(
            "outputs",
            output_tables(root / "in", outputs, marts),
            docs_dir=root / "docs",
            ds=DS,
            top_k=TOP_K,
            max_audiences_per_user=1,
        )
    return caught.value


def test_recommended_purchased_item_fails(broken_outputs_error):
    assert (
        "outputs.recommendations: expect_column_values_to_be_in_set on column 'purchased_in_window' failed "
        "(1 unexpected values of 5 rows, e.g. [True])"
    ) in str(broken_outputs_error)


def test_wrong_recommendation_count_per_user_fails(broken_outputs_error):
    # user 3 got 1 of 2, user 4 of user_features got none
    assert (
        "outputs.recommendations_per_user: expect_column_values_to_be_between on column 'n_recommendations' "
        "failed (2 unexpected values of 4 rows, e.g. [1, 0])"
    ) in str(broken_outputs_error)


def test_suppressed_users_in_audience_fail(broken_outputs_error):
    assert (
        "outputs.audiences: expect_column_values_to_be_in_set on column 'is_suppressed' failed "
        "(2 unexpected values of 5 rows"
    ) in str(broken_outputs_error)


def test_exported_control_user_and_frequency_cap_fail(broken_outputs_error):
    assert (
        "outputs.audience_exports: expect_column_values_to_be_in_set on column 'exported_control' failed "
        "(1 unexpected values of 3 rows, e.g. [True])"
    ) in str(broken_outputs_error)
    # users 1 and 2 are in C1 and C2 with a cap of 1
    assert (
        "outputs.audiences_per_user: expect_column_values_to_be_between on column 'n_audiences' failed "
        "(2 unexpected values of 3 rows, e.g. [2, 2])"
    ) in str(broken_outputs_error)


def test_audience_larger_than_audience_size_fails(broken_outputs_error):
    lines = [line for line in failure_lines(broken_outputs_error) if line.startswith("outputs.audiences_per_campaign")]
    assert len(lines) == 1
    assert "columns 'audience_size' >= 'n_users'" in lines[0] and "[(2, 3)]" in lines[0]
    assert broken_outputs_error.summary["tables"]["user_segments"]["success"] is True


# --- unreadable input ------------------------------------------------------------------------------
def test_missing_table_file_fails_naming_the_path(tmp_path):
    tables = write_tables(tmp_path, {"campaigns": good_marts()["campaigns"]})
    missing = tmp_path / "nowhere" / "user_features.parquet"
    with pytest.raises(DataQualityError, match=r"marts\.user_features: table file not found: .*nowhere/user_features"):
        run_checkpoint("marts", {**tables, "user_features": missing}, docs_dir=tmp_path / "docs", ds=DS)


def test_outputs_without_reference_table_fail_readably(tmp_path):
    tables = output_tables(tmp_path, good_outputs())
    del tables["suppressions"]
    with pytest.raises(DataQualityError, match=r"outputs\.audiences: checking it needs table 'suppressions'"):
        run_checkpoint("outputs", tables, docs_dir=tmp_path / "docs", ds=DS, top_k=TOP_K)


def test_output_without_rule_column_fails_naming_file_and_column(tmp_path):
    outputs = good_outputs()
    outputs["recommendations"] = outputs["recommendations"].drop(columns="product_id")
    with pytest.raises(
        DataQualityError, match=r"outputs\.recommendations: .*recommendations has no column 'product_id'"
    ):
        run_checkpoint("outputs", output_tables(tmp_path, outputs), docs_dir=tmp_path / "docs", ds=DS, top_k=TOP_K)


def test_unknown_table_name_is_rejected(tmp_path):
    with pytest.raises(ValueError, match="unknown table"):
        run_checkpoint("marts", {"user_feature": tmp_path / "x.parquet"}, docs_dir=tmp_path, ds=DS)


# --- CLI -------------------------------------------------------------------------------------------
def test_cli_exit_codes(tmp_path, capsys):
    good = write_tables(tmp_path / "good", {"suppressions": good_marts()["suppressions"]})
    code = main(
        [
            "--layer",
            "marts",
            "--table",
            f"suppressions={good['suppressions']}",
            "--docs-dir",
            str(tmp_path / "docs"),
            "--ds",
            DS,
        ]
    )
    assert code == 0
    assert '"success": true' in capsys.readouterr().out

    # a real process: a failing check exits 1 with the readable message and no traceback
    bad = write_tables(tmp_path / "bad", {"suppressions": pd.DataFrame({"user_id": [7], "channel": ["sms"]})})
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "expectations.checkpoints",
            "--layer",
            "marts",
            "--table",
            f"suppressions={bad['suppressions']}",
            "--docs-dir",
            str(tmp_path / "docs2"),
            "--ds",
            DS,
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 1
    assert "marts.suppressions: expect_column_values_to_be_in_set on column 'channel' failed" in done.stderr
    assert "Traceback" not in done.stderr


def test_data_docs_render_offline_with_the_list_of_validations(tmp_path, browser):
    """GX's pages load their scripts from CDNs: shipped copies make the index show its validations offline."""
    docs = tmp_path / "docs"
    run_checkpoint("marts", write_tables(tmp_path / "in", good_marts()), docs_dir=docs, ds=DS)
    index = (docs / "index.html").read_text()
    assert "cdn." not in index and "unpkg.com" not in index and "code.jquery.com" not in index
    page = browser.new_page()
    remote = []
    page.route(
        "**/*",
        lambda route: (
            (remote.append(route.request.url), route.abort())
            if not route.request.url.startswith("file:")
            else route.continue_()
        ),
    )
    page.goto((docs / "index.html").as_uri())
    rows = page.locator("table tbody tr")
    rows.first.wait_for(timeout=15_000)
    listed = page.locator("table tbody").first.inner_text()
    assert remote == []
    assert all(f"marts.{table}" in listed for table in ("user_features", "interactions"))
    page.close()
