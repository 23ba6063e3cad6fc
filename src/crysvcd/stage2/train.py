"""Train the structure diffusion model through ``training.fit``.

Loss (DiffCSP): MSE between the predicted and true lattice noise, plus MSE between the
predicted and true wrapped-normal score of the coordinate noise (scaled to unit size by
``sigmas_norm``). Each step draws one time per crystal. Property labels are dropped with
probability ``cond_drop`` so that the same model also predicts unconditionally, which
classifier-free guidance needs.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from crysvcd.conditioning import PropertySpec
from crysvcd.config import Stage2Config
from crysvcd.datasets import load_csv_or_pool, structure_from_cif
from crysvcd.stage2.batch import Crystal, CrystalBatch, PackedCrystals, canonical
from crysvcd.stage2.cspnet import CSPNet
from crysvcd.stage2.schedules import Schedules, wrapped_normal_score
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


def diffusion_loss(
    net, sched: Schedules, batch: CrystalBatch, gen: torch.Generator, cfg: Stage2Config
) -> tuple[torch.Tensor, dict]:
    """DiffCSP's loss on one batch; ``net`` is the model (or its DDP wrapper)."""
    device = batch.frac.device
    t = sched.sample_t(batch.n_crystals, gen)
    abar = sched.alphas_bar[t][:, None, None]
    eps_l = torch.randn(batch.lattice.shape, generator=gen, device=device)
    lattice_t = abar.sqrt() * batch.lattice + (1 - abar).sqrt() * eps_l
    sigma = sched.sigmas[t][batch.batch][:, None]
    eps_x = torch.randn(batch.frac.shape, generator=gen, device=device)
    frac_t = torch.remainder(batch.frac + sigma * eps_x, 1.0)
    norm = sched.sigmas_norm[t][batch.batch][:, None].sqrt()
    target_x = wrapped_normal_score(sigma * eps_x, sigma) / norm
    props = batch.props
    if props.shape[1]:
        props = props.clone()
        drop = torch.rand(len(props), generator=gen, device=device) < cfg.cond_drop
        props[drop] = float("nan")
    else:
        props = None
    pred_l, pred_x = net(t, frac_t, lattice_t, batch, props)
    loss_l = ((pred_l.float() - eps_l) ** 2).mean()
    loss_x = ((pred_x.float() - target_x) ** 2).mean()
    loss = cfg.cost_lattice * loss_l + cfg.cost_coord * loss_x
    return loss, {"lattice": loss_l.item(), "coord": loss_x.item()}


@torch.no_grad()
def dev_loss(
    model: CSPNet, sched: Schedules, data: PackedCrystals, device, n_rep: int = 2
) -> float:
    """Mean loss over ``n_rep`` passes with fixed noise, labels kept (the same number at
    every evaluation, so checkpoints compare)."""
    gen = torch.Generator(device).manual_seed(1234)
    sched = sched.to(device)
    total, n = 0.0, 0
    for _ in range(n_rep):
        for i in range(0, len(data), 256):
            batch = data.batch(torch.arange(i, min(i + 256, len(data))), device)
            loss, _ = diffusion_loss(model, sched, batch, gen, replace(model.cfg, cond_drop=0.0))
            total += loss.item() * batch.n_crystals
            n += batch.n_crystals
    return total / max(n, 1)


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
