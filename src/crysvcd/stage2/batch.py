"""Crystals as flat tensors: atoms of all crystals stacked, a crystal index per atom, and the
fully connected (i != j) edges inside each crystal."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from pymatgen.core import Composition, Lattice, Structure


@dataclass
class Crystal:
    """One training or sampling item: atomic numbers, fractional coordinates, lattice rows."""

    atom_types: np.ndarray  # (n,) atomic numbers
    frac: np.ndarray  # (n, 3) in [0, 1)
    lattice: np.ndarray  # (3, 3), rows are lattice vectors (Angstrom)
    props: np.ndarray | None = None  # (P,) model-space property values, NaN = unlabelled


def canonical(structure: Structure) -> Crystal:
    """Niggli-reduced cell in pymatgen's standard orientation (as CDVAE/DiffCSP preprocess)."""
    reduced = structure.get_reduced_structure()
    lat = Lattice.from_parameters(*reduced.lattice.parameters)
    frac = np.mod(reduced.frac_coords, 1.0)
    types = np.array([site.specie.Z for site in reduced], dtype=np.int64)
    return Crystal(types, frac.astype(np.float32), lat.matrix.astype(np.float32))


def composition_atoms(composition: Composition) -> np.ndarray:
    """Atomic numbers of a cell composition, one per atom (order by element)."""
    types = []
    for el, n in composition.items():
        if abs(n - round(n)) > 1e-6:
            raise ValueError(f"{composition}: non-integer count of {el}")
        types += [el.Z] * int(round(n))
    return np.array(types, dtype=np.int64)


def fully_connected_edges(num_atoms: torch.Tensor) -> torch.Tensor:
    """(2, E) source and target indices of every ordered pair i != j within each crystal."""
    out = []
    start = 0
    for n in num_atoms.tolist():
        idx = torch.arange(start, start + n)
        src = idx.repeat_interleave(n)
        dst = idx.repeat(n)
        keep = src != dst
        out.append(torch.stack([src[keep], dst[keep]]))
        start += n
    return torch.cat(out, 1) if out else torch.zeros(2, 0, dtype=torch.long)


@dataclass
class CrystalBatch:
    atom_types: torch.Tensor  # (N,)
    frac: torch.Tensor  # (N, 3)
    lattice: torch.Tensor  # (B, 3, 3)
    num_atoms: torch.Tensor  # (B,)
    batch: torch.Tensor  # (N,) crystal of each atom
    edges: torch.Tensor  # (2, E)
    props: torch.Tensor  # (B, P)

    @property
    def n_crystals(self) -> int:
        return len(self.num_atoms)


def collate(crystals: list[Crystal], n_props: int = 0) -> CrystalBatch:
    num_atoms = torch.tensor([len(c.atom_types) for c in crystals])
    props = np.full((len(crystals), n_props), np.nan, dtype=np.float32)
    for i, c in enumerate(crystals):
        if n_props and c.props is not None:
            props[i] = c.props
    return CrystalBatch(
        atom_types=torch.from_numpy(np.concatenate([c.atom_types for c in crystals])),
        frac=torch.from_numpy(np.concatenate([c.frac for c in crystals]).astype(np.float32)),
        lattice=torch.from_numpy(np.stack([c.lattice for c in crystals]).astype(np.float32)),
        num_atoms=num_atoms,
        batch=torch.repeat_interleave(torch.arange(len(crystals)), num_atoms),
        edges=fully_connected_edges(num_atoms),
        props=torch.from_numpy(props),
    )
