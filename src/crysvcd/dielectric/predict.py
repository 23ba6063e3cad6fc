"""Predictions of the dielectric surrogate for any crystals, and the labels
``crysvcd evaluate --dielectric`` stores."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from pymatgen.core import Element, Structure

from crysvcd.dielectric.data import Graph, GraphBatch, structure_graph
from crysvcd.dielectric.model import DielectricNet, load_model


def unseen_elements(symbols, model: DielectricNet) -> list[str]:
    """The element symbols the network never saw in training (none for a model saved
    without its element list)."""
    if not model.elements:
        return []
    return sorted(set(symbols) - set(model.elements))


def check_trained_elements(g: Graph, model: DielectricNet) -> None:
    """Refuse elements the network never saw in training (their descriptors alone are an
    extrapolation)."""
    missing = unseen_elements({Element.from_Z(int(z)).symbol for z in g.z}, model)
    if missing:
        raise ValueError(
            f"unknown element(s) {missing}: not in the model's training data "
            "(pass allow_unseen_elements=True to predict from element descriptors anyway)"
        )


@torch.no_grad()
def predict_log_dielectric(
    structures: list,
    checkpoint: str | Path | DielectricNet | None = None,
    errors: str = "raise",
    allow_unseen_elements: bool = False,
    batch_size: int = 64,
) -> np.ndarray:
    """log10 of the total dielectric constant of each structure.

    ``errors='raise'`` raises ValueError for the first unusable structure (non-periodic,
    NaN coordinates, isolated or overlapping atoms, unknown element); ``errors='nan'``
    gives NaN for it instead.
    """
    if errors not in ("raise", "nan"):
        raise ValueError(f"errors must be 'raise' or 'nan', not {errors!r}")
    if not isinstance(structures, (list, tuple)):
        structures = [structures]
    model = checkpoint if isinstance(checkpoint, DielectricNet) else None
    model = model or load_model(checkpoint)
    out = np.full(len(structures), np.nan)
    graphs, index = [], []
    for i, s in enumerate(structures):
        try:
            g = structure_graph(s, model.cfg.cutoff)
            if not allow_unseen_elements:
                check_trained_elements(g, model)
        except ValueError as exc:
            if errors == "raise":
                raise ValueError(f"structure {i}: {exc}") from None
            continue
        graphs.append(g)
        index.append(i)
    for k in range(0, len(graphs), batch_size):
        pred = model.log_eps(GraphBatch.of(graphs[k : k + batch_size]))
        out[index[k : k + batch_size]] = pred.double().numpy()
    return out


def predict_dielectric(
    structures: list,
    checkpoint: str | Path | DielectricNet | None = None,
    errors: str = "raise",
    allow_unseen_elements: bool = False,
) -> np.ndarray:
    """Total (electronic + ionic) dielectric constant, orientation-averaged, per structure.

    Uses the shipped checkpoint unless ``checkpoint`` (a path or a loaded model) is given.
    See ``predict_log_dielectric`` for ``errors`` and ``allow_unseen_elements``.
    """
    return 10.0 ** predict_log_dielectric(structures, checkpoint, errors, allow_unseen_elements)


def dielectric_labels(
    structure: Structure,
    checkpoint: str | Path | None = None,
    allow_unseen_elements: bool = False,
) -> dict:
    """Labels for ``crysvcd evaluate``: ``dielectric_total`` (and its log10), or
    ``dielectric_error`` with the reason when the structure is unusable."""
    try:
        log_eps = predict_log_dielectric(
            [structure], checkpoint, allow_unseen_elements=allow_unseen_elements
        )[0]
    except ValueError as exc:
        return {"dielectric_error": str(exc).removeprefix("structure 0: ")}
    return {"dielectric_total": float(10.0**log_eps), "dielectric_log10": float(log_eps)}
