"""Train the structure diffusion model through ``training.fit`` (the loss: ``loss.py``)."""

from __future__ import annotations

import logging
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from crysvcd.conditioning import PropertySpec
from crysvcd.config import Stage2Config
from crysvcd.datasets import load_csv_or_pool, structure_from_cif
from crysvcd.stage2.batch import Crystal, PackedCrystals, canonical
from crysvcd.stage2.cspnet import CSPNet
from crysvcd.stage2.loss import dev_loss, diffusion_loss
from crysvcd.stage2.schedules import Schedules
from crysvcd.training import FitConfig, FitResult, fit, seed_everything

log = logging.getLogger(__name__)

# The shipped 4 x 256 model's settings (README); a GPU run uses batch 256 (DEVICE.md).
FIT = FitConfig(
    batch_size=64, lr=1e-3, min_lr=1e-4, ema_decay=0.999, max_epochs=1000, eval_every=5,
    snapshots=True,
)  # fmt: skip


def crystals_from_frame(df: pd.DataFrame, specs: list[PropertySpec], max_atoms: int) -> list:
    props = np.stack([s.encode_column(df) for s in specs], 1) if specs else None
    out = []
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i, cif in enumerate(df["cif"]):
            c = canonical(structure_from_cif(cif))
            if len(c.atom_types) > max_atoms:
                continue
            if props is not None:
                c.props = props[i].astype(np.float32)
            out.append(c)
    return out


def packed_splits(
    df: pd.DataFrame, specs: list[PropertySpec], cfg: Stage2Config
) -> dict[str, PackedCrystals]:
    """Train and dev crystals of a frame with a ``split`` column, packed."""
    out = {}
    for split in ("train", "dev"):
        crystals: list[Crystal] = crystals_from_frame(
            df[df["split"] == split], specs, cfg.max_atoms
        )
        out[split] = PackedCrystals.of(crystals, len(specs)) if crystals else None
    if out["train"] is None:
        raise ValueError("no training crystals")
    if out["dev"] is None:
        out["dev"] = out["train"]  # tiny user sets: judge on the training crystals
    return out


def train(
    cfg: Stage2Config,
    out_dir: str | Path,
    fit_cfg: FitConfig = FIT,
    data: str | Path | pd.DataFrame | None = None,
    init: str | Path | None = None,
) -> FitResult:
    """Train with EMA until ``max_epochs`` or ``max_hours``; resumes from ``out_dir/last.pt``.

    The parsed crystals of the bundled pool or a CSV are cached in ``out_dir/crystals.pt``
    (CIF parsing and Niggli reduction take minutes).
    """
    out_dir = Path(out_dir)
    df = data if isinstance(data, pd.DataFrame) else load_csv_or_pool(data)
    specs = [PropertySpec.parse(p).fitted(df) for p in cfg.properties]
    cache = out_dir / "crystals.pt"
    key = {
        "data": str(data),
        "properties": [s.to_dict() for s in specs],
        "max_atoms": cfg.max_atoms,
    }
    splits = None
    if cache.exists() and not isinstance(data, pd.DataFrame):
        stored = torch.load(cache, weights_only=False)
        splits = stored["splits"] if stored.get("key") == key else None
    if splits is None:
        splits = packed_splits(df, specs, cfg)
        if not isinstance(data, pd.DataFrame):
            out_dir.mkdir(parents=True, exist_ok=True)
            torch.save({"key": key, "splits": splits}, cache)
    log.info("train %d crystals, dev %d", len(splits["train"]), len(splits["dev"]))
    sched = Schedules(cfg.timesteps, cfg.sigma_begin, cfg.sigma_end)

    def loss(net, batch, gen):
        return diffusion_loss(net, sched.to(batch.frac.device), batch, gen, cfg)

    seed_everything(fit_cfg.seed)  # the initial weights
    return fit(
        CSPNet(cfg, specs),
        loss,
        splits["train"],
        lambda model, device: {"dev_loss": dev_loss(model, sched, splits["dev"], device)},
        fit_cfg,
        out_dir,
        init=init,
        run_info={"n_dev": len(splits["dev"])},
    )
