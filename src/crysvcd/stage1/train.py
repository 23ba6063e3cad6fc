"""Train or fine-tune the composition model: one short loop, checkpoint every epoch, resume.

Data: the valence-labelled training pool (or a user CSV), one model per kind. Each formula
appears in its canonical order plus up to ``permutations`` random orders of its tokens.
The dev split decides early stopping and which checkpoint is kept as ``best.pt``.
"""

from __future__ import annotations

import math
import random
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from crysvcd.chem.valence import label_valence
from crysvcd.conditioning import PropertySpec
from crysvcd.config import Stage1Config
from crysvcd.datasets import load_csv_or_pool
from crysvcd.modelio import read_checkpoint, save_model
from crysvcd.runinfo import log_epoch, write_run_record
from crysvcd.stage1.model import CompositionGPT
from crysvcd.stage1.tokens import END, PAD, START, Vocabulary

CHECKPOINT_DIR = Path(__file__).resolve().parent.parent / "checkpoints"


def shipped_checkpoint(kind: str) -> Path:
    return CHECKPOINT_DIR / f"stage1_{kind}.pt"


def encode_rows(
    df: pd.DataFrame, cfg: Stage1Config, vocab: Vocabulary, specs: list[PropertySpec]
) -> tuple[list[tuple[list[int], list[int]]], np.ndarray]:
    """Sequences of the rows whose label matches the model kind, and their property values."""
    seqs, keep = [], []
    for i, formula in enumerate(df["cell_formula"]):
        try:
            a = label_valence(formula)
        except ValueError:
            continue
        if a.kind != cfg.kind or len(a.tokens) > cfg.max_tokens:
            continue
        if sum(t.count for t in a.tokens) > cfg.max_atoms:
            continue
        try:
            seqs.append(vocab.encode(a, cfg.max_count))
        except ValueError:
            continue  # elemental non-metals (Cl2, O2) have no zero-valence token
        keep.append(i)
    props = np.stack([s.encode_column(df.iloc[keep]) for s in specs], 1) if specs else None
    if props is None:
        props = np.zeros((len(keep), 0))
    return seqs, props


def to_tensors(
    seqs: list[tuple[list[int], list[int]]],
    props: np.ndarray,
    cfg: Stage1Config,
    permutations: int,
    rng: random.Random,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Padded (species, counts, props) with START/END, plus random-order copies."""
    length = cfg.max_tokens + 2
    rows_s, rows_c, rows_p = [], [], []
    for (ids, counts), p in zip(seqs, props):
        orders = [tuple(range(len(ids)))]
        for _ in range(permutations):
            perm = list(range(len(ids)))
            rng.shuffle(perm)
            if tuple(perm) not in orders:
                orders.append(tuple(perm))
        for order in orders:
            s = [START] + [ids[k] for k in order] + [END]
            c = [0] + [counts[k] for k in order] + [0]
            rows_s.append(s + [PAD] * (length - len(s)))
            rows_c.append(c + [0] * (length - len(c)))
            rows_p.append(p)
    props_t = torch.tensor(np.array(rows_p), dtype=torch.float32).reshape(len(rows_s), -1)
    return torch.tensor(rows_s), torch.tensor(rows_c), props_t


def save_checkpoint(path: Path, model: CompositionGPT, **extra) -> None:
    save_model(path, model, vocab=model.vocab.labels(), **extra)


def load_model(path: str | Path) -> CompositionGPT:
    """A trained composition model from a checkpoint file."""
    ckpt, cfg, specs = read_checkpoint(path, Stage1Config, "Stage I")
    vocab = Vocabulary.from_labels(cfg.kind, ckpt["vocab"])
    model = CompositionGPT(cfg, vocab, specs)
    model.load_state_dict(ckpt["model"])
    model.eval()
    return model


def _lr(step: int, total: int, cfg: Stage1Config) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    frac = min(1.0, (step - cfg.warmup_steps) / max(1, total - cfg.warmup_steps))
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * frac))


@torch.no_grad()
def evaluate_loss(model: CompositionGPT, data, batch_size: int) -> float:
    model.eval()
    s, c, p = data
    total, n = 0.0, 0
    for i in range(0, len(s), batch_size):
        sl = slice(i, i + batch_size)
        total += model.loss(s[sl], c[sl], p[sl] if p.shape[1] else None).item() * len(s[sl])
        n += len(s[sl])
    return total / max(n, 1)


def train(
    cfg: Stage1Config,
    out_dir: str | Path,
    data: str | Path | pd.DataFrame | None = None,
    init: str | Path | None = None,
    log=print,
) -> dict:
    """Train until the dev loss stops improving; resumes from ``out_dir/last.pt``."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    rng = random.Random(cfg.seed)
    df = data if isinstance(data, pd.DataFrame) else load_csv_or_pool(data)
    specs = [PropertySpec.parse(p).fitted(df) for p in cfg.properties]
    vocab = Vocabulary.for_kind(cfg.kind)
    splits = {}
    for split in ("train", "dev"):
        part = df[df["split"] == split]
        seqs, props = encode_rows(part, cfg, vocab, specs)
        perms = cfg.permutations if split == "train" else 0
        splits[split] = to_tensors(seqs, props, cfg, perms, rng)
        log(f"{split}: {len(seqs)} {cfg.kind} formulas -> {len(splits[split][0])} sequences")
    if len(splits["train"][0]) == 0:
        raise ValueError(f"no {cfg.kind} formulas in the training data")
    if len(splits["dev"][0]) == 0:
        splits["dev"] = splits["train"]  # tiny user sets: fall back to training loss

    model = CompositionGPT(cfg, vocab, specs)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    state = {"epoch": 0, "step": 0, "best_dev": float("inf"), "bad_epochs": 0, "history": []}
    last = out_dir / "last.pt"
    if last.exists():
        ckpt = torch.load(last, map_location="cpu", weights_only=False)
        model.load_state_dict(ckpt["model"])
        opt.load_state_dict(ckpt["optimizer"])
        state = ckpt["state"]
        log(f"resumed from {last} at epoch {state['epoch']}")
    elif init is not None:
        # Fine-tuning: new property adapters start from zero, the rest from the base model.
        base = torch.load(init, map_location="cpu", weights_only=False)
        if base["vocab"] != vocab.labels():
            raise ValueError(f"{init}: its vocabulary differs from this {cfg.kind} vocabulary")
        missing, unexpected = model.load_state_dict(base["model"], strict=False)
        if unexpected or any(not k.startswith("adapter.") for k in missing):
            raise ValueError(f"{init}: not a compatible {cfg.kind} Stage I checkpoint")
        log(f"initialised from {init}")
    if isinstance(data, pd.DataFrame):
        source = f"DataFrame of {len(data)} rows"
    else:
        source = str(data) if data is not None else "bundled training pool"
    write_run_record(
        out_dir,
        cfg.to_dict(),
        cfg.seed,
        data=source,
        init=str(init) if init else None,
        n_params=model.n_params(),
    )

    s, c, p = splits["train"]
    steps_per_epoch = math.ceil(len(s) / cfg.batch_size)
    total_steps = steps_per_epoch * cfg.max_epochs
    gen = torch.Generator().manual_seed(cfg.seed)
    for _ in range(state["epoch"]):
        torch.randperm(len(s), generator=gen)  # replay the shuffles of finished epochs
    while state["epoch"] < cfg.max_epochs and state["bad_epochs"] < cfg.patience:
        model.train()
        t0 = time.time()
        perm = torch.randperm(len(s), generator=gen)
        run_loss = 0.0
        for i in range(0, len(s), cfg.batch_size):
            idx = perm[i : i + cfg.batch_size]
            pb = p[idx].clone() if p.shape[1] else None
            if pb is not None and cfg.label_dropout > 0:
                drop = torch.rand(len(idx), generator=gen) < cfg.label_dropout
                pb[drop] = float("nan")
            for group in opt.param_groups:
                group["lr"] = _lr(state["step"], total_steps, cfg)
            loss = model.loss(s[idx], c[idx], pb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            state["step"] += 1
            run_loss += loss.item() * len(idx)
        state["epoch"] += 1
        dev = evaluate_loss(model, splits["dev"], 1024)
        rec = {
            "epoch": state["epoch"],
            "train_loss": run_loss / len(s),
            "dev_loss": dev,
            "seconds": round(time.time() - t0, 1),
        }
        state["history"].append(rec)
        improved = dev < state["best_dev"] - 1e-4
        if improved:
            state["best_dev"], state["bad_epochs"] = dev, 0
            save_checkpoint(out_dir / "best.pt", model, state=dict(state))
        else:
            state["bad_epochs"] += 1
        save_checkpoint(last, model, optimizer=opt.state_dict(), state=state)
        log_epoch(out_dir, rec)
        log(
            f"epoch {rec['epoch']}: train {rec['train_loss']:.4f} dev {dev:.4f} "
            f"({rec['seconds']} s){' *' if improved else ''}"
        )
    return {
        "best_dev_loss": state["best_dev"],
        "epochs": state["epoch"],
        "history": state["history"],
        "best": str(out_dir / "best.pt"),
    }
