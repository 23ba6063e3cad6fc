"""Is a formula likely a metal? The reliability flag of the dielectric surrogate.

The e3nn surrogate was trained on insulators (DFPT sets); a metal's dielectric constant
diverges, and for intermetallics that Stage I's valence rules call ionic (ZrSi, Co2Ru2C2,
ZrC, FeAs) the surrogate returns 50-900, which a campaign would count as hits. Two answers,
in order: where the bundled pool holds the formula, Materials Project's PBE band gaps (a
metal when every polymorph there has gap 0); otherwise a composition classifier of
P(gap > 0), the mean log-odds of gradient-boosted trees and a logistic regression over the
screen's composition descriptors and element fractions (``GapModel``), fitted on the pool's
train rows that have a band gap, and shipped as ``weights/gap_trees.npz`` and
``weights/gap_logistic.json`` (with ``gap_trees.meta.json``: data, command, figures).

Only a confident call counts: a formula the pool does not hold is "likely a metal" when
P(gapped) < ``METAL_BELOW`` = 0.05. On the 375 dev formulas that the train split does not
hold (dev AUC 0.956), it flags 53.1 %, of which 98.5 % are metals in MP, and 97.3 % of the
insulators pass; of the 2,352 bundled DFPT crystals (all gapped in DFT) the whole flag
calls 1.6 % a metal (11 of them formulas whose every pool polymorph has gap 0 in MP), 9 of
the 78 with epsilon >= 50 (narrow-gap intermetallics such as TiFe2Si, where epsilon
diverges as the gap closes). ``python benchmarks/gap.py --compare`` refits it and prints
those figures, other cuts and each classifier alone (README, dielectric campaign). PBE
underestimates gaps, so "gapped" includes narrow-gap compounds.
"""

from __future__ import annotations

import json
import platform
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.core import Composition

from crysvcd.evaluate.screen import COMPOSITION_FEATURES, Screen, element_features, features
from crysvcd.evaluate.trees import Trees

WEIGHTS = Path(__file__).resolve().parents[1] / "weights"
SHIPPED = (WEIGHTS / "gap_trees.npz", WEIGHTS / "gap_logistic.json")
METAL_BELOW = 0.05  # P(gapped) under which a formula counts as a metal
# intensive descriptors only: a gap belongs to the compound, not to how many formula units
# a cell holds (log_n_atoms), and every pool formula is an MP entry (mp_formula_known)
GAP_FEATURES = tuple(
    f for f in COMPOSITION_FEATURES if f not in ("log_n_atoms", "mp_formula_known")
)


@dataclass
class GapModel:
    """Two classifiers on the same descriptors, their log-odds averaged: the trees catch
    more metals (transition-metal carbides, pnictides), the logistic regression is surer
    about insulators; the mean flags about as many metals as the trees alone and loses as
    few DFPT insulators as the regression alone (``benchmarks/gap.py``)."""

    trees: Trees
    logistic: Screen

    @property
    def features(self) -> tuple[str, ...]:
        return self.trees.features

    def score(self, x: np.ndarray) -> np.ndarray:
        return (self.trees.score(x) + self.logistic.score(x)) / 2

    def save(self, trees: Path, logistic: Path) -> None:
        self.trees.save(trees)
        self.logistic.save(logistic)

    @classmethod
    def load(cls, trees: Path, logistic: Path) -> GapModel:
        model = cls(Trees.load(trees), Screen.load(logistic))
        if model.logistic.features != model.features:
            raise ValueError(f"{trees} and {logistic} use different descriptors")
        return model


def labelled(pool: pd.DataFrame) -> pd.DataFrame:
    """The rows of a pool that have a band gap (MPTS-52 rows have none), one per reduced
    formula (the first polymorph listed)."""
    return pool[pool["band_gap"].notna()].drop_duplicates("pretty_formula")


def fit(pool: pd.DataFrame, seed: int = 0) -> GapModel:
    """The classifier on a pool's ``cell_formula`` and ``band_gap`` columns (the trees need
    scikit-learn)."""
    pool = labelled(pool)
    names = GAP_FEATURES + element_features(pool["cell_formula"])
    x = descriptors(pool["cell_formula"], names)
    y = (pool["band_gap"] > 0).to_numpy()
    return GapModel(Trees.fit(x, y, names, seed=seed),
                    Screen.fit(x, y.astype(float), names, "gapped", l2=0.01))  # fmt: skip


def descriptors(formulas, names: tuple[str, ...]) -> np.ndarray:
    return np.stack([features(Composition(f), "ionic", "", names) for f in formulas])


@cache
def shipped() -> GapModel:
    return GapModel.load(*SHIPPED)


@cache
def _known_gaps() -> dict[str, float]:
    from crysvcd.datasets import training_pool

    pool = training_pool()
    pool = pool[pool["band_gap"].notna()]
    return pool.groupby(pool["cell_formula"].map(_reduced))["band_gap"].max().to_dict()


def mp_gaps(formulas) -> np.ndarray:
    """The largest Materials Project band gap of each formula's polymorphs in the bundled
    pool (NaN where the pool does not hold the formula)."""
    known = _known_gaps()
    return np.array([known.get(_reduced(f), np.nan) for f in formulas], dtype=float)


def _reduced(formula) -> str:
    if not isinstance(formula, str) or not formula.strip():
        return ""
    return Composition(formula).reduced_formula


def p_gapped(formulas, model: GapModel | None = None) -> np.ndarray:
    """The classifier's P(band gap > 0) of each formula (NaN for an empty one)."""
    model = model or shipped()
    formulas = list(formulas)
    out = np.full(len(formulas), np.nan)
    ok = [i for i, f in enumerate(formulas) if _reduced(f)]
    if ok:
        score = model.score(descriptors([formulas[i] for i in ok], model.features))
        out[ok] = 1.0 / (1.0 + np.exp(-score))
    return out


def likely_metal(formulas, below: float = METAL_BELOW, model: GapModel | None = None) -> np.ndarray:
    """True where a formula is a metal in Materials Project (every polymorph in the bundled
    pool has gap 0), or, for a formula the pool does not hold, where the classifier's
    P(gapped) is under ``below``."""
    formulas = list(formulas)
    return with_mp_gaps(formulas, p_gapped(formulas, model)) < below


def with_mp_gaps(formulas, p: np.ndarray) -> np.ndarray:
    """P(gapped) ``p`` with Materials Project's answer (1 gapped, 0 metal) where the bundled
    pool holds the formula: the data the classifier learnt from beats its guess."""
    gap = mp_gaps(formulas)
    return np.where(np.isnan(gap), p, (gap > 0).astype(float))


def why_metal(formula: str) -> str:
    """Why ``likely_metal`` calls a formula a metal, in words."""
    if mp_gaps([formula])[0] == 0:
        return "a metal in Materials Project (gap 0 in every polymorph of the training pool)"
    return f"likely a metal: P(gap > 0) {p_gapped([formula])[0]:.3f} < {METAL_BELOW:g}"


def blockers(label: str, formulas) -> list[str]:
    """Why each formula's ``label`` would not count, from its composition alone ("" where
    it would). "dielectric": an element the shipped surrogate never saw in training (it
    refuses those, ``dielectric.predict``), or likely a metal (a campaign does not count
    a metal's epsilon)."""
    if label != "dielectric":
        raise ValueError(f"no composition rules for the {label!r} label (known: dielectric)")
    from crysvcd.dielectric.model import load_model
    from crysvcd.dielectric.predict import unseen_elements

    model = load_model()
    formulas = list(formulas)
    metal = likely_metal(formulas)
    out = []
    for formula, is_metal in zip(formulas, metal):
        unseen = unseen_elements((el.symbol for el in Composition(formula).elements), model)
        if unseen:
            out.append(f"unseen element: {', '.join(unseen)} not in the surrogate's training data")
        else:
            out.append(why_metal(formula) if is_metal else "")
    return out


def _version(package: str) -> str:
    from importlib.metadata import version

    return version(package)


def export(model: GapModel, path: Path, figures: dict) -> None:
    """The model (``path``: the trees; the regression beside it, as in ``SHIPPED``) and its
    sidecar: where it came from and what it measured."""
    model.save(path, path.with_name("gap_logistic.json"))
    meta = {
        "what": "P(band gap > 0) from composition; crysvcd.evaluate.gap",
        "model": "mean log-odds of a scikit-learn HistGradientBoostingClassifier (400 "
        "iterations, learning rate 0.05, seed 0; exported to arrays, crysvcd.evaluate.trees, "
        "evaluated in numpy) and a logistic regression (evaluate.screen.Screen, l2 0.01, "
        "gap_logistic.json) on the same descriptors",
        "data": "crysvcd training pool, split 'train', the rows with a band gap (the MP-20 "
        "pieces; MPTS-52 rows have none), one row per reduced formula; label: Materials "
        "Project PBE band_gap > 0",
        "command": "python benchmarks/gap.py --export src/crysvcd/weights/gap_trees.npz",
        "python": platform.python_version(),
        "scikit-learn": _version("scikit-learn"),
        "figures": figures,
    }
    path.with_name(path.stem + ".meta.json").write_text(json.dumps(meta, indent=2) + "\n")
