"""Energy above the Materials Project convex hull, offline, in formation-energy space.

Reference: ``data/mp_formation_energy_gga_scale.csv.gz`` (153,235 MP entries as GGA/GGA+U
MP2020-scale formation energies; see its SOURCE in DATA.md) and the GGA elemental
references of matbench-discovery. The raw MP ``e_total`` table is mostly r2SCAN-scale and
must not be mixed with MLIP (GGA-like) energies: that is off by ~10 eV/atom.

Recipe for an MLIP energy (measured in shared/data SOURCE.md: MAE 0.021 eV/atom on MP-20
with SevenNet-0): a ComputedStructureEntry with MP2020 parameters (U values of pymatgen's
MPRelaxSet keyed on O or F, run type, POTCAR symbols) -> MaterialsProject2020Compatibility
(strict_anions='no_check') -> formation energy against the elemental references -> distance
to the hull of the reference formation energies over every sub-system of its chemical
system, elements at zero. Hulls are cached per chemical system and excluded ids.
"""

from __future__ import annotations

import gzip
import itertools
import json
import warnings
from functools import cache, lru_cache

import pandas as pd
from pymatgen.analysis.phase_diagram import PDEntry, PhaseDiagram
from pymatgen.core import Composition, Element, Structure
from pymatgen.entries.compatibility import MaterialsProject2020Compatibility
from pymatgen.entries.computed_entries import ComputedEntry, ComputedStructureEntry
from pymatgen.io.vasp.sets import MPRelaxSet

from crysvcd.datasets import MP_TABLE as REFERENCE_FILE
from crysvcd.datasets import data_path

ELEMENTS_FILE = "2023-02-07-mp-elemental-reference-entries.json.gz"
EF_RANGE = (-5.0, 3.0)  # rows outside are known conversion failures (SOURCE.md)
UNRELIABLE = {"Yb"}  # no elemental entry on the reference scale


class HullError(ValueError):
    """A composition the reference cannot place on a hull."""


def unreliable(composition: Composition) -> bool:
    """Yb (no elemental reference) and actinides are flagged, as SOURCE.md advises."""
    return any(el.symbol in UNRELIABLE or el.is_actinoid for el in composition.elements)


@cache
def elemental_references() -> dict[str, float]:
    """GGA/GGA+U MP2020 energy per atom of each element's ground state (eV/atom)."""
    with gzip.open(data_path(ELEMENTS_FILE), "rt") as fh:
        raw = json.load(fh)
    return {el: ComputedEntry.from_dict(d).energy_per_atom for el, d in raw.items()}


@cache
def _reference_table() -> dict[str, list[tuple[str, str, float]]]:
    df = pd.read_csv(data_path(REFERENCE_FILE))
    lo, hi = EF_RANGE
    df = df[(df["ef_per_atom_gga"] >= lo) & (df["ef_per_atom_gga"] <= hi)]
    table: dict[str, list[tuple[str, str, float]]] = {}
    for mid, formula, chemsys, ef in zip(
        df["material_id"], df["formula"], df["chemsys"], df["ef_per_atom_gga"]
    ):
        table.setdefault(chemsys, []).append((mid, formula, float(ef)))
    return table


@lru_cache(maxsize=512)
def _phase_diagram(elements: tuple[str, ...], exclude: tuple[str, ...]) -> PhaseDiagram:
    table = _reference_table()
    entries = [PDEntry(Composition(el), 0.0, name=el) for el in elements]
    for k in range(1, len(elements) + 1):
        for subset in itertools.combinations(elements, k):
            for mid, formula, ef in table.get("-".join(subset), []):
                if mid in exclude:
                    continue
                comp = Composition(formula)
                entries.append(PDEntry(comp, ef * comp.num_atoms, name=mid))
    return PhaseDiagram(entries)


def e_above_hull(
    composition: Composition | str, ef_per_atom: float, exclude: tuple[str, ...] = ()
) -> float:
    """Distance (eV/atom) of a formation energy to the reference hull; negative = below it."""
    comp = Composition(composition)
    elements = tuple(sorted(el.symbol for el in comp.elements))
    missing = [el for el in elements if el not in elemental_references()]
    if missing:
        raise HullError(f"{comp.reduced_formula}: no elemental reference for {missing}")
    pd_ = _phase_diagram(elements, tuple(sorted(exclude)))
    entry = PDEntry(comp, ef_per_atom * comp.num_atoms)
    return float(pd_.get_e_above_hull(entry, allow_negative=True))


def _mp2020_parameters(structure: Structure) -> dict:
    config = MPRelaxSet.CONFIG
    symbols = [el.symbol for el in structure.composition.elements]
    anion = max(symbols, key=lambda s: Element(s).X)
    u_table = config["INCAR"]["LDAUU"].get(anion, {}) if anion in ("O", "F") else {}
    hubbards = {s: u_table[s] for s in symbols if u_table.get(s, 0) > 0}
    potcars = config["POTCAR"]
    return {
        "run_type": "GGA+U" if hubbards else "GGA",
        "is_hubbard": bool(hubbards),
        "hubbards": hubbards,
        "potcar_symbols": [f"PBE {potcars[s]}" for s in symbols],
    }


def corrected_formation_energy(structure: Structure, energy: float) -> float:
    """MP2020-corrected formation energy per atom of a total (MLIP) energy in eV."""
    entry = ComputedStructureEntry(structure, energy, parameters=_mp2020_parameters(structure))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        processed = MaterialsProject2020Compatibility(strict_anions="no_check").process_entry(
            entry, clean=True
        )
    if processed is None:
        raise HullError(f"{structure.composition.reduced_formula}: MP2020 rejected the entry")
    refs = elemental_references()
    comp = structure.composition
    missing = [el.symbol for el in comp.elements if el.symbol not in refs]
    if missing:
        raise HullError(f"{comp.reduced_formula}: no elemental reference for {missing}")
    mu = sum(refs[el.symbol] * n for el, n in comp.items())
    return (processed.energy - mu) / comp.num_atoms
