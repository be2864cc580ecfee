"""A training script written the way Alibaba PAI's Estimator runs it, unchanged under
`compat: pai`: hyperparameters from $PAI_CONFIG_DIR/hyperparameters.json, the data channel at
$PAI_INPUT_TRAIN, the model into $PAI_OUTPUT_MODEL (PAI: /ml/output/model/), and the score as
the output parameter `test-accuracy` in output_parameters/ beside it (PAI: /ml/output/; under
torchjob: $TORCHJOB_OUTPUT_DIR). A nearest-centroid classifier on iris: pure Python."""

from __future__ import annotations

import csv
import json
import os
import random
from pathlib import Path


def load_hyperparameters() -> dict[str, object]:
    path = Path(os.environ.get("PAI_CONFIG_DIR", "/ml/input/config/")) / "hyperparameters.json"
    return dict(json.loads(path.read_text()))


def main() -> None:
    hps = load_hyperparameters()
    with open(os.environ["PAI_INPUT_TRAIN"], newline="") as f:
        rows = [(list(map(float, r[:4])), r[4]) for r in list(csv.reader(f))[1:]]
    random.Random(int(str(hps.get("seed", 0)))).shuffle(rows)  # noqa: S311 (a split, not a secret)
    cut = int(len(rows) * (1 - float(str(hps.get("test_fraction", 0.2)))))
    train, test = rows[:cut], rows[cut:]
    centroids: dict[str, list[float]] = {}
    for label in sorted({y for _, y in train}):
        points = [x for x, y in train if y == label]
        centroids[label] = [sum(col) / len(points) for col in zip(*points, strict=True)]

    def predict(x: list[float]) -> str:
        def distance(c: str) -> float:
            return sum((a - b) ** 2 for a, b in zip(x, centroids[c], strict=True))

        return min(centroids, key=distance)

    accuracy = sum(predict(x) == y for x, y in test) / len(test)
    print(f"trained on {len(train)} rows; test accuracy {accuracy:.4f}")
    model = Path(os.environ.get("PAI_OUTPUT_MODEL", "/ml/output/model/"))
    model.mkdir(parents=True, exist_ok=True)
    (model / "centroids.json").write_text(json.dumps(centroids))
    out = Path(os.environ.get("TORCHJOB_OUTPUT_DIR", "/ml/output")) / "output_parameters"
    out.mkdir(parents=True, exist_ok=True)
    (out / "test-accuracy").write_text(f"{accuracy:.4f}")


if __name__ == "__main__":
    main()
