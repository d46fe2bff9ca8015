"""The CTR job's in-process engine: the same model as the Spark MLlib pipeline, on one pandas copy of ctr_train
in the driver, with scikit-learn (ctr_audiences.py chooses the engine and owns every decision).

The model is build_pipeline's, feature for feature:
- numerics: affinity, recency_days, log1p(frequency), log1p(monetary), log1p(category_recency_days), centred
  and scaled by the training rows' mean and sample standard deviation (a constant column scales to 0);
- one-hot placement, channel and impression hour over the training rows' values; an unseen value is all zeros
  (Spark's `keep` slot is dropped by OneHotEncoder's dropLast, so it is all zeros there too);
- affinity x placement and affinity x channel: the raw affinity on the one-hot slot;
- the hashed user, campaign x category and user x category keys: `hash_features` buckets, a 1 at each key's
  bucket (Spark hashes "column=value" strings with MurmurHash3; here integer hashing in numpy, as spread);
- logistic regression with Spark's objective: mean log loss + reg_param * ((1 - a) / 2 ||w||^2 + a ||w||_1),
  intercept unpenalised, i.e. scikit-learn's C = 1 / (n_rows * reg_param), l1_ratio = a (lbfgs for pure L2,
  saga with an L1 part), at most max_iter iterations.
The bucket a key lands in differs from Spark's (another hash seed), so the two engines agree on the AUC, not
on each coefficient: tests/test_spark_jobs.py holds them to that.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import warnings

import numpy as np
import pandas as pd
from scipy import sparse

from spark_jobs.calibration import Calibrator, fit_calibrator_arrays, reliability_arrays
from spark_jobs.ctr_columns import (
    CAMPAIGN_COL,
    CATEGORICAL_COLS,
    CLICK_COL,
    CROSSED_COLS,
    DATE_COL,
    HASHED_KEYS,
    LOG_LOSS_EPSILON,
    LOG_SCALED_COLS,
    P_CLICK_COL,
    RAW_NUMERIC_COLS,
    USER_COL,
)


@dataclasses.dataclass
class Featurizer:
    """build_pipeline's feature stages, fitted on the training rows."""

    categories: dict[str, pd.Index]
    mean: np.ndarray
    scale: np.ndarray  # 1 / sample std, 0 where the column is constant
    hash_features: int

    @classmethod
    def fit(cls, frame: pd.DataFrame, hash_features: int) -> Featurizer:
        numeric = numeric_block(frame)
        std = numeric.std(axis=0, ddof=1) if len(numeric) > 1 else np.zeros(numeric.shape[1])
        return cls(
            categories={name: pd.Index(pd.unique(frame[name].dropna())) for name in CATEGORICAL_COLS},
            mean=numeric.mean(axis=0),
            scale=np.divide(1.0, std, out=np.zeros_like(std), where=std > 0),
            hash_features=hash_features,
        )

    def transform(self, frame: pd.DataFrame) -> sparse.csr_matrix:
        rows = np.arange(len(frame))
        blocks = [sparse.csr_matrix((numeric_block(frame) - self.mean) * self.scale)]
        codes = {name: self.categories[name].get_indexer(frame[name]) for name in CATEGORICAL_COLS}
        for name in CATEGORICAL_COLS:
            blocks.append(self._one_hot(rows, codes[name], np.ones(len(frame)), len(self.categories[name])))
        affinity = frame["affinity"].to_numpy(np.float64)
        for name in CROSSED_COLS:
            blocks.append(self._one_hot(rows, codes[name], affinity, len(self.categories[name])))
        if self.hash_features > 0:
            blocks.append(hashed_keys(frame, self.hash_features))
        return sparse.hstack(blocks, format="csr")

    @staticmethod
    def _one_hot(rows: np.ndarray, codes: np.ndarray, values: np.ndarray, width: int) -> sparse.csr_matrix:
        known = codes >= 0
        return sparse.csr_matrix((values[known], (rows[known], codes[known])), shape=(len(rows), width))


def numeric_block(frame: pd.DataFrame) -> np.ndarray:
    columns = [frame[name].to_numpy(np.float64) for name in RAW_NUMERIC_COLS]
    return np.column_stack(
        [np.log1p(values) if name in LOG_SCALED_COLS else values for name, values in zip(RAW_NUMERIC_COLS, columns)]
    )


# one salt per key, so the three keys of one user do not share buckets by construction
_KEY_SALTS = dict(zip(HASHED_KEYS, (0x5EED0001, 0x5EED0002, 0x5EED0003), strict=True))


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser: a well-spread 64-bit hash of 64-bit integers (wrapping arithmetic)."""
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _string_hash(values: pd.Series) -> np.ndarray:
    """A 64-bit hash of each string that does not depend on the frame (blake2b of each distinct value)."""
    codes, distinct = pd.factorize(values.astype(str), sort=False)
    hashes = np.array(
        [int.from_bytes(hashlib.blake2b(v.encode(), digest_size=8).digest(), "little") for v in distinct],
        dtype=np.uint64,
    )
    return hashes[codes]


def hashed_keys(frame: pd.DataFrame, n_features: int) -> sparse.csr_matrix:
    """The three hashed keys of add_model_inputs (user, campaign x category, user x category), a 1 in each
    key's bucket (collisions add up, as in Spark's FeatureHasher). Integer hashing in numpy: the user id is the
    internal key (an integer), campaign and category are hashed once per distinct value."""
    user = frame[USER_COL].to_numpy(np.int64).astype(np.uint64)
    category = _string_hash(frame["target_category"])
    keys = {
        "user_key": user,
        "campaign_category_key": _mix64(_string_hash(frame[CAMPAIGN_COL])) ^ category,
        "user_category_key": _mix64(user) ^ category,
    }
    rows = np.arange(len(frame))
    columns = [_mix64(key ^ np.uint64(_KEY_SALTS[name])) % np.uint64(n_features) for name, key in keys.items()]
    return sparse.csr_matrix(
        (np.ones(3 * len(frame)), (np.tile(rows, 3), np.concatenate(columns).astype(np.int64))),
        shape=(len(frame), n_features),
    )


@dataclasses.dataclass
class InProcessModel:
    featurizer: Featurizer
    classifier: object  # a fitted sklearn LogisticRegression
    iterations: int


class InProcessEngine:
    """The engine protocol of ctr_audiences.evaluate_holdout on pandas frames (see MllibEngine there)."""

    name = "sklearn"

    def window(self, frame: pd.DataFrame, *, after: dt.date | None = None, upto: dt.date | None = None):
        """Rows with after < impression_date <= upto."""
        keep = np.ones(len(frame), dtype=bool)
        dates = frame[DATE_COL].to_numpy(dtype="datetime64[D]")  # run() hands over datetime64: no parsing
        if after is not None:
            keep &= dates > np.datetime64(after, "D")
        if upto is not None:
            keep &= dates <= np.datetime64(upto, "D")
        return frame[keep]

    def keep(self, frame):
        return frame

    def release(self, frame) -> None:
        pass

    def label_counts(self, frame: pd.DataFrame) -> tuple[int, int]:
        return len(frame), int(frame[CLICK_COL].sum())

    def fit(self, frame: pd.DataFrame, config, reg_param: float) -> InProcessModel:
        from sklearn.exceptions import ConvergenceWarning
        from sklearn.linear_model import LogisticRegression

        featurizer = Featurizer.fit(frame, config.hash_features)
        features = featurizer.transform(frame)
        labels = frame[CLICK_COL].to_numpy(np.int8)
        strength = np.inf if reg_param == 0 else 1.0 / (len(frame) * reg_param)
        classifier = LogisticRegression(
            C=strength,
            l1_ratio=config.elastic_net,
            solver="lbfgs" if config.elastic_net == 0 else "saga",
            max_iter=config.max_iter,
            tol=1e-6,  # Spark LR's default convergence tolerance
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)  # max_iter is a budget, as in Spark
            classifier.fit(features, labels)
        return InProcessModel(featurizer, classifier, int(np.max(classifier.n_iter_)))

    def predict(self, model: InProcessModel, frame: pd.DataFrame) -> pd.DataFrame:
        p = model.classifier.predict_proba(model.featurizer.transform(frame))[:, 1] if len(frame) else []
        return frame.assign(**{P_CLICK_COL: np.asarray(p, dtype=np.float64)})

    def auc(self, frame: pd.DataFrame, *, score_col: str) -> float:
        from sklearn.metrics import roc_auc_score

        return float(roc_auc_score(frame[CLICK_COL].to_numpy(), frame[score_col].to_numpy(np.float64)))

    def log_loss(self, frame: pd.DataFrame) -> float | None:
        if not len(frame):
            return None
        p = np.clip(frame[P_CLICK_COL].to_numpy(np.float64), LOG_LOSS_EPSILON, 1 - LOG_LOSS_EPSILON)
        y = frame[CLICK_COL].to_numpy(np.float64)
        return float(np.mean(-(y * np.log(p) + (1 - y) * np.log(1 - p))))

    def placement_baseline(self, train: pd.DataFrame, test: pd.DataFrame, *, score_col: str) -> pd.DataFrame:
        overall = float(train[CLICK_COL].mean())
        by_placement = train.groupby("placement")[CLICK_COL].mean()
        return test.assign(**{score_col: test["placement"].map(by_placement).fillna(overall).astype(np.float64)})

    def fit_calibrator(self, frame: pd.DataFrame, method: str) -> Calibrator:
        return fit_calibrator_arrays(frame[P_CLICK_COL].to_numpy(), frame[CLICK_COL].to_numpy(), method)

    def calibrate(self, calibrator: Calibrator, frame: pd.DataFrame) -> pd.DataFrame:
        return frame.assign(**{P_CLICK_COL: calibrator.apply_arrays(frame[P_CLICK_COL].to_numpy(np.float64))})

    def reliability(self, frame: pd.DataFrame) -> dict:
        return reliability_arrays(frame[P_CLICK_COL].to_numpy(), frame[CLICK_COL].to_numpy())
