"""Pick one structure out of several diffusion samples by MLIP energy.

The diffusion model puts the right polymorph among its samples far more often than in any
single one, and the unrelaxed single-point energy per atom is a cheap, label-free way to
choose (measured figures: README, Stage II; `benchmarks/csp.py --best-of K`). No relaxation
is done here, so a choice costs one MLIP call per candidate. Candidates with atoms closer
than 0.5 A are passed over while a valid one exists: an MLIP can score such overlaps
spuriously low, and the pick would then be a broken structure.
"""

from __future__ import annotations

import numpy as np
from ase.calculators.calculator import Calculator
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from crysvcd.evaluate.mlip import get_calculator
from crysvcd.geometry import is_valid


def energies_per_atom(
    structures: list[Structure], calculator: Calculator | str = "sevennet"
) -> np.ndarray:
    """Single-point MLIP energy per atom (eV) of each structure; +inf where it fails."""
    calc = get_calculator(calculator) if isinstance(calculator, str) else calculator
    out = np.full(len(structures), np.inf)
    for i, s in enumerate(structures):
        atoms = AseAtomsAdaptor.get_atoms(s)
        atoms.calc = calc
        try:
            e = float(atoms.get_potential_energy()) / len(atoms)
        except Exception:  # an MLIP can fail on overlapping atoms: that sample is not chosen
            continue
        if np.isfinite(e):
            out[i] = e
    return out


def pick_lowest(energies: np.ndarray, valid: np.ndarray) -> int:
    """Index of the lowest energy among valid candidates; among all when none is valid."""
    e = np.asarray(energies, dtype=float)
    ok = np.asarray(valid, dtype=bool)
    if (ok & np.isfinite(e)).any():
        e = np.where(ok, e, np.inf)
    return int(np.argmin(e))


def lowest_energy(
    candidates: list[Structure], calculator: Calculator | str = "sevennet"
) -> tuple[Structure, float]:
    """The valid candidate with the lowest energy per atom, and that energy (+inf if none
    ran); see ``pick_lowest``."""
    if not candidates:
        raise ValueError("lowest_energy needs at least one candidate")
    e = energies_per_atom(candidates, calculator)
    best = pick_lowest(e, np.array([is_valid(c) for c in candidates]))
    return candidates[best], float(e[best])
