"""Geometric sanity of a generated structure: the validity rule used across the package.

A structure is valid when no two atoms are closer than 0.5 A and the cell is at least
0.1 A^3 (the structural-validity definition of CDVAE and DiffCSP).
"""

from __future__ import annotations

import numpy as np
from pymatgen.core import Structure

MIN_DISTANCE = 0.5  # Angstrom
MIN_VOLUME = 0.1  # Angstrom^3


def collapsed(structure: Structure) -> bool:
    """A non-finite or (near-)singular cell, where distances are meaningless."""
    matrix = structure.lattice.matrix
    return not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix)) < 1e-8


def shortest_distance(structure: Structure) -> float:
    """Shortest interatomic distance in A, periodic images included; NaN for a collapsed cell."""
    if collapsed(structure):
        return float("nan")
    n = len(structure)
    if n == 1:
        # A one-atom cell's shortest distance is to its own periodic image.
        return float(min(structure.lattice.abc))
    dist = structure.distance_matrix
    return float(np.min(dist[~np.eye(n, dtype=bool)]))


def within_limits(min_distance: float, volume: float) -> bool:
    """The rule itself, for callers that already have the shortest distance (NaN fails)."""
    return bool(min_distance >= MIN_DISTANCE and volume >= MIN_VOLUME)


def is_valid(structure: Structure) -> bool:
    return within_limits(shortest_distance(structure), structure.volume)
