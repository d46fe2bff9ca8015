"""Are predicted click probabilities probabilities? Reliability metrics and calibrators, in Spark.

Reliability of scores `p` against 0/1 labels `y` on n rows:
  Brier score                  mean((p - y)^2)
  calibration curve            equal-frequency bins of p (edges = quantiles of p): per bin, rows, mean p and
                               observed click rate; CTRs are small, so equal-width bins would put almost every
                               row in the first one
  expected calibration error   sum over bins of (rows_b / n) * |mean p_b - rate_b|

Calibrators map a raw score to a probability, fitted on rows the evaluation does not use:
  platt     sigmoid(a * logit(p) + b), (a, b) by logistic regression on logit(p)
  isotonic  a monotone step function of p (Spark MLlib IsotonicRegression)
Both are applied with Spark expressions/models only (no Python UDFs).
"""

from __future__ import annotations

import dataclasses
import math

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
    isotonic: IsotonicRegressionModel | None = None

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
            return {"method": "isotonic", "steps": len(self.isotonic.boundaries)}
        return {"method": "none"}


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
