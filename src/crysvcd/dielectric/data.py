"""Data of the dielectric surrogate: the bundled DFPT table, its fixed split, and crystals
as periodic neighbour graphs.

The table is the Materials Project DFPT set of Petousis et al. (Sci. Data 4, 160134, 2017),
bundled as ``dielectric_constant_with_cif.csv.gz``. The target is log10 of ``poly_total``,
the scalar (orientation-averaged) total dielectric constant, electronic plus ionic. Rows
with a non-finite value or one below 1 (nonphysical) are dropped; the split into train,
val and test is by a SHA-256 hash of ``material_id``, so it never changes.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, fields

import numpy as np
import pandas as pd
import torch
from pymatgen.core import Element, Structure

from crysvcd import geometry
from crysvcd.chem import MAX_Z
from crysvcd.datasets import data_path, hash_bucket, structure_from_cif

DATA_FILE = "dielectric_constant_with_cif.csv.gz"


def split_of(material_id: str, val_percent: int = 10, test_percent: int = 10) -> str:
    """'train', 'val' or 'test' from a hash of the id: deterministic and order-free."""
    bucket = hash_bucket(f"dielectric:{material_id}")
    if bucket < test_percent:
        return "test"
    if bucket < test_percent + val_percent:
        return "val"
    return "train"


def load_frame(val_percent: int = 10, test_percent: int = 10) -> pd.DataFrame:
    """The bundled table with ``log_eps`` and ``split``; ``attrs['n_dropped']`` counts rows
    removed for a non-finite ``poly_total`` or one below 1."""
    df = pd.read_csv(data_path(DATA_FILE))
    eps = pd.to_numeric(df["poly_total"], errors="coerce")
    keep = np.isfinite(eps) & (eps >= 1.0)
    n_dropped = int((~keep).sum())
    df = df[keep].reset_index(drop=True)
    df["log_eps"] = np.log10(df["poly_total"].astype(float))
    df["split"] = [split_of(m, val_percent, test_percent) for m in df["material_id"]]
    df.attrs["n_dropped"] = n_dropped
    return df


@dataclass
class Graph:
    """One crystal as atoms and directed edges (centre <- neighbour) with their vectors."""

    z: np.ndarray  # (n,) atomic numbers
    centre: np.ndarray  # (E,) receiving atom
    neighbour: np.ndarray  # (E,) sending atom
    vec: np.ndarray  # (E, 3) neighbour position (its periodic image) minus centre, A
    y: float = float("nan")  # standardised later; log10 eps when known


def _as_structure(obj) -> Structure:
    if isinstance(obj, Structure):
        return obj
    try:  # ase Atoms, without importing ase unless one is given
        from ase import Atoms
    except ImportError:  # pragma: no cover
        Atoms = None
    if Atoms is not None and isinstance(obj, Atoms):
        if not all(obj.pbc):
            raise ValueError("non-periodic input: ase Atoms with pbc not True on all three axes")
        from pymatgen.io.ase import AseAtomsAdaptor

        return AseAtomsAdaptor.get_structure(obj)
    raise ValueError(
        f"non-periodic input: expected a pymatgen Structure (a crystal), got {type(obj).__name__}"
    )


def structure_graph(structure, cutoff: float) -> Graph:
    """Periodic neighbour graph of a crystal; ValueError names what makes the input unusable."""
    s = _as_structure(structure)
    if not s.is_ordered:
        raise ValueError("disordered structure: partial occupancies are not supported")
    z = []
    for i, site in enumerate(s):
        sp = site.specie
        el = getattr(sp, "element", sp)  # Species -> Element
        if not isinstance(el, Element) or not 1 <= el.Z <= MAX_Z:
            raise ValueError(f"unknown element {sp!s} at site {i} (supported: Z = 1..{MAX_Z})")
        z.append(el.Z)
    reason = geometry.invalid_reason(s)
    if reason:
        raise ValueError(reason)
    centre, neighbour, images, dist = s.get_neighbor_list(cutoff)
    counts = np.bincount(centre, minlength=len(s))
    isolated = np.where(counts == 0)[0]
    if len(isolated):
        i = int(isolated[0])
        raise ValueError(
            f"isolated atom: site {i} ({s[i].specie}) has no neighbour within "
            f"{cutoff} A ({len(isolated)} such site(s))"
        )
    lattice = np.asarray(s.lattice.matrix, dtype=float)
    frac = np.asarray(s.frac_coords, dtype=float)
    cart = frac @ lattice
    vec = (frac[neighbour] + images) @ lattice - cart[centre]
    return Graph(
        z=np.asarray(z, dtype=np.int64),
        centre=centre.astype(np.int64),
        neighbour=neighbour.astype(np.int64),
        vec=vec.astype(np.float32),
    )


@dataclass
class GraphBatch:
    z: torch.Tensor
    centre: torch.Tensor
    neighbour: torch.Tensor
    vec: torch.Tensor
    batch: torch.Tensor  # crystal index of every atom
    y: torch.Tensor

    @property
    def n_crystals(self) -> int:
        return len(self.y)

    @classmethod
    def of(cls, graphs: list[Graph]) -> GraphBatch:
        offsets = np.cumsum([0] + [len(g.z) for g in graphs[:-1]])
        cat = np.concatenate
        return cls(
            z=torch.from_numpy(cat([g.z for g in graphs])),
            centre=torch.from_numpy(cat([g.centre + o for g, o in zip(graphs, offsets)])),
            neighbour=torch.from_numpy(cat([g.neighbour + o for g, o in zip(graphs, offsets)])),
            vec=torch.from_numpy(cat([g.vec for g in graphs])),
            batch=torch.from_numpy(cat([np.full(len(g.z), i) for i, g in enumerate(graphs)])),
            y=torch.tensor([g.y for g in graphs], dtype=torch.float32),
        )

    def to(self, device) -> GraphBatch:
        return GraphBatch(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})


@dataclass
class GraphData:
    """A list of graphs as ``training.Data``."""

    graphs: list[Graph]

    def __len__(self) -> int:
        return len(self.graphs)

    def batch(self, rows: torch.Tensor, device) -> GraphBatch:
        return GraphBatch.of([self.graphs[i] for i in rows.tolist()]).to(device)


def graphs_from_frame(df: pd.DataFrame, cutoff: float) -> list[Graph]:
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for cif, y in zip(df["cif"], df["log_eps"]):
            g = structure_graph(structure_from_cif(cif), cutoff)
            g.y = float(y)
            out.append(g)
    return out
