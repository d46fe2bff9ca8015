"""Original ids back on published tables: scalar key columns and lists of keys, order kept, unknown keys refused."""

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from precision_marketing.publish.ids import restore_original_ids
from precision_marketing.publish.partitions import PublishError

pytestmark = pytest.mark.fast  # make test-fast: no Spark session, Airflow run or browser


def write(path, table):
    pq.write_table(pa.Table.from_pylist(table), path)
    return path


def test_scalar_and_list_key_columns_get_the_delivered_ids(tmp_path):
    users = write(
        tmp_path / "user_keys.parquet", [{"user_id": 17850, "user_key": 1}, {"user_id": 13047, "user_key": 2}]
    )
    products = write(
        tmp_path / "product_keys.parquet",
        [
            {"product_id": "85123A", "product_key": 1},
            {"product_id": "71053", "product_key": 2},
            {"product_id": "POST", "product_key": 3},
        ],
    )
    exports = write(
        tmp_path / "exports.parquet",
        [
            {"campaign_id": "c1", "user_id": 2, "top_product_ids": [3, 1, 2]},
            {"campaign_id": "c1", "user_id": 1, "top_product_ids": []},
            {"campaign_id": "c2", "user_id": 1, "top_product_ids": None},
        ],
    )
    restored = restore_original_ids(
        "audience_exports",
        exports,
        {"user": users, "product": products},
        {"user_id": "integer", "product_id": "string"},
        tmp_path / "out.parquet",
    )
    assert pq.read_table(restored).to_pylist() == [
        {"campaign_id": "c1", "user_id": 13047, "top_product_ids": ["POST", "85123A", "71053"]},
        {"campaign_id": "c1", "user_id": 17850, "top_product_ids": []},
        {"campaign_id": "c2", "user_id": 17850, "top_product_ids": None},
    ]
    orphan = write(tmp_path / "orphan.parquet", [{"user_id": 1, "top_product_ids": [1, 9]}])
    with pytest.raises(
        PublishError,
        match=r"orphan: 1 row\(s\) have a top_product_ids that is not a key of "
        r"product_keys \(e.g. 9\)",
    ):
        restore_original_ids(
            "orphan",
            orphan,
            {"user": users, "product": products},
            {"user_id": "integer", "product_id": "string"},
            tmp_path / "o.parquet",
        )
