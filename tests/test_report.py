"""The HTML run report: built from metrics, reconciliation, audiences and task timings (with history of
earlier nights), self-contained, and rendered by a real headless Chromium with its plots."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from precision_marketing.reporting.report import build_report, dbt_layer_results, render_html, timing_records

pytestmark = pytest.mark.fast  # make test-fast: no Spark session, Airflow run or browser

DS = "2026-11-22"
RECONCILIATION = [
    {"source": "events", "raw_rows": 1000, "clean_rows": 950, "quarantined_rows": 30, "duplicate_rows": 20},
    {"source": "users", "raw_rows": 200, "clean_rows": 200, "quarantined_rows": 0, "duplicate_rows": 0},
]


def night(ds, precision, auc, quarantined):
    return {
        "ds": ds,
        "run_id": f"scheduled__{ds}",
        "metrics": {
            "als": {"k": 10, "precision_at_k": precision, "baseline_precision_at_k": 0.07},
            "ctr": {"auc": auc, "baseline_auc": 0.58},
        },
        "data_quality": {
            "reconciliation": [
                {
                    "source": "events",
                    "raw_rows": 1000,
                    "clean_rows": 1000 - quarantined,
                    "quarantined_rows": quarantined,
                    "duplicate_rows": 0,
                }
            ]
        },
    }


@pytest.fixture
def built(tmp_path):
    recon = tmp_path / "data_reconciliation.parquet"
    pq.write_table(pa.Table.from_pylist(RECONCILIATION), recon)
    times = tmp_path / "tasks"
    times.mkdir()
    for task, seconds, run in (
        ("check_raw", 2.5, "manual__1"),
        ("train_als", 40.0, "manual__1"),
        ("train_ctr_and_build_audiences", 30.0, "older_run"),
    ):
        (times / f"{task}.json").write_text(
            json.dumps(
                {
                    "task_id": task,
                    "run_id": run,
                    "state": "success",
                    "start": f"2026-11-23T00:00:0{len(task) % 10}",
                    "seconds": seconds,
                }
            )
        )
    dbt_dir = tmp_path / "dbt"
    dbt_dir.mkdir()
    for layer, finished, run, nodes in (
        ("marts", "2026-11-23T00:01:00Z", "manual__1", [("model.p.ctr_train", "success", 4.5)]),
        ("staging", "2026-11-23T00:00:30Z", "manual__1", [("model.p.stg_events", "success", 2.0)]),
        ("audit", "2026-11-23T00:01:30Z", "manual__1", [("model.p.data_reconciliation", "error", 0.1)]),
        ("old", "2026-11-22T00:01:30Z", "older_run", [("model.p.x", "success", 9.0)]),
    ):
        nodes = [
            {"unique_id": u, "status": st, "seconds": sec, "message": "boom" if st == "error" else None}
            for u, st, sec in nodes
        ]
        nodes.append({"unique_id": f"test.p.not_null_{layer}", "status": "pass", "seconds": 0.1, "message": None})
        record = {"layer": layer, "run_id": run, "finished_at": finished, "seconds": 7.0, "nodes": nodes}
        (dbt_dir / f"{layer}.json").write_text(json.dumps(record))
    metrics = {
        "als": {
            "k": 10,
            "precision_at_k": 0.154,
            "baseline_precision_at_k": 0.07,
            "recall_at_k": 0.25,
            "baseline_recall_at_k": 0.115,
            "n_eval_users": 12330,
            "model": "als",
            "gate": {
                "passed": False,
                "published": "fallback",
                "level": "warn",
                "reasons": ["ndcg@10 0.01 does not beat popularity 0.02 by 5 %"],
            },
            "tuning": {"candidates": [{"rank": 32}, {"rank": 64}]},
        },  # a nested key: listed, not plotted
        "ctr": {"auc": 0.672},  # baseline_auc missing: n/a, no crash
        "segments": {"k": 5, "silhouette": 0.5},
    }
    history = [night("2026-11-20", 0.14, 0.66, 10), night("2026-11-21", 0.15, 0.67, 25)]
    out = tmp_path / "report"
    report = build_report(
        ds=DS,
        run_id="manual__1",
        manifests={"recommendations": {"row_count": 200_000}, "audiences": None},
        metrics=metrics,
        reconciliation_path=recon,
        out_dir=out,
        history=history,
        audience_sizes={"C001": 500, "C002": 1200},
        task_seconds=timing_records(times, "manual__1"),
        dbt_layers=dbt_layer_results(dbt_dir, "manual__1"),
    )
    return out, report


def test_report_json_holds_what_the_page_shows(built):
    out, report = built
    stored = json.loads((out / "report.json").read_text())
    assert stored["published"] == {"recommendations": 200_000, "audiences": None}
    assert stored["audience_sizes"] == {"C001": 500, "C002": 1200}
    assert [t["task_id"] for t in stored["task_seconds"]] == ["check_raw", "train_als"]  # only this run's
    assert (out / "report.md").read_text().startswith(f"# Nightly run report — ds {DS}")


def test_html_is_self_contained_and_reads_metrics_defensively(built):
    out, _ = built
    page = (out / "report.html").read_text()
    assert "<script" not in page and "<link" not in page
    assert page.count("<svg") == 5
    assert "<td>CTR AUC</td><td class=num>0.6720</td><td class=num>n/a</td>" in page
    assert "recommendations NDCG@K" in page  # a headline key the job does not write yet: shown as n/a
    assert "<td>recommendations served from</td><td class=num>als</td>" in page
    assert "failed (published: fallback); ndcg@10 0.01 does not beat popularity 0.02 by 5 %" in page
    assert "tuning" in page and "candidates" in page
    assert "3.00 %" in page  # events quarantine rate this night


def test_dbt_layers_in_build_order_with_what_did_not_pass(built):
    out, report = built
    assert [r["layer"] for r in report["dbt"]["layers"]] == ["staging", "marts", "audit"]  # this run's, in order
    assert report["dbt"]["layers"][0] == {"layer": "staging", "models": 1, "tests": 1, "not_passed": 0, "seconds": 7.0}
    assert [(n["layer"], n["unique_id"], n["message"]) for n in report["dbt"]["not_passed"]] == [
        ("audit", "model.p.data_reconciliation", "boom")
    ]
    assert [n["unique_id"] for n in report["dbt"]["slowest_models"]][0] == "model.p.ctr_train"
    page = (out / "report.html").read_text()
    assert "<td>audit</td><td>model.p.data_reconciliation</td><td>error</td><td>boom</td>" in page
    assert "- audit: 1 models, 1 tests, 1 not passed, 7.0 s" in (out / "report.md").read_text()


def test_browser_renders_every_plot(built, browser):
    out, _ = built
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    fetched = []
    page.on("request", lambda request: fetched.append(request.url))
    page.goto((out / "report.html").as_uri())
    assert fetched == [(out / "report.html").as_uri()]  # nothing else to load: works offline
    assert page.title() == f"Run report {DS}"
    for plot in ("ranking", "ctr", "audiences", "quarantine", "tasks"):
        svg = page.locator(f"#plot-{plot} svg")
        assert svg.count() == 1, plot
        box = svg.bounding_box()
        assert box["width"] > 200 and box["height"] > 80, (plot, box)
    # three nights on the precision trend: three markers per line
    assert page.locator("#plot-ranking svg").inner_html().count("<use") >= 6
    page.screenshot(path=str(out / "report.png"), full_page=True)
    page.close()


def test_empty_history_and_missing_sections_render(tmp_path):
    page = render_html({"ds": DS, "run_id": "r", "metrics": {}, "published": {}}, history=[])
    assert page.count("no data yet") == 5 and "<svg" not in page


def test_recommendation_section_shows_engine_intervals_verdict_and_candidates():
    from precision_marketing.reporting.report import recommendation_sections

    chosen = {"model": "item_cf", "params": {"neighbours": 50}}
    als = {
        "k": 10,
        "model": "item_cf",
        "params": {"neighbours": 50},
        "min_history": 3,
        "engine": "implicit",
        "engine_reason": "120,000 interaction rows fit the driver",
        "holdout": {
            "rule": "each user's latest 20% of active hours",
            "lists": {
                "served": {
                    "all": {
                        "precision": 0.2,
                        "recall": 0.3,
                        "ndcg": 0.41,
                        "map": 0.1,
                        "n_users": 500,
                        "ndcg_low": 0.38,
                        "ndcg_high": 0.44,
                    },
                    "light": {"ndcg": 0.35},
                    "heavy": {"ndcg": 0.52},
                },
                "recent_popularity": {
                    "all": {"precision": 0.1, "recall": 0.1, "ndcg": 0.2, "map": 0.05, "n_users": 500}
                },
            },
            "coverage": {"served": 0.42, "recent_popularity": 0.01},
        },
        "tuning": {
            "tuned": True,
            "selection_metric": "ndcg",
            "validation_rule": "each user's latest 20%",
            "n_fits": 31,
            "n_candidates": 25,
            "seconds": 24.5,
            "chosen": {**chosen, "min_history": 3},
            "candidates": [
                {"model": "als", "params": {"rank": r}, "validation_ndcg": r / 1000, "seconds": 1.0}
                for r in range(1, 25)
            ]
            + [{**chosen, "validation_ndcg": 0.38, "seconds": 4.5}],
        },
        "gate": {
            "passed": True,
            "published": "model",
            "reasons": [],
            "confidence": 0.95,
            "verdict": "model kept: better than recent_popularity by 0.2100 (95% interval +0.1800 to "
            "+0.2400, 500 users)",
        },
        "recommendations_by_source": {"item_cf": 4000, "popularity": 1000},
    }
    page = "\n".join(recommendation_sections(als))
    assert "Published from <b>item_cf</b>" in page and "fewer than 3 history items" in page
    assert "Engine: <b>implicit</b> (120,000 interaction rows fit the driver)" in page
    assert "tuned tonight on each user&#x27;s latest 20% (31 fits, 25 candidates in 24.5 s)" in page
    assert "Publish gate: <b>model kept: better than recent_popularity by 0.2100" in page
    assert (
        "<tr><td>served</td><td class=num>0.2000</td><td class=num>0.3000</td><td class=num>0.4100</td>"
        "<td class=num>0.1000</td><td class=num>0.3800 – 0.4400</td><td class=num>0.3500</td><td class=num>0.5200</td>"
        "<td class=num>0.4200</td><td class=num>500</td></tr>"
    ) in page
    assert "<td>recent_popularity</td>" in page and "ndcg@10 heavy" in page and "cold" not in page
    assert "the 20 best of 25 candidates" in page and page.count("<td>als</td>") == 19  # best first, cut at 20
    assert page.count(">chosen<") == 1 and '<td>{&quot;neighbours&quot;: 50}</td><td class=num>0.3800</td>' in page
    assert "<td>item_cf</td><td class=num>4000</td>" in page
    assert recommendation_sections({}) == []
