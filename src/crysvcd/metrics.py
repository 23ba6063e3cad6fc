"""What a generated crystal is worth: known or novel, unique, and the shares of a set.

- ``known_match``: the id of a bundled pool crystal (MP-20 pieces and MP-20-like MPTS-52,
  11,796 structures) that the structure matches (pymatgen StructureMatcher with
  MatterGen's novelty tolerances), else "". ``mp_formula_known``: the reduced formula
  has an entry in the bundled Materials Project table (153,235 entries, compositions only),
  so a structure can be new while its composition is not.
- ``unique_flags``: the first of each group of mutually matching structures.
- ``share``: a proportion with its Wilson 95 % interval.
"""

from __future__ import annotations

import math
import warnings
from functools import cache

import pandas as pd
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.core import Composition, Structure

from crysvcd.datasets import MP_TABLE, data_path, structure_from_cif, training_pool

# MatterGen's novelty/uniqueness tolerances (looser than DiffCSP's CSP matching on stol)
MATCHER = StructureMatcher(ltol=0.2, stol=0.3, angle_tol=5)


@cache
def mp_reduced_formulas() -> frozenset[str]:
    table = pd.read_csv(data_path(MP_TABLE), usecols=["formula"])
    with warnings.catch_warnings():  # MP's noble-gas entries have no Pauling value
        warnings.filterwarnings("ignore", "No Pauling electronegativity", UserWarning)
        return frozenset(Composition(f).reduced_formula for f in table["formula"].unique())


def mp_formula_known(composition: Composition | str) -> bool:
    return Composition(composition).reduced_formula in mp_reduced_formulas()


@cache
def _pool_by_formula() -> dict[str, list[tuple[str, str]]]:
    pool = training_pool()
    out: dict[str, list[tuple[str, str]]] = {}
    for mid, formula, cif in zip(pool["material_id"], pool["pretty_formula"], pool["cif"]):
        out.setdefault(Composition(formula).reduced_formula, []).append((mid, cif))
    return out


@cache
def _pool_structure(cif: str) -> Structure:
    return structure_from_cif(cif)


def known_match(structure: Structure) -> str:
    """Material id of a pool crystal this structure matches, or ""."""
    candidates = _pool_by_formula().get(structure.composition.reduced_formula, [])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for mid, cif in candidates:
            try:
                if MATCHER.fit(structure, _pool_structure(cif)):
                    return mid
            except Exception:  # a matcher failure on odd cells is "no match"
                continue
    return ""


def unique_flags(structures: list[Structure | None]) -> list[bool]:
    """True for the first structure of each group of matching ones (None: False)."""
    kept: dict[str, list[Structure]] = {}
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for s in structures:
            if s is None:
                out.append(False)
                continue
            same = kept.setdefault(s.composition.reduced_formula, [])
            dup = False
            for other in same:
                try:
                    dup = MATCHER.fit(s, other)
                except Exception:
                    dup = False
                if dup:
                    break
            if not dup:
                same.append(s)
            out.append(not dup)
    return out


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion k/n (n > 0)."""
    if n == 0:
        return (math.nan, math.nan)
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def share(flags) -> dict:
    """{'k', 'n', 'share', 'lo', 'hi'} of a boolean series (NaN/None rows excluded)."""
    values = [
        bool(v) for v in flags if v is not None and not (isinstance(v, float) and math.isnan(v))
    ]
    k, n = sum(values), len(values)
    lo, hi = wilson(k, n)
    return {"k": k, "n": n, "share": k / n if n else math.nan, "lo": lo, "hi": hi}
