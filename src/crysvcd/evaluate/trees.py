"""A binary gradient-boosted tree ensemble, stored as arrays and evaluated in numpy.

Fitting uses scikit-learn's ``HistGradientBoostingClassifier`` (``Trees.fit``); using a
fitted ensemble needs only numpy, so a shipped flag (``evaluate.gap``) adds no runtime
dependency. Every tree's nodes sit in one flat array (children indexed globally), and all
trees are walked at once, one level per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

FIELDS = ("feature", "threshold", "left", "right", "value", "leaf", "missing_left", "roots")


@dataclass
class Trees:
    """Log-odds = ``baseline`` + the sum over trees of the leaf each row lands in; at a node a
    row goes left when its ``feature`` is at most ``threshold`` (a NaN goes the node's
    ``missing_left`` way)."""

    features: tuple[str, ...]
    baseline: float
    feature: np.ndarray  # per node, over all trees
    threshold: np.ndarray
    left: np.ndarray
    right: np.ndarray
    value: np.ndarray
    leaf: np.ndarray
    missing_left: np.ndarray
    roots: np.ndarray  # the first node of each tree
    n_train: int
    n_hits: int

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, features: tuple[str, ...], seed: int = 0,
            max_iter: int = 400, learning_rate: float = 0.05) -> Trees:  # fmt: skip
        """Fit on descriptors ``x`` and 0/1 labels ``y`` (needs scikit-learn)."""
        try:
            from sklearn.ensemble import HistGradientBoostingClassifier
        except ImportError as exc:
            raise ImportError("fitting a tree ensemble needs scikit-learn "
                              "(pip install 'crysvcd[bench]')") from exc  # fmt: skip
        y = np.asarray(y, dtype=int)
        if x.shape != (len(y), len(features)):
            raise ValueError(f"descriptors of shape {x.shape} for {len(y)} labels and "
                             f"{len(features)} features")  # fmt: skip
        if len(y) < 10 or y.min() == y.max():
            raise ValueError(f"need at least 10 labelled rows of both kinds, got {len(y)} "
                             f"({int(y.sum())} positive)")  # fmt: skip
        model = HistGradientBoostingClassifier(
            max_iter=max_iter, learning_rate=learning_rate, random_state=seed
        ).fit(x, y)
        # scikit-learn keeps the fitted trees in _predictors (one per iteration, one tree each
        # for a binary task); their node arrays hold shrunk leaf values, so the sum is exact
        nodes = [tree[0].nodes for tree in model._predictors]
        starts = np.cumsum([0] + [len(n) for n in nodes[:-1]])
        flat = np.concatenate(nodes)
        shift = np.concatenate([np.full(len(n), s) for n, s in zip(nodes, starts)])
        trees = cls(
            features=tuple(features),
            baseline=float(np.ravel(model._baseline_prediction)[0]),
            feature=flat["feature_idx"].astype(np.int32),
            threshold=flat["num_threshold"].astype(np.float64),
            left=(flat["left"] + shift).astype(np.int32),
            right=(flat["right"] + shift).astype(np.int32),
            value=flat["value"].astype(np.float64),
            leaf=flat["is_leaf"].astype(bool),
            missing_left=flat["missing_go_to_left"].astype(bool),
            roots=starts.astype(np.int32),
            n_train=len(y),
            n_hits=int(y.sum()),
        )
        ours, theirs = trees.score(x), model.decision_function(x)
        if not np.allclose(ours, theirs, atol=1e-8):  # the export must be the fitted model
            raise RuntimeError(f"tree export differs from scikit-learn by "
                               f"{np.abs(ours - theirs).max():.3g}")  # fmt: skip
        return trees

    def score(self, x: np.ndarray) -> np.ndarray:
        """Log-odds of each row of ``x`` (descriptors in the order of ``features``)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != len(self.features):
            raise ValueError(f"descriptors of shape {x.shape} for {len(self.features)} features")
        node = np.broadcast_to(self.roots, (len(x), len(self.roots))).copy()
        rows = np.arange(len(x))[:, None]
        while not self.leaf[node].all():
            v = x[rows, self.feature[node]]
            go_left = np.where(np.isnan(v), self.missing_left[node], v <= self.threshold[node])
            step = np.where(go_left, self.left[node], self.right[node])
            node = np.where(self.leaf[node], node, step)
        return self.baseline + self.value[node].sum(axis=1)

    def save(self, path: str | Path) -> None:
        arrays = {name: getattr(self, name) for name in FIELDS}
        np.savez_compressed(path, features=np.array(self.features), baseline=self.baseline,
                            n=np.array([self.n_train, self.n_hits]), **arrays)  # fmt: skip

    @classmethod
    def load(cls, path: str | Path) -> Trees:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"no tree ensemble {path}")
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in FIELDS + ("features", "baseline", "n") if k not in data]
            if missing:
                raise ValueError(f"{path}: not a tree ensemble (no {', '.join(missing)})")
            n_train, n_hits = (int(v) for v in data["n"])
            return cls(features=tuple(str(f) for f in data["features"]),
                       baseline=float(data["baseline"]), n_train=n_train, n_hits=n_hits,
                       **{k: data[k] for k in FIELDS})  # fmt: skip
