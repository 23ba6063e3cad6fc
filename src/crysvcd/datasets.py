"""MP-20-format CSVs, the bundled training pool and its deterministic train/dev split.

An MP-20-format CSV has at least ``material_id`` and ``cif``; the usual MP-20 columns
(``formation_energy_per_atom``, ``e_above_hull``, ``band_gap``, ``pretty_formula``,
``spacegroup.number``) are kept when present. Every stage reads its data through here, so
a user with the full MP-20 can pass its path wherever a CSV is accepted.
"""

from __future__ import annotations

import hashlib
import re
from functools import cache
from importlib import resources
from pathlib import Path

import pandas as pd
from pymatgen.core import Composition, Structure

DEV_PERCENT = 5  # share of the pool held out as the dev split
REQUIRED_COLUMNS = ("material_id", "cif")
PROPERTY_COLUMNS = ("formation_energy_per_atom", "e_above_hull", "band_gap")

# Bundled files (see data/DATA.md). MP-20 pieces first: they win de-duplication.
POOL_FILES = (
    "mp20_pilot_train.csv.gz",
    "mp20_pilot_val.csv.gz",
    "mp20_biternary_val.csv.gz",
    "mpts52_mp20like.csv.gz",
)

# Materials Project formation energies (GGA/GGA+U, MP2020 scale) of 153,235 entries: the
# offline hull (evaluate.hull) and the "known composition" check (metrics).
MP_TABLE = "mp_formation_energy_gga_scale.csv.gz"

_FORMULA_SUM = re.compile(r"_chemical_formula_sum\s+'?([^'\n]+?)'?\s*$", re.MULTILINE)


class DatasetError(ValueError):
    """A CSV that is not in MP-20 format."""


def data_path(name: str) -> Path:
    """Path of a file bundled in ``crysvcd/data``."""
    path = Path(str(resources.files("crysvcd") / "data" / name))
    if not path.exists():
        raise FileNotFoundError(f"bundled data file {name!r} is missing from {path.parent}")
    return path


def cell_formula(cif: str) -> str:
    """Cell formula (unreduced) of a CIF, e.g. ``Fe6O8``, read without parsing the structure."""
    match = _FORMULA_SUM.search(cif)
    comp = Composition(match.group(1)) if match else structure_from_cif(cif).composition
    return composition_formula(comp)


def composition_formula(comp: Composition) -> str:
    """The cell formula of a composition, integer counts in its own order: ``Fe6O8``."""
    return "".join(f"{el.symbol}{int(round(n))}" for el, n in comp.items())


def structure_from_cif(cif: str) -> Structure:
    return Structure.from_str(cif, fmt="cif")


def hash_bucket(key: str) -> int:
    """0..99 from a SHA-256 of ``key``: a split that never changes and needs no order."""
    digest = hashlib.sha256(str(key).encode()).digest()
    return int.from_bytes(digest[:4], "big") % 100


def split_of(material_id: str) -> str:
    """'dev' for about DEV_PERCENT % of ids, 'train' for the rest."""
    return "dev" if hash_bucket(material_id) < DEV_PERCENT else "train"


def read_mp20_csv(path: str | Path, source: str | None = None) -> pd.DataFrame:
    """Read an MP-20-format CSV; adds ``cell_formula``, ``nsites``, ``split`` and ``source``."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no such CSV: {path}")
    df = pd.read_csv(path)
    if "energy_above_hull" in df.columns and "e_above_hull" not in df.columns:
        df = df.rename(columns={"energy_above_hull": "e_above_hull"})
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DatasetError(f"{path}: not an MP-20-format CSV, missing column(s) {missing}")
    df = df.drop(columns=[c for c in df.columns if c.startswith("Unnamed")])
    for col in PROPERTY_COLUMNS:
        if col not in df.columns:
            df[col] = float("nan")
    df["cell_formula"] = [cell_formula(c) for c in df["cif"]]
    df["nsites"] = [int(Composition(f).num_atoms) for f in df["cell_formula"]]
    if "pretty_formula" not in df.columns:
        df["pretty_formula"] = [Composition(f).reduced_formula for f in df["cell_formula"]]
    df["split"] = [split_of(m) for m in df["material_id"]]
    df["source"] = source or path.name
    return df


@cache
def _pool() -> pd.DataFrame:
    frames = [read_mp20_csv(data_path(name), source=name) for name in POOL_FILES]
    pool = pd.concat(frames, ignore_index=True)
    return pool.drop_duplicates("material_id", keep="first").reset_index(drop=True)


def training_pool(split: str | None = None) -> pd.DataFrame:
    """The bundled training pool (MP-20 pieces + MP-20-like MPTS-52), optionally one split."""
    pool = _pool()
    if split is None:
        return pool.copy()
    if split not in ("train", "dev"):
        raise ValueError(f"split must be 'train' or 'dev', not {split!r}")
    return pool[pool["split"] == split].reset_index(drop=True)


def load_csv_or_pool(path: str | Path | None, split: str | None = None) -> pd.DataFrame:
    """A user CSV when given, else the bundled pool; ``split`` filters either."""
    if path is None:
        return training_pool(split)
    df = read_mp20_csv(path)
    return df if split is None else df[df["split"] == split].reset_index(drop=True)


def pool_info() -> dict[str, int]:
    """Counts of the bundled pool, per source and split."""
    pool = _pool()
    info = {"materials": len(pool)}
    for src, n in pool["source"].value_counts().sort_index().items():
        info[f"source {src}"] = int(n)
    for split, n in pool["split"].value_counts().sort_index().items():
        info[f"split {split}"] = int(n)
    return info
