"""Relax positions and cell together (ASE FrechetCellFilter) with FIRE or BFGS."""

from __future__ import annotations

import math
import time
import warnings
from dataclasses import dataclass

import numpy as np
from ase.calculators.calculator import Calculator
from ase.constraints import FixSymmetry
from ase.filters import FrechetCellFilter
from ase.optimize import BFGS, FIRE
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor

from crysvcd import geometry
from crysvcd.evaluate.mlip import check_supported_elements

OPTIMIZERS = {"FIRE": FIRE, "BFGS": BFGS}  # the names of settings.OPTIMIZERS


class RelaxationFailed(RuntimeError):
    """Explosion, non-finite energy or a per-structure timeout."""


@dataclass
class RelaxResult:
    structure: Structure
    energy: float  # eV, total, of the final structure
    converged: bool
    steps: int
    fmax: float  # largest residual force, eV/A
    seconds: float


def relax(
    structure: Structure,
    calculator: Calculator,
    fmax: float = 0.01,
    steps: int = 500,
    optimizer: str = "FIRE",
    timeout: float | None = None,
    symprec: float | None = None,
) -> RelaxResult:
    """Relax ``structure``; a run that hits ``steps`` returns ``converged=False``.

    With ``symprec`` the space group found at that tolerance is kept (ASE FixSymmetry).
    """
    geometry.check(structure)
    check_supported_elements(structure, calculator)
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}, got {optimizer!r}")
    atoms = AseAtomsAdaptor.get_atoms(structure)
    atoms.calc = calculator
    if symprec is not None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            atoms.set_constraint(FixSymmetry(atoms, symprec=symprec))
    volume0 = atoms.get_volume()
    start = time.perf_counter()
    opt = OPTIMIZERS[optimizer](FrechetCellFilter(atoms), logfile=None)

    def watchdog() -> None:
        if timeout is not None and time.perf_counter() - start > timeout:
            raise RelaxationFailed(f"timeout after {timeout:.0f} s")
        if not 0.1 < atoms.get_volume() / volume0 < 10:
            raise RelaxationFailed("explosion: cell volume changed more than tenfold")

    opt.attach(watchdog, interval=1)
    converged = bool(opt.run(fmax=fmax, steps=steps))
    energy = float(atoms.get_potential_energy())
    if not math.isfinite(energy):
        raise RelaxationFailed("non-finite energy")
    forces = FrechetCellFilter(atoms).get_forces()
    atoms.set_constraint()
    final = AseAtomsAdaptor.get_structure(atoms)
    return RelaxResult(
        # a bare copy: the adaptor's copy keeps the calculator, which cannot be pickled
        structure=Structure(final.lattice, final.species, final.frac_coords),
        energy=energy,
        converged=converged,
        steps=int(opt.nsteps),
        fmax=float(np.sqrt((forces**2).sum(1)).max()),
        seconds=time.perf_counter() - start,
    )
