"""Train the structure diffusion model: one loop, EMA weights, checkpoints, resume.

Loss (DiffCSP): MSE between the predicted and true lattice noise, plus MSE between the
predicted and true wrapped-normal score of the coordinate noise (scaled to unit size by
``sigmas_norm``). Each step draws one time per crystal. Property labels are dropped with
probability ``cond_drop`` so that the same model also predicts unconditionally, which
classifier-free guidance needs.
"""

from __future__ import annotations

import copy
import math
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from crysvcd.conditioning import PropertySpec
from crysvcd.config import Stage2Config
from crysvcd.datasets import load_csv_or_pool, structure_from_cif
from crysvcd.modelio import ema_update, read_checkpoint, save_model
from crysvcd.runinfo import log_epoch, write_run_record
from crysvcd.stage2.batch import CrystalBatch, canonical, collate
from crysvcd.stage2.cspnet import CSPNet
from crysvcd.stage2.schedules import Schedules, wrapped_normal_score

CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "checkpoints"


def shipped_checkpoint() -> Path:
    return CHECKPOINT_DIR / "stage2_csp.pt"


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
    model: CSPNet, sched: Schedules, batch: CrystalBatch, gen: torch.Generator, cond_drop: float
) -> tuple[torch.Tensor, dict]:
    cfg = model.cfg
    t = sched.sample_t(batch.n_crystals, gen)
    abar = sched.alphas_bar[t][:, None, None]
    eps_l = torch.randn(batch.lattice.shape, generator=gen)
    lattice_t = abar.sqrt() * batch.lattice + (1 - abar).sqrt() * eps_l
    sigma = sched.sigmas[t][batch.batch][:, None]
    eps_x = torch.randn(batch.frac.shape, generator=gen)
    frac_t = torch.remainder(batch.frac + sigma * eps_x, 1.0)
    norm = sched.sigmas_norm[t][batch.batch][:, None].sqrt()
    target_x = wrapped_normal_score(sigma * eps_x, sigma) / norm
    props = batch.props
    if props.shape[1]:
        props = props.clone()
        props[torch.rand(len(props), generator=gen) < cond_drop] = float("nan")
    else:
        props = None
    pred_l, pred_x = model(t, frac_t, lattice_t, batch, props)
    loss_l = ((pred_l - eps_l) ** 2).mean()
    loss_x = ((pred_x - target_x) ** 2).mean()
    loss = cfg.cost_lattice * loss_l + cfg.cost_coord * loss_x
    return loss, {"lattice": loss_l.item(), "coord": loss_x.item()}


def save_checkpoint(path: Path, model: CSPNet, **extra) -> None:
    save_model(path, model, **extra)


def load_model(path: str | Path) -> CSPNet:
    """A trained CSPNet (EMA weights) from a checkpoint file."""
    ckpt, cfg, specs = read_checkpoint(path, Stage2Config, "Stage II")
    model = CSPNet(cfg, specs)
    model.load_state_dict(ckpt.get("ema", ckpt["model"]))
    return model.eval()


def _lr(epoch_frac: float, seconds: float, cfg: Stage2Config) -> float:
    """Cosine from ``lr`` to ``min_lr`` over the budget, epochs or hours, whichever ends first:
    a wall-time-limited run still ends on a small learning rate."""
    frac = epoch_frac / max(1, cfg.max_epochs)
    if cfg.max_hours:
        frac = max(frac, seconds / (cfg.max_hours * 3600))
    frac = min(1.0, frac)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * frac))


@torch.no_grad()
def dev_loss(model, sched, crystals, cfg, n_rep: int = 2) -> float:
    gen = torch.Generator().manual_seed(1234)  # the same noise every evaluation
    total, n = 0.0, 0
    n_props = len(model.properties)
    for _ in range(n_rep):
        for i in range(0, len(crystals), 256):
            batch = collate(crystals[i : i + 256], n_props)
            loss, _ = diffusion_loss(model, sched, batch, gen, cond_drop=0.0)
            total += loss.item() * batch.n_crystals
            n += batch.n_crystals
    return total / max(n, 1)


def train(
    cfg: Stage2Config,
    out_dir: str | Path,
    data: str | Path | pd.DataFrame | None = None,
    init: str | Path | None = None,
    log=print,
) -> dict:
    """Train with EMA until ``max_epochs`` or ``max_hours``; resumes from ``out_dir/last.pt``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    df = data if isinstance(data, pd.DataFrame) else load_csv_or_pool(data)
    specs = [PropertySpec.parse(p).fitted(df) for p in cfg.properties]
    cache = out_dir / "crystals.pt"
    if cache.exists() and not isinstance(data, pd.DataFrame):
        splits = torch.load(cache, weights_only=False)
    else:
        splits = {
            s: crystals_from_frame(df[df["split"] == s], specs, cfg.max_atoms)
            for s in ("train", "dev")
        }
        if not isinstance(data, pd.DataFrame):
            torch.save(splits, cache)
    train_set, dev_set = splits["train"], splits["dev"] or splits["train"][:64]
    if not train_set:
        raise ValueError("no training crystals")
    log(f"train {len(train_set)} crystals, dev {len(dev_set)}")

    model = CSPNet(cfg, specs)
    sched = Schedules(cfg.timesteps, cfg.sigma_begin, cfg.sigma_end)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = {"epoch": 0, "step": 0, "seconds": 0.0, "best_dev": float("inf"), "history": []}
    last = out_dir / "last.pt"
    if last.exists():
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
        ema.load_state_dict(ckpt["ema"])
        opt.load_state_dict(ckpt["optimizer"])
        state = ckpt["state"]
        log(f"resumed from {last} at epoch {state['epoch']}")
    elif init is not None:
        base = torch.load(init, map_location="cpu", weights_only=False)
        weights = base.get("ema", base["model"])
        missing, unexpected = model.load_state_dict(weights, strict=False)
        if unexpected or any(not k.startswith("adapter.") for k in missing):
            raise ValueError(f"{init}: not a compatible Stage II checkpoint")
        ema.load_state_dict(model.state_dict())
        log(f"initialised from {init}")
    write_run_record(
        out_dir,
        cfg.to_dict(),
        cfg.seed,
        init=str(init) if init else None,
        n_params=model.n_params(),
        n_train=len(train_set),
        n_dev=len(dev_set),
    )

    n_props = len(specs)
    gen = torch.Generator().manual_seed(cfg.seed + state["epoch"])
    while state["epoch"] < cfg.max_epochs:
        if cfg.max_hours is not None and state["seconds"] >= cfg.max_hours * 3600:
            log(f"stopping: {cfg.max_hours} h of training reached")
            break
        model.train()
        t0 = time.time()
        order = torch.randperm(len(train_set), generator=gen).tolist()
        totals = {"loss": 0.0, "lattice": 0.0, "coord": 0.0}
        n_batches = math.ceil(len(order) / cfg.batch_size)
        for b in range(n_batches):
            batch = collate(
                [train_set[i] for i in order[b * cfg.batch_size : (b + 1) * cfg.batch_size]],
                n_props,
            )
            for group in opt.param_groups:
                group["lr"] = _lr(
                    state["epoch"] + b / n_batches, state["seconds"] + time.time() - t0, cfg
                )
            loss, parts = diffusion_loss(model, sched, batch, gen, cfg.cond_drop)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            ema_update(ema, model, cfg.ema_decay)
            state["step"] += 1
            totals["loss"] += loss.item()
            for k, v in parts.items():
                totals[k] += v
        state["epoch"] += 1
        state["seconds"] += time.time() - t0
        rec = {
            "epoch": state["epoch"],
            "hours": round(state["seconds"] / 3600, 4),
            "epoch_seconds": round(time.time() - t0, 1),
            **{f"train_{k}": v / n_batches for k, v in totals.items()},
        }
        if state["epoch"] % cfg.eval_every == 0 or state["epoch"] == cfg.max_epochs:
            rec["dev_loss"] = dev_loss(ema, sched, dev_set, cfg)
            # Snapshots of the EMA weights let benchmarks draw match rate against CPU-hours.
            save_checkpoint(
                out_dir / f"ema_epoch{state['epoch']:04d}.pt",
                ema,
                state={"epoch": state["epoch"], "hours": rec["hours"]},
            )
            if rec["dev_loss"] < state["best_dev"]:
                state["best_dev"] = rec["dev_loss"]
                save_checkpoint(out_dir / "best.pt", ema, state=dict(state))
        state["history"].append(rec)
        save_checkpoint(last, model, ema=ema.state_dict(), optimizer=opt.state_dict(), state=state)
        log_epoch(out_dir, rec, log)
    return {
        "epochs": state["epoch"],
        "hours": state["seconds"] / 3600,
        "best_dev_loss": state["best_dev"],
        "history": state["history"],
    }
