"""fit(): the one training loop of crysvcd.

Stage I, Stage II, the dielectric surrogate and the learning loop's fine-tunes all train
through it: a model, a loss function, a data set, an evaluation and a ``FitConfig`` in,
checkpoints out. Each caller keeps only what is its own (how rows become a batch, what
the loss is, what "better on dev" means).

A run folder holds
- ``last.pt`` after every epoch (weights, EMA, optimizer, counters): calling fit() again on
  the same folder resumes there, and replays the same batches and noise (each epoch's
  random streams are seeded by (seed, epoch), not carried over);
- ``best.pt`` whenever the monitored dev metric improves (the EMA weights when EMA is on);
- ``ema_epochNNNN.pt`` at each evaluation when ``snapshots`` is on (for match-rate curves);
- ``log.jsonl`` (one line per epoch) and ``run.json`` (config, seed, versions, device).

Learning rate: linear warm-up over ``warmup_steps``, then cosine from ``lr`` to ``min_lr``
over the budget, epochs or wall hours, whichever ends first, so a run cut by its time
budget still ends on a small learning rate.

Devices: ``device="auto"`` takes CUDA when present; asking for CUDA where there is none
falls back to the CPU with a warning. Started by ``torchrun`` with several processes, the
model is wrapped in DistributedDataParallel (NCCL on GPUs, gloo on CPUs): every process
draws the same permutation and takes its share of each batch, DDP averages the gradients,
rank 0 alone evaluates and writes, and stop decisions are broadcast from rank 0.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import torch
from torch import nn

from crysvcd import checkpoints
from crysvcd.config import FitConfig
from crysvcd.runinfo import log_epoch, write_run_record

log = logging.getLogger(__name__)


class Data(Protocol):
    """What fit() needs of a data set: its size, and a batch of given rows on a device."""

    def __len__(self) -> int: ...

    def batch(self, rows: torch.Tensor, device: torch.device) -> Any: ...


@dataclass
class TensorData:
    """Rows of equal-length tensors (Stage I's padded sequences)."""

    tensors: tuple[torch.Tensor, ...]

    def __len__(self) -> int:
        return len(self.tensors[0])

    def batch(self, rows: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, ...]:
        return tuple(t[rows].to(device) for t in self.tensors)


LossFn = Callable[[nn.Module, Any, torch.Generator], tuple[torch.Tensor, dict]]
EvalFn = Callable[[nn.Module, torch.device], dict]


@dataclass
class FitResult:
    epochs: int
    steps: int
    seconds: float
    best: float  # best monitored dev metric (inf when never evaluated)
    history: list[dict] = field(repr=False)
    best_path: Path | None
    last_path: Path


def seed_everything(seed: int) -> None:
    """Seed torch (this process starts from a random seed otherwise), numpy and random:
    call it before building a model, so that its initial weights are reproducible."""
    import random

    import numpy as np

    torch.manual_seed(seed)
    np.random.seed(seed % 2**32)
    random.seed(seed)


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when available, else CPU; CUDA asked for but absent -> CPU, warned."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        log.warning("device %s asked for but CUDA is not available: using the CPU", name)
        return torch.device("cpu")
    try:
        return torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}: use auto, cpu, cuda or cuda:N") from None


def precision_context(device: torch.device, precision: str = "fp32"):
    """The context a network's forward pass runs in: bf16 autocast for "bf16"; for "tf32",
    TF32 matmuls switched on (CUDA only; a process-wide setting); else nothing."""
    if precision == "tf32" and device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    if precision == "bf16":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return nullcontext()


def learning_rate(cfg: FitConfig, step: int, total_steps: int, seconds: float) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = (step - cfg.warmup_steps) / max(1, total_steps - cfg.warmup_steps)
    if cfg.max_hours:
        frac = max(frac, seconds / (cfg.max_hours * 3600))
    frac = min(1.0, frac)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * frac))


@torch.no_grad()
def ema_update(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter."""
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm, 1 - decay)


def _epoch_seed(seed: int, epoch: int, rank: int = 0) -> int:
    return (seed * 1_000_003 + epoch * 7919 + rank * 104_729) % (2**63)


class _Distributed:
    """Rank and world size; initialises (and later ends) a process group under torchrun."""

    def __init__(self, device: torch.device):
        import torch.distributed as dist

        self.dist = dist
        self.owned = False
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world > 1 and not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
            self.owned = True
        self.on = dist.is_available() and dist.is_initialized()
        self.rank = dist.get_rank() if self.on else 0
        self.world = dist.get_world_size() if self.on else 1

    def agree(self, flag: bool) -> bool:
        """Rank 0's decision, on every rank (each rank measures its own wall time)."""
        if not self.on:
            return flag
        t = torch.tensor([int(flag)])
        self.dist.broadcast(t, 0)
        return bool(t.item())

    def close(self) -> None:
        if self.owned:
            self.dist.destroy_process_group()


def fit(
    model: nn.Module,
    loss_fn: LossFn,
    train: Data,
    evaluate: EvalFn,
    cfg: FitConfig,
    out_dir: str | Path,
    *,
    monitor: str = "dev_loss",
    init: str | Path | None = None,
    allow_missing: tuple[str, ...] = ("adapter.",),
    meta: dict | None = None,
    run_info: dict | None = None,
) -> FitResult:
    """Train ``model`` on ``train``; returns the counters and history.

    ``loss_fn(net, batch, generator) -> (loss, {name: float})`` must call ``net(...)``
    (DDP hooks live in forward). ``evaluate(model, device) -> {name: float}`` includes
    ``monitor`` (lower is better). ``init``: weights to start from when there is nothing to
    resume (a fine-tune); keys under ``allow_missing`` may be new. ``meta`` goes into every
    checkpoint (e.g. Stage I's vocabulary) and must agree with ``init``'s.
    """
    out_dir = Path(out_dir)
    meta = dict(meta or {})
    device = resolve_device(cfg.device)
    dist = _Distributed(device)
    if dist.on and device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    if len(train) == 0:
        raise ValueError("no training rows")
    torch.manual_seed(cfg.seed)
    model.to(device)
    ema = copy.deepcopy(model).requires_grad_(False) if cfg.ema_decay else None
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = {"epoch": 0, "step": 0, "seconds": 0.0, "best": math.inf, "bad_evals": 0}
    state["history"] = []
    last = out_dir / "last.pt"
    if last.exists():
        ckpt = torch.load(last, map_location=device, weights_only=False)
        checkpoints.load_weights(model, ckpt["model"])
        if ema is not None:
            checkpoints.load_weights(ema, ckpt.get("ema", ckpt["model"]))
        opt.load_state_dict(ckpt["optimizer"])
        state = ckpt["state"]
        log.info("resumed from %s at epoch %d, step %d", last, state["epoch"], state["step"])
    elif init is not None:
        base = torch.load(init, map_location=device, weights_only=False)
        for key, value in meta.items():
            if key in base and base[key] != value:
                raise checkpoints.CheckpointError(f"{init}: its {key} differs from this model's")
        checkpoints.load_weights(model, base.get("ema", base["model"]), allow_missing)
        if ema is not None:
            ema.load_state_dict(model.state_dict())
        log.info("initialised from %s", init)
    if dist.rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        info = {
            "init": str(init) if init else None,
            "device": str(device),
            "world_size": dist.world,
            "n_params": sum(p.numel() for p in model.parameters()),
            "n_train": len(train),
            **(run_info or {}),
        }
        write_run_record(
            out_dir, {"model": model.cfg.to_dict(), "fit": asdict(cfg)}, cfg.seed, **info
        )
    net = model
    if dist.on:
        from torch.nn.parallel import DistributedDataParallel

        ids = [device.index] if device.type == "cuda" else None
        net = DistributedDataParallel(model, device_ids=ids)
    autocast = precision_context(device, cfg.precision)

    def save(path: Path, module: nn.Module, **extra) -> None:
        checkpoints.save(path, module, **meta, **extra)

    n = len(train)
    session_start, lr = time.time(), cfg.lr
    steps_per_epoch = math.ceil(n / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.max_epochs
    try:
        while state["epoch"] < cfg.max_epochs:
            over_time = cfg.max_hours is not None and state["seconds"] >= cfg.max_hours * 3600
            if cfg.session_hours is not None:  # this invocation's slice of the budget
                over_time |= time.time() - session_start >= cfg.session_hours * 3600
            patience_out = cfg.patience is not None and state["bad_evals"] >= cfg.patience
            if dist.agree(over_time or patience_out):
                log.info("stopping: %s", "time budget reached" if over_time else "no progress")
                break
            net.train()
            t0 = time.time()
            epoch = state["epoch"]
            perm = torch.randperm(
                n, generator=torch.Generator().manual_seed(_epoch_seed(cfg.seed, epoch))
            )
            noise = torch.Generator(device).manual_seed(_epoch_seed(cfg.seed, epoch, dist.rank))
            totals: dict[str, float] = {}
            n_batches = 0
            for b in range(steps_per_epoch):
                rows = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
                if len(rows) < dist.world:
                    continue  # every rank needs a share of every step
                batch = train.batch(rows[dist.rank :: dist.world], device)
                lr = learning_rate(
                    cfg, state["step"], total_steps, state["seconds"] + time.time() - t0
                )
                for group in opt.param_groups:
                    group["lr"] = lr
                with autocast:
                    loss, parts = loss_fn(net, batch, noise)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                if cfg.grad_clip:
                    nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
                opt.step()
                state["step"] += 1
                if ema is not None:
                    ema_update(
                        ema, model, min(cfg.ema_decay, (1 + state["step"]) / (10 + state["step"]))
                    )
                for k, v in {"loss": loss.item(), **parts}.items():
                    totals[k] = totals.get(k, 0.0) + float(v)
                n_batches += 1
            state["epoch"] += 1
            state["seconds"] += time.time() - t0
            rec = {
                "epoch": state["epoch"],
                "step": state["step"],
                "hours": round(state["seconds"] / 3600, 4),
                "epoch_seconds": round(time.time() - t0, 2),
                "lr": lr,
                **{f"train_{k}": v / max(n_batches, 1) for k, v in totals.items()},
            }
            due = state["epoch"] % cfg.eval_every == 0 or state["epoch"] == cfg.max_epochs
            if dist.rank == 0:
                if due:
                    judged = ema if ema is not None else model
                    judged.eval()
                    with torch.no_grad():
                        rec.update(evaluate(judged, device))
                    if cfg.snapshots:
                        save(
                            out_dir / f"ema_epoch{state['epoch']:04d}.pt",
                            judged,
                            state={"epoch": state["epoch"], "hours": rec["hours"]},
                        )
                    if _improved(rec[monitor], state["best"]):
                        state["best"], state["bad_evals"] = rec[monitor], 0
                        save(
                            out_dir / "best.pt",
                            judged,
                            state={k: v for k, v in state.items() if k != "history"},
                        )
                        rec["best"] = True
                    else:
                        state["bad_evals"] += 1
                state["history"].append(rec)
                extra = {"ema": checkpoints.weights(ema)} if ema is not None else {}
                save(last, model, optimizer=opt.state_dict(), state=state, **extra)
                log_epoch(out_dir, rec)
                log.info(_format(rec))
    finally:
        dist.close()
    return FitResult(
        epochs=state["epoch"],
        steps=state["step"],
        seconds=state["seconds"],
        best=state["best"],
        history=state["history"],
        best_path=out_dir / "best.pt" if (out_dir / "best.pt").exists() else None,
        last_path=last,
    )


def _improved(value: float, best: float) -> bool:
    """A finite value below the best by more than a relative 1e-4 (the first always is)."""
    if not math.isfinite(value):
        return False
    return not math.isfinite(best) or value < best - 1e-4 * max(1.0, abs(best))


def _format(rec: dict) -> str:
    return " ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in rec.items())
