"""How a team's exports map to the raw contract: one YAML file, one block per source, no code.

    ids:                      # the shape of the ids in every source (default: integer for both)
      user_id: integer        # integer (64-bit, published as BIGINT) | string (published as VARCHAR)
      product_id: string
    sources:
      orders:
        files: ["*.csv"]      # glob(s) of the landing files inside raw/orders/ds=YYYY-MM-DD/
        delimiter: ","
        encoding: utf-8       # a Python codec name: latin-1, cp1252, iso-8859-15, ... (UTF-16: convert first)
        columns: {order_id: InvoiceNo, product_id: StockCode}   # contract column: header in the export
        values: {channel: {SMS text: push}}                     # contract column: {export value: contract value}
        timestamps: {formats: ["%d/%m/%Y %H:%M"], timezone: Europe/London}   # or epoch: seconds | milliseconds
        dates: {formats: ["%d/%m/%Y"]}
        exclude: {product_id: [POST, DOT]}                      # rows with these values go to quarantine
        max_quarantine_share: 0.4                               # overrides ingest.max_quarantine_share

A source without a block is read as the contract describes it (docs/data_contract.md). Every key is
checked when the file is loaded: a typo fails with the file, the key and what is allowed.
"""

from __future__ import annotations

import codecs
import hashlib
from pathlib import Path
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from precision_marketing.contract import SOURCES

ISO = "iso"  # the timestamp format keyword for ISO-8601 (with or without an offset, 'T' or ' ')


class MappingError(ValueError):
    """The mapping file is unreadable or invalid; the message names the file and the key."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TimestampRule(_Strict):
    formats: tuple[str, ...] = (ISO,)
    timezone: str = "UTC"  # the zone of values that carry no offset
    epoch: Literal["seconds", "milliseconds"] | None = None  # numeric values are epoch times

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as 'Europe/London' or 'UTC')") from None
        return value


class DateRule(_Strict):
    formats: tuple[str, ...] = ("%Y-%m-%d",)


class SourceMapping(_Strict):
    source: str = ""
    files: tuple[str, ...] = ("*.csv", "*.csv.gz")
    delimiter: str = ","
    quotechar: str = '"'
    encoding: str = "utf-8"
    columns: dict[str, str] = Field(default_factory=dict)
    values: dict[str, dict[str, str]] = Field(default_factory=dict)
    timestamps: TimestampRule = TimestampRule()
    dates: DateRule = DateRule()
    exclude: dict[str, tuple[str, ...]] = Field(default_factory=dict)
    max_quarantine_share: float | None = Field(default=None, ge=0, le=1)

    @field_validator("files", "exclude", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        if isinstance(value, str):
            return (value,)
        if isinstance(value, dict):
            return {k: (v,) if isinstance(v, str) else tuple(str(x) for x in v) for k, v in value.items()}
        return value

    @field_validator("files")
    @classmethod
    def _inside_the_partition(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            if pattern.startswith(("/", "\\")) or ".." in Path(pattern).parts or ":" in pattern:
                raise ValueError(
                    f"{pattern!r} must match files inside the landing partition (a name pattern such as "
                    "'*.csv' or 'export_*.csv.gz': no '..', no absolute path)"
                )
        return value

    @field_validator("delimiter", "quotechar")
    @classmethod
    def _one_character(cls, value: str) -> str:
        if len(value) != 1:
            raise ValueError(f"must be one character, got {value!r} (a tab is \"\\t\")")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError:
            raise ValueError(f"unknown encoding {value!r} (e.g. utf-8, latin-1, cp1252, iso-8859-15)") from None
        if "\n".encode(value) != b"\n" or ",".encode(value) != b",":
            # files are read line by line, so that one undecodable line never costs the file
            raise ValueError(
                f"encoding {value!r} is not line-compatible with ASCII: convert the export to "
                "UTF-8 (e.g. iconv -f UTF-16 -t UTF-8), or use utf-8, latin-1, cp1252, ..."
            )
        return value

    @model_validator(mode="after")
    def _contract_columns(self):
        contract = SOURCES[self.source]
        for section in ("columns", "values", "exclude"):
            unknown = sorted(set(getattr(self, section)) - set(contract.column_names))
            if unknown:
                raise ValueError(
                    f"{section}: {unknown} not columns of source '{self.source}' "
                    f"(its columns: {', '.join(contract.column_names)})"
                )
        return self

    def header_name(self, column: str) -> str:
        """The export's header for a contract column (the contract name unless mapped)."""
        return self.columns.get(column, column)

    def fingerprint(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()[:16]


class Mapping(_Strict):
    path: str | None = None
    ids: dict[Literal["user_id", "product_id"], Literal["integer", "string"]] = Field(
        default_factory=lambda: {"user_id": "integer", "product_id": "integer"}
    )
    sources: dict[str, SourceMapping] = Field(default_factory=dict)

    @field_validator("ids", mode="after")
    @classmethod
    def _both_ids(cls, value):
        return {"user_id": "integer", "product_id": "integer", **value}

    @field_validator("sources", mode="before")
    @classmethod
    def _known_sources(cls, value):
        value = value or {}
        unknown = sorted(set(value) - set(SOURCES))
        if unknown:
            raise ValueError(f"unknown source(s) {unknown}; the contract's sources are {', '.join(SOURCES)}")
        return {name: {**(block or {}), "source": name} for name, block in value.items()}

    def source(self, name: str) -> SourceMapping:
        return self.sources.get(name) or SourceMapping(source=name)

    def as_dbt_var(self) -> dict:
        return dict(self.ids)


def load_mapping(path: str | Path | None) -> Mapping:
    """The mapping in `path` (YAML), or the contract as is when path is None."""
    if path is None or str(path) == "":
        return Mapping()
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise MappingError(f"mapping file not found: {path} (config ingest.mapping)") from None
    except yaml.YAMLError as error:
        raise MappingError(f"mapping file {path} is not valid YAML: {error}") from None
    if not isinstance(document, dict):
        raise MappingError(f"mapping file {path}: expected keys 'ids' and/or 'sources' at the top level")
    try:
        return Mapping(**document, path=str(path))
    except ValidationError as error:
        problems = []
        for item in error.errors():
            where = ".".join(str(part) for part in item["loc"] if part != "source") or "(top level)"
            message = item["msg"].removeprefix("Value error, ")
            problems.append(f"  - {where}: {message}")
        raise MappingError(f"mapping file {path} is invalid:\n" + "\n".join(problems)) from None


def mapping_from_config(config) -> Mapping:
    from precision_marketing.config import resolve_path

    path = config["ingest"]["mapping"]
    return load_mapping(resolve_path(path) if path else None)
