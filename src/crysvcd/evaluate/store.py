"""Labels in an ASE database (an SQLite file by default, or a PostgreSQL URL), one row per
structure key: the relaxed structure with its labels and, per label step, the settings it
was computed with (``<step>_settings``). Rows are written as each structure finishes, so a
killed run keeps them, and a re-run computes only what is missing or was computed with
other settings."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from ase import Atoms
from ase.db import connect

# Names that ase.db keeps for itself and refuses as key-value pairs.
_RESERVED = {"id", "unique_id", "ctime", "mtime", "user", "calculator", "energy", "natoms",
             "fmax", "smax", "volume", "mass", "charge", "magmom", "age", "formula"}  # fmt: skip


# ase.db refuses a string that reads as a number or a boolean ("000", "1e5", "True"), so
# such a key (CIFs named 1.cif, 2.cif, ...) is stored behind this prefix and read back bare.
_KEY_PREFIX = "key:"


def _looks_numeric(text: str) -> bool:
    from ase.db.core import str_represents

    return any(str_represents(text, t) for t in (bool, int, float))


def _stored(key: str) -> str:
    key = str(key)
    return _KEY_PREFIX + key if _looks_numeric(key) or key.startswith(_KEY_PREFIX) else key


def bare_key(stored: str) -> str:
    return stored.removeprefix(_KEY_PREFIX)


def _clean(labels: dict) -> dict:
    out = {}
    for name, value in labels.items():
        if name in _RESERVED:
            raise ValueError(f"label name {name!r} is reserved by ase.db")
        if value is None or (isinstance(value, float) and not math.isfinite(value)):
            continue
        if hasattr(value, "item"):  # numpy scalars
            value = value.item()
        out[name] = value if isinstance(value, (str, bool, int, float)) else str(value)
    return out


class ResultStore:
    def __init__(self, url: str | Path):
        self.url = str(url)
        if "://" not in self.url:
            Path(self.url).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.db = connect(self.url)
        except ImportError as exc:
            raise RuntimeError(
                f"{self.url}: this database needs {exc.name}: pip install 'crysvcd[postgres]'"
            ) from None

    def rows(self) -> dict[str, object]:
        """The row of every key (the newest, should a key ever appear twice)."""
        out = {}
        for row in self.db.select():
            if "key" in row:
                key = bare_key(row.key)
                if key not in out or row.id > out[key].id:
                    out[key] = row
        return out

    def write(self, key: str, atoms: Atoms | None = None, **labels) -> None:
        """A fresh row for ``key``, replacing any earlier one (one transaction)."""
        old = [row.id for row in self.db.select(key=_stored(key))]
        with self.db:
            if old:
                self.db.delete(old)
            atoms = atoms if atoms is not None else Atoms()
            self.db.write(atoms, key=_stored(key), **_clean(labels))

    def update(self, key: str, **labels) -> None:
        """Add (or overwrite) labels of ``key``'s row; a label given as None is removed (a
        step computed again under new settings clears its earlier outcome)."""
        ids = sorted(row.id for row in self.db.select(key=_stored(key)))
        if not ids:
            raise KeyError(f"no stored row for {key!r}")
        row = self.db.get(id=ids[-1])
        gone = [k for k, v in labels.items() if v is None and k in row.key_value_pairs]
        self.db.update(ids[-1], delete_keys=gone, **_clean(labels))

    def frame(self) -> pd.DataFrame:
        rows = [{**r.key_value_pairs, "key": k} for k, r in self.rows().items()]
        return pd.DataFrame(rows)
