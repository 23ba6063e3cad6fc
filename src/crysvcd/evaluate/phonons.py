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

Symmetry: the cell is first made exactly symmetric at ``symprec`` (spglib's idealised
primitive cell), so phonopy finds the full space group and displaces only the
symmetry-distinct atoms along the distinct directions (cubic NaCl: 2 displacements instead
of 6 per atom x 2 atoms). A structure relaxed without symmetry constraints is first
tightly relaxed with its symmetry kept (``crysvcd evaluate`` does this), so that the
idealised cell is still at its minimum; a distortion that lowers the symmetry then shows
up as an imaginary mode, which is what the test is for.

The supercell is the smallest diagonal multiple of the cell or of its conventional cell
whose perpendicular widths all reach ``supercell_min_length`` (20 Å by default, as in the
paper; ``supercells.py``). Its cost grows with the cube of that length:
``max_supercell_atoms`` and ``timeout`` bound it, and a structure beyond them is reported
as skipped, with the reason, instead of computed.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
from ase.calculators.calculator import Calculator
from pymatgen.core import Structure

from crysvcd import geometry
from crysvcd.evaluate.mlip import check_supported_elements
from crysvcd.evaluate.settings import PhononSettings
from crysvcd.evaluate.supercells import (
    ase_atoms,
    choose_supercell_matrix,
    idealized_primitive,
    phonopy_atoms,
)


class PhononSkipped(RuntimeError):
    """The supercell or the time it needs exceeds the configured budget."""


@dataclass
class PhononResult:
    stable: bool
    min_frequency: float  # THz, lowest counted frequency (negative = imaginary)
    n_imaginary: int  # (q-point, band) pairs below -threshold
    supercell: tuple[int, ...]  # diagonal repeats, or the 9 entries of the matrix
    supercell_atoms: int
    n_displacements: int
    seconds: float
    frequencies: np.ndarray = field(repr=False)  # (n_q, n_bands) THz on the mesh
    qpoints: np.ndarray = field(repr=False)  # (n_q, 3) reduced

    @property
    def acoustic_max(self) -> float:
        """THz, the top of the three lowest branches (the acoustic ones, crossings aside)."""
        return float(np.sort(self.frequencies, axis=1)[:, :3].max())

    @property
    def primitive_atoms(self) -> int:
        return self.frequencies.shape[1] // 3


def phonon_stability(
    structure: Structure, calculator: Calculator, settings: PhononSettings | None = None
) -> PhononResult:
    """Phonons of a relaxed ``structure`` on a mesh; unstable if any mode is imaginary.

    Relax tightly first (the paper: fmax 0.003 eV/Å): residual forces of a loose relaxation
    show up as spurious imaginary modes.
    """
    from phonopy import Phonopy

    s = settings or PhononSettings()
    geometry.check(structure)
    check_supported_elements(structure, calculator)
    start = time.perf_counter()
    if s.symprec is not None:
        structure = idealized_primitive(structure, s.symprec)
    matrix = choose_supercell_matrix(structure, s.supercell_min_length, s.symprec or 1e-5)
    n_super = len(structure) * round(abs(np.linalg.det(matrix)))
    shape = _shape(matrix)
    if n_super > s.max_supercell_atoms:
        raise PhononSkipped(
            f"supercell {shape} has {n_super} atoms > max_supercell_atoms {s.max_supercell_atoms}"
        )
    phonon = Phonopy(
        phonopy_atoms(structure),
        supercell_matrix=matrix,
        primitive_matrix="auto",
        symprec=s.symprec or 1e-5,
    )
    phonon.generate_displacements(distance=s.displacement)
    supercells = phonon.supercells_with_displacements
    # Forces left in the undisplaced supercell are relaxation error, not a response to the
    # displacement: subtract them from every displaced one (one extra force call).
    perfect = ase_atoms(phonon.supercell)
    perfect.calc = calculator
    residual = np.asarray(perfect.get_forces(), dtype=float)
    forces = []
    for i, sc in enumerate(supercells):
        if s.timeout is not None and time.perf_counter() - start > s.timeout:
            raise PhononSkipped(
                f"timeout after {s.timeout:.0f} s ({i} of {len(supercells)} displacements done)"
            )
        atoms = ase_atoms(sc)
        atoms.calc = calculator
        f = np.asarray(atoms.get_forces(), dtype=float)
        if not np.isfinite(f).all():
            raise ValueError(f"{structure.formula}: non-finite forces from the MLIP")
        # A conservative potential has zero net force; remove any drift so it cannot leak
        # into the acoustic sum rule.
        f = f - residual
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
        supercell=shape,
        supercell_atoms=n_super,
        n_displacements=len(supercells),
        seconds=time.perf_counter() - start,
        frequencies=freqs,
        qpoints=qpoints,
    )


def _shape(matrix: np.ndarray) -> tuple[int, ...]:
    """Diagonal repeats of a diagonal supercell matrix, else all nine entries."""
    if np.count_nonzero(matrix - np.diag(np.diag(matrix))) == 0:
        return tuple(int(v) for v in np.diag(matrix))
    return tuple(int(v) for v in matrix.flatten())


# Slack's estimate of the lattice thermal conductivity from harmonic quantities only:
# kappa = A M theta_a^3 delta n^(1/3) / (gamma^2 T), with A = 3.1e-6 for M in amu, delta in
# Angstrom, theta_a in K (Morelli and Slack, 2006). The Grueneisen parameter gamma is
# anharmonic and not computed here: 1.5 for every crystal, so the estimate ranks crystals by
# their harmonic stiffness, mass and size, which is what the screen needs.
SLACK_A, SLACK_GAMMA, THZ_TO_K = 3.1e-6, 1.5, 47.9924


def slack_kappa(
    structure: Structure, acoustic_max_thz: float, n_primitive: int, temperature: float = 300.0
) -> float:
    """Slack's kappa (W/mK) of ``structure`` (any cell of it) whose acoustic branches reach
    ``acoustic_max_thz``, with ``n_primitive`` atoms in its primitive cell."""
    n = len(structure)
    mass = float(np.mean([site.specie.atomic_mass for site in structure]))
    delta = (structure.volume / n) ** (1 / 3)
    theta = THZ_TO_K * acoustic_max_thz
    if not (theta > 0 and math.isfinite(theta)):
        return math.nan
    scale = SLACK_A / (SLACK_GAMMA**2 * temperature)
    return scale * mass * theta**3 * delta * n_primitive ** (1 / 3)
