"""Top-K product recommendations per user: self-tuned ALS, item-CF and recent popularity, evaluated with
intervals, gated on evidence, served by the engine that fits the data.

Reads the dbt features `interactions` (hour grain), `user_features` and `item_features` (category) from
`<features-dir>/<table>/ds=<ds>/`, then:
1. picks the engine (`als.engine: auto`): `implicit` in this process when the interactions fit the driver
   (`als.inprocess_max_rows`) and the master is local; Spark MLlib ALS beyond that or on a cluster;
2. holds out the end of the data (`als.split: user_latest`: each user's latest `holdout_share` of active hours;
   `time`: the last `holdout`, grown until it holds enough users) and tunes on validation folds
   carved from the training part, one per protocol of `als.validation` (both by default): recent-popularity
   rankings, ALS over (alpha, reg, rank, weight transform), item-CF over neighbours, blends of each with recent
   popularity and with each other, within a time budget that grows with the data (spark_jobs/recommender.py;
   the decisions run on the driver in numpy, on a sample of users above `tuning.max_rows`); the choice is
   reused for `tuning.every_days`;
3. refits the choice on the training part and evaluates it on the holdout against every non-personalised
   ranking: precision / recall / NDCG / MAP @K with bootstrap intervals, per user activity (cold / light /
   heavy), and the paired difference to the strongest baseline;
4. gates: the fallback (or nothing: `gate.action: keep_last`) is published only when the served lists are
   worse than that baseline with confidence, or far below the last published run;
5. refits on the whole window and writes `<output-dir>/recommendations/` (overwritten): exactly K rows per
   user of user_features (user_id, rank, product_id, score, source), purchased items excluded, `source`
   naming the tier (als | item_cf | blend | category_popularity | popularity);
6. writes metrics.json (default `<output-dir>/metrics.json`) with the engine, every candidate and the verdict.

Settings: the `als` section of --config (default config/platform.yaml; the nightly step passes the checked
configuration as JSON), changed with `--set als.KEY=VALUE`. Run from the repository root (`pm spark-submit` finds
Spark in the venv and keeps the log at WARN):
  .venv/bin/pm spark-submit als_recommendations --features-dir .state/work/features --ds 2026-11-22 \
      --output-dir .state/work/models/als/ds=2026-11-22 --set als.tuning.max_fits=10
or with Spark's own launcher, the venv's Python and SPARK_HOME set:
  SPARK_HOME=$(.venv/bin/python -c 'import pyspark, os; print(os.path.dirname(pyspark.__file__))') \
  PYSPARK_PYTHON=.venv/bin/python .venv/bin/spark-submit --master 'local[*]' --driver-memory 4g \
      --conf spark.log.level=WARN spark_jobs/als_recommendations.py --features-dir ... --ds ... --output-dir ...
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import json
import shutil
import sys
import time
from collections.abc import Mapping
from pathlib import Path

# spark-submit runs this file as a script (sys.path[0] = spark_jobs/), tests import it as
# spark_jobs.als_recommendations: put the repository root on the path so both find spark_jobs.*.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from pyspark.ml.recommendation import ALS  # noqa: E402
from pyspark.sql import DataFrame, SparkSession, Window  # noqa: E402
from pyspark.sql import functions as F  # noqa: E402

from spark_jobs import recommender as rec  # noqa: E402
from spark_jobs.common import (  # noqa: E402
    add_settings_arguments,
    check_columns,
    choose_job_engine,
    feature_table_path,
    get_spark,
    iso_date,
    job_settings,
    json_safe,
    log_progress,
    platform_section,
    read_feature_table,
    run_as_script,
    ship_package,
    write_metrics,
)
from spark_jobs.item_cf import item_neighbours  # noqa: E402
from spark_jobs.topk import (  # noqa: E402
    FACTORS,
    HISTORY,
    PURCHASED,
    WEIGHTS,
    ItemSide,
    ServePolicy,
    TopK,
)

USER_COL = "user_id"
ITEM_COL = "product_id"
HOUR_COL = "event_hour"
WEIGHT_COL = "weight"
PURCHASES_COL = "n_purchases"
CATEGORY_COL = "category"
INDEX_COL = "item_index"
INT32_MAX = 2**31 - 1  # MLlib ALS stores ids as 32-bit ints
ENGINES = ("auto", "implicit", "mllib")
SPLITS = ("user_latest", "time")
PERSONAL_MODELS = ("als", "item_cf", "blend")
INTERACTION_COLUMNS = [USER_COL, ITEM_COL, HOUR_COL, WEIGHT_COL, PURCHASES_COL]
TUNING_SCORE_CELLS = 50_000_000  # validation users x items per fold (about 1.5 s per scored candidate on 2 cores)

SERVED_SCHEMA = "user_id long, rank int, product_id long, score double, source string"
CANDIDATES_SCHEMA = "user_id long, item_index long, score double"


@dataclasses.dataclass(frozen=True)
class RecConfig:
    """The `als` section of the platform configuration (config/platform.yaml says what each key means), flat."""

    top_k: int
    engine: str
    inprocess_max_rows: int
    split: str
    validation: tuple[str, ...]
    holdout: str
    holdout_share: float
    min_eval_users: int
    min_eval_share: float
    max_iter: int
    seed: int
    alpha_range: tuple[float, float]
    reg_range: tuple[float, float]
    rank_range: tuple[int, int]
    neighbours_choices: tuple[int, ...]
    tune_max_fits: int
    tune_min_seconds: float
    tune_seconds_per_million_rows: float
    tune_max_minutes: float
    tune_every_days: int
    tune_max_rows: int  # decisions (tuning, holdout, gate) use a sample of users above this many rows
    max_eval_users: int
    selection_metric: str
    min_history: str | int  # "auto" or the fewest items of history for a personalised list
    min_score: float
    heavy_min_items: int
    confidence: float
    gate_max_drop: float
    gate_action: str  # fallback | keep_last
    gate_level: str  # warn | fail
    checkpoint_interval: int
    broadcast_max_mb: float
    max_user_items_cf: int
    num_blocks: int | None = None  # ALS user/item blocks; None = the session's default parallelism

    @classmethod
    def from_settings(cls, als: Mapping, **changes) -> RecConfig:
        """From the `als` section (nested as in platform.yaml); `changes` replace flat fields. Raises ValueError
        naming the setting when a value cannot work (the pipeline's schema checks the same before a run)."""
        search, tuning, gate_ = als["search"], als["tuning"], als["gate"]
        config = cls(
            top_k=int(als["top_k"]),
            engine=als["engine"],
            inprocess_max_rows=int(als["inprocess_max_rows"]),
            split=als["split"],
            validation=tuple(dict.fromkeys(als["validation"])),
            holdout=str(als["holdout"]),
            holdout_share=float(als["holdout_share"]),
            min_eval_users=int(als["min_eval_users"]),
            min_eval_share=float(als["min_eval_share"]),
            max_iter=int(als["max_iter"]),
            seed=int(als["seed"]),
            alpha_range=tuple(map(float, search["alpha"])),
            reg_range=tuple(map(float, search["reg_param"])),
            rank_range=tuple(map(int, search["rank"])),
            neighbours_choices=tuple(map(int, search["item_cf_neighbours"])),
            tune_max_fits=int(tuning["max_fits"]),
            tune_min_seconds=float(tuning["min_seconds"]),
            tune_seconds_per_million_rows=float(tuning["seconds_per_million_rows"]),
            tune_max_minutes=float(tuning["max_minutes"]),
            tune_every_days=int(tuning["every_days"]),
            tune_max_rows=int(tuning["max_rows"]),
            max_eval_users=int(als["max_eval_users"]),
            selection_metric=als["selection_metric"],
            min_history=als["min_history"],
            min_score=float(als["min_score"]),
            heavy_min_items=int(als["heavy_min_items"]),
            confidence=float(als["confidence"]),
            gate_max_drop=float(gate_["max_drop"]),
            gate_action=gate_["action"],
            gate_level=gate_["level"],
            checkpoint_interval=int(als["checkpoint_interval"]),
            broadcast_max_mb=float(als["broadcast_max_mb"]),
            max_user_items_cf=int(als["max_user_items_cf"]),
        )
        config = dataclasses.replace(config, **changes)
        config.check()
        return config

    @classmethod
    def defaults(cls, **changes) -> RecConfig:
        """The settings of config/platform.yaml in this checkout, with `changes` (tests, benchmarks)."""
        return cls.from_settings(platform_section("als"), **changes)

    def check(self) -> None:
        rec.parse_holdout(self.holdout)
        problems = []
        if self.engine not in ENGINES:
            problems.append(f"als.engine must be one of {', '.join(ENGINES)}, got {self.engine!r}")
        if self.split not in SPLITS or not set(self.validation) <= set(SPLITS) or not self.validation:
            problems.append(f"als.split and als.validation take {', '.join(SPLITS)}")
        if self.selection_metric not in rec.METRICS:
            problems.append(f"als.selection_metric must be one of {', '.join(rec.METRICS)}")
        if self.min_history != "auto" and not str(self.min_history).isdigit():
            problems.append("als.min_history must be 'auto' or a non-negative integer")
        if min(self.top_k, self.max_iter, self.tune_max_fits, self.max_eval_users, self.min_eval_users) < 1:
            problems.append("als.top_k, max_iter, tuning.max_fits, max_eval_users and min_eval_users must be >= 1")
        if not 0 < self.holdout_share < 1 or not 0 < self.min_eval_share <= 1 or not 0 < self.confidence < 1:
            problems.append("als.holdout_share and confidence must be between 0 and 1, min_eval_share in (0, 1]")
        for name, (low, high) in (
            ("search.alpha", self.alpha_range),
            ("search.reg_param", self.reg_range),
            ("search.rank", self.rank_range),
        ):
            if not 0 < low <= high:
                problems.append(f"als.{name} needs 0 < LOW <= HIGH, got [{low}, {high}]")
        if self.gate_action not in ("fallback", "keep_last") or self.gate_level not in ("warn", "fail"):
            problems.append("als.gate.action is fallback | keep_last, als.gate.level warn | fail")
        if problems:
            raise ValueError("; ".join(problems))

    @property
    def space(self) -> rec.SearchSpace:
        return rec.SearchSpace(self.alpha_range, self.reg_range, self.rank_range, self.neighbours_choices)

    @property
    def budget(self) -> rec.SearchBudget:
        return rec.SearchBudget(
            self.tune_max_fits, self.tune_min_seconds, self.tune_seconds_per_million_rows, self.tune_max_minutes * 60
        )


def log(message: str) -> None:
    log_progress("recommendations", message)


# ------------------------------------------------------------------------------------------------ engines
def choose_engine(requested: str, n_rows: int, master: str, config: RecConfig) -> tuple[str, str]:
    """(engine, why): implicit in this process when the interactions fit the driver and Spark runs locally."""
    return choose_job_engine(
        requested,
        inprocess="implicit",
        n_rows=n_rows,
        max_rows=config.inprocess_max_rows,
        master=master,
        rows="interaction rows",
    )


def fit_mllib_als(spark: SparkSession, pairs: DataFrame, params: Mapping, config: RecConfig):
    """Spark MLlib's implicit ALS on (user_id, product_id, weight) pairs: the fitted ALSModel."""
    num_blocks = config.num_blocks or spark.sparkContext.defaultParallelism
    weight = F.col(WEIGHT_COL)
    ratings = pairs.select(
        USER_COL, ITEM_COL, (F.log1p(weight) if params.get("weight_transform") == "log1p" else weight).alias(WEIGHT_COL)
    )
    als = ALS(
        userCol=USER_COL,
        itemCol=ITEM_COL,
        ratingCol=WEIGHT_COL,
        implicitPrefs=True,
        rank=int(params["rank"]),
        regParam=float(params["reg_param"]),
        alpha=float(params["alpha"]),
        maxIter=config.max_iter,
        seed=config.seed,
        coldStartStrategy="drop",
        numUserBlocks=num_blocks,
        numItemBlocks=num_blocks,
        checkpointInterval=config.checkpoint_interval,
    )
    return als.fit(ratings)


def mllib_engine(spark: SparkSession, config: RecConfig) -> rec.Engine:
    """MLlib ALS for the decisions on the driver's copy: each fit ships that copy's pairs to Spark and brings
    the factors back (item-CF is the same arithmetic in either engine, so it runs in this process)."""

    def fit_als(train: rec.Train, params: Mapping) -> tuple[np.ndarray, np.ndarray]:
        log_ = train.log
        pairs = spark.createDataFrame(
            pd.DataFrame(
                {
                    USER_COL: train.pair_user.astype(np.int64),
                    ITEM_COL: train.pair_item.astype(np.int64),
                    WEIGHT_COL: train.pair_weight.astype(np.float64),
                }
            )
        )
        model = fit_mllib_als(spark, pairs, params, config)
        rank = int(params["rank"])
        users = np.zeros((log_.n_users, rank), np.float32)
        items = np.zeros((log_.n_items, rank), np.float32)
        for frame, target in ((model.userFactors.toPandas(), users), (model.itemFactors.toPandas(), items)):
            if len(frame):
                target[frame["id"].to_numpy()] = np.stack(frame["features"].to_numpy())
        return users, items

    return rec.Engine(
        "mllib", fit_als, lambda train, params: rec.fit_item_cf(train, params, max_user_items=config.max_user_items_cf)
    )


# ------------------------------------------------------------------------------------------------ inputs
def check_interactions(interactions: DataFrame, path: str) -> int:
    """Contract checks the recommenders depend on, in one pass; no interactions at all is an error."""
    n_rows = check_columns(
        interactions,
        table="interactions",
        path=path,
        not_null=[USER_COL, ITEM_COL, HOUR_COL, WEIGHT_COL, PURCHASES_COL],
        non_negative=[USER_COL, ITEM_COL, WEIGHT_COL, PURCHASES_COL],
    )
    if n_rows == 0:
        raise SystemExit(f"input table 'interactions' at {path} has no rows: nothing to train on")
    largest_id = interactions.agg(F.max(USER_COL), F.max(ITEM_COL)).first()
    for column, value in zip((USER_COL, ITEM_COL), largest_id):
        if value > INT32_MAX:
            raise SystemExit(f"input table 'interactions' at {path}: {column} {value} exceeds ALS's 32-bit id range")
    return n_rows


def user_sample(log_: rec.Log, *, max_rows: int, seed: int) -> tuple[rec.Log, float | None]:
    """The rows of a random sample of users when the log has more than max_rows (the decisions then cost
    the same whatever the data's size; the final fit still sees everything). Returns (log, share or None)."""
    if log_.n_rows <= max_rows:
        return log_, None
    share = round(max_rows / log_.n_rows, 4)
    active = np.unique(log_.user)
    kept = np.random.default_rng(seed).choice(active, max(1, int(share * len(active))), replace=False)
    return log_.select(np.isin(log_.user, kept)), share


def driver_copy(
    interactions: DataFrame, users: DataFrame, items: DataFrame, *, n_rows: int, max_rows: int | None, seed: int
) -> tuple[rec.Log, float | None]:
    """The interactions on the driver as a recommender.Log: all of them, or (above max_rows) the rows of a
    random sample of users. Returns (log, the sampled share of users or None)."""
    share = None
    if max_rows is not None and n_rows > max_rows:
        share = round(max_rows / n_rows, 4)
        kept = interactions.select(USER_COL).distinct().sample(fraction=share, seed=seed)
        interactions = interactions.join(kept, USER_COL, "left_semi")
    frame = interactions.select(USER_COL, ITEM_COL, HOUR_COL, WEIGHT_COL, PURCHASES_COL).toPandas()
    user_ids = users.select(USER_COL).distinct().toPandas()[USER_COL].to_numpy(np.int64)
    catalogue = items.select(ITEM_COL, CATEGORY_COL).toPandas()
    return rec.Log.from_frames(frame, users=user_ids, item_categories=catalogue), share


# ------------------------------------------------------------------------------------------------ decisions
def held_out(log_: rec.Log, config: RecConfig) -> tuple[np.ndarray | None, dict]:
    """Rows of the holdout (or the validation part of a training period) and how they were chosen."""
    if config.split == "time":
        cutoff, record = rec.evidence_cutoff(
            log_, rec.SplitRule(config.holdout, config.min_eval_users, config.min_eval_share)
        )
        if cutoff is None:
            return None, record
        record["cutoff"] = _hour_iso(cutoff)
        return log_.hour >= cutoff, record
    held = rec.latest_per_user(log_, config.holdout_share)
    n_users = len(np.unique(log_.user[held]))
    return held, {
        "rule": f"each user's latest {config.holdout_share:.0%} of active hours (users active in 2 or "
        f"more hours: {n_users})",
        "n_users": n_users,
        "cutoff": None,
    }


def _hour_iso(hour: int) -> str:
    return (dt.datetime(1970, 1, 1) + dt.timedelta(hours=int(hour))).isoformat()


def training_part(log_: rec.Log, held: np.ndarray) -> rec.Train:
    kept = log_.select(~held)
    return rec.Train.build(kept, end=kept.bounds()[1])


def popularity_choice(fallback: Mapping | None = None, note: str | None = None) -> dict:
    fallback = fallback or {"popularity": {}, "use_category": True}
    out = {
        "model": "category_popularity" if fallback["use_category"] else "popularity",
        "params": fallback["popularity"],
        "min_history": 0,
        "fallback": fallback,
    }
    return {**out, "note": note} if note else out


def tune(log_: rec.Log, engine: rec.Engine, config: RecConfig) -> dict:
    """The validation folds of a training period (one per protocol of `validation`), and the search on them."""
    folds, rules = [], []
    for protocol in config.validation:
        held, split = held_out(log_, dataclasses.replace(config, split=protocol))
        if held is None or not held.any() or held.all():
            rules.append(f"{protocol}: cannot split ({split['rule']})")
            continue
        train = training_part(log_, held)
        # every candidate scores each validation user against the whole catalogue: bound users x items
        max_users = min(config.max_eval_users, max(1000, TUNING_SCORE_CELLS // max(log_.n_items, 1)))
        evaluation = rec.eval_set(train, log_.select(held), max_users=max_users, seed=config.seed)
        if (evaluation.n_history > 0).sum() == 0:
            rules.append(f"{protocol}: no validation user with history has a relevant item")
            continue
        folds.append(rec.Fold(protocol, train, evaluation))
        rules.append(f"{protocol}: {split['rule']}")
    if not folds:
        return {"tuned": False, "note": "no tuning: " + "; ".join(rules)}
    record = rec.search(
        folds,
        engine,
        config.space,
        config.budget,
        k=config.top_k,
        metric=config.selection_metric,
        min_history=config.min_history,
        min_score=config.min_score,
        seed=config.seed,
        log=log,
    )
    record.update(validation_rule="; ".join(rules))
    return record


def decide(log_: rec.Log, engine: rec.Engine, config: RecConfig, *, reused: dict | None) -> tuple[dict, dict, dict]:
    """Tune (unless a choice is reused) on validation folds of the training part, refit the choice on the
    training part and evaluate it and every baseline on the holdout. Returns (holdout, tuning, choice)."""
    start, end = log_.bounds()
    held, split = held_out(log_, config)
    record = {"split": config.split, **split, "data_start": _hour_iso(start), "data_end": _hour_iso(end), "lists": {}}
    if held is None or not held.any() or held.all():
        record["note"] = f"no evaluation: {split['rule']}"
        tuning = {"tuned": False, "note": "no tuning: the data cannot be split"}
        choice = reused or popularity_choice(note="nothing to tune on")
        return record, tuning, choice
    train = training_part(log_, held)
    tuning = None
    choice = reused
    if choice is None:
        tuning = tune(train.log, engine, config)
        choice = tuning.get("chosen") or popularity_choice(note=tuning.get("note", "tuning found no choice"))
    evaluation = rec.eval_set(train, log_.select(held), max_users=config.max_eval_users, seed=config.seed + 1)
    record.update(
        n_train_pairs=train.n_pairs,
        n_eval_users=evaluation.n_users,
        n_users_with_relevant_items=evaluation.n_relevant_users,
    )
    if evaluation.n_users == 0:
        record["note"] = "no evaluation: no holdout user has a relevant (not purchased) item"
        return record, tuning, choice
    models = rec.Models(train, engine) if choice["model"] in PERSONAL_MODELS else None
    record.update(
        rec.evaluate_holdout(
            train,
            evaluation,
            choice,
            models,
            k=config.top_k,
            metric=config.selection_metric,
            min_score=config.min_score,
            heavy_min_items=config.heavy_min_items,
            confidence=config.confidence,
            seed=config.seed,
        )
    )
    metric, k = config.selection_metric, config.top_k
    log(
        f"holdout ({record['rule']}, {evaluation.n_users} users): "
        + ", ".join(f"{name} {metric}@{k} {_fmt(values['all'][metric])}" for name, values in record["lists"].items())
    )
    return record, tuning, choice


def reusable_choice(previous: dict | None, ds: dt.date, config: RecConfig) -> dict | None:
    """The last tuning's choice, when it is younger than tune_every_days and was made for the same K and engine
    family (hyperparameters do not carry over between implicit and MLlib)."""
    if not previous or config.tune_every_days <= 1:
        return None
    tuning = previous.get("tuning") or {}
    chosen, tuned_on = tuning.get("chosen"), tuning.get("tuned_on")
    if not chosen or not tuned_on or previous.get("k") != config.top_k or "fallback" not in chosen:
        return None
    if chosen["model"] in ("als", "blend") and tuning.get("engine") not in (None, config.engine):
        return None
    age = (ds - dt.date.fromisoformat(tuned_on)).days
    return chosen if 0 <= age < config.tune_every_days else None


def fixed_choice(text: str) -> dict:
    """--fixed-choice '{"model": "als", "params": {...}}': a pinned model (no tuning), personalised from one
    history item, the all-time popularity fallback unless the JSON says otherwise."""
    choice = json.loads(text)
    if choice.get("model") not in (*PERSONAL_MODELS, "popularity", "category_popularity"):
        raise SystemExit(
            f"--fixed-choice: model must be one of {PERSONAL_MODELS} or a popularity ranking, "
            f"got {choice.get('model')!r}"
        )
    return {"params": {}, "min_history": 1, "fallback": {"popularity": {}, "use_category": True}, **choice}


def gate(holdout: dict, previous: dict | None, config: RecConfig) -> dict:
    return rec.gate(
        holdout,
        previous,
        metric=config.selection_metric,
        max_drop=config.gate_max_drop,
        action=config.gate_action,
        level=config.gate_level,
        confidence=config.confidence,
    )


# ------------------------------------------------------------------------------------------------ serving
def serving_items(
    product_ids: np.ndarray, popularity: np.ndarray, category: np.ndarray, n_categories: int
) -> tuple[ItemSide, np.ndarray]:
    """The top-K engine's item side, indexed in the fallback ranking's order (most popular first, ties by
    product id), and each item's position in it (old index -> new index)."""
    order = np.lexsort((product_ids, -popularity))
    position = np.empty(len(order), np.int64)
    position[order] = np.arange(len(order))
    best = float(popularity.max(initial=0))
    items = ItemSide(
        product_ids=product_ids[order],
        popularity=(popularity[order] / best if best > 0 else popularity[order]).astype(np.float32),
        category=category[order].astype(np.int32),
        n_categories=n_categories,
    )
    return items, position


def policy_for(choice: Mapping, config: RecConfig) -> ServePolicy:
    params = choice.get("params") or {}
    personal = choice["model"] in PERSONAL_MODELS
    return ServePolicy(
        k=config.top_k,
        model=choice["model"] if personal else None,
        min_history=max(1, int(choice.get("min_history", 1))),
        min_score=config.min_score,
        blend_weight=float(params.get("weight", 0.5)),
        popularity_weight=float(params.get("popularity_weight", 0.0)) if personal else 0.0,
        use_category=bool((choice.get("fallback") or {}).get("use_category", True)),
    )


def serve_inprocess(
    full: rec.Train, choice: Mapping, engine: rec.Engine, config: RecConfig, block_users: int = 20_000
) -> pd.DataFrame:
    """Every user's list with the top-K engine (topk.TopK) in this process, blocks of users at a time."""
    log_ = full.log
    fallback = choice.get("fallback") or {"popularity": {}, "use_category": True}
    items, position = serving_items(
        log_.item_ids, full.popularity(fallback["popularity"]), log_.category, log_.n_categories
    )
    user_factors = None
    if choice["model"] in PERSONAL_MODELS:
        models = rec.Models(full, engine)
        params = choice["params"]
        if choice["model"] in ("als", "blend"):
            user_factors, item_factors = models.get(
                "als", rec.als_only(params if choice["model"] == "als" else params["als"])
            )
            items.factors = np.ascontiguousarray(item_factors[np.argsort(position)])
        if choice["model"] in ("item_cf", "blend"):
            similarity = models.get(
                "item_cf", {"neighbours": (params if choice["model"] == "item_cf" else params["item_cf"])["neighbours"]}
            )
            inverse = np.argsort(position)
            items.neighbours = similarity[inverse][:, inverse].tocsr()
    topk = TopK(items, policy_for(choice, config))
    matrix, n_items = full.matrix, log_.n_items
    parts = []
    served_users = np.flatnonzero(log_.served) if log_.served is not None else np.arange(log_.n_users)
    for start in range(0, len(served_users), block_users):
        rows = served_users[start : start + block_users]
        block, bought = matrix[rows], full.purchased[rows].tocoo()
        row_of = np.repeat(np.arange(len(rows)), np.diff(block.indptr))
        flags = np.isin(
            row_of.astype(np.int64) * n_items + block.indices, bought.row.astype(np.int64) * n_items + bought.col
        )
        cuts = block.indptr[1:-1]
        frame = pd.DataFrame(
            {
                "user_id": log_.user_ids[rows],
                "n_history": np.diff(block.indptr).astype(np.int32),
                HISTORY: np.split(position[block.indices], cuts),
                WEIGHTS: np.split(block.data, cuts),
                PURCHASED: np.split(flags, cuts),
            }
        )
        frame[FACTORS] = list(user_factors[rows]) if user_factors is not None else None
        parts.extend(topk.run([frame], "served"))
    return (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=["user_id", "rank", "product_id", "score", "source"])
    )


def write_inprocess(spark: SparkSession, frame: pd.DataFrame, path: str) -> None:
    """A folder of Parquet like Spark's (part file + _SUCCESS): written directly on local disk, through Spark
    for an object-store URI."""
    frame = frame.astype(
        {"user_id": "int64", "rank": "int32", "product_id": "int64", "score": "float64", "source": "str"}
    )
    if "://" in path and not path.startswith("file://"):
        spark.createDataFrame(frame, SERVED_SCHEMA).write.mode("overwrite").parquet(path)
        return
    target = Path(path.removeprefix("file://"))
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    frame.to_parquet(target / "part-00000.parquet", index=False)
    (target / "_SUCCESS").write_text("")


def spark_popularity(interactions: DataFrame, params: Mapping) -> pd.DataFrame:
    """recommender.Train.popularity in Spark, over every interaction: product_id, popularity."""
    seconds = F.col(HOUR_COL).cast("timestamp").cast("long")  # event_hour may be TIMESTAMP_NTZ (UTC by contract)
    last = interactions.groupBy(USER_COL, ITEM_COL).agg(F.max(seconds).alias("last")).cache()
    end = last.agg(F.max("last")).first()[0]
    age = (F.lit(end) - F.col("last")) / 3600.0
    if "window_hours" in params:
        weight = F.when(age < float(params["window_hours"]), 1.0).otherwise(0.0)
    elif "half_life_hours" in params:
        weight = F.pow(F.lit(2.0), -age / float(params["half_life_hours"]))
    else:
        weight = F.lit(1.0)
    table = last.groupBy(ITEM_COL).agg(F.sum(weight).alias("score"), F.count(F.lit(1)).alias("overall")).toPandas()
    best = max(float(table["overall"].max()), 1.0) if len(table) else 1.0
    table["popularity"] = table["score"] + 1e-9 * table["overall"] / best
    last.unpersist()
    return table[[ITEM_COL, "popularity"]]


def serve_mllib(
    spark: SparkSession,
    interactions: DataFrame,
    users: DataFrame,
    items_df: DataFrame,
    choice: Mapping,
    config: RecConfig,
) -> DataFrame:
    """Every user's list at cluster scale: MLlib ALS / Spark item-CF on all interactions, the same top-K engine
    in the executors (mapInPandas), the item factors broadcast in blocks of broadcast_max_mb."""
    fallback = choice.get("fallback") or {"popularity": {}, "use_category": True}
    catalogue = items_df.select(ITEM_COL, CATEGORY_COL).toPandas().drop_duplicates(ITEM_COL)
    popularity = spark_popularity(interactions, fallback["popularity"])
    table = catalogue.merge(popularity, on=ITEM_COL, how="outer").fillna({"popularity": 0.0})
    names = sorted(c for c in table[CATEGORY_COL].dropna().unique())
    code = {c: i for i, c in enumerate(names)}
    items, position = serving_items(
        table[ITEM_COL].to_numpy(np.int64),
        table["popularity"].to_numpy(np.float64),
        np.array([code.get(c, -1) if isinstance(c, str) else -1 for c in table[CATEGORY_COL]], np.int32),
        len(names),
    )
    index = spark.createDataFrame(pd.DataFrame({ITEM_COL: items.product_ids, INDEX_COL: np.arange(items.n_items)}))
    pairs = interactions.groupBy(USER_COL, ITEM_COL).agg(
        F.sum(WEIGHT_COL).alias(WEIGHT_COL), (F.sum(PURCHASES_COL) > 0).alias(PURCHASED)
    )
    indexed = pairs.join(F.broadcast(index), ITEM_COL).cache()
    user_rows = (
        indexed.groupBy(USER_COL)
        .agg(
            F.count(F.lit(1)).cast("int").alias("n_history"),
            F.collect_list(INDEX_COL).alias(HISTORY),
            F.collect_list(F.col(WEIGHT_COL).cast("float")).alias(WEIGHTS),
            F.collect_list(PURCHASED).alias(PURCHASED),
        )
        .cache()
    )
    policy = policy_for(choice, config)
    params = choice.get("params") or {}
    user_factors = item_factors = None
    if choice["model"] in ("als", "blend"):
        model = fit_mllib_als(spark, pairs, rec.als_only(params if choice["model"] == "als" else params["als"]), config)
        user_factors = model.userFactors.select(
            F.col("id").cast("long").alias(USER_COL), F.col("features").alias(FACTORS)
        )
        item_factors = (
            model.itemFactors.select(F.col("id").cast("long").alias(ITEM_COL), "features")
            .join(index, ITEM_COL)
            .select(INDEX_COL, F.col("features").alias(FACTORS))
        )
    if choice["model"] in ("item_cf", "blend"):
        neighbours = (params if choice["model"] == "item_cf" else params["item_cf"])["neighbours"]
        items.neighbours = item_neighbours(
            user_rows, items.n_items, neighbours=int(neighbours), max_user_items=config.max_user_items_cf
        )
    frame = (
        users.select(USER_COL)
        .distinct()
        .join(user_rows, USER_COL, "left")
        .select(
            USER_COL,
            F.coalesce("n_history", F.lit(0)).alias("n_history"),
            F.coalesce(HISTORY, F.array().cast("array<int>")).alias(HISTORY),
            F.coalesce(WEIGHTS, F.array().cast("array<float>")).alias(WEIGHTS),
            F.coalesce(PURCHASED, F.array().cast("array<boolean>")).alias(PURCHASED),
        )
    )
    frame = (
        frame.join(user_factors, USER_COL, "left")
        if user_factors is not None
        else frame.withColumn(FACTORS, F.lit(None).cast("array<float>"))
    )
    if item_factors is None:
        return run_engine(spark, frame, items, policy, "served", SERVED_SCHEMA)
    rank = int((params if choice["model"] == "als" else params["als"])["rank"])
    blocks = _item_blocks(items.n_items, rank, config) if choice["model"] == "als" else [(0, items.n_items)]
    if len(blocks) == 1:
        items.factors = _collect_factors(item_factors, 0, items.n_items, rank)
        return run_engine(spark, frame, items, policy, "served", SERVED_SCHEMA)
    frame = frame.cache()
    candidates = None
    for start, stop in blocks:
        block_items = dataclasses.replace(
            items, factors=_collect_factors(item_factors, start, stop, rank), block_start=start
        )
        part = run_engine(spark, frame, block_items, policy, "candidates", CANDIDATES_SCHEMA)
        candidates = part if candidates is None else candidates.unionByName(part)
    best = Window.partitionBy(USER_COL).orderBy(F.desc("score"), F.asc("item_index"))
    model_tier = (
        candidates.withColumn("_r", F.row_number().over(best))
        .filter(F.col("_r") <= policy.k)
        .groupBy(USER_COL)
        .agg(F.sort_array(F.collect_list(F.struct(F.col("_r"), F.col("item_index"), F.col("score")))).alias("_c"))
        .select(USER_COL, F.col("_c.item_index").alias("model_items"), F.col("_c.score").alias("model_scores"))
    )
    return run_engine(spark, frame.join(model_tier, USER_COL, "left"), items, policy, "served", SERVED_SCHEMA)


def _item_blocks(n_items: int, rank: int, config: RecConfig) -> list[tuple[int, int]]:
    per_block = max(1, int(config.broadcast_max_mb * 2**20 // ((rank + 1) * 4)))
    return [(start, min(n_items, start + per_block)) for start in range(0, n_items, per_block)]


def _collect_factors(item_factors: DataFrame, start: int, stop: int, rank: int) -> np.ndarray:
    """Item factors of the index block [start, stop) as a dense matrix (items without factors: zeros)."""
    block = np.zeros((stop - start, rank), np.float32)
    rows = item_factors.filter((F.col(INDEX_COL) >= start) & (F.col(INDEX_COL) < stop)).toPandas()
    if len(rows):
        block[rows[INDEX_COL].to_numpy() - start] = np.stack(rows[FACTORS].to_numpy()).astype(np.float32)
    return block


def run_engine(
    spark: SparkSession, frame: DataFrame, items: ItemSide, policy: ServePolicy, mode: str, schema: str
) -> DataFrame:
    broadcast = spark.sparkContext.broadcast(items)

    def score(frames):
        yield from TopK(broadcast.value, policy).run(frames, mode)

    return frame.mapInPandas(score, schema)


# ------------------------------------------------------------------------------------------------- job
def is_local(path) -> bool:
    return "://" not in str(path) or str(path).startswith("file://")


def current_master() -> str:
    """The master spark-submit was given (or the running session's), without starting a SparkContext."""
    from pyspark import SparkConf, SparkContext

    active = SparkSession.getActiveSession()
    if active is not None:
        return active.sparkContext.master
    SparkContext._ensure_initialized()  # joins spark-submit's JVM (~1 s), whose properties hold --master
    return SparkConf().get("spark.master", "local[*]")


def read_local_table(features_dir: str, table: str, ds: dt.date, columns: list[str]) -> pd.DataFrame:
    """A local feature table read in this process (pyarrow), with common.read_parquet_table's messages."""
    path = feature_table_path(features_dir, table, ds).removeprefix("file://")
    try:
        frame = pd.read_parquet(path)
    except (OSError, ValueError) as error:
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise SystemExit(f"input table {table!r} cannot be read at {path}: {reason}") from None
    missing = [name for name in columns if name not in frame.columns]
    if missing:
        raise SystemExit(
            f"input table {table!r} at {path} is missing required column(s) {missing} (has {list(frame.columns)})"
        )
    return frame[columns]


def check_frame(frame: pd.DataFrame, *, table: str, path: str, not_null=(), non_negative=()) -> None:
    """common.check_columns for a pandas frame: every violated rule with its row count, in one message."""
    violations = [f"{int(frame[c].isna().sum())} row(s) where {c} is null" for c in not_null if frame[c].isna().any()]
    violations += [f"{int((frame[c] < 0).sum())} row(s) where {c} < 0" for c in non_negative if (frame[c] < 0).any()]
    if violations:
        raise SystemExit(f"input table {table!r} at {path} breaks its contract: " + "; ".join(violations))


def count_local_rows(features_dir: str, table: str, ds: dt.date) -> int | None:
    """Rows of a local Parquet table from its footers alone; None when it cannot be read (the reader says why)."""
    import pyarrow.dataset as pads

    try:
        return pads.dataset(
            feature_table_path(features_dir, table, ds).removeprefix("file://"), format="parquet"
        ).count_rows()
    except (OSError, ValueError):
        return None


def inprocess_inputs(args: argparse.Namespace) -> tuple[rec.Log, int]:
    """The three feature tables read and checked in this process: (driver log, interaction rows)."""
    path = feature_table_path(args.features_dir, "interactions", args.ds)
    frame = read_local_table(args.features_dir, "interactions", args.ds, INTERACTION_COLUMNS)
    users = read_local_table(args.features_dir, "user_features", args.ds, [USER_COL])
    items = read_local_table(args.features_dir, "item_features", args.ds, [ITEM_COL, CATEGORY_COL])
    if frame.empty:
        raise SystemExit(f"input table 'interactions' at {path} has no rows: nothing to train on")
    check_frame(
        frame,
        table="interactions",
        path=path,
        not_null=INTERACTION_COLUMNS,
        non_negative=[USER_COL, ITEM_COL, WEIGHT_COL, PURCHASES_COL],
    )
    check_frame(
        users,
        table="user_features",
        path=feature_table_path(args.features_dir, "user_features", args.ds),
        not_null=[USER_COL],
    )
    for column in (USER_COL, ITEM_COL):
        if frame[column].max() > INT32_MAX:
            raise SystemExit(
                f"input table 'interactions' at {path}: {column} {frame[column].max()} exceeds ALS's 32-bit id range"
            )
    log_ = rec.Log.from_frames(
        frame, users=users[USER_COL].to_numpy(np.int64), item_categories=items.drop_duplicates(ITEM_COL)
    )
    return log_, len(frame)


def run(spark: SparkSession | None, args: argparse.Namespace) -> dict:
    """The job. Without a session (`main` under spark-submit) the in-process engine on local files never
    starts one: Spark is only started for the MLlib engine or object-store paths."""
    started = time.perf_counter()
    config = args.settings
    timings: dict[str, float] = {}
    mark = time.perf_counter()
    local = is_local(args.features_dir) and is_local(args.output_dir)
    local_rows = count_local_rows(args.features_dir, "interactions", args.ds) if local else None
    if local_rows is not None and config.engine != "mllib":
        engine_name, why = choose_engine(config.engine, local_rows, current_master(), config)
    else:
        engine_name = why = None
    if engine_name == "implicit":
        full_log, n_rows = inprocess_inputs(args)
        log_, sampled = user_sample(full_log, max_rows=config.tune_max_rows, seed=config.seed)
        interactions = users = items_df = None
    else:
        spark = spark or get_spark("als_recommendations")
        spark.conf.set("spark.sql.execution.arrow.pyspark.enabled", "true")
        interactions = read_feature_table(spark, args.features_dir, "interactions", args.ds, INTERACTION_COLUMNS)
        users = read_feature_table(spark, args.features_dir, "user_features", args.ds, [USER_COL])
        items_df = read_feature_table(spark, args.features_dir, "item_features", args.ds, [ITEM_COL, CATEGORY_COL])
        n_rows = check_interactions(interactions, feature_table_path(args.features_dir, "interactions", args.ds))
        check_columns(
            users,
            table="user_features",
            not_null=[USER_COL],
            path=feature_table_path(args.features_dir, "user_features", args.ds),
        )
        if engine_name is None:
            engine_name, why = choose_engine(config.engine, n_rows, spark.sparkContext.master, config)
        log_, sampled = driver_copy(
            interactions,
            users,
            items_df,
            n_rows=n_rows,
            seed=config.seed,
            max_rows=None if engine_name == "implicit" else config.tune_max_rows,
        )
        full_log = log_
        if engine_name == "implicit":
            log_, sampled = user_sample(full_log, max_rows=config.tune_max_rows, seed=config.seed)
    config = dataclasses.replace(config, engine=engine_name)
    log(f"engine {engine_name}: {why}")
    timings["read"] = time.perf_counter() - mark
    if engine_name == "mllib":
        ship_package(spark)
        checkpoint_dir = args.checkpoint_dir or f"{str(args.output_dir).rstrip('/')}/_checkpoints"
        spark.sparkContext.setCheckpointDir(checkpoint_dir)
        engine = mllib_engine(spark, config)
    else:
        checkpoint_dir = None
        engine = rec.implicit_engine(
            iterations=config.max_iter, seed=config.seed, max_user_items=config.max_user_items_cf
        )
    previous = json.loads(Path(args.previous_metrics).read_text()) if args.previous_metrics else None

    fixed = fixed_choice(args.fixed_choice) if args.fixed_choice else None
    reused = fixed or reusable_choice(previous, args.ds, config)
    mark = time.perf_counter()
    holdout, tuning, choice = decide(log_, engine, config, reused=reused)
    timings["tune_and_evaluate"] = time.perf_counter() - mark
    if fixed is not None:
        tuning = {"tuned": False, "note": "fixed by --fixed-choice", "chosen": fixed}
    elif reused is not None:
        tuning = {
            "tuned": False,
            "reused_from": previous.get("ds"),
            "tuned_on": previous["tuning"]["tuned_on"],
            "engine": previous["tuning"].get("engine"),
            "chosen": reused,
        }
    elif tuning and tuning.get("tuned"):
        tuning["tuned_on"] = args.ds.isoformat()
    else:
        tuning = {**(tuning or {}), "chosen": choice}
    holdout["user_sample"] = sampled
    gate_result = gate(holdout, previous, config)
    publish = "model" if gate_result["passed"] else ("fallback" if config.gate_action == "fallback" else "none")
    gate_result["published"] = publish
    log(f"gate: {gate_result['verdict']}; publishing {publish}")

    output_path = f"{str(args.output_dir).rstrip('/')}/recommendations"
    served_choice = choice if publish == "model" else popularity_choice(choice.get("fallback"))
    sources: dict[str, int] = {}
    n_users = coverage = None
    n_recommendations = 0
    n_catalogue = full_log.n_items if engine_name == "implicit" else items_df.select(ITEM_COL).distinct().count()
    mark = time.perf_counter()
    if publish != "none":
        if engine_name == "implicit":
            full = rec.Train.build(full_log)
            served = serve_inprocess(full, served_choice, engine, config)
            write_inprocess(spark, served, output_path)
        else:
            served = serve_mllib(spark, interactions, users, items_df, served_choice, config)
            served.write.mode("overwrite").parquet(output_path)
            served = spark.read.parquet(output_path).toPandas()
        timings["final_fit_and_top_k"] = time.perf_counter() - mark
        log(
            f"top-{config.top_k} lists of {served['user_id'].nunique():,} users written in "
            f"{timings['final_fit_and_top_k']:.1f} s"
        )
        sources = {str(k): int(v) for k, v in served["source"].value_counts().sort_index().items()}
        n_recommendations = len(served)
        n_users = int(served["user_id"].nunique())
        coverage = served["product_id"].nunique() / n_catalogue if n_catalogue else None
    if checkpoint_dir:
        _remove_local(checkpoint_dir)

    metrics = headline(holdout, config)
    metrics.update(
        ds=args.ds.isoformat(),
        k=config.top_k,
        engine=engine_name,
        engine_reason=why,
        model=choice["model"] if publish == "model" else publish,
        params=choice.get("params"),
        min_history=int(choice.get("min_history", 0)),
        min_score=config.min_score,
        n_users=n_users,
        n_items=n_catalogue,
        n_window_interactions=n_rows,
        n_recommendations=n_recommendations,
        recommendations_by_source=sources,
        catalog_coverage=coverage,
        holdout=holdout,
        tuning=tuning,
        gate=gate_result,
        config=json_safe(dataclasses.asdict(config)),
        recommendations_path=output_path if publish != "none" else None,
        seconds={**{k: round(v, 1) for k, v in timings.items()}, "total": round(time.perf_counter() - started, 1)},
    )
    metrics = json_safe(metrics)
    write_metrics(args.metrics_path or f"{str(args.output_dir).rstrip('/')}/metrics.json", metrics)
    return metrics


def headline(holdout: dict, config: RecConfig) -> dict:
    """The figures a report shows first: the served lists against the strongest non-personalised ranking."""
    lists = holdout.get("lists") or {}
    served = (lists.get("served") or {}).get("all", {})
    baseline_name = (holdout.get("served_vs_baseline") or {}).get("baseline")
    baseline = (lists.get(baseline_name) or {}).get("all", {}) if baseline_name else {}
    metric = config.selection_metric
    out = {
        "n_eval_users": (served or {}).get("n_users", 0),
        "note": holdout.get("note"),
        "holdout_rule": holdout.get("rule"),
        "baseline": baseline_name,
        f"{metric}_at_k_interval": [served.get(f"{metric}_low"), served.get(f"{metric}_high")] if served else None,
    }
    for name in rec.METRICS:
        out[f"{name}_at_k"] = served.get(name)
        out[f"baseline_{name}_at_k"] = baseline.get(name)
    out["lift"] = (
        out[f"{metric}_at_k"] / out[f"baseline_{metric}_at_k"]
        if out[f"{metric}_at_k"] is not None and out[f"baseline_{metric}_at_k"]
        else None
    )
    return out


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _remove_local(path: str) -> None:
    if "://" not in path or path.startswith("file://"):
        shutil.rmtree(path.removeprefix("file://"), ignore_errors=True)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The job's command line: where to read and write, the settings (the `als` section of --config with any
    --set), and the few overrides people use by hand. `args.settings` is the RecConfig."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add = parser.add_argument
    add("--features-dir", required=True, help="root holding <table>/ds=<ds>/ Parquet features")
    add("--ds", required=True, type=iso_date, help="logical date YYYY-MM-DD")
    add("--output-dir", required=True, help="recommendations/ and metrics.json go here")
    add_settings_arguments(parser, ["als"])
    add("--top-k", type=int, default=None, help="override als.top_k")
    add(
        "--engine",
        choices=ENGINES,
        default=None,
        help="override als.engine: auto = implicit in this process up to als.inprocess_max_rows on a local master",
    )
    add("--seed", type=int, default=None, help="override als.seed")
    add("--checkpoint-dir", default=None, help="Spark checkpoint dir (default <output-dir>/_checkpoints)")
    add(
        "--fixed-choice",
        default=None,
        help='pin the model instead of tuning, e.g. \'{"model": "als", "params": {"alpha": 10, "reg_param": 0.1, '
        '"rank": 64, "weight_transform": "raw"}}\'',
    )
    add("--previous-metrics", default=None, help="metrics.json of the last published run (gate and tuning reuse)")
    add("--metrics-path", default=None, help="default: <output-dir>/metrics.json")
    args = parser.parse_args(argv)
    settings = job_settings(args, ["als"], parser)["als"]
    changes = {name: getattr(args, name) for name in ("top_k", "engine", "seed") if getattr(args, name) is not None}
    try:
        args.settings = RecConfig.from_settings(settings, **changes)
    except (KeyError, TypeError, ValueError) as error:
        parser.error(
            f"--config {args.config}: als settings: {error!r}"
            if isinstance(error, KeyError)
            else f"--config {args.config}: {error}"
        )
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    return run(SparkSession.getActiveSession(), args)


if __name__ == "__main__":
    run_as_script(main)
