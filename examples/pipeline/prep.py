"""Step `prep`: split the iris CSV into train.csv and test.csv, stratified by species and
seeded, so every run makes the same split. Both go to $TORCHJOB_OUTPUT_DIR, the step's output
folder, which the steps after it name as `${{ steps.prep.output_dir }}`."""

from __future__ import annotations

import argparse
import csv
import os
import random
from collections import defaultdict
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", required=True, help="the CSV to split (last column: label)")
    parser.add_argument("--test_fraction", type=float, default=0.2)
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args()

    out = Path(os.environ.get("TORCHJOB_OUTPUT_DIR", "output"))
    out.mkdir(parents=True, exist_ok=True)
    with open(args.data, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows = [row for row in reader if row]

    by_label: dict[str, list[list[str]]] = defaultdict(list)
    for row in rows:
        by_label[row[-1]].append(row)
    rng = random.Random(args.seed)  # noqa: S311 (seeded: the same split every run)
    train: list[list[str]] = []
    test: list[list[str]] = []
    for label in sorted(by_label):  # each species in the same share in both files
        group = by_label[label]
        rng.shuffle(group)
        cut = round(len(group) * args.test_fraction)
        test += group[:cut]
        train += group[cut:]
    rng.shuffle(train)

    for name, part in (("train.csv", train), ("test.csv", test)):
        with open(out / name, "w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(header)
            writer.writerows(part)
    print(f"read {len(rows)} rows of {len(by_label)} classes from {args.data}")
    print(f"wrote {len(train)} rows to {out / 'train.csv'}")
    print(f"wrote {len(test)} rows to {out / 'test.csv'}")


if __name__ == "__main__":
    main()
