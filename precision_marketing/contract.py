"""The raw-zone data contract: which sources exist, what each is for (dimension, behaviour, audience),
which columns they carry and which values are allowed (with their built-in synonyms).

It is declared once, in the `vars:` of dbt_project/dbt_project.yml (dbt reads the same vars: macros/raw_sources.sql,
macros/vocabulary.sql, the checked_ models and the schema tests); this module loads it from there with PyYAML.
docs/data_contract.md documents it (tests keep the doc, this module and dbt in agreement: tests/test_raw_contract.py,
tests/test_vocabulary.py), the synthetic generator writes it, ingest/ reads landing files into it through a
mapping, and dbt staging enforces the row-level rules.

The bottom layer of the package: imports nothing of it but REPO_ROOT."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from precision_marketing.config import REPO_ROOT

DBT_PROJECT_FILE = REPO_ROOT / "dbt_project" / "dbt_project.yml"

SNAPSHOT = "snapshot"
INCREMENT = "increment"

# What a source is for. At least one behaviour source is required; dimensions are derived from behaviour
# when not delivered; the audience sources together enable the CTR model and audiences.
DIMENSION = "dimension"
BEHAVIOUR = "behaviour"
AUDIENCE = "audience"

# The vocabulary vars of dbt_project.yml (event types are the keys of event_weights).
VOCABULARY_VARS = ("placements", "campaign_channels", "consent_channels", "consent_statuses", "clicked_values")


class RawContractError(Exception):
    """The raw zone breaks the contract; `problems` lists every problem, one line each."""

    def __init__(self, ds: str, problems: list[str]):
        self.problems = list(problems)
        lines = "\n".join(f"  - {problem}" for problem in self.problems)
        super().__init__(f"raw data contract failed for ds={ds} ({len(self.problems)} problem(s)):\n{lines}")


@dataclass(frozen=True)
class Column:
    name: str
    type: str  # id | string | integer | decimal | date | timestamp (enumerations: string with `allowed`)
    required: bool = True
    allowed: tuple[str, ...] = ()
    rule: str = ""
    synonyms: str = ""  # key of SYNONYMS applied before the allowed values are checked
    vocabulary: str = ""  # the name of the vocabulary list of `allowed` (a dbt_project.yml var), if any

    @property
    def is_enum(self) -> bool:
        return bool(self.allowed)


@dataclass(frozen=True)
class SourceContract:
    name: str
    kind: str  # SNAPSHOT or INCREMENT
    role: str  # DIMENSION, BEHAVIOUR or AUDIENCE
    columns: tuple[Column, ...]
    key: tuple[str, ...] = field(default=())  # the landing columns that identify a row
    checked_key: tuple[str, ...] = field(default=())  # dbt: the checked_<source> columns that identify a row

    @property
    def column_names(self) -> list[str]:
        return [column.name for column in self.columns]

    @property
    def required_columns(self) -> list[str]:
        return [column.name for column in self.columns if column.required]

    def column(self, name: str) -> Column:
        return next(column for column in self.columns if column.name == name)

    def partition_dir(self, ds: str) -> Path:
        return Path(self.name) / f"ds={ds}"

    def relative_path(self, ds: str) -> Path:
        """Where the generator (and the contract's default mapping) puts the landing file of ds."""
        return self.partition_dir(ds) / f"{self.name}.csv"


@dataclass(frozen=True)
class Contract:
    """Everything dbt_project.yml declares: the vocabulary lists by var name, the weights, synonyms, sources."""

    vocabulary: dict[str, tuple[str, ...]]  # event_types, placements, campaign_channels, ... -> values in order
    event_weights: dict[str, float]
    synonyms: dict[str, dict[str, str]]
    sources: dict[str, SourceContract]

    @property
    def event_types(self) -> tuple[str, ...]:
        return self.vocabulary["event_types"]


def _strings(values: Any, what: str) -> tuple[str, ...]:
    if not isinstance(values, (list, tuple)) or not values or not all(isinstance(v, str) for v in values):
        raise ValueError(f"{what} must be a non-empty list of strings (quote numbers and yes/no), got {values!r}")
    if len(set(values)) != len(values):
        raise ValueError(f"{what} repeats a value: {values!r}")
    return tuple(values)


def load_contract(path: Path | str = DBT_PROJECT_FILE) -> Contract:
    """Read the vocabulary and the raw contract from the vars of a dbt_project.yml (the repo's by default)."""
    path = Path(path)
    variables = (yaml.safe_load(path.read_text()) or {}).get("vars") or {}
    where = f"{path} vars"
    weights = variables.get("event_weights")
    if not isinstance(weights, dict) or not weights:
        raise ValueError(f"{where}: event_weights must map each event type to its weight, got {weights!r}")
    vocabulary = {"event_types": _strings(list(weights), f"{where}: event_weights keys")}
    for name in VOCABULARY_VARS:
        vocabulary[name] = _strings(variables.get(name), f"{where}: {name}")
    synonyms = {
        enumeration: {str(raw): str(value) for raw, value in mapping.items()}
        for enumeration, mapping in (variables.get("synonyms") or {}).items()
    }
    sources: dict[str, SourceContract] = {}
    for name, spec in (variables.get("raw_contract") or {}).items():
        context = f"{where}: raw_contract.{name}"
        if spec.get("kind") not in (SNAPSHOT, INCREMENT) or spec.get("role") not in (DIMENSION, BEHAVIOUR, AUDIENCE):
            raise ValueError(
                f"{context}: kind must be {SNAPSHOT}|{INCREMENT} and role "
                f"{DIMENSION}|{BEHAVIOUR}|{AUDIENCE}, got {spec.get('kind')!r}, {spec.get('role')!r}"
            )
        columns = []
        for column in spec["columns"]:
            allowed_name = column.get("allowed", "")
            if allowed_name and allowed_name not in vocabulary:
                raise ValueError(
                    f"{context}.{column['name']}: allowed names no vocabulary list "
                    f"({', '.join(vocabulary)}): {allowed_name!r}"
                )
            if column.get("synonyms") and column["synonyms"] not in synonyms:
                raise ValueError(f"{context}.{column['name']}: no synonyms named {column['synonyms']!r}")
            columns.append(
                Column(
                    column["name"],
                    column["type"],
                    required=column.get("required", True),
                    allowed=vocabulary[allowed_name] if allowed_name else (),
                    rule=column.get("rule", ""),
                    synonyms=column.get("synonyms", ""),
                    vocabulary=allowed_name,
                )
            )
        source = SourceContract(
            name,
            spec["kind"],
            spec["role"],
            tuple(columns),
            key=tuple(spec["key"]),
            checked_key=tuple(spec["checked_key"]),
        )
        unknown = [key for key in source.key if key not in source.column_names]
        if unknown:
            raise ValueError(f"{context}: key names no column: {', '.join(unknown)}")
        sources[name] = source
    if not sources:
        raise ValueError(f"{where}: raw_contract declares no source")
    return Contract(
        vocabulary=vocabulary,
        event_weights={k: float(v) for k, v in weights.items()},
        synonyms=synonyms,
        sources=sources,
    )


CONTRACT = load_contract()

EVENT_TYPES = CONTRACT.vocabulary["event_types"]
EVENT_WEIGHTS = CONTRACT.event_weights
PLACEMENTS = CONTRACT.vocabulary["placements"]
CAMPAIGN_CHANNELS = CONTRACT.vocabulary["campaign_channels"]
CONSENT_CHANNELS = CONTRACT.vocabulary["consent_channels"]
CONSENT_STATUSES = CONTRACT.vocabulary["consent_statuses"]
CLICKED_VALUES = CONTRACT.vocabulary["clicked_values"]
# Built-in synonyms of the enumerations (compared after trim + lower case, like the values themselves).
# A mapping file can add its own (docs/data_contract.md, "Mapping file").
SYNONYMS: dict[str, dict[str, str]] = CONTRACT.synonyms
SOURCES: dict[str, SourceContract] = CONTRACT.sources
BEHAVIOUR_SOURCES = tuple(name for name, source in SOURCES.items() if source.role == BEHAVIOUR)
AUDIENCE_SOURCES = tuple(name for name, source in SOURCES.items() if source.role == AUDIENCE)


# ------------------------------------------------------------------------------------------ erased people
# The canonical text of a delivered id: dbt's parse_id (macros/parse.sql) in Python and in DuckDB SQL, so a person
# named to `pm forget` as 17850 is found as '017850.0' in a landing file and as 17850 in a published table.
_INTEGER_ID = re.compile(r"\+?(-?[0-9]+)(\.0+)?")


def canonical_id(text: str | None, id_type: str = "integer") -> str | None:
    """The id as staging keeps it (dbt parse_id): integer ids without sign, leading zeros or '.0' tail; string ids
    trimmed. None when the text is no id of that shape."""
    if text is None:
        return None
    text = str(text).strip()
    if id_type == "integer":
        match = _INTEGER_ID.fullmatch(text)
        if not match:
            return None
        value = int(match.group(1))
        return str(value) if -(2**63) <= value < 2**63 else None
    return text if 1 <= len(text) <= 128 else None


def canonical_id_sql(column: str, id_type: str = "integer") -> str:
    """canonical_id as a DuckDB expression over any column type (a published BIGINT id or landed text)."""
    text = f"trim(cast({column} as varchar))"
    if id_type == "integer":
        return f"cast(try_cast(regexp_extract({text}, '^\\+?(-?[0-9]+)(\\.0+)?$', 1) as bigint) as varchar)"
    return f"case when length({text}) between 1 and 128 then {text} end"


def erased_id_digest(canonical: str) -> str:
    """How the erasure register records a forgotten person (privacy/erasure.py): the SHA-256 of the canonical id,
    so ingest can drop their rows from later deliveries without the register holding the id itself."""
    return hashlib.sha256(canonical.encode()).hexdigest()
