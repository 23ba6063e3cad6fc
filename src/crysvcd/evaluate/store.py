"""Results in an ASE database (SQLite file by default, or a PostgreSQL URL), one row per
structure key. Rows are written as each structure finishes, so a killed run keeps them and
a re-run skips them."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
from ase import Atoms
from ase.db import connect


class ResultStore:
    def __init__(self, url: str | Path):
        self.url = str(url)
        self.db = connect(self.url)

    def done(self) -> set[str]:
        return {row.key for row in self.db.select() if "key" in row}

    def record(self, key: str, atoms: Atoms | None = None, **labels) -> None:
        clean = {}
        for name, value in labels.items():
            if value is None or (isinstance(value, float) and not math.isfinite(value)):
                continue
            clean[name] = value if isinstance(value, (str, bool, int, float)) else str(value)
        self.db.write(atoms if atoms is not None else Atoms(), key=key, **clean)

    def frame(self) -> pd.DataFrame:
        rows = [{"key": r.key, **r.key_value_pairs} for r in self.db.select()]
        return pd.DataFrame(rows)
