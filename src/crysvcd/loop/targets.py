"""What a campaign steers towards: the stability label, or a functional property (lattice
thermal conductivity, dielectric constant) with its bundled training data, its threshold,
and the label that judges a generated crystal.

Every target is a binary condition ("hit") on both stages, so that one fine-tuning path and
one guided sampler serve all campaigns:

- stability: converged and MLIP Ehull <= ``ehull_threshold``; bundled labels: the pool's
  DFT Ehull.
- kappa high / low: kappa above the 90th / below the 10th percentile of the training set,
  judged by phono3py on the MLIP after a harmonic screen; bundled labels: AFLOW-AGL kappa
  (compositions, Stage I only) and HiBoFL kappa (structures, both stages).
- dielectric: epsilon >= ``target_value`` (50, the paper's), judged by the e3nn surrogate;
  bundled labels: the Petousis and Petretto DFPT sets (structures, both stages).

The percentiles are taken within each source (AGL and HiBoFL kappa are on different
scales); a generated crystal's phono3py kappa is judged against HiBoFL's (W/mK at 300 K,
MP structures, the closer of the two to a phono3py value).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import numpy as np
import pandas as pd

from crysvcd.datasets import (
    DEV_PERCENT,
    cell_formula,
    composition_formula,
    data_path,
    hash_bucket,
)

HIT_COLUMN = "target_label"
PERCENTILE = {"high": 90.0, "low": 10.0}


@dataclass(frozen=True)
class Target:
    name: str  # stability | kappa | dielectric
    direction: str = "high"  # high | low (stability and dielectric: high)
    value: float | None = None  # dielectric: epsilon threshold; kappa: W/mK (None: percentile)

    @property
    def condition(self) -> str:
        """The condition's name in both stages ("stable", "kappa_high", ...)."""
        return "stable" if self.name == "stability" else f"{self.name}_{self.direction}"

    @property
    def spec(self) -> str:
        """The property spec both stages are fine-tuned on."""
        column = "stable_label" if self.name == "stability" else HIT_COLUMN
        return f"{self.condition}={column}>0.5"

    @property
    def label(self) -> str | None:
        """The stored label a generated crystal is judged by (None: stability alone)."""
        return {"kappa": "kappa", "dielectric": "dielectric_total"}.get(self.name)

    def threshold(self) -> float:
        if self.value is not None:
            return float(self.value)
        if self.name == "kappa":
            return float(np.percentile(_hibofl()["k_ao"], PERCENTILE[self.direction]))
        raise ValueError(f"the {self.name} target needs a value")

    def hit(self, values) -> np.ndarray:
        """Per value: 1.0 a hit, 0.0 not, NaN when the value is missing."""
        return self._beyond(values, self.threshold())

    def _beyond(self, values, threshold: float) -> np.ndarray:
        v = pd.to_numeric(pd.Series(values), errors="coerce").to_numpy(dtype=float)
        out = (v >= threshold) if self.direction == "high" else (v <= threshold)
        return np.where(np.isfinite(v), out.astype(float), np.nan)

    def bundled(self) -> pd.DataFrame:
        """The bundled labelled crystals of a property target, in the pool's columns plus
        ``target_label`` and ``target_value`` (rows without a ``cif`` are compositions,
        for Stage I only)."""
        if self.name == "kappa":
            agl, hib = _aflow_agl(), _hibofl()
            frames = [
                _rows(
                    agl["compound"], None, agl["kappa"], "aflow_agl", self._source_hit(agl["kappa"])
                ),
                _rows(None, hib["cif"], hib["k_ao"], "hibofl", self.hit(hib["k_ao"])),
            ]
        elif self.name == "dielectric":
            p, q = _petousis(), _petretto()
            frames = [
                _rows(None, p["cif"], p["poly_total"], "petousis", self.hit(p["poly_total"])),
                _rows(None, q["cif"], q["eps_total"], "petretto", self.hit(q["eps_total"])),
            ]
        else:
            raise ValueError("the stability target has no bundled property data")
        return pd.concat(frames, ignore_index=True)

    def _source_hit(self, values: pd.Series) -> np.ndarray:
        """Hit by the percentile within this source (AGL values are on their own scale)."""
        if self.value is not None:
            return self.hit(values)
        return self._beyond(values, np.percentile(values, PERCENTILE[self.direction]))


def _rows(formulas, cifs, values, source: str, hits) -> pd.DataFrame:
    from pymatgen.core import Composition

    if cifs is not None:
        cell = [cell_formula(c) for c in cifs]
    else:
        cell = [composition_formula(Composition(f)) for f in formulas]
    comps = [Composition(c) for c in cell]
    ids = [f"{source}-{i}" for i in range(len(comps))]
    return pd.DataFrame(
        {
            "material_id": ids,
            "cif": list(cifs) if cifs is not None else [None] * len(comps),
            "cell_formula": cell,
            "pretty_formula": [c.reduced_formula for c in comps],
            "target_value": np.asarray(values, dtype=float),
            HIT_COLUMN: np.asarray(hits, dtype=float),
            "split": ["dev" if hash_bucket(i) < DEV_PERCENT else "train" for i in ids],
            "source": source,
        }
    )


@cache
def _hibofl() -> pd.DataFrame:
    return pd.read_csv(data_path("hibofl_mp_kappa_661_with_cif.csv.gz"))


@cache
def _aflow_agl() -> pd.DataFrame:
    df = pd.read_csv(data_path("aflow_agl_kappa_dataset_5578.csv.gz"))
    return df.assign(kappa=10.0 ** df["log(kappa)"])[["compound", "kappa"]]


@cache
def _petousis() -> pd.DataFrame:
    return pd.read_csv(data_path("dielectric_constant_with_cif.csv.gz"))


@cache
def _petretto() -> pd.DataFrame:
    return pd.read_csv(data_path("phonon_dielectric_mp_with_cif.csv.gz"))
