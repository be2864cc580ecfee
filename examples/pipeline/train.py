"""Steps `train` and `train_b`: fit a random forest on train.csv, save it to
$TORCHJOB_MODEL_DIR/model.pkl, score it on the test.csv next to train.csv, and publish the
score as the output parameter `test-accuracy`: the file
$TORCHJOB_OUTPUT_DIR/output_parameters/test-accuracy, which a later step reads as
`${{ steps.train.outputs.test-accuracy }}` (metrics.json holds it too). Before that, a k-fold
cross-validation on train.csv gives `cv-accuracy`: steadier than 30 test rows, whose accuracy
moves in steps of 0.033."""

from __future__ import annotations

import argparse
import json
import os
import pickle
import time
from pathlib import Path

from forest import CRITERIA, RandomForest, read_csv


def publish(out: Path, values: dict[str, float | str]) -> None:
    """Output parameters (one file each, the value as text) and metrics.json."""
    params = out / "output_parameters"
    params.mkdir(parents=True, exist_ok=True)
    for name, value in values.items():
        (params / name).write_text(f"{value:.4f}" if isinstance(value, float) else value)
    (out / "metrics.json").write_text(json.dumps(values) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", required=True, help="train.csv; test.csv is read next to it")
    parser.add_argument("--n_estimator", type=int, default=10, help="trees in the forest")
    parser.add_argument("--criterion", choices=CRITERIA, default="gini")
    parser.add_argument("--max_depth", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folds", type=int, default=10, help="cross-validation folds, 0: none")
    args = parser.parse_args()

    features, rows, labels = read_csv(args.train)
    _, test_rows, test_labels = read_csv(Path(args.train).with_name("test.csv"))
    began = time.perf_counter()
    model = RandomForest(
        n_estimators=args.n_estimator,
        criterion=args.criterion,
        max_depth=args.max_depth,
        seed=args.seed,
    )
    results: dict[str, float | str] = {}
    if args.folds > 1:  # what the settings score on rows they were not fitted on
        results["cv-accuracy"] = round(model.cross_validate(rows, labels, args.folds), 4)
        print(f"{args.folds}-fold cross-validated accuracy {results['cv-accuracy']:.4f}")
    model.fit(rows, labels, features)
    train_acc = model.accuracy(rows, labels)
    results["test-accuracy"] = round(model.accuracy(test_rows, test_labels), 4)
    print(f"{model} on {len(rows)} rows, in {time.perf_counter() - began:.2f} s")
    print(f"train accuracy {train_acc:.4f}, test accuracy {results['test-accuracy']:.4f}")

    model_dir = Path(os.environ.get("TORCHJOB_MODEL_DIR", "model"))
    model_dir.mkdir(parents=True, exist_ok=True)
    with open(model_dir / "model.pkl", "wb") as fh:
        pickle.dump(model, fh)
    print(f"saved {model_dir / 'model.pkl'}")
    publish(Path(os.environ.get("TORCHJOB_OUTPUT_DIR", "output")), results)


if __name__ == "__main__":
    main()
