"""Step `evaluate`: load the two trained forests, check on test.csv that each scores what its
training step published, keep the better one as $TORCHJOB_MODEL_DIR/best.pkl, and publish
which it was (`best`: a or b) and its `test-accuracy` as output parameters."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import sys
from pathlib import Path

from forest import RandomForest, read_csv

TOLERANCE = 0.00005  # the published accuracies are rounded to 4 digits


def publish(out: Path, values: dict[str, float | str]) -> None:
    """Output parameters (one file each, the value as text) and metrics.json."""
    params = out / "output_parameters"
    params.mkdir(parents=True, exist_ok=True)
    for name, value in values.items():
        (params / name).write_text(f"{value:.4f}" if isinstance(value, float) else value)
    (out / "metrics.json").write_text(json.dumps(values) + "\n")


def load(path: str) -> RandomForest:
    # Only load pickles you made yourself: these come from the train steps of this pipeline.
    with open(path, "rb") as fh:
        model = pickle.load(fh)  # noqa: S301
    if not isinstance(model, RandomForest):
        sys.exit(f"{path} holds a {type(model).__name__}, not a forest.RandomForest")
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model_a", required=True)
    parser.add_argument("--acc_a", type=float, required=True, help="what train published")
    parser.add_argument("--model_b", required=True)
    parser.add_argument("--acc_b", type=float, required=True, help="what train_b published")
    parser.add_argument("--test", required=True, help="test.csv")
    args = parser.parse_args()

    _, rows, labels = read_csv(args.test)
    scores: dict[str, float] = {}
    print(f"{'model':<6} {'published':>9} {'measured':>9}  forest")
    for name, path, published in (
        ("a", args.model_a, args.acc_a),
        ("b", args.model_b, args.acc_b),
    ):
        model = load(path)
        measured = round(model.accuracy(rows, labels), 4)
        print(f"{name:<6} {published:>9.4f} {measured:>9.4f}  {model!r}")
        if abs(measured - published) > TOLERANCE:
            sys.exit(f"model {name} ({path}) scores {measured:.4f}, not the published {published}")
        scores[name] = measured

    best = max(scores, key=lambda n: (scores[n], n == "a"))  # a tie: keep a
    model_dir = Path(os.environ.get("TORCHJOB_MODEL_DIR", "model"))
    model_dir.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(args.model_a if best == "a" else args.model_b, model_dir / "best.pkl")
    print(f"best: {best}, test accuracy {scores[best]:.4f} on {len(rows)} rows")
    print(f"copied to {model_dir / 'best.pkl'}")
    publish(
        Path(os.environ.get("TORCHJOB_OUTPUT_DIR", "output")),
        {"best": best, "test-accuracy": scores[best]},
    )


if __name__ == "__main__":
    main()
