"""Are predicted click probabilities probabilities? Reliability metrics and calibrators, in Spark.

Reliability of scores `p` against 0/1 labels `y` on n rows:
  Brier score                  mean((p - y)^2)
  calibration curve            equal-frequency bins of p (edges = quantiles of p): per bin, rows, mean p and
                               observed click rate; CTRs are small, so equal-width bins would put almost every
                               row in the first one
  expected calibration error   sum over bins of (rows_b / n) * |mean p_b - rate_b|

Calibrators map a raw score to a probability, fitted on rows the evaluation does not use:
  platt     sigmoid(a * logit(p) + b), (a, b) by logistic regression on logit(p)
  isotonic  a monotone step function of p, linear between its steps (Spark MLlib / scikit-learn
            IsotonicRegression)
Each comes twice, for the CTR job's two engines: on Spark DataFrames (expressions and MLlib models, no Python
UDFs) and on numpy arrays (`*_arrays`, the in-process engine), with the same formulas and the same edges.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from pyspark.ml.classification import LogisticRegression
from pyspark.ml.feature import Bucketizer, VectorAssembler
from pyspark.ml.regression import IsotonicRegression, IsotonicRegressionModel
from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

CALIBRATION_METHODS = ("none", "platt", "isotonic")
LOGIT_EPSILON = 1e-6


def quantile_bin_edges(frame: DataFrame, *, p_col: str, n_bins: int = 10, relative_error: float = 1e-3) -> list[float]:
    """Interior edges of (at most) n_bins equal-frequency bins of p; duplicates dropped (ties at an edge)."""
    quantiles = [i / n_bins for i in range(1, n_bins)]
    edges = frame.approxQuantile(p_col, quantiles, relative_error) if n_bins > 1 else []
    return sorted(set(edges))


def calibration_curve(frame: DataFrame, edges: list[float], *, p_col: str, label_col: str) -> list[dict]:
    """Per bin [edge_i, edge_i+1): rows, mean predicted p, observed rate (bins without rows are left out)."""
    bucketizer = Bucketizer(splits=[-math.inf, *edges, math.inf], inputCol=p_col, outputCol="_bin")
    rows = (
        bucketizer.transform(
            frame.select(F.col(p_col).cast("double").alias(p_col), F.col(label_col).cast("double").alias(label_col))
        )
        .groupBy("_bin")
        .agg(F.count(F.lit(1)).alias("n"), F.avg(p_col).alias("mean_p"), F.avg(label_col).alias("rate"))
        .orderBy("_bin")
        .collect()  # at most len(edges) + 1 rows
    )
    return [
        {"bin": int(r["_bin"]), "n": int(r["n"]), "mean_p": float(r["mean_p"]), "rate": float(r["rate"])} for r in rows
    ]


def expected_calibration_error(curve: list[dict]) -> float | None:
    total = sum(b["n"] for b in curve)
    if not total:
        return None
    return sum(b["n"] * abs(b["mean_p"] - b["rate"]) for b in curve) / total


def brier_score(frame: DataFrame, *, p_col: str, label_col: str) -> float | None:
    return frame.agg(F.avg((F.col(p_col) - F.col(label_col).cast("double")) ** 2)).first()[0]


def reliability(frame: DataFrame, *, p_col: str, label_col: str, n_bins: int = 10) -> dict:
    """Brier score, ECE and the curve of one score column."""
    curve = calibration_curve(
        frame, quantile_bin_edges(frame, p_col=p_col, n_bins=n_bins), p_col=p_col, label_col=label_col
    )
    return {
        "brier": brier_score(frame, p_col=p_col, label_col=label_col),
        "ece": expected_calibration_error(curve),
        "curve": curve,
    }


def _logit(column: Column) -> Column:
    p = F.least(F.greatest(column, F.lit(LOGIT_EPSILON)), F.lit(1 - LOGIT_EPSILON))
    return F.log(p / (1 - p))


@dataclasses.dataclass
class Calibrator:
    """A fitted calibrator; `apply` replaces the score column by the calibrated probability."""

    method: str
    platt: tuple[float, float] | None = None  # (a, b)
    isotonic: IsotonicRegressionModel | None = None  # Spark's model (fit_calibrator)
    steps: tuple[np.ndarray, np.ndarray] | None = None  # isotonic (boundaries, values) (fit_calibrator_arrays)

    def apply(self, frame: DataFrame, *, p_col: str) -> DataFrame:
        if self.method == "none":
            return frame
        if self.method == "platt":
            a, b = self.platt
            return frame.withColumn(p_col, 1 / (1 + F.exp(-(F.lit(a) * _logit(F.col(p_col)) + F.lit(b)))))
        # Spark's isotonic model reads a double feature column and writes a prediction column
        model = self.isotonic.copy({self.isotonic.featuresCol: p_col, self.isotonic.predictionCol: "_isotonic_p"})
        return model.transform(frame).withColumn(p_col, F.col("_isotonic_p")).drop("_isotonic_p")

    def describe(self) -> dict:
        if self.method == "platt":
            return {"method": "platt", "a": self.platt[0], "b": self.platt[1]}
        if self.method == "isotonic":
            steps = len(self.steps[0]) if self.steps is not None else len(self.isotonic.boundaries)
            return {"method": "isotonic", "steps": steps}
        return {"method": "none"}

    def apply_arrays(self, p: np.ndarray) -> np.ndarray:
        """The calibrated probabilities of scores `p` (a calibrator from fit_calibrator_arrays)."""
        if self.method == "none":
            return p
        if self.method == "platt":
            a, b = self.platt
            return 1 / (1 + np.exp(-(a * _logit_array(p) + b)))
        boundaries, values = self.steps
        return np.interp(p, boundaries, values)  # Spark's rule: linear between steps, constant beyond the ends


def fit_calibrator(frame: DataFrame, method: str, *, p_col: str, label_col: str) -> Calibrator:
    """Fit `method` on (score, label) rows of `frame`."""
    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method must be one of {CALIBRATION_METHODS}, got {method!r}")
    if method == "none":
        return Calibrator("none")
    data = frame.select(F.col(p_col).cast("double").alias(p_col), F.col(label_col).cast("double").alias("_y"))
    if method == "platt":
        assembled = VectorAssembler(inputCols=["_logit"], outputCol="_x").transform(
            data.withColumn("_logit", _logit(F.col(p_col)))
        )
        model = LogisticRegression(
            featuresCol="_x", labelCol="_y", regParam=0.0, standardization=False, maxIter=100
        ).fit(assembled)
        return Calibrator("platt", platt=(float(model.coefficients[0]), float(model.intercept)))
    model = IsotonicRegression(featuresCol=p_col, labelCol="_y", isotonic=True).fit(data)
    return Calibrator("isotonic", isotonic=model)


# ------------------------------------------------------------------------------------- numpy (in-process)
def _logit_array(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, LOGIT_EPSILON, 1 - LOGIT_EPSILON)
    return np.log(p / (1 - p))


def reliability_arrays(p: np.ndarray, y: np.ndarray, *, n_bins: int = 10) -> dict:
    """reliability() on arrays: the same bins [edge_i, edge_i+1), with exact quantiles taken from the data
    (Spark's approxQuantile returns data values too, within its relative error)."""
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if not len(p):
        return {"brier": None, "ece": None, "curve": []}
    quantiles = [i / n_bins for i in range(1, n_bins)]
    edges = sorted(set(np.quantile(p, quantiles, method="inverted_cdf").tolist())) if n_bins > 1 else []
    bins = np.searchsorted(np.asarray(edges), p, side="right")
    n = np.bincount(bins, minlength=len(edges) + 1)
    sum_p = np.bincount(bins, weights=p, minlength=len(edges) + 1)
    sum_y = np.bincount(bins, weights=y, minlength=len(edges) + 1)
    curve = [
        {"bin": int(b), "n": int(n[b]), "mean_p": float(sum_p[b] / n[b]), "rate": float(sum_y[b] / n[b])}
        for b in np.flatnonzero(n)
    ]
    return {"brier": float(np.mean((p - y) ** 2)), "ece": expected_calibration_error(curve), "curve": curve}


def fit_calibrator_arrays(p: np.ndarray, y: np.ndarray, method: str) -> Calibrator:
    """fit_calibrator on arrays, with scikit-learn: Platt's (a, b) by unpenalised logistic regression on
    logit(p), isotonic by IsotonicRegression (increasing, constant beyond the fitted range)."""
    from sklearn.isotonic import IsotonicRegression as SklearnIsotonic
    from sklearn.linear_model import LogisticRegression as SklearnLogistic

    if method not in CALIBRATION_METHODS:
        raise ValueError(f"calibration method must be one of {CALIBRATION_METHODS}, got {method!r}")
    if method == "none":
        return Calibrator("none")
    p, y = np.asarray(p, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if method == "platt":
        model = SklearnLogistic(C=np.inf, max_iter=100).fit(_logit_array(p).reshape(-1, 1), y)
        return Calibrator("platt", platt=(float(model.coef_[0, 0]), float(model.intercept_[0])))
    model = SklearnIsotonic(increasing=True, out_of_bounds="clip").fit(p, y)
    return Calibrator("isotonic", steps=(model.X_thresholds_.copy(), model.y_thresholds_.copy()))
