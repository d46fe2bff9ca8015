"""Retention: each zone keeps the ds partitions of its last `retention.days.<zone>` days (config/platform.yaml),
applied nightly by the report step; a zone set to null keeps everything.

A partition is a path component `ds=YYYY-MM-DD` (a folder, or a file such as landed/_status/ds=D.json) and is
expired on night `ds` when its day is `days` or more before ds. A published partition loses its _SUCCESS first, so
readers never see half of it. Zones: the lake's raw/, quarantine/, features/, models/, marts/ and reports/, and the
work dir's per-day folders ("work"). The erasure register and audit (privacy/) and the warehouse are not zones:
the warehouse keeps the nightly window and the append-only key and consent tables.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import shutil
from collections.abc import Mapping
from pathlib import Path

from precision_marketing.publish.partitions import SUCCESS
from precision_marketing.storage import Storage

LAKE_ZONES = ("raw", "quarantine", "features", "models", "marts", "reports")
_PARTITION = re.compile(r"ds=(\d{4}-\d{2}-\d{2})(?:\.[\w.]+)?")


def partition_day(part: str) -> dt.date | None:
    match = _PARTITION.fullmatch(part)
    if not match:
        return None
    try:
        return dt.date.fromisoformat(match.group(1))
    except ValueError:
        return None


def _expired(day: dt.date | None, ds: str, days: int) -> bool:
    return day is not None and day <= dt.date.fromisoformat(ds) - dt.timedelta(days=days)


def expire_lake_zone(storage: Storage, zone: str, ds: str, days: int) -> list[str]:
    """Delete the zone's partitions older than `days` before ds; returns their prefixes."""
    partitions: dict[str, list[str]] = {}
    for key in storage.list_keys(f"{zone}/"):
        parts = key.split("/")
        for index, part in enumerate(parts[:-1]):
            if _expired(partition_day(part), ds, days):
                partitions.setdefault("/".join(parts[: index + 1]) + "/", []).append(key)
                break
    for _, keys in sorted(partitions.items()):
        # readers stop seeing the partition before any of its files goes
        storage.delete_keys([k for k in keys if k.endswith("/" + SUCCESS)])
        storage.delete_keys([k for k in keys if not k.endswith("/" + SUCCESS)])
    return sorted(partitions)


def expire_work_dir(work: Path, ds: str, days: int) -> list[str]:
    """Delete the work dir's per-day folders and files older than `days` before ds; returns their paths."""
    removed = []
    for directory, folders, files in os.walk(work):
        for name in list(folders):
            if _expired(partition_day(name), ds, days):
                shutil.rmtree(Path(directory) / name)
                folders.remove(name)
                removed.append(str((Path(directory) / name).relative_to(work)))
        for name in files:
            if _expired(partition_day(name), ds, days):
                (Path(directory) / name).unlink()
                removed.append(str((Path(directory) / name).relative_to(work)))
    return sorted(removed)


def apply_retention(config: Mapping, storage: Storage, ds: str) -> dict[str, int]:
    """The night's retention: partitions deleted per zone (zones kept forever are left out)."""
    days = config["retention"]["days"]
    deleted = {}
    for zone in LAKE_ZONES:
        if days[zone] is not None:
            deleted[zone] = len(expire_lake_zone(storage, zone, ds, days[zone]))
    if days["work"] is not None:
        deleted["work"] = len(expire_work_dir(Path(config["work_dir"]), ds, days["work"]))
    return deleted
