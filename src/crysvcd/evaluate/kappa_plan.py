"""What a kappa calculation will cost, decided before any force call: settings, supercells
and displacements (phono3py), and the limits that skip a material.

See ``kappa.py`` for the recipe; ``kappa_plan`` lets a campaign filter candidates cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pymatgen.core import Structure

from crysvcd import geometry
from crysvcd.evaluate.settings import KappaSettings
from crysvcd.evaluate.supercells import (
    candidate_supercell_matrices,
    choose_supercell_matrix,
    phonopy_atoms,
)

METHODS = ("finite-displacement", "symfc-random")


class KappaSkipped(RuntimeError):
    """The material was not computed because it would exceed a cost limit.

    ``reason`` says which limit; ``n_supercells`` and ``supercell_atoms`` describe the plan
    and ``seconds`` the time spent before giving up, so a caller can record the skip.
    """

    def __init__(
        self,
        reason: str,
        n_supercells: int | None = None,
        supercell_atoms: int | None = None,
        seconds: float = 0.0,
    ):
        super().__init__(reason)
        self.reason = reason
        self.n_supercells = n_supercells
        self.supercell_atoms = supercell_atoms
        self.seconds = seconds

    def as_dict(self) -> dict:
        return {
            "skipped": True,
            "reason": self.reason,
            "n_supercells": self.n_supercells,
            "supercell_atoms": self.supercell_atoms,
            "seconds": self.seconds,
        }


@dataclass
class KappaPlan:
    method: str
    n_supercells: int  # fc3 supercells (fc2 ones counted in n_fc2_supercells)
    n_fc2_supercells: int  # extra supercells for a separate fc2 cell, else 0
    supercell_atoms: int
    fc2_supercell_atoms: int
    supercell_matrix: list[list[int]]
    fc2_supercell_matrix: list[list[int]]
    # symfc-random: the fewest snapshots symfc can fit fc3 from; n_supercells / this is how
    # overdetermined the fit is
    fc3_minimum: int | None = None


def setup_phono3py(structure: Structure, settings: KappaSettings, separate_fc2: bool = False):
    """The cheapest admissible plan (force calls x supercell atoms) over the candidate fc3
    supercells, with its Phono3py object holding the displacements.

    ``separate_fc2``: fc2 from its own finite displacements even when its supercell is the
    fc3 one, so that another force engine can give fc2 than fc3 (``lattice_thermal_
    conductivity``'s ``fc3_calculator``)."""
    fc2_matrix = None
    if settings.fc2_supercell_min_length is not None:
        fc2_matrix = choose_supercell_matrix(
            structure,
            max(settings.fc2_supercell_min_length, settings.supercell_min_length),
            settings.symprec,
        )
    best, skips = None, []
    candidates = candidate_supercell_matrices(
        structure, settings.supercell_min_length, settings.symprec
    )
    for fc3_matrix in candidates:
        fc2 = fc3_matrix if separate_fc2 and fc2_matrix is None else fc2_matrix
        same = not separate_fc2 and fc2 is not None and np.array_equal(fc2, fc3_matrix)
        try:
            ph3, plan = _setup_one(structure, settings, fc3_matrix, None if same else fc2)
        except KappaSkipped as skip:
            skips.append(skip)
            continue
        # finite differences first (symfc fits from a few dozen random snapshots came out
        # 5-15 % low for Si with 7net-0), then force calls x atoms
        cost = (
            plan.method != "finite-displacement",
            plan.n_supercells * plan.supercell_atoms
            + plan.n_fc2_supercells * plan.fc2_supercell_atoms,
        )
        if best is None or cost < best[0]:
            best = (cost, ph3, plan)
    if best is None:
        raise skips[0]
    return best[1], best[2]


def _setup_one(
    structure: Structure,
    settings: KappaSettings,
    fc3_matrix: np.ndarray,
    fc2_matrix: np.ndarray | None,
):
    from phono3py import Phono3py

    supercell_atoms = round(abs(np.linalg.det(fc3_matrix))) * len(structure)
    fc2_atoms = supercell_atoms
    if fc2_matrix is not None:
        fc2_atoms = round(abs(np.linalg.det(fc2_matrix))) * len(structure)
    if max(supercell_atoms, fc2_atoms) > settings.max_supercell_atoms:
        raise KappaSkipped(
            f"supercell of {max(supercell_atoms, fc2_atoms)} atoms exceeds "
            f"max_supercell_atoms={settings.max_supercell_atoms}",
            supercell_atoms=max(supercell_atoms, fc2_atoms),
        )
    # "auto" reduces a centred (conventional) input to its primitive cell for the q-mesh;
    # a primitive input is used as it is
    ph3 = Phono3py(
        phonopy_atoms(structure),
        supercell_matrix=fc3_matrix,
        phonon_supercell_matrix=fc2_matrix,
        primitive_matrix="auto",
        symprec=settings.symprec,
        log_level=0,
    )
    ph3.generate_displacements(
        distance=settings.displacement, cutoff_pair_distance=settings.fc3_cutoff
    )
    n_fc3 = sum(cell is not None for cell in ph3.supercells_with_displacements)
    method, minimum = "finite-displacement", None
    if n_fc3 > settings.max_fd_supercells:
        method = "symfc-random"
        minimum = symfc_minimum(ph3, settings)
        n_fc3 = _random_snapshot_count(minimum, settings, supercell_atoms)
        ph3.generate_displacements(
            distance=settings.displacement,
            number_of_snapshots=n_fc3 // 2,
            is_plusminus=True,  # +/- pairs cancel the even-order error terms in the fit
            random_seed=settings.random_seed,
            cutoff_pair_distance=settings.fc3_cutoff,
        )
    n_fc2 = 0
    if fc2_matrix is not None:
        ph3.generate_fc2_displacements(distance=settings.displacement, is_plusminus="auto")
        n_fc2 = len(ph3.phonon_supercells_with_displacements)
    plan = KappaPlan(
        method=method,
        n_supercells=n_fc3,
        n_fc2_supercells=n_fc2,
        supercell_atoms=supercell_atoms,
        fc2_supercell_atoms=fc2_atoms,
        supercell_matrix=fc3_matrix.tolist(),
        fc2_supercell_matrix=(fc3_matrix if fc2_matrix is None else fc2_matrix).tolist(),
        fc3_minimum=minimum,
    )
    return ph3, plan


def symfc_minimum(ph3, settings: KappaSettings) -> int:
    """The fewest random snapshots symfc can fit fc3 from, for ``ph3``'s supercell."""
    from phonopy.interface.symfc import SymfcFCSolver

    options = None if settings.fc3_cutoff is None else {"cutoff": {3: settings.fc3_cutoff}}
    solver = SymfcFCSolver(ph3.supercell, symmetry=ph3.symmetry, options=options)
    return int(solver.estimate_numbers_of_supercells(orders=[3])[3])


def _random_snapshot_count(minimum: int, settings: KappaSettings, supercell_atoms: int) -> int:
    # 8 x symfc's minimum, at least 48: with fewer, force noise in the fit acts as extra
    # anharmonicity and lowers kappa (Si, 7net-0: 16 snapshots -15 %, 48 snapshots -5 %;
    # with 7net-l3i5 2-8 snapshots read 1.00-1.11x finite differences, no trend: README)
    wanted = settings.n_random_snapshots or max(8 * minimum, 48)
    wanted = max(wanted, minimum + 1)
    wanted += wanted % 2  # whole +/- pairs
    if minimum > settings.max_random_snapshots:
        raise KappaSkipped(
            f"symfc needs at least {minimum} random snapshots of {supercell_atoms} atoms, "
            f"more than max_random_snapshots={settings.max_random_snapshots}",
            n_supercells=minimum,
            supercell_atoms=supercell_atoms,
        )
    return min(wanted, settings.max_random_snapshots - settings.max_random_snapshots % 2)


def kappa_plan(structure: Structure, settings: KappaSettings | None = None) -> KappaPlan:
    """What ``lattice_thermal_conductivity`` would compute, without any force call.

    Raises ``KappaSkipped`` for a supercell or snapshot count over the limits, so a caller
    can filter candidates cheaply.
    """
    geometry.check(structure)
    return setup_phono3py(structure, settings or KappaSettings())[1]
