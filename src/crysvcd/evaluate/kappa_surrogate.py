"""A composition surrogate of lattice thermal conductivity: the cheap signal a kappa campaign
screens with before it spends phonons and phono3py on a crystal.

A small MLP maps element-property statistics of a formula (mass, electronegativity, row,
group, radius, Z, Mendeleev number: their atom-fraction mean, spread, min and max) to
log10 kappa. It is trained on the AFLOW-AGL kappa set at 300 K (CrabNet's train and val
splits, bundled) and shipped as ``weights/kappa_surrogate.json``; ``python
benchmarks/kappa_surrogate.py`` retrains it and prints its figures (CrabNet's test split,
and the rank correlation with phononDB PBE kappa; README, kappa). AGL is a Debye-Grüneisen
model, not phono3py: the surrogate ranks formulas, it does not replace the label.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from pymatgen.core import Composition, Element

PROPERTIES = ("atomic_mass", "X", "row", "group", "atomic_radius", "Z", "mendeleev_no")
STATS = ("mean", "std", "min", "max")
FEATURES = tuple(f"{s}_{p}" for s in STATS for p in PROPERTIES) + (
    "n_elements",
    "log_atoms",  # atoms per formula unit
    "log_mean_mass",
)
SHIPPED = Path(__file__).resolve().parents[1] / "weights" / "kappa_surrogate.json"


@cache
def _element_table() -> dict[int, np.ndarray]:
    """PROPERTIES of every element up to Z = 103; a value pymatgen lacks (a noble gas's
    electronegativity) is the mean over the elements that have it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        raw = np.array([[_number(getattr(Element.from_Z(z), p)) for p in PROPERTIES]
                        for z in range(1, 104)])  # fmt: skip
    fill = np.nanmean(raw, 0)
    raw = np.where(np.isnan(raw), fill, raw)
    return {z: raw[z - 1] for z in range(1, 104)}


def _number(value) -> float:
    try:
        value = float(value)
    except (TypeError, ValueError):
        return math.nan
    return value if math.isfinite(value) else math.nan


def descriptors(composition: Composition | str) -> np.ndarray:
    """The ``FEATURES`` of one formula."""
    comp = Composition(composition)
    frac = comp.fractional_composition
    els = list(frac.elements)
    if not els or max(el.Z for el in els) > 103:
        raise ValueError(f"{comp.reduced_formula}: no kappa descriptors (elements up to Lr)")
    w = np.array([frac[el] for el in els])
    table = _element_table()
    p = np.array([table[el.Z] for el in els])
    mean = w @ p
    std = np.sqrt(w @ (p - mean) ** 2)
    atoms = comp.num_atoms / comp.get_reduced_composition_and_factor()[1]
    extra = [len(els), math.log(atoms), math.log(mean[0])]
    return np.concatenate([mean, std, p.min(0), p.max(0), extra])


@dataclass
class KappaSurrogate:
    """Standardised ``FEATURES`` -> MLP (two SiLU layers) -> log10 kappa (W/mK)."""

    mean: list[float]
    scale: list[float]
    layers: list[dict]  # {"weight": [[...]], "bias": [...]} per linear layer
    # log10 predictions of the training formulas at 0, 5, ..., 100 %: where a share cuts
    train_quantiles: list[float] = field(default_factory=list)
    provenance: dict = field(default_factory=dict)
    features: tuple[str, ...] = FEATURES

    @classmethod
    def fit(cls, x: np.ndarray, log_kappa: np.ndarray, seed: int = 0, epochs: int = 400,
            hidden: int = 64) -> KappaSurrogate:  # fmt: skip
        """Fit on descriptors ``x`` and log10 kappa; L1 loss (AGL values have outliers)."""
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # a 6k-parameter MLP: more threads only wait on each other
        try:
            return cls._fit(x, log_kappa, seed, epochs, hidden)
        finally:
            torch.set_num_threads(threads)

    @classmethod
    def _fit(cls, x, log_kappa, seed, epochs, hidden) -> KappaSurrogate:
        import torch

        torch.manual_seed(seed)
        mean, scale = x.mean(0), x.std(0) + 1e-9
        xs = torch.tensor((x - mean) / scale, dtype=torch.float32)
        y = torch.tensor(np.asarray(log_kappa), dtype=torch.float32)
        net = _mlp(x.shape[1], hidden)
        opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=1e-4)
        gen = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            order = torch.randperm(len(xs), generator=gen)
            for i in range(0, len(xs), 256):
                rows = order[i : i + 256]
                loss = (net(xs[rows]).squeeze(-1) - y[rows]).abs().mean()
                opt.zero_grad()
                loss.backward()
                opt.step()
        layers = [{"weight": m.weight.detach().tolist(), "bias": m.bias.detach().tolist()}
                  for m in net if isinstance(m, torch.nn.Linear)]  # fmt: skip
        model = cls(mean.tolist(), scale.tolist(), layers)
        model.train_quantiles = np.quantile(model.log_kappa(x), np.linspace(0, 1, 21)).tolist()
        return model

    def log_kappa(self, x: np.ndarray) -> np.ndarray:
        """log10 kappa of descriptor rows (numpy only: no torch needed to predict)."""
        h = (np.atleast_2d(x) - np.array(self.mean)) / np.array(self.scale)
        for k, layer in enumerate(self.layers):
            h = h @ np.array(layer["weight"]).T + np.array(layer["bias"])
            if k < len(self.layers) - 1:
                h = h / (1 + np.exp(-h))  # SiLU
        return h[:, 0]

    def predict(self, compositions) -> np.ndarray:
        """kappa (W/mK at 300 K, AGL-like) of each composition or formula."""
        return 10 ** self.log_kappa(np.array([descriptors(c) for c in compositions]))

    def cut(self, share: float, direction: str) -> float:
        """The kappa (W/mK) beyond which a formula is in the best ``share`` of the training
        formulas by prediction: the top for ``direction`` "high", the bottom for "low"."""
        if not 0 < share <= 1 or direction not in ("high", "low"):
            raise ValueError(f"need a share in (0, 1] and high or low, got {share}, {direction}")
        q = 1 - share if direction == "high" else share
        return float(10 ** np.interp(q, np.linspace(0, 1, 21), self.train_quantiles))

    def save(self, path: str | Path) -> None:
        from crysvcd.runinfo import atomic_write_text

        atomic_write_text(Path(path), json.dumps(asdict(self)))

    @classmethod
    def load(cls, path: str | Path | None = None) -> KappaSurrogate:
        """The shipped surrogate by default."""
        from crysvcd.evaluate.screen import load_json_model

        return load_json_model(cls, Path(path) if path else SHIPPED, "kappa surrogate", FEATURES)


def _mlp(n_in: int, hidden: int):
    from torch import nn

    return nn.Sequential(nn.Linear(n_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                         nn.SiLU(), nn.Linear(hidden, 1))  # fmt: skip
