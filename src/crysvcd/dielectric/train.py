"""Train the dielectric surrogate through ``training.fit`` and export it.

crysvcd train dielectric --out runs/dielectric --max-hours 0.4
crysvcd train dielectric --export runs/dielectric
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from pymatgen.core import Element

from crysvcd import checkpoints
from crysvcd.dielectric.data import (
    DATA_FILE,
    Graph,
    GraphBatch,
    GraphData,
    graphs_from_frame,
    load_frame,
)
from crysvcd.dielectric.model import DielectricConfig, DielectricNet, _load
from crysvcd.training import FitConfig, FitResult, fit, seed_everything

log = logging.getLogger(__name__)

# The shipped model's settings (22 min on one shared core, README); the first 50 steps
# warm the learning rate up (about one epoch of the 837 training structures).
FIT = FitConfig(
    batch_size=16, lr=2e-3, min_lr=5e-5, weight_decay=1e-5, warmup_steps=50, ema_decay=0.99,
    max_epochs=80, patience=40,
)  # fmt: skip


@torch.no_grad()
def evaluate_graphs(
    model: DielectricNet, graphs: list[Graph], device="cpu", batch_size: int = 64
) -> dict:
    """MAE of log10 eps and of eps on graphs with known targets."""
    model.eval()
    pred = (
        torch.cat(
            [
                model.log_eps(GraphBatch.of(graphs[i : i + batch_size]).to(device))
                for i in range(0, len(graphs), batch_size)
            ]
        )
        .double()
        .cpu()
    )
    true = torch.tensor([g.y for g in graphs], dtype=torch.float64)
    return {
        "mae_log": (pred - true).abs().mean().item(),
        "mae_eps": (10**pred - 10**true).abs().mean().item(),
    }


def l1_loss(net, batch: GraphBatch, gen) -> tuple[torch.Tensor, dict]:
    """L1 of the standardised target: the reported MAE, in units of the training std."""
    cfg = net.module.cfg if hasattr(net, "module") else net.cfg
    target = (batch.y - cfg.target_mean) / cfg.target_std
    return (net(batch) - target).abs().mean(), {}


def train(
    cfg: DielectricConfig,
    out_dir: str | Path,
    fit_cfg: FitConfig = FIT,
    data: pd.DataFrame | None = None,
) -> FitResult:
    """Train on the train split (the bundled table by default: columns ``cif``, ``log_eps``,
    ``split``); the EMA weights with the best val MAE(log10 eps) go to ``best.pt``. The
    test split is never looked at here."""
    df = load_frame(cfg.val_percent, cfg.test_percent) if data is None else data
    train_set = graphs_from_frame(df[df["split"] == "train"], cfg.cutoff)
    val_set = graphs_from_frame(df[df["split"] == "val"], cfg.cutoff) or train_set[:32]
    if not train_set:
        raise ValueError("no training structures")
    y = np.array([g.y for g in train_set])
    degree = np.mean([len(g.centre) / len(g.z) for g in train_set])
    cfg = replace(
        cfg,
        avg_neighbors=round(float(degree), 3),
        target_mean=round(float(y.mean()), 5),
        target_std=round(float(y.std()) or 1.0, 5),
    )
    elements = sorted({Element.from_Z(int(z)).symbol for g in train_set for z in g.z})
    log.info("train %d, val %d, %d elements", len(train_set), len(val_set), len(elements))
    seed_everything(fit_cfg.seed)  # the initial weights
    model = DielectricNet(cfg)
    model.elements = elements

    def evaluate(m, device) -> dict:
        val = evaluate_graphs(m, val_set, device)
        return {"val_mae_log": val["mae_log"], "val_mae_eps": val["mae_eps"]}

    return fit(
        model,
        l1_loss,
        GraphData(train_set),
        evaluate,
        fit_cfg,
        out_dir,
        monitor="val_mae_log",
        meta={"elements": elements},
        run_info={
            "data": DATA_FILE if data is None else "frame",
            "n_dropped": int(df.attrs.get("n_dropped", 0)),
            "n_train": len(train_set),
            "n_val": len(val_set),
            "elements": elements,
        },
    )


def export(run_dir: str | Path, dest: str | Path | None = None, **figures) -> Path:
    """``run_dir/best.pt`` to ``dest`` (the shipped path by default) with its sidecar."""
    dest = Path(dest or checkpoints.shipped("dielectric"))
    cfg = torch.load(Path(run_dir) / "best.pt", map_location="cpu", weights_only=False)["config"]
    split = (
        "sha256('dielectric:' + material_id) % 100: "
        f"< {cfg['test_percent']} test, < {cfg['test_percent'] + cfg['val_percent']} val, "
        "else train"
    )
    out = checkpoints.export(
        run_dir,
        dest,
        model="e3nn equivariant message passing, target log10(poly_total)",
        data=f"{DATA_FILE} (Petousis et al. 2017, CC-BY 4.0)",
        split=split,
        **figures,
    )
    _load.cache_clear()
    return out
