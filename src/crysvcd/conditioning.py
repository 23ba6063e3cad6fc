"""Property adapters shared by both stages: a binary embedding or a continuous linear map.

A property is named on the command line as ``NAME=COLUMN`` (continuous, standardised by the
training mean and std) or ``NAME=COLUMN>THRESHOLD`` (binary: 1 where the column exceeds the
threshold). Missing values (NaN) mean "no label": the adapter adds nothing, so the same
model trains and samples with or without labels.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:  # pandas is needed only to read labels, not to run a model
    import pandas as pd

_SPEC = re.compile(r"^\s*([A-Za-z_][\w.]*)\s*=\s*([\w.]+)\s*(?:>\s*([-+0-9.eE]+))?\s*$")


@dataclass(frozen=True)
class PropertySpec:
    name: str
    column: str
    kind: str  # "binary" or "continuous"
    threshold: float | None = None
    mean: float = 0.0
    std: float = 1.0

    @classmethod
    def parse(cls, text: str) -> PropertySpec:
        match = _SPEC.match(text)
        if match is None:
            raise ValueError(
                f"bad property {text!r}: use NAME=COLUMN (continuous) "
                "or NAME=COLUMN>THRESHOLD (binary)"
            )
        name, column, thr = match.groups()
        if thr is None:
            return cls(name, column, "continuous")
        return cls(name, column, "binary", threshold=float(thr))

    def fitted(self, df: pd.DataFrame) -> PropertySpec:
        """Check the column exists and record the standardisation of a continuous property."""
        if self.column not in df.columns:
            raise ValueError(f"property {self.name!r}: no column {self.column!r} in the data")
        if self.kind == "binary":
            return self
        import pandas as pd

        values = pd.to_numeric(df[self.column], errors="coerce").dropna()
        if values.empty:
            raise ValueError(f"property {self.name!r}: column {self.column!r} has no numbers")
        return PropertySpec(
            self.name,
            self.column,
            self.kind,
            None,
            float(values.mean()),
            float(values.std() or 1.0),
        )

    def encode_column(self, df: pd.DataFrame) -> np.ndarray:
        """Model-space values of each row (NaN where unlabelled)."""
        import pandas as pd

        values = pd.to_numeric(df[self.column], errors="coerce").to_numpy(dtype=float)
        return self.encode(values)

    def encode(self, values) -> np.ndarray:
        values = np.asarray(values, dtype=float)
        if self.kind == "binary":
            out = (values > self.threshold).astype(float)
            out[np.isnan(values)] = np.nan
            return out
        return (values - self.mean) / self.std

    def encode_target(self, value: float) -> float:
        """A sampling target: 0/1 for binary properties, physical units for continuous ones."""
        if not isinstance(value, (int, float)) or math.isnan(float(value)):
            raise ValueError(f"property {self.name!r}: target must be a number, got {value!r}")
        if self.kind == "binary":
            if value not in (0, 1):
                raise ValueError(f"binary property {self.name!r} takes 0 or 1, got {value!r}")
            return float(value)
        return (float(value) - self.mean) / self.std

    def to_dict(self) -> dict:
        return asdict(self)


class PropertyAdapter(nn.Module):
    """Sum of per-property embeddings; rows with NaN for a property get nothing from it."""

    def __init__(self, specs: list[PropertySpec], dim: int):
        super().__init__()
        self.specs = list(specs)
        self.layers = nn.ModuleList(
            nn.Embedding(2, dim) if s.kind == "binary" else nn.Linear(1, dim) for s in self.specs
        )

    def forward(self, values: torch.Tensor) -> torch.Tensor:
        """values: (B, n_properties) in model space, NaN = unlabelled. Returns (B, dim)."""
        out = None
        for j, (spec, layer) in enumerate(zip(self.specs, self.layers)):
            v = values[:, j]
            known = ~torch.isnan(v)
            v = torch.nan_to_num(v)
            if spec.kind == "binary":
                emb = layer(v.long().clamp(0, 1))
            else:
                emb = layer(v.unsqueeze(-1))
            emb = emb * known.unsqueeze(-1)
            out = emb if out is None else out + emb
        return out


def split_condition(item: str) -> tuple[str, float]:
    """``"NAME=VALUE"`` -> (name, value), or a ValueError saying what is wrong with it."""
    name, sep, value = item.partition("=")
    if not sep or not name.strip():
        raise ValueError(f"bad condition {item!r}: use NAME=VALUE")
    try:
        return name.strip(), float(value)
    except ValueError:
        raise ValueError(f"condition {item!r}: value {value!r} is not a number") from None


def parse_conditions(items: list[str] | dict | None, specs: list[PropertySpec]) -> dict[str, float]:
    """``["NAME=VALUE", ...]`` or a dict -> {name: value}, checked against the model."""
    if not items:
        return {}
    pairs = list(items.items()) if isinstance(items, dict) else [split_condition(i) for i in items]
    known = {s.name: s for s in specs}
    out = {}
    for name, value in pairs:
        if name not in known:
            have = ", ".join(known) or "none (unconditional model)"
            raise ValueError(f"unknown property {name!r}; this model knows: {have}")
        known[name].encode_target(value)
        out[name] = float(value)
    return out
