"""DiffCSP's training loss, on torch alone (device runs import it without pymatgen).

MSE between the predicted and true lattice noise, plus MSE between the predicted and true
wrapped-normal score of the coordinate noise (scaled to unit size by ``sigmas_norm``).
Each step draws one time per crystal. Property labels are dropped with probability
``cond_drop`` so that the same model also predicts unconditionally, which classifier-free
guidance needs.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from crysvcd.config import Stage2Config
from crysvcd.stage2.batch import CrystalBatch, PackedCrystals
from crysvcd.stage2.cspnet import CSPNet
from crysvcd.stage2.schedules import Schedules, wrapped_normal_score


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
