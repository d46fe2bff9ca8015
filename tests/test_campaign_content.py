"""audience_exports: treatment rows only, the user's recommended products inside the campaign's category, and
subject lines rendered from per-campaign Jinja templates with a fallback when a field is missing."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq
import pytest

from precision_marketing.campaigns.content import ContentError, build_audience_exports

pytestmark = pytest.mark.fast  # make test-fast: no Spark session, Airflow run or browser

ACTIVATION = {
    "content_products": 2,
    "subject_template": "{{ first_product }} and more {{ category }} picks",
    "subject_fallback": "New in {{ category | capitalize }}",
    "campaigns": {"c_toys": {"subject_template": "{{ segment }}: {{ products | join(' & ') }} ({{ n_products }})"}},
}


def write_inputs(root):
    audiences = pd.DataFrame(
        {
            "campaign_id": ["c_books", "c_books", "c_books", "c_toys"],
            "user_id": [1, 2, 3, 1],
            "rank": [1, 2, 3, 1],
            "p_click": [0.3, 0.2, 0.1, 0.4],
            "decile": [1, 1, 2, 1],
            "segment": ["champions", "loyal", "loyal", "champions"],
            "email_sha256": ["a" * 64, "b" * 64, "c" * 64, "a" * 64],
            "channel": ["email", "email", "email", "push"],
            "experiment_group": ["treatment", "treatment", "control", "treatment"],
            "expected_value": [0.3, 0.2, 0.1, 0.8],
            "bid_hint": [0.3, 0.2, 0.1, 0.8],
        }
    )
    recommendations = pd.DataFrame(
        {  # user 1: books 12, 10, 11 (by rank) and toy 20; user 2: toys only
            "user_id": [1, 1, 1, 1, 2],
            "rank": [1, 2, 3, 4, 1],
            "product_id": [20, 12, 10, 11, 21],
            "score": [0.9, 0.8, 0.7, 0.6, 0.5],
            "source": ["als"] * 5,
        }
    )
    items = pd.DataFrame(
        {
            "product_id": [10, 11, 12, 20, 21],
            "title": ["Atlas", "Bible", "Cookbook", "Robot", "Kite"],
            "category": ["books", "books", "books", "toys", "toys"],
        }
    )
    campaigns = pd.DataFrame(
        {"campaign_id": ["c_books", "c_toys"], "name": ["Book week", "Toy days"], "target_category": ["books", "toys"]}
    )
    (root / "audiences").mkdir(parents=True)
    audiences.to_parquet(root / "audiences" / "part-0.parquet", index=False)
    (root / "recommendations").mkdir()
    recommendations.to_parquet(root / "recommendations" / "part-0.parquet", index=False)
    items.to_parquet(root / "item_features.parquet", index=False)
    campaigns.to_parquet(root / "campaigns.parquet", index=False)
    return dict(
        audiences=root / "audiences",
        recommendations=root / "recommendations",
        item_features=root / "item_features.parquet",
        campaigns=root / "campaigns.parquet",
    )


def test_exports_hold_treatment_rows_with_products_in_category_and_subjects(tmp_path):
    inputs = write_inputs(tmp_path)
    counts = build_audience_exports(**inputs, out=tmp_path / "out" / "exports.parquet", activation=ACTIVATION)
    exports = pq.read_table(tmp_path / "out" / "exports.parquet").to_pandas().set_index(["campaign_id", "user_id"])
    assert sorted(exports.index) == [("c_books", 1), ("c_books", 2), ("c_toys", 1)]  # user 3 is control
    assert counts == {"rows": 3, "with_products": 2, "fallback_subjects": 1}
    books_1 = exports.loc[("c_books", 1)]
    assert list(books_1["top_product_ids"]) == [12, 10]  # books only, best rank first, at most 2
    assert books_1["subject_line"] == "Cookbook and more books picks" and not books_1["subject_is_fallback"]
    books_2 = exports.loc[("c_books", 2)]  # no recommended book: the fallback template
    assert list(books_2["top_product_ids"]) == [] and books_2["subject_line"] == "New in Books"
    assert books_2["subject_is_fallback"]
    toys_1 = exports.loc[("c_toys", 1)]  # the campaign's own template
    assert toys_1["subject_line"] == "champions: Robot (1)"
    assert toys_1["bid_hint"] == 0.8 and toys_1["email_sha256"] == "a" * 64


def test_broken_templates_fail_naming_the_campaign(tmp_path):
    inputs = write_inputs(tmp_path)
    broken = {**ACTIVATION, "campaigns": {"c_toys": {"subject_template": "{{ products | join(' & ' }}"}}}
    with pytest.raises(ContentError, match=r"campaign 'c_toys': activation subject_template .* not a valid Jinja"):
        build_audience_exports(**inputs, out=tmp_path / "a.parquet", activation=broken)
    needs_products = {**ACTIVATION, "subject_fallback": "{{ first_product }}"}
    with pytest.raises(ContentError, match=r"campaign 'c_books': the fallback subject template needs a field"):
        build_audience_exports(**inputs, out=tmp_path / "b.parquet", activation=needs_products)


def test_without_recommendations_every_row_gets_the_fallback(tmp_path):
    inputs = {**write_inputs(tmp_path), "recommendations": None}
    counts = build_audience_exports(**inputs, out=tmp_path / "exports.parquet", activation=ACTIVATION)
    assert counts == {"rows": 3, "with_products": 0, "fallback_subjects": 3}


def test_subjects_are_one_bounded_line_whatever_the_template_or_the_titles(tmp_path):
    inputs = write_inputs(tmp_path)
    huge = {**ACTIVATION, "subject_template": "x" * 100_000_000}  # a 10^8-character template
    with pytest.raises(ContentError, match=r"subject_template has 100,000,000 characters, at most 1,000"):
        build_audience_exports(**inputs, out=tmp_path / "a.parquet", activation=huge)
    bomb = {**ACTIVATION, "subject_template": "{{ 'x' * 100000000 }}"}  # a short template, a huge subject
    with pytest.raises(ContentError, match=r"subject_template refused: a repetition longer than 200"):
        build_audience_exports(**inputs, out=tmp_path / "b.parquet", activation=bomb)
    injected = {**ACTIVATION, "subject_template": "Hello\r\nBcc: everyone@example.com\n{{ campaign_name }}"}
    build_audience_exports(**inputs, out=tmp_path / "c.parquet", activation=injected)
    subjects = pd.read_parquet(tmp_path / "c.parquet")["subject_line"]
    assert not subjects.str.contains("[\r\n]").any()
    assert (subjects == "Hello Bcc: everyone@example.com Book week").sum() == 2  # c_toys keeps its own template
