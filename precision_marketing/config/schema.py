"""The configuration's schema: every key of config/platform.yaml with its type and allowed range (pydantic).

Defaults live in config/platform.yaml, documented there; this file says what a value may be. Unknown keys
(a misspelled `PM__LAKE__BACKNED`), wrong types (`PM__ALS__TOP_K=abc`) and out-of-range values fail at
start; config.load_config turns the errors into messages naming the key, the value and where it came from.

To add a configuration key: add it with its default and a comment to config/platform.yaml, and one line
here, in the section's model, in the same place: `name: type` with its range, e.g.
`max_fits: int = Field(ge=1)` — nothing else. A new section is a new model plus one line in `PlatformConfig`.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class Section(BaseModel):
    # unknown keys are errors; numbers given where text is expected (an S3 prefix "2024") are taken as text
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True)


def positive(**kwargs) -> Any:
    return Field(gt=0, **kwargs)


# ------------------------------------------------------------------------------------------ lake


class LakeS3(Section):
    bucket: str = Field(min_length=3, max_length=63)
    prefix: str | None
    endpoint_url: str | None = Field(pattern=r"^https?://")
    region: str | None
    connection: str | None
    query_connection: str | None


class Lake(Section):
    backend: Literal["local", "s3"]
    local_root: str = Field(min_length=1)
    file_mode: str | None = Field(pattern=r"^0?[0-7]{3}$")
    s3: LakeS3

    @field_validator("file_mode", mode="before")
    @classmethod
    def _octal(cls, value):
        # YAML reads an unquoted 0640 as the octal number 416: give it back its digits
        return format(value, "o") if isinstance(value, int) and not isinstance(value, bool) else value


# ------------------------------------------------------------------------------------------ runs


class Datagen(Section):
    users: int = positive()
    items: int = positive()
    days: int = positive()
    campaigns: int = Field(ge=0)
    dirty_rate: float = Field(ge=0, lt=1)
    seed: int
    impression_rate: float = Field(ge=0)
    treatment_effect: float = Field(ge=0, le=1)
    effect_days: int = Field(ge=1)


class Consent(Section):
    explicit_opt_in_channels: list[str]  # checked against the vocabulary's campaign channels by dbt (suppressions)
    max_drop_share: float = Field(gt=0, le=1)
    max_unknown_user_share: float = Field(ge=0, le=1)
    min_rows: int = Field(ge=1)


class Ingest(Section):
    mapping: str | None = None
    max_quarantine_share: float = Field(ge=0, le=1)
    quarantine_min_rows: int = Field(ge=0)
    future_tolerance_hours: float = Field(ge=0)


class Dbt(Section):
    project_dir: str = Field(min_length=1)
    target: str = Field(min_length=1)
    history_days: int = Field(ge=1, le=3650)
    execution_mode: Literal["layers", "local", "watcher"]
    duckdb_memory_limit: str = Field(pattern=r"^\d+(\.\d+)?\s*([KMGT]i?B|[kmgt])$")


class Orchestration(Section):
    retries: int = Field(ge=0, le=20)
    retry_delay_minutes: float = Field(ge=0)


class Landing(Section):
    poke_seconds: float = Field(gt=0)
    timeout_minutes: float = Field(ge=0)
    ready_marker_sources: list[str]


class Spark(Section):
    master: str = Field(pattern=r"^(local(\[(\*|\d+)(,\d+)?\])?|spark://.+|yarn|k8s://.+|mesos://.+)$")
    driver_memory: str = Field(pattern=r"^(auto|\d+[kmgtKMGT]?)$")
    driver_memory_max: str = Field(pattern=r"^\d+[kmgtKMGT]$")
    shuffle_partitions: int = Field(ge=1)
    conf: dict[str, str | int | float | bool]
    connection: str | None
    timeout_minutes: float = Field(gt=0)


# ------------------------------------------------------------------------------------------ models


class AlsSearch(Section):
    alpha: list[float] = Field(min_length=2, max_length=2)
    reg_param: list[float] = Field(min_length=2, max_length=2)
    rank: list[int] = Field(min_length=2, max_length=2)
    item_cf_neighbours: list[int] = Field(min_length=1)


class AlsTuning(Section):
    max_fits: int = Field(ge=1)
    min_seconds: float = Field(ge=0)
    seconds_per_million_rows: float = Field(ge=0)
    max_minutes: float = Field(gt=0)
    every_days: int = Field(ge=1)
    max_rows: int = Field(ge=1)


class AlsGate(Section):
    max_drop: float = Field(ge=0, le=1)
    action: Literal["fallback", "keep_last"]
    level: Literal["warn", "fail"]


class Als(Section):
    top_k: int = Field(ge=1, le=200)
    engine: Literal["auto", "implicit", "mllib"]
    inprocess_max_rows: int = Field(ge=1)
    split: Literal["user_latest", "time"]
    holdout_share: float = Field(gt=0, lt=1)
    validation: list[Literal["user_latest", "time"]] = Field(min_length=1)
    holdout: str = Field(pattern=r"^\d+(\.\d+)?(d|h|%)$")
    min_eval_users: int = Field(ge=1)
    min_eval_share: float = Field(gt=0, le=1)
    max_iter: int = Field(ge=1)
    seed: int
    search: AlsSearch
    tuning: AlsTuning
    max_eval_users: int = Field(ge=1)
    selection_metric: Literal["precision", "recall", "ndcg", "map"]
    min_history: Literal["auto"] | int
    min_score: float = Field(ge=0)
    heavy_min_items: int = Field(ge=1)
    confidence: float = Field(gt=0, lt=1)
    gate: AlsGate
    checkpoint_interval: int = Field(ge=1)
    broadcast_max_mb: int = Field(ge=1)
    max_user_items_cf: int = Field(ge=1)


class Ctr(Section):
    holdout_days: int = Field(ge=1, le=365)
    reg_param: list[float] = Field(min_length=1)
    elastic_net: float = Field(ge=0, le=1)
    max_iter: int = Field(ge=1)
    hash_features: int = Field(ge=0)
    calibration_days: int = Field(ge=1, le=365)
    calibration: Literal["auto", "none", "platt", "isotonic"]
    seed: int
    engine: Literal["auto", "sklearn", "mllib"]
    inprocess_max_rows: int = Field(ge=0)

    @field_validator("reg_param", mode="before")
    @classmethod
    def _one_or_many(cls, value):
        return value if isinstance(value, list) else [value]

    @field_validator("reg_param")
    @classmethod
    def _non_negative(cls, value):
        if any(v < 0 for v in value):
            raise ValueError("every reg_param must be >= 0")
        return value


class CampaignSettings(Section):  # per-campaign overrides of the activation defaults
    control_share: float | None = Field(default=None, ge=0, lt=1)
    value_per_click: float | None = Field(default=None, ge=0)
    priority: int | None = None
    send_hour: int | None = Field(default=None, ge=0, le=23)
    subject_template: str | None = None
    subject_fallback: str | None = None


class Activation(Section):
    control_share: float = Field(ge=0, lt=1)
    control_salt: str = Field(min_length=1)
    value_per_click: float = Field(ge=0)
    bid_floor: float = Field(ge=0)
    bid_cap: float = Field(ge=0)
    priority: int
    send_hour: int = Field(ge=0, le=23)
    max_audiences_per_user: int = Field(ge=0)
    content_products: int = Field(ge=0)
    subject_template: str
    subject_fallback: str
    campaigns: dict[str, CampaignSettings]


class Lift(Section):
    windows_days: list[int] = Field(min_length=1)
    min_group_size: int = Field(ge=1)
    confidence: float = Field(gt=0, lt=1)


class Validation(Section):
    spark_min_rows: int = Field(ge=0)
    spark_driver_memory: str = Field(pattern=r"^\d+[kmgtKMGT]?$")


class Segments(Section):
    k: int = Field(ge=2, le=50)
    seed: int


class Alerts(Section):
    slack_connection: str | None
    smtp_connection: str | None
    email_to: list[str]
    min_level: Literal["info", "warning", "error"]


class Forget(Section):
    keep_raw_landing: bool


class RetentionDays(Section):
    raw: int | None = Field(ge=1)
    quarantine: int | None = Field(ge=1)
    features: int | None = Field(ge=1)
    models: int | None = Field(ge=1)
    marts: int | None = Field(ge=1)
    reports: int | None = Field(ge=1)
    work: int | None = Field(ge=1)


class Retention(Section):
    days: RetentionDays


class Publish(Section):
    tables: Literal["all"] | list[str] = Field(min_length=1)  # names checked by pipeline.published_tables


class Report(Section):
    history_nights: int = Field(ge=0, le=3650)


class PlatformConfig(Section):
    lake: Lake
    work_dir: str = Field(min_length=1)
    datagen: Datagen
    ingest: Ingest
    dbt: Dbt
    orchestration: Orchestration
    landing: Landing
    spark: Spark
    als: Als
    ctr: Ctr
    activation: Activation
    consent: Consent
    lift: Lift
    validation: Validation
    segments: Segments
    alerts: Alerts
    forget: Forget
    retention: Retention
    publish: Publish
    report: Report

    @model_validator(mode="after")
    def _window_kept(self):
        # the nightly window is read from the raw zone and the work dir's landed copies: retention may not cut it
        for zone in ("raw", "work"):
            days = getattr(self.retention.days, zone)
            if days is not None and days < self.dbt.history_days:
                raise ValueError(
                    f"retention.days.{zone} = {days} is shorter than dbt.history_days = {self.dbt.history_days}: "
                    "the nightly window would lose its first days"
                )
        return self
