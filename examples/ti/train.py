"""A training script written the way Tencent TI (and SageMaker) run it, unchanged under
`compat: ti`: hyperparameters as `--name value` with booleans as `--standardize True` (parsed
with a str2bool, as TI's demos do), two data channels in $TM_CHANNEL_TRAIN and
$TM_CHANNEL_TEST, and the model into $TM_MODEL_DIR. A nearest-centroid classifier on iris,
pure Python: `--standardize True` scales each feature by the training data's spread."""

from __future__ import annotations

import argparse
import csv
import json
import os
from pathlib import Path


def str2bool(text: str) -> bool:
    return text.lower() in ("true", "1", "yes")


def read(folder_or_file: str) -> list[tuple[list[float], str]]:
    path = Path(folder_or_file)
    files = sorted(path.glob("*.csv")) if path.is_dir() else [path]
    rows = []
    for file in files:
        with file.open(newline="") as f:
            rows += [(list(map(float, r[:4])), r[4]) for r in list(csv.reader(f))[1:]]
    return rows


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--standardize", type=str2bool, default=False)
    p.add_argument("--epochs", type=int, default=1)  # TI's demos take it; one pass suffices
    args = p.parse_args()
    train, test = read(os.environ["TM_CHANNEL_TRAIN"]), read(os.environ["TM_CHANNEL_TEST"])
    cols = list(zip(*(x for x, _ in train), strict=True))
    spread = [max(c) - min(c) if args.standardize else 1.0 for c in cols]
    scale = [[v / s for v, s in zip(x, spread, strict=True)] for x, _ in train]
    centroids: dict[str, list[float]] = {}
    for label in sorted({y for _, y in train}):
        points = [s for s, (_, y) in zip(scale, train, strict=True) if y == label]
        centroids[label] = [sum(c) / len(points) for c in zip(*points, strict=True)]

    def predict(x: list[float]) -> str:
        s = [v / d for v, d in zip(x, spread, strict=True)]

        def distance(c: str) -> float:
            return sum((a - b) ** 2 for a, b in zip(s, centroids[c], strict=True))

        return min(centroids, key=distance)

    accuracy = sum(predict(x) == y for x, y in test) / len(test)
    print(f"standardize={args.standardize}: test accuracy {accuracy:.4f} on {len(test)} rows")
    model = Path(os.environ.get("TM_MODEL_DIR", "model"))
    model.mkdir(parents=True, exist_ok=True)
    (model / "model.json").write_text(json.dumps({"spread": spread, "centroids": centroids}))


if __name__ == "__main__":
    main()
