"""RFM user segmentation with scikit-learn, streamed: the user table is never loaded whole.

    python -m precision_marketing.training.segmentation --user-features <work>/features/user_features/ds=D/user_features.parquet \
        --output <work>/models/segments/ds=D/user_segments.parquet [--k 5 --seed 42]

Features: recency_days, log1p(frequency), log1p(monetary) (logs tame the long tails of spend and orders).
  pass 1  StandardScaler.partial_fit per batch; keep a uniform sample of <= SAMPLE_SIZE rows
  init    KMeans on the scaled sample -> starting centroids (k-means++ on one batch alone can miss a group)
  pass 2  MiniBatchKMeans.partial_fit per batch
  pass 3  predict per batch, write user_segments with a ParquetWriter, sum the inertia
Segments are named from the centroids by a value score (frequent, high-spending, recent users first),
so names do not depend on KMeans' arbitrary label order; segment_id is the position of the name (1 = champions). Metrics go to metrics.json next to the output.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.dataset as pads
import pyarrow.parquet as pq
import sklearn
from sklearn.cluster import KMeans, MiniBatchKMeans
from sklearn.metrics import silhouette_score
from sklearn.preprocessing import StandardScaler

FEATURES = ["recency_days", "frequency", "monetary"]
INPUT_COLUMNS = ["user_id", *FEATURES]
OUTPUT_SCHEMA = pa.schema(
    [
        ("user_id", pa.int64()),
        ("segment_id", pa.int32()),
        ("segment", pa.string()),
        ("recency_days", pa.int32()),
        ("frequency", pa.int32()),
        ("monetary", pa.float64()),
    ]
)
# the k=5 names in segment_id order; other k get generic names carrying the value rank
SEGMENT_NAMES = ["champions", "loyal", "promising", "at_risk", "hibernating"]
SAMPLE_SIZE = 10_000


def _open(path: Path) -> pads.Dataset:
    if not path.exists():
        raise FileNotFoundError(f"user features not found: {path}")
    dataset = pads.dataset(path, format="parquet")
    missing = [c for c in INPUT_COLUMNS if c not in dataset.schema.names]
    if missing:
        raise ValueError(f"{path}: missing column {missing[0]!r} (segmentation needs {INPUT_COLUMNS})")
    return dataset


def _chunks(dataset: pads.Dataset, batch_size: int) -> Iterator[pa.Table]:
    """Tables of batch_size rows (the last one smaller), whatever the row-group sizes of the files."""
    pending, pending_rows = [], 0
    for batch in dataset.to_batches(columns=INPUT_COLUMNS, batch_size=batch_size):
        pending.append(batch)
        pending_rows += batch.num_rows
        if pending_rows >= batch_size:
            table = pa.Table.from_batches(pending)
            for start in range(0, table.num_rows - batch_size + 1, batch_size):
                yield table.slice(start, batch_size)
            rest = table.num_rows % batch_size
            pending = table.slice(table.num_rows - rest).to_batches() if rest else []
            pending_rows = rest
    if pending_rows:
        yield pa.Table.from_batches(pending)


def _features(chunk: pa.Table, path: Path, first_row: int) -> np.ndarray:
    """[recency_days, log1p(frequency), log1p(monetary)]; NULL or negative values are an error."""
    columns = []
    for name in FEATURES:
        values = chunk.column(name).to_numpy(zero_copy_only=False).astype(float)
        bad = np.flatnonzero(np.isnan(values) | (values < 0))
        if bad.size:
            raise ValueError(
                f"{path}: column {name!r} must be a non-negative number, "
                f"got {values[bad[0]]} at row {first_row + bad[0] + 1}"
            )
        columns.append(values if name == "recency_days" else np.log1p(values))
    return np.column_stack(columns)


def _segment_names(centroids: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """(position in the name list per cluster label, names); position 0 = highest value score.

    With k=5 the RFM vocabulary: champions = best value score, hibernating = worst; of the three in
    between, at_risk is the least recent (bought well, but long ago), then loyal before promising by value.
    """
    recency, frequency, monetary = centroids.T  # scaled space: comparable units
    value_score = frequency + monetary - recency
    order = list(np.argsort(-value_score, kind="stable"))
    if len(order) == len(SEGMENT_NAMES):
        middle = order[1:-1]
        at_risk = max(middle, key=lambda label: recency[label])
        loyal, promising = [label for label in middle if label != at_risk]
        order = [order[0], loyal, promising, at_risk, order[-1]]
        names = SEGMENT_NAMES
    else:
        names = [f"value_rank_{r + 1}" for r in range(len(order))]
    position_of_label = np.empty(len(order), dtype=int)
    position_of_label[order] = np.arange(len(order))
    return position_of_label, names


def segment_users(
    user_features_path: Path, output_path: Path, *, k: int = 5, seed: int = 42, batch_size: int = 100_000
) -> dict:
    """Cluster users on RFM features, write user_segments Parquet + metrics.json, return the metrics."""
    started = time.perf_counter()
    user_features_path, output_path = Path(user_features_path), Path(output_path)
    dataset = _open(user_features_path)
    n_users = dataset.count_rows()
    if n_users == 0:
        raise ValueError(f"{user_features_path}: user_features is empty, there are no users to segment")
    if n_users < k:
        raise ValueError(f"{user_features_path}: {n_users} users cannot form k={k} segments")

    # pass 1: scaler + uniform sample (smallest random keys; the key stream does not depend on batch_size)
    scaler = StandardScaler()
    rng = np.random.default_rng(seed)
    sample, sample_keys = np.empty((0, len(FEATURES))), np.empty(0)
    first_row = 0
    for chunk in _chunks(dataset, batch_size):
        features = _features(chunk, user_features_path, first_row)
        first_row += chunk.num_rows
        scaler.partial_fit(features)
        sample = np.vstack([sample, features])
        sample_keys = np.concatenate([sample_keys, rng.random(len(features))])
        keep = np.argsort(sample_keys, kind="stable")[:SAMPLE_SIZE]
        sample, sample_keys = sample[keep], sample_keys[keep]
    scaled_sample = scaler.transform(sample)

    # pass 2: MiniBatchKMeans from centroids found on the sample
    start = KMeans(n_clusters=k, n_init=4, random_state=seed).fit(scaled_sample).cluster_centers_
    model = MiniBatchKMeans(n_clusters=k, init=start, n_init=1, random_state=seed)
    for chunk in _chunks(dataset, batch_size):
        model.partial_fit(scaler.transform(_features(chunk, user_features_path, 0)))

    # pass 3: label, write, measure
    position_of_label, names = _segment_names(model.cluster_centers_)
    sizes = np.zeros(k, dtype=int)
    inertia = 0.0
    output_path.parent.mkdir(parents=True, exist_ok=True)
    partial_path = output_path.with_name(output_path.name + ".partial")
    with pq.ParquetWriter(partial_path, OUTPUT_SCHEMA) as writer:
        for chunk in _chunks(dataset, batch_size):
            scaled = scaler.transform(_features(chunk, user_features_path, 0))
            labels = model.predict(scaled)
            inertia += float(((scaled - model.cluster_centers_[labels]) ** 2).sum())
            positions = position_of_label[labels]
            sizes += np.bincount(positions, minlength=k)
            writer.write_table(
                pa.table(
                    {
                        "user_id": chunk.column("user_id"),
                        "segment_id": pa.array(positions + 1, pa.int32()),
                        "segment": pa.array([names[p] for p in positions], pa.string()),
                        "recency_days": chunk.column("recency_days"),
                        "frequency": chunk.column("frequency"),
                        "monetary": chunk.column("monetary"),
                    }
                ).cast(OUTPUT_SCHEMA)
            )
    partial_path.replace(output_path)  # readers never see a half-written file

    sample_labels = model.predict(scaled_sample)
    with sklearn.config_context(working_memory=128):  # MB: pairwise distances of the sample, chunked
        silhouette = (
            float(silhouette_score(scaled_sample, sample_labels, random_state=seed))
            if 1 < len(np.unique(sample_labels)) < len(sample_labels)
            else None
        )
    centroids = scaler.inverse_transform(model.cluster_centers_)
    metrics = {
        "k": k,
        "seed": seed,
        "n_users": int(n_users),
        "inertia": inertia,
        "silhouette": silhouette,
        "silhouette_sample_size": len(scaled_sample),
        "segment_sizes": {names[r]: int(sizes[r]) for r in range(k)},
        "centroids": {
            names[position_of_label[label]]: {
                "recency_days": float(c[0]),
                "frequency": float(np.expm1(c[1])),
                "monetary": float(np.expm1(c[2])),
            }
            for label, c in enumerate(centroids)
        },
        "seconds": round(time.perf_counter() - started, 3),
    }
    (output_path.parent / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return metrics


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m precision_marketing.training.segmentation",
        description="Segment users on RFM features (streamed MiniBatchKMeans).",
    )
    parser.add_argument("--user-features", required=True, type=Path, help="user_features Parquet file or folder")
    parser.add_argument("--output", required=True, type=Path, help="user_segments Parquet file to write")
    parser.add_argument("--k", type=int, default=5, help="number of segments")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--batch-size", type=int, default=100_000, help="rows per streamed batch")
    args = parser.parse_args(argv)
    try:
        metrics = segment_users(args.user_features, args.output, k=args.k, seed=args.seed, batch_size=args.batch_size)
    except (ValueError, FileNotFoundError) as error:
        print(f"segmentation failed: {error}", file=sys.stderr)
        return 1
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
