"""Is a formula likely a metal? A composition classifier of P(band gap > 0), the reliability
flag of the dielectric surrogate.

The e3nn surrogate was trained on insulators (DFPT sets); a metal's dielectric constant
diverges, and for intermetallics that Stage I's valence rules call ionic (ZrTiSb as Zr+ Ti2+
Sb3-, ZrSi, Co2Ru2C2) the surrogate returns 50-280, which a campaign would count as hits.
This classifier flags them: a logistic regression (``evaluate.screen.Screen``) over the
screen's composition descriptors and element fractions, fitted on the training pool's
Materials Project (PBE) band gaps, gapped = gap > 0, and shipped as
``weights/gap_screen.json`` (with ``gap_screen.meta.json``: its data and figures).

Only a confident call counts: a formula is "likely a metal" when P(gapped) <
``METAL_BELOW`` = 0.05. On the pool's dev split 99.5 % of the formulas it flags there are
metals in MP and 99.2 % of the insulators pass; of the 2,352 bundled DFPT crystals (all
gapped in DFT), 1.5 % are flagged, 4 of the 78 with epsilon >= 50 (TiFe2Si twice,
HfSiRu2, Sr2SnHg: narrow-gap intermetallics, where epsilon diverges as the gap closes).
``python benchmarks/gap.py`` refits it and prints those figures and other cuts (README,
dielectric campaign). PBE underestimates gaps, so "gapped" includes narrow-gap compounds.
"""

from __future__ import annotations

import json
import platform
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.core import Composition

from crysvcd.evaluate.screen import COMPOSITION_FEATURES, Screen, element_features, features

SHIPPED = Path(__file__).resolve().parents[1] / "weights" / "gap_screen.json"
METAL_BELOW = 0.05  # P(gapped) under which a formula counts as a metal


def fit(pool: pd.DataFrame, l2: float = 0.01) -> Screen:
    """The classifier on a pool's ``cell_formula`` and ``band_gap`` columns, one row per
    reduced formula (the first polymorph listed)."""
    pool = pool.drop_duplicates("pretty_formula")
    names = COMPOSITION_FEATURES + element_features(pool["cell_formula"])
    x = descriptors(pool["cell_formula"], names)
    return Screen.fit(x, (pool["band_gap"] > 0).to_numpy(float), names, "gapped", l2=l2)


def descriptors(formulas, names: tuple[str, ...]) -> np.ndarray:
    return np.stack([features(Composition(f), "ionic", "", names) for f in formulas])


@cache
def shipped() -> Screen:
    return Screen.load(SHIPPED)


def p_gapped(formulas, model: Screen | None = None) -> np.ndarray:
    """P(band gap > 0) of each formula (NaN for an empty one)."""
    model = model or shipped()
    formulas = list(formulas)
    out = np.full(len(formulas), np.nan)
    ok = [i for i, f in enumerate(formulas) if isinstance(f, str) and f.strip()]
    if ok:
        score = model.score(descriptors([formulas[i] for i in ok], model.features))
        out[ok] = 1.0 / (1.0 + np.exp(-score))
    return out


def likely_metal(formulas, model: Screen | None = None) -> np.ndarray:
    """True where the classifier is confident the formula is a metal."""
    return p_gapped(formulas, model) < METAL_BELOW


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
            out.append(f"likely a metal: P(gap > 0) < {METAL_BELOW:g}" if is_metal else "")
    return out


def export(model: Screen, path: Path, figures: dict) -> None:
    """The model and its sidecar: where it came from and what it measured."""
    model.save(path)
    meta = {
        "what": "P(band gap > 0) from composition; crysvcd.evaluate.gap",
        "data": "crysvcd training pool (MP-20 pieces + MPTS-52 MP-20-like), split 'train', "
        "one row per reduced formula; label: Materials Project PBE band_gap > 0",
        "command": "python benchmarks/gap.py --export src/crysvcd/weights/gap_screen.json",
        "python": platform.python_version(),
        "figures": figures,
    }
    path.with_name(path.stem + ".meta.json").write_text(json.dumps(meta, indent=2) + "\n")
