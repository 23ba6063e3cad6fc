"""Geometric sanity of a crystal: the one validity rule of the package.

Generation (``summary.csv``'s ``valid`` and ``invalid_reason``), candidate ranking, the
MLIP labels and the dielectric surrogate all ask ``invalid_reason``; a structure it refuses
is never relaxed or labelled, so an impossible geometry cannot reach a stability ranking.

A structure is valid when
- its cell is finite and not collapsed;
- no two atoms (periodic images included) are closer than 0.5 A (the CDVAE/DiffCSP
  validity definition) or than ``RADII_FRACTION`` of the sum of their covalent radii
  (Cordero et al. 2008, as tabulated in pymatgen). 0.55 lies below every one of the 11,796
  bundled MP crystals (their smallest ratio: 0.634, UFeGe) and refuses, for instance, a
  Bi-O pair at 1.13 A (0.53);
- its volume per atom is at most ``MAX_VOLUME_PER_ATOM`` (300 A^3; the largest in the
  bundled pool is 201.5, LiS4): a cell blown up by a few diffusion steps is not a crystal.
"""

from __future__ import annotations

from functools import cache

import numpy as np
from pymatgen.core import Structure

MIN_DISTANCE = 0.5  # Angstrom
RADII_FRACTION = 0.55
MAX_VOLUME_PER_ATOM = 300.0  # Angstrom^3


@cache
def _covalent_radii() -> dict[str, float]:
    from pymatgen.analysis.molecule_structure_comparator import CovalentRadius

    return dict(CovalentRadius.radius)


def collapsed(structure: Structure) -> bool:
    """A non-finite or (near-)singular cell, where distances are meaningless."""
    matrix = structure.lattice.matrix
    return not np.all(np.isfinite(matrix)) or abs(np.linalg.det(matrix)) < 1e-8


def _distances(structure: Structure) -> np.ndarray:
    """(n, n) shortest distances, periodic images included; the diagonal holds each atom's
    distance to its own nearest image."""
    dist = np.array(structure.distance_matrix, dtype=float)
    try:  # a Niggli-reduced cell's a is the shortest lattice vector
        self_image = structure.lattice.get_niggli_reduced_lattice().abc[0]
    except Exception:  # pathological cells: the given vectors bound it from above
        self_image = min(structure.lattice.abc)
    np.fill_diagonal(dist, self_image)
    return dist


def shortest_distance(structure: Structure) -> float:
    """Shortest interatomic distance in A, periodic images included; NaN for a collapsed cell."""
    if collapsed(structure) or len(structure) == 0:
        return float("nan")
    return float(_distances(structure).min())


def invalid_reason(structure: Structure) -> str:
    """Why ``structure`` is not a physical crystal, in a few words; ``""`` when it is."""
    if len(structure) == 0:
        return "no atoms"
    if not structure.is_ordered:
        return "partial occupancies: an ordered crystal is needed"
    if not np.isfinite(structure.frac_coords).all():
        return "non-finite coordinates"
    if collapsed(structure):
        return "collapsed or non-finite cell"
    per_atom = structure.volume / len(structure)
    if per_atom > MAX_VOLUME_PER_ATOM:
        return f"volume {per_atom:.0f} A^3/atom > {MAX_VOLUME_PER_ATOM:.0f}"
    dist = _distances(structure)
    symbols = [site.specie.symbol for site in structure]
    radii = _covalent_radii()
    r = np.array([radii.get(s, 1.5) for s in symbols])
    limit = np.maximum(MIN_DISTANCE, RADII_FRACTION * (r[:, None] + r[None, :]))
    i, j = np.unravel_index(np.argmin(dist - limit), dist.shape)
    if dist[i, j] < limit[i, j]:
        return (
            f"{symbols[i]}-{symbols[j]} {dist[i, j]:.2f} A apart "
            f"(< {limit[i, j]:.2f} A, {RADII_FRACTION} x covalent radii)"
        )
    return ""


def is_valid(structure: Structure) -> bool:
    return invalid_reason(structure) == ""


class InvalidStructure(ValueError):
    """A structure that the validity rule refuses; the message says why."""


def check(structure: Structure) -> None:
    """Raise ``InvalidStructure`` naming the problem, before any costly call."""
    if not isinstance(structure, Structure):
        raise InvalidStructure(
            f"expected a periodic pymatgen Structure, got {type(structure).__name__} "
            "(molecules are not supported)"
        )
    reason = invalid_reason(structure)
    if reason:
        raise InvalidStructure(f"{structure.composition.reduced_formula}: {reason}")
