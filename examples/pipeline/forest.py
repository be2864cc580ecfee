"""A tiny random forest in pure Python (no numpy, no scikit-learn), for the pipeline example.

Each tree grows on a bootstrap sample of the training rows and, at every node, looks at a
random subset of the features only; the forest predicts by majority vote. It is a module of
its own so that train.py pickles a `forest.RandomForest` and evaluate.py, which imports this
module too, can load it (torchjob puts the project folder on PYTHONPATH).
"""

from __future__ import annotations

import csv
import math
import random
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

Row = tuple[float, ...]
CRITERIA = ("gini", "entropy")


def read_csv(path: str | Path) -> tuple[list[str], list[Row], list[str]]:
    """A CSV of numeric feature columns and a last label column: (feature names, rows,
    labels)."""
    with open(path, newline="") as fh:
        reader = csv.reader(fh)
        header = next(reader)
        rows: list[Row] = []
        labels: list[str] = []
        for line in reader:
            if line:
                rows.append(tuple(float(v) for v in line[:-1]))
                labels.append(line[-1])
    return header[:-1], rows, labels


def impurity(counts: Counter[str], total: int, criterion: str) -> float:
    """Gini impurity (1 - sum p^2) or entropy (-sum p log2 p) of a node's class counts."""
    if total == 0:
        return 0.0
    if criterion == "gini":
        return 1.0 - sum((n / total) ** 2 for n in counts.values())
    return -sum(n / total * math.log2(n / total) for n in counts.values() if n)


@dataclass
class Node:
    """A split (`feature` <= `threshold` goes left) or, when `label` is set, a leaf."""

    label: str | None = None
    feature: int = -1
    threshold: float = 0.0
    left: Node | None = None
    right: Node | None = None

    def predict(self, row: Row) -> str:
        node = self
        while node.label is None:
            assert node.left is not None and node.right is not None
            node = node.left if row[node.feature] <= node.threshold else node.right
        return node.label


class DecisionTree:
    """A CART classification tree; each split considers `max_features` random features."""

    def __init__(
        self, criterion: str, max_depth: int, max_features: int, min_leaf: int, rng: random.Random
    ) -> None:
        self.criterion = criterion
        self.max_depth = max_depth
        self.max_features = max_features
        self.min_leaf = min_leaf
        self.rng = rng
        self.root = Node(label="?")

    def fit(self, rows: Sequence[Row], labels: Sequence[str]) -> DecisionTree:
        self.root = self._grow(list(range(len(rows))), rows, labels, 0)
        del self.rng  # not needed to predict: keep the pickle small
        return self

    def predict(self, row: Row) -> str:
        return self.root.predict(row)

    def _grow(self, idx: list[int], rows: Sequence[Row], labels: Sequence[str], depth: int) -> Node:
        counts = Counter(labels[i] for i in idx)
        majority = min(counts, key=lambda c: (-counts[c], c))  # ties: the first name
        if depth >= self.max_depth or len(counts) == 1 or len(idx) < 2 * self.min_leaf:
            return Node(label=majority)
        split = self._best_split(idx, rows, labels, counts)
        if split is None:
            return Node(label=majority)
        feature, threshold = split
        left = [i for i in idx if rows[i][feature] <= threshold]
        right = [i for i in idx if rows[i][feature] > threshold]
        return Node(
            feature=feature,
            threshold=threshold,
            left=self._grow(left, rows, labels, depth + 1),
            right=self._grow(right, rows, labels, depth + 1),
        )

    def _best_split(
        self, idx: list[int], rows: Sequence[Row], labels: Sequence[str], counts: Counter[str]
    ) -> tuple[int, float] | None:
        """The (feature, threshold) that lowers the weighted impurity most, trying every
        midpoint between two distinct values of each feature drawn for this node."""
        total = len(idx)
        parent = impurity(counts, total, self.criterion)
        features = self.rng.sample(range(len(rows[0])), self.max_features)
        best: tuple[float, int, float] | None = None
        for feature in features:
            ordered = sorted(idx, key=lambda i: rows[i][feature])
            left: Counter[str] = Counter()
            right = Counter(counts)
            for pos in range(total - 1):
                label = labels[ordered[pos]]
                left[label] += 1
                right[label] -= 1
                here, after = rows[ordered[pos]][feature], rows[ordered[pos + 1]][feature]
                n_left = pos + 1
                if here == after or n_left < self.min_leaf or total - n_left < self.min_leaf:
                    continue
                score = (
                    n_left * impurity(left, n_left, self.criterion)
                    + (total - n_left) * impurity(right, total - n_left, self.criterion)
                ) / total
                gain = parent - score
                if gain > 1e-12 and (best is None or gain > best[0]):
                    best = (gain, feature, (here + after) / 2)
        return None if best is None else (best[1], best[2])


class RandomForest:
    """Bagged decision trees voting by majority."""

    def __init__(
        self,
        n_estimators: int = 10,
        criterion: str = "gini",
        max_depth: int = 6,
        max_features: int | None = None,
        min_leaf: int = 1,
        seed: int = 0,
    ) -> None:
        if criterion not in CRITERIA:
            raise ValueError(f"criterion must be one of {CRITERIA}, not {criterion!r}")
        if n_estimators < 1:
            raise ValueError("n_estimators must be at least 1")
        self.n_estimators = n_estimators
        self.criterion = criterion
        self.max_depth = max_depth
        self.max_features = max_features
        self.min_leaf = min_leaf
        self.seed = seed
        self.features: list[str] = []
        self.trees: list[DecisionTree] = []

    def fit(
        self, rows: Sequence[Row], labels: Sequence[str], features: Sequence[str] = ()
    ) -> RandomForest:
        rng = random.Random(self.seed)  # noqa: S311 (seeded for repeatable models, not secrets)
        width = len(rows[0])
        self.features = list(features) or [f"x{i}" for i in range(width)]
        # sqrt(features), as scikit-learn's default for classification: 2 of iris's 4
        k = self.max_features or max(1, round(math.sqrt(width)))
        self.trees = []
        for _ in range(self.n_estimators):
            sample = [rng.randrange(len(rows)) for _ in rows]  # a bootstrap sample
            tree = DecisionTree(self.criterion, self.max_depth, k, self.min_leaf, rng)
            self.trees.append(tree.fit([rows[i] for i in sample], [labels[i] for i in sample]))
        return self

    def predict_one(self, row: Row) -> str:
        votes = Counter(tree.predict(row) for tree in self.trees)
        return min(votes, key=lambda c: (-votes[c], c))

    def predict(self, rows: Sequence[Row]) -> list[str]:
        return [self.predict_one(r) for r in rows]

    def accuracy(self, rows: Sequence[Row], labels: Sequence[str]) -> float:
        """The share of rows predicted right."""
        hits = sum(p == y for p, y in zip(self.predict(rows), labels, strict=True))
        return hits / len(labels) if labels else 0.0

    def cross_validate(self, rows: Sequence[Row], labels: Sequence[str], folds: int) -> float:
        """k-fold cross-validated accuracy: a forest with these settings fitted on all folds but
        one and scored on that one, for each fold in turn; the share of rows predicted right.
        Steadier than a small test set; `self` is left as it was."""
        order = list(range(len(rows)))
        random.Random(self.seed).shuffle(order)  # noqa: S311 (a repeatable split)
        hits = 0
        for k in range(folds):
            held = set(order[k::folds])
            fit = [i for i in order if i not in held]
            other = RandomForest(
                self.n_estimators,
                self.criterion,
                self.max_depth,
                self.max_features,
                self.min_leaf,
                self.seed + 1 + k,
            ).fit([rows[i] for i in fit], [labels[i] for i in fit])
            hits += sum(other.predict_one(rows[i]) == labels[i] for i in held)
        return hits / len(rows)

    def __repr__(self) -> str:
        return (
            f"RandomForest(n_estimators={self.n_estimators}, criterion={self.criterion!r}, "
            f"max_depth={self.max_depth}, seed={self.seed})"
        )
