"""A learned composition screen: the chance that a formula's generated crystal comes out
stable (or, in a property campaign, a hit), fitted on the crystals labelled so far.

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

A property screen (a dielectric constant, kappa) is about what a crystal is: it adds each
element's atom fraction ("frac:Ti") to the descriptors, and is fitted on the target's
bundled DFT labels plus the campaign's own. Those data have no Stage I valence tokens, so it
leaves out the three descriptors that need them (``COMPOSITION_FEATURES``). Fitted on the
2,239 training rows of the bundled DFPT sets, its AUC for epsilon >= 50 on the 113 held-out
rows is 0.87 (``python benchmarks/loop.py target-screen``; README, dielectric campaign).
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
# descriptors that need Stage I's valence tokens: not in a screen fitted on bundled DFT data
VALENCE_FEATURES = ("mixed_valence", "hydride", "alloy")
COMPOSITION_FEATURES = tuple(f for f in FEATURES if f not in VALENCE_FEATURES)
FRACTION = "frac:"  # "frac:Ti": the atom fraction of Ti


def element_features(formulas) -> tuple[str, ...]:
    """One atom-fraction descriptor per element of ``formulas``, in order of Z."""
    els = {el for f in formulas for el in Composition(f).elements}
    return tuple(FRACTION + el.symbol for el in sorted(els, key=lambda el: el.Z))


def _known(name: str) -> bool:
    from pymatgen.core import Element

    if name in FEATURES:
        return True
    return name.startswith(FRACTION) and Element.is_valid_symbol(name[len(FRACTION) :])


def features(
    composition: Composition, kind: str, valence: str = "", names: tuple[str, ...] = FEATURES
) -> np.ndarray:
    """The descriptors ``names`` of one formula (``valence``: Stage I's tokens,
    "Mn2+x1 O2-x1")."""
    from crysvcd.metrics import mp_formula_known

    els = list(composition.elements)
    frac = composition.fractional_composition
    w = np.array([frac[el] for el in els])
    with warnings.catch_warnings():  # noble gases have no Pauling value (pymatgen warns)
        warnings.simplefilter("ignore")
        x = np.array([el.X if el.X == el.X else 1.5 for el in els])
    x_mean = float((w * x).sum())
    species = valence.split()
    values = [
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
    base = dict(zip(FEATURES, values))
    return np.array([base[n] if n in base else frac[n[len(FRACTION) :]] for n in names])


@dataclass
class Screen:
    """Standardised logistic regression over ``features``; ``score`` is the log-odds of
    ``label`` ("stable", or a property campaign's condition such as "dielectric_high")."""

    mean: list[float]
    scale: list[float]
    weights: list[float]
    bias: float
    n_train: int
    n_hits: int
    features: tuple[str, ...] = FEATURES
    label: str = "stable"

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        y: np.ndarray,
        names: tuple[str, ...] = FEATURES,
        label: str = "stable",
        l2: float = 0.03,
        weight: np.ndarray | None = None,
    ) -> Screen:
        """Fit on descriptors ``x`` (rows of ``features(..., names=names)``) and 0/1 labels
        ``y``, each row counting ``weight`` times (default once)."""
        import torch

        y = np.asarray(y, dtype=float)
        if len(y) < 10 or y.min() == y.max():
            raise ValueError(
                f"the {label} screen needs at least 10 labelled crystals of both kinds, "
                f"got {len(y)} ({int(y.sum())} {label})"
            )
        if x.shape[1] != len(names):
            raise ValueError(f"{x.shape[1]} descriptors for {len(names)} feature names")
        mean, scale = x.mean(0), x.std(0) + 1e-9
        xs = torch.tensor((x - mean) / scale, dtype=torch.float64)
        yt = torch.tensor(y, dtype=torch.float64)
        wt = torch.tensor(np.ones(len(y)) if weight is None else weight, dtype=torch.float64)
        if wt.shape != yt.shape or not bool((wt > 0).all()):
            raise ValueError(f"one positive weight per labelled crystal, got {tuple(wt.shape)}")
        wt = wt / wt.mean()
        w = torch.zeros(xs.shape[1], dtype=torch.float64, requires_grad=True)
        b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
        opt = torch.optim.LBFGS([w, b], max_iter=200, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            logits = xs @ w + b
            loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, yt, wt)
            loss = loss + l2 * (w**2).sum()  # a few hundred labels: keep the weights small
            loss.backward()
            return loss

        opt.step(closure)
        return cls(mean.tolist(), scale.tolist(), w.detach().tolist(), float(b.item()),
                   len(y), int(y.sum()), tuple(names), label)  # fmt: skip

    def descriptors(self, composition: Composition, kind: str, valence: str = "") -> np.ndarray:
        """This screen's descriptors of one formula."""
        return features(composition, kind, valence, self.features)

    def score(self, x: np.ndarray) -> np.ndarray:
        z = (np.atleast_2d(x) - np.array(self.mean)) / np.array(self.scale)
        return z @ np.array(self.weights) + self.bias

    def save(self, path: str | Path) -> None:
        from crysvcd.runinfo import atomic_write_text

        atomic_write_text(Path(path), json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: str | Path) -> Screen:
        # screens saved before property screens existed counted "n_stable"
        model = load_json_model(cls, Path(path), "screen", None, {"n_stable": "n_hits"})
        unknown = [n for n in model.features if not _known(n)]
        if unknown or len(model.weights) != len(model.features):
            raise ValueError(f"{path}: a screen over unknown descriptors {unknown}")
        return model


def load_json_model(
    cls, path: Path, what: str, features: tuple[str, ...] | None, renamed: dict | None = None
):
    """A dataclass model saved as JSON (a screen, a surrogate), with clear errors for a
    missing file, another file, or a model over other descriptors than ``features`` (None:
    the caller checks them). ``renamed``: old field name -> new."""
    if not path.is_file():
        raise FileNotFoundError(f"no {what} {path}")
    try:
        data = json.loads(path.read_text())
        data = {(renamed or {}).get(k, k): v for k, v in data.items()}
        model = cls(**{**data, "features": tuple(data.get("features", ()))})
    except (ValueError, TypeError, AttributeError) as exc:
        raise ValueError(f"{path}: not a {what} ({exc})") from None
    if features is not None and model.features != features:
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
