"""A learned composition screen: the chance that a formula's generated crystal comes out
stable, fitted on the crystals a campaign has labelled so far.

Stage I proposes more formulas than a round needs, the screen ranks them, and only the
best go on to Stage II and the MLIP (``GenerateConfig.screen``). This is the filter step of
active-learning searches such as GNoME: a cheap model, refitted on every round's
labels, decides where the expensive labels are spent. It is a logistic regression on a
few composition descriptors, because a campaign has a few hundred labels: on the 596
crystals of the earlier loop and campaign runs its held-out AUC is 0.67 on random splits
and 0.59 when trained on round 0 and tested on later rounds, and its weights can be read
(``python benchmarks/loop.py screen RUN ...``; README, "learning loop").

The descriptors say why a generated crystal fails more than what it is: many elements and
atoms, mixed valence, H- anions and 4f/5f elements lower the odds; a formula the Materials
Project knows raises them.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from pymatgen.core import Composition

FEATURES = (
    "mp_formula_known",  # the reduced formula is a Materials Project entry
    "n_elements",
    "log_n_atoms",  # atoms in the cell Stage I wrote
    "x_mean",  # Pauling electronegativity, atom-fraction weighted
    "x_range",
    "x_std",
    "max_fraction",
    "oxide",
    "halide",
    "f_block",
    "n_transition_metals",
    "mixed_valence",  # one element in two oxidation states
    "hydride",  # an H- anion
    "alloy",  # Stage I's alloy model (zero-valence tokens)
    "z_mean",
)


def features(composition: Composition, kind: str, valence: str = "") -> np.ndarray:
    """The descriptors of one formula (``valence``: Stage I's tokens, "Mn2+x1 O2-x1")."""
    from crysvcd.metrics import mp_formula_known

    els = list(composition.elements)
    frac = composition.fractional_composition
    w = np.array([frac[el] for el in els])
    with warnings.catch_warnings():  # noble gases have no Pauling value (pymatgen warns)
        warnings.simplefilter("ignore")
        x = np.array([el.X if el.X == el.X else 1.5 for el in els])
    x_mean = float((w * x).sum())
    species = valence.split()
    return np.array(
        [
            float(mp_formula_known(composition)),
            len(els),
            math.log(composition.num_atoms),
            x_mean,
            float(x.max() - x.min()),
            float(np.sqrt((w * (x - x_mean) ** 2).sum())),
            float(w.max()),
            float(any(el.symbol == "O" for el in els)),
            float(any(el.is_halogen for el in els)),
            float(any(el.is_lanthanoid or el.is_actinoid for el in els)),
            float(sum(el.is_transition_metal for el in els)),
            float(len(species) > len(els)),
            float(any(s.startswith("H-") for s in species)),
            float(kind == "alloy"),
            float((w * np.array([el.Z for el in els])).sum() / 50),
        ]
    )


@dataclass
class StabilityScreen:
    """Standardised logistic regression over ``FEATURES``; ``score`` is the log-odds."""

    mean: list[float]
    scale: list[float]
    weights: list[float]
    bias: float
    n_train: int
    n_stable: int
    features: tuple[str, ...] = FEATURES

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, l2: float = 0.03) -> StabilityScreen:
        """Fit on descriptors ``x`` (rows of ``features``) and 0/1 labels ``y``."""
        import torch

        y = np.asarray(y, dtype=float)
        if len(y) < 10 or y.min() == y.max():
            raise ValueError(
                f"the stability screen needs at least 10 labelled crystals of both kinds, "
                f"got {len(y)} ({int(y.sum())} stable)"
            )
        mean, scale = x.mean(0), x.std(0) + 1e-9
        xs = torch.tensor((x - mean) / scale, dtype=torch.float64)
        yt = torch.tensor(y, dtype=torch.float64)
        w = torch.zeros(xs.shape[1], dtype=torch.float64, requires_grad=True)
        b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            logits = xs @ w + b
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, yt)
            loss = loss + l2 * (w**2).sum()  # a few hundred labels: keep the weights small
            loss.backward()
            return loss

        opt.step(closure)
        return cls(mean.tolist(), scale.tolist(), w.detach().tolist(), float(b.item()),
                   len(y), int(y.sum()))  # fmt: skip

    def score(self, x: np.ndarray) -> np.ndarray:
        z = (np.atleast_2d(x) - np.array(self.mean)) / np.array(self.scale)
        return z @ np.array(self.weights) + self.bias

    def save(self, path: str | Path) -> None:
        from crysvcd.runinfo import atomic_write_text

        atomic_write_text(Path(path), json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> StabilityScreen:
        return load_json_model(cls, Path(path), "stability screen", FEATURES)


def load_json_model(cls, path: Path, what: str, features: tuple[str, ...]):
    """A dataclass model saved as JSON (a screen, a surrogate), with clear errors for a
    missing file, another file, or a model over other descriptors."""
    if not path.is_file():
        raise FileNotFoundError(f"no {what} {path}")
    try:
        data = json.loads(path.read_text())
        model = cls(**{**data, "features": tuple(data.get("features", ()))})
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: not a {what} ({exc})") from None
    if model.features != features:
        raise ValueError(f"{path}: a {what} over other descriptors {model.features}")
    return model


def select(scores: np.ndarray, labels: list[str], n: int) -> list[int]:
    """Indices of the ``n`` best-scored items, one per distinct label first (so the screen
    does not spend a round on copies of one formula), then the best remaining copies."""
    order = sorted(range(len(scores)), key=lambda i: -scores[i])
    seen: set[str] = set()
    first, again = [], []
    for i in order:
        (again if labels[i] in seen else first).append(i)
        seen.add(labels[i])
    return sorted((first + again)[:n])
