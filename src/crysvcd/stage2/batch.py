"""Crystals as flat tensors: atoms of all crystals stacked, a crystal index per atom, and the
fully connected (i != j) edges inside each crystal.

A data set is packed once (``PackedCrystals``: every atom of every crystal in one tensor,
with each crystal's first atom and atom count) and moved to the training device once; a
batch of any rows is then gathered with tensor indexing alone, edges included, so no
per-crystal Python loop runs per step and a GPU is not left waiting on the CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:  # pymatgen only to read structures: device runs have torch alone
    from pymatgen.core import Composition, Structure


@dataclass
class Crystal:
    """One training or sampling item: atomic numbers, fractional coordinates, lattice rows."""

    atom_types: np.ndarray  # (n,) atomic numbers
    frac: np.ndarray  # (n, 3) in [0, 1)
    lattice: np.ndarray  # (3, 3), rows are lattice vectors (Angstrom)
    props: np.ndarray | None = None  # (P,) model-space property values, NaN = unlabelled


def canonical(structure: Structure) -> Crystal:
    """Niggli-reduced cell in pymatgen's standard orientation (as CDVAE/DiffCSP preprocess)."""
    from pymatgen.core import Lattice

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


def _ranges(starts: torch.Tensor, counts: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(owner, index): for every k < counts[i], owner i and index starts[i] + k, flattened."""
    owner = torch.repeat_interleave(torch.arange(len(counts), device=counts.device), counts)
    first = torch.cumsum(counts, 0) - counts
    within = torch.arange(len(owner), device=counts.device) - first[owner]
    return owner, starts[owner] + within


def fully_connected_edges(num_atoms: torch.Tensor) -> torch.Tensor:
    """(2, E) source and target indices of every ordered pair i != j within each crystal,
    source-major within a crystal; tensor operations only."""
    starts = torch.cumsum(num_atoms, 0) - num_atoms
    owner, pair = _ranges(torch.zeros_like(num_atoms), num_atoms * num_atoms)
    n = num_atoms[owner]
    src = starts[owner] + torch.div(pair, n, rounding_mode="floor")
    dst = starts[owner] + pair % n
    keep = src != dst
    return torch.stack([src[keep], dst[keep]])


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

    def to(self, device: torch.device | str) -> CrystalBatch:
        return CrystalBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


@dataclass
class PackedCrystals:
    """A whole data set as flat tensors; ``batch(rows, device)`` gathers any rows."""

    atom_types: torch.Tensor  # (N_all,)
    frac: torch.Tensor  # (N_all, 3)
    lattice: torch.Tensor  # (C, 3, 3)
    num_atoms: torch.Tensor  # (C,)
    starts: torch.Tensor  # (C,) index of each crystal's first atom
    props: torch.Tensor  # (C, P), NaN = unlabelled

    @classmethod
    def of(cls, crystals: list[Crystal], n_props: int = 0) -> PackedCrystals:
        num_atoms = torch.tensor([len(c.atom_types) for c in crystals], dtype=torch.long)
        props = np.full((len(crystals), n_props), np.nan, dtype=np.float32)
        for i, c in enumerate(crystals):
            if n_props and c.props is not None:
                props[i] = c.props
        cat = np.concatenate
        return cls(
            atom_types=torch.from_numpy(cat([c.atom_types for c in crystals]).astype(np.int64)),
            frac=torch.from_numpy(cat([c.frac for c in crystals]).astype(np.float32)),
            lattice=torch.from_numpy(np.stack([c.lattice for c in crystals]).astype(np.float32)),
            num_atoms=num_atoms,
            starts=torch.cumsum(num_atoms, 0) - num_atoms,
            props=torch.from_numpy(props),
        )

    def __len__(self) -> int:
        return len(self.num_atoms)

    def to(self, device: torch.device | str) -> PackedCrystals:
        return PackedCrystals(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def batch(self, rows: torch.Tensor, device: torch.device | str | None = None) -> CrystalBatch:
        data = self
        if device is not None and self.num_atoms.device != torch.device(device):
            # moved once per device, then reused for every batch
            cache = self.__dict__.setdefault("_on_device", {})
            data = cache.setdefault(str(device), self.to(device))
        rows = rows.to(data.num_atoms.device)
        num = data.num_atoms[rows]
        owner, atoms = _ranges(data.starts[rows], num)
        return CrystalBatch(
            atom_types=data.atom_types[atoms],
            frac=data.frac[atoms],
            lattice=data.lattice[rows],
            num_atoms=num,
            batch=owner,
            edges=fully_connected_edges(num),
            props=data.props[rows],
        )


def collate(crystals: list[Crystal], n_props: int = 0) -> CrystalBatch:
    """All of ``crystals`` as one batch (sampling, small sets)."""
    packed = PackedCrystals.of(crystals, n_props)
    return packed.batch(torch.arange(len(packed)))
