"""Adapters: land a known public export into the raw zone, by day, as the shop would deliver it.

An adapter only splits and lands; it never cleans. The rows keep the export's own columns and values, and
a mapping file (config/mappings/<dataset>.yaml) tells the nightly run how they map to the contract, exactly
as a team onboarding its own exports would (docs/data_contract.md).

    pm import online-retail /path/to/online_retail.csv.gz [--from 2011-11-01 --to 2011-11-30] [--overwrite]
    ... then run with PM__INGEST__MAPPING=config/mappings/online-retail.yaml
"""

from __future__ import annotations

import csv
import datetime as dt
import gzip
import io
from pathlib import Path

from precision_marketing.storage import Storage

ONLINE_RETAIL_COLUMNS = [
    "InvoiceNo",
    "StockCode",
    "Description",
    "Quantity",
    "InvoiceDate",
    "UnitPrice",
    "CustomerID",
    "Country",
]
ONLINE_RETAIL_MAPPING = "config/mappings/online-retail.yaml"


class AdapterError(ValueError):
    """The export is not what the adapter expects; the message names the file, line and problem."""


def _open_text(path: Path):
    return (
        io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
        if path.name.endswith(".gz")
        else path.open(encoding="utf-8", newline="")
    )


def split_online_retail(
    path: Path, start: dt.date | None = None, end: dt.date | None = None
) -> dict[str, list[list[str]]]:
    """Rows of the UCI Online Retail export grouped by the day of InvoiceDate (shop-local time), within
    [start, end] when given. Every day of that range gets an entry, empty when the shop had no orders."""
    path = Path(path)
    if not path.exists():
        raise AdapterError(f"{path}: file not found (the Online Retail export, online_retail.csv[.gz])")
    days: dict[str, list[list[str]]] = {}
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        if [name.strip() for name in header] != ONLINE_RETAIL_COLUMNS:
            raise AdapterError(f"{path}: header {header} is not the Online Retail export's {ONLINE_RETAIL_COLUMNS}")
        position = header.index("InvoiceDate")
        for row in reader:
            if not row:
                continue
            try:
                day = dt.date.fromisoformat(row[position][:10])
            except (IndexError, ValueError):
                raise AdapterError(
                    f"{path}, line {reader.line_num}: InvoiceDate {row[position : position + 1]} is not "
                    "'YYYY-MM-DD HH:MM:SS': the adapter cannot tell which day delivered it"
                ) from None
            if (start and day < start) or (end and day > end):
                continue
            days.setdefault(day.isoformat(), []).append(row)
    if not days:
        raise AdapterError(f"{path}: no orders between {start} and {end}")
    first = start or dt.date.fromisoformat(min(days))
    last = end or dt.date.fromisoformat(max(days))
    return {
        (first + dt.timedelta(days=n)).isoformat(): days.get((first + dt.timedelta(days=n)).isoformat(), [])
        for n in range((last - first).days + 1)
    }


def import_online_retail(
    path: Path, storage: Storage, *, start: dt.date | None = None, end: dt.date | None = None, overwrite: bool = False
) -> dict:
    """Land raw/orders/ds=D/orders.csv for every day; existing partitions are kept unless overwrite
    (landing files are immutable, like delivered files)."""
    days = split_online_retail(path, start, end)
    written, kept, rows = 0, 0, 0
    for day, day_rows in days.items():
        prefix = f"raw/orders/ds={day}/"
        if storage.list_keys(prefix) and not overwrite:
            kept += 1
            continue
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\n")
        writer.writerow(ONLINE_RETAIL_COLUMNS)
        writer.writerows(day_rows)
        storage.delete_prefix(prefix)
        storage.put_bytes(prefix + "orders.csv", buffer.getvalue().encode("utf-8"))
        written += 1
        rows += len(day_rows)
    return {
        "source": "orders",
        "first_ds": min(days),
        "last_ds": max(days),
        "partitions_written": written,
        "partitions_kept": kept,
        "rows_written": rows,
        "raw": storage.uri("raw/orders/"),
        "mapping": ONLINE_RETAIL_MAPPING,
    }
