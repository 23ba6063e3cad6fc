"""Phonon stability from finite displacements (phonopy) with MLIP forces.

A structure is dynamically unstable when any phonon frequency on a Γ-centred mesh is
imaginary by more than ``threshold`` (0.01 THz, the paper's value). phonopy reports an
imaginary frequency as a negative number.

Acoustic modes at Γ: translational invariance is imposed on the force constants
(``symmetrize_force_constants``), so the three acoustic frequencies at q = 0 are zero up to
round-off; they are excluded from the test at Γ alone. Everywhere else every band counts,
acoustic branches included: near Γ they go linearly to zero, so an imaginary acoustic
branch away from q = 0 (a negative elastic constant) is a real instability, and round-off
of 1e-3 THz stays below the threshold.

The supercell is a diagonal multiple of the given cell with every lattice vector at least
``supercell_min_length`` long (20 Å by default, as in the paper). Its cost grows with the
cube of that length: ``max_supercell_atoms`` and ``timeout`` bound it, and a structure
beyond them is reported as skipped, with the reason, instead of computed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from ase import Atoms
from ase.calculators.calculator import Calculator
from phonopy import Phonopy
from phonopy.structure.atoms import PhonopyAtoms
from pymatgen.core import Structure

from crysvcd.evaluate.relax import check_structure


class PhononSkipped(RuntimeError):
    """The supercell or the time it needs exceeds the configured budget."""


@dataclass
class PhononSettings:
    supercell_min_length: float = 20.0  # Angstrom along every lattice vector
    displacement: float = 0.01  # Angstrom (phonopy's default; 0.01-0.03 is sensible)
    mesh: tuple[int, int, int] = (8, 8, 8)
    threshold: float = 0.01  # THz: larger imaginary frequencies mean unstable
    max_supercell_atoms: int = 2000
    timeout: float | None = None  # seconds for the whole calculation


@dataclass
class PhononResult:
    stable: bool
    min_frequency: float  # THz, lowest counted frequency (negative = imaginary)
    n_imaginary: int  # (q-point, band) pairs below -threshold
    supercell: tuple[int, int, int]
    supercell_atoms: int
    n_displacements: int
    seconds: float
    frequencies: np.ndarray = field(repr=False)  # (n_q, n_bands) THz on the mesh
    qpoints: np.ndarray = field(repr=False)  # (n_q, 3) reduced


def supercell_repeats(structure: Structure, min_length: float) -> tuple[int, int, int]:
    """Smallest diagonal repeats that make each lattice vector at least ``min_length`` long."""
    return tuple(max(1, math.ceil(min_length / a - 1e-9)) for a in structure.lattice.abc)


def _phonopy_atoms(structure: Structure) -> PhonopyAtoms:
    return PhonopyAtoms(
        symbols=[site.specie.symbol for site in structure],
        cell=structure.lattice.matrix,
        scaled_positions=structure.frac_coords,
    )


def phonon_stability(
    structure: Structure, calculator: Calculator, settings: PhononSettings | None = None
) -> PhononResult:
    """Phonons of a relaxed ``structure`` on a mesh; unstable if any mode is imaginary.

    Relax tightly first (the paper: fmax 0.003 eV/Å): residual forces of a loose relaxation
    show up as spurious imaginary modes.
    """
    s = settings or PhononSettings()
    check_structure(structure)
    if not structure.is_ordered:
        raise ValueError(f"{structure.formula}: partial occupancies cannot be displaced")
    start = time.perf_counter()
    repeats = supercell_repeats(structure, s.supercell_min_length)
    n_super = len(structure) * int(np.prod(repeats))
    if n_super > s.max_supercell_atoms:
        raise PhononSkipped(
            f"supercell {repeats} has {n_super} atoms > max_supercell_atoms {s.max_supercell_atoms}"
        )
    phonon = Phonopy(
        _phonopy_atoms(structure), supercell_matrix=np.diag(repeats), primitive_matrix="auto"
    )
    phonon.generate_displacements(distance=s.displacement)
    supercells = phonon.supercells_with_displacements
    forces = []
    for i, sc in enumerate(supercells):
        if s.timeout is not None and time.perf_counter() - start > s.timeout:
            raise PhononSkipped(
                f"timeout after {s.timeout:.0f} s ({i} of {len(supercells)} displacements done)"
            )
        atoms = Atoms(sc.symbols, cell=sc.cell, scaled_positions=sc.scaled_positions, pbc=True)
        atoms.calc = calculator
        f = np.asarray(atoms.get_forces(), dtype=float)
        if not np.isfinite(f).all():
            raise ValueError(f"{structure.formula}: non-finite forces from the MLIP")
        # A conservative potential has zero net force; remove any drift so it cannot leak
        # into the acoustic sum rule.
        forces.append(f - f.mean(0))
    phonon.forces = np.array(forces)
    phonon.produce_force_constants()
    phonon.symmetrize_force_constants()
    phonon.run_mesh(list(s.mesh), is_gamma_center=True)
    mesh = phonon.get_mesh_dict()
    freqs, qpoints = np.asarray(mesh["frequencies"]), np.asarray(mesh["qpoints"])
    counted = np.ones_like(freqs, dtype=bool)
    gamma = np.where(np.abs(qpoints).sum(1) < 1e-8)[0]
    for g in gamma:
        counted[g, np.argsort(np.abs(freqs[g]))[:3]] = False
    n_imag = int((freqs[counted] < -s.threshold).sum())
    return PhononResult(
        stable=n_imag == 0,
        min_frequency=float(freqs[counted].min()),
        n_imaginary=n_imag,
        supercell=repeats,
        supercell_atoms=n_super,
        n_displacements=len(supercells),
        seconds=time.perf_counter() - start,
        frequencies=freqs,
        qpoints=qpoints,
    )
