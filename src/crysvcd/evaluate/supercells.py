"""Supercells and cell conversions shared by the phonon and kappa labels.

Supercell size is measured by perpendicular width (the distance between opposite faces),
not by lattice-vector length: it is the width that keeps an atom's periodic images apart,
and for a skewed cell the two differ a lot. Both labels choose among the diagonal
multiples of the cell and of its conventional cell (``candidate_supercell_matrices``).
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from pymatgen.core import Structure


def phonopy_atoms(structure: Structure):
    """The structure as phonopy's cell."""
    from phonopy.structure.atoms import PhonopyAtoms

    return PhonopyAtoms(
        symbols=[site.specie.symbol for site in structure],
        cell=np.array(structure.lattice.matrix),
        scaled_positions=np.array(structure.frac_coords),
    )


def ase_atoms(cell) -> Atoms:
    """A phonopy cell (a displaced supercell) as periodic ASE atoms."""
    return Atoms(
        symbols=cell.symbols, cell=cell.cell, scaled_positions=cell.scaled_positions, pbc=True
    )


def idealized_primitive(structure: Structure, symprec: float = 1e-3) -> Structure:
    """The primitive cell with positions and lattice made exactly symmetric (spglib) at
    ``symprec``: phonopy then finds the full space group and displaces only the
    symmetry-distinct atoms and directions. Returns the input when spglib finds nothing."""
    import spglib

    cell = (structure.lattice.matrix, structure.frac_coords, [s.specie.Z for s in structure])
    std = spglib.standardize_cell(cell, to_primitive=True, no_idealize=False, symprec=symprec)
    if std is None:
        return structure
    lattice, frac, numbers = std
    return Structure(lattice, [int(z) for z in numbers], frac)


def perpendicular_widths(lattice: np.ndarray) -> np.ndarray:
    """Distances between opposite faces of the cell spanned by the rows of ``lattice``."""
    volume = abs(np.linalg.det(lattice))
    a, b, c = lattice
    areas = [np.linalg.norm(np.cross(b, c)), np.linalg.norm(np.cross(c, a))]
    areas.append(np.linalg.norm(np.cross(a, b)))
    return volume / np.array(areas)


def candidate_supercell_matrices(
    structure: Structure, min_length: float, symprec: float = 1e-4
) -> list[np.ndarray]:
    """Integer matrices S (phonopy convention) of supercells whose three perpendicular
    widths all reach ``min_length``: the smallest diagonal multiple of the cell itself and
    of its conventional cell, smallest first (ties: wider first).

    The conventional shape matters for fcc/bcc primitive cells: at equal width it is often
    not much larger and keeps the cubic point group, which cuts the displacements.
    """
    import spglib

    unit = np.array(structure.lattice.matrix)
    bases = [np.eye(3, dtype=int)]
    cell = (unit, structure.frac_coords, [site.specie.Z for site in structure])
    std = spglib.standardize_cell(cell, to_primitive=False, no_idealize=True, symprec=symprec)
    if std is not None:
        transform = np.array(std[0]) @ np.linalg.inv(unit)  # rows: conv = T @ unit
        rounded = np.rint(transform)
        if np.allclose(transform, rounded, atol=1e-3) and abs(np.linalg.det(rounded)) > 1.5:
            bases.append(rounded.astype(int))
    found = []
    for base in bases:
        widths = perpendicular_widths(base @ unit)
        reps = np.maximum(1, np.ceil(min_length / widths - 1e-6)).astype(int)
        rows = np.diag(reps) @ base  # supercell rows = rows @ unit
        size = round(abs(np.linalg.det(rows)))
        width = float(perpendicular_widths(rows @ unit).min())
        # phonopy's supercell_matrix acts on column vectors: (a' b' c') = (a b c) S
        found.append(((size, -width), np.array(rows.T, dtype=int)))
    found.sort(key=lambda item: item[0])
    return [matrix for _, matrix in found]


def choose_supercell_matrix(
    structure: Structure, min_length: float, symprec: float = 1e-4
) -> np.ndarray:
    """The smallest supercell matrix of ``candidate_supercell_matrices``."""
    return candidate_supercell_matrices(structure, min_length, symprec)[0]
