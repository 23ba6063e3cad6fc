"""Train or fine-tune the composition model through ``training.fit``.

Data: the valence-labelled training pool (or a user CSV), one model per kind. Each formula
appears in its canonical order plus up to ``permutations`` random orders of its tokens.
The dev split decides early stopping and which checkpoint is kept as ``best.pt``.
"""

from __future__ import annotations

import logging
import random
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from crysvcd.chem.valence import label_valence
from crysvcd.conditioning import PropertySpec
from crysvcd.config import Stage1Config
from crysvcd.datasets import load_csv_or_pool
from crysvcd.stage1.model import CompositionGPT
from crysvcd.stage1.tokens import END, PAD, START, Vocabulary
from crysvcd.training import FitConfig, FitResult, TensorData, fit, seed_everything

log = logging.getLogger(__name__)

# How the shipped models were trained (README: 17-25 s per epoch on 2 CPU cores).
FIT = FitConfig(
    batch_size=256, lr=1e-3, min_lr=1e-4, warmup_steps=200, weight_decay=0.01,
    max_epochs=40, patience=6,
)  # fmt: skip


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


def loss_fn(label_dropout: float):
    """Teacher-forced loss; a share of labelled rows is trained unconditionally (NaN labels)
    so that one model also samples without a target."""

    def loss(net, batch, gen):
        s, c, p = batch
        if p.shape[1] and label_dropout > 0:
            p = p.clone()
            p[torch.rand(len(p), generator=gen, device=p.device) < label_dropout] = float("nan")
        return net(s, c, p if p.shape[1] else None, teacher_forcing=True), {}

    return loss


@torch.no_grad()
def dev_loss(model: CompositionGPT, data: TensorData, device, batch_size: int = 1024) -> float:
    total = 0.0
    for i in range(0, len(data), batch_size):
        s, c, p = data.batch(torch.arange(i, min(i + batch_size, len(data))), device)
        total += model(s, c, p if p.shape[1] else None, teacher_forcing=True).item() * len(s)
    return total / max(len(data), 1)


def train(
    cfg: Stage1Config,
    out_dir: str | Path,
    fit_cfg: FitConfig = FIT,
    data: str | Path | pd.DataFrame | None = None,
    init: str | Path | None = None,
) -> FitResult:
    """Train until the dev loss stops improving; resumes from ``out_dir/last.pt``.

    ``data``: an MP-20-format CSV or frame with a ``split`` column (default: the bundled
    pool); ``init``: a checkpoint to fine-tune from (new property adapters start at zero).
    """
    df = data if isinstance(data, pd.DataFrame) else load_csv_or_pool(data)
    specs = [PropertySpec.parse(p).fitted(df) for p in cfg.properties]
    vocab = Vocabulary.for_kind(cfg.kind)
    rng = random.Random(fit_cfg.seed)
    splits = {}
    for split in ("train", "dev"):
        seqs, props = encode_rows(df[df["split"] == split], cfg, vocab, specs)
        perms = cfg.permutations if split == "train" else 0
        splits[split] = TensorData(to_tensors(seqs, props, cfg, perms, rng))
        log.info(
            "%s: %d %s formulas -> %d sequences", split, len(seqs), cfg.kind, len(splits[split])
        )
    if len(splits["train"]) == 0:
        raise ValueError(f"no {cfg.kind} formulas in the training data")
    if len(splits["dev"]) == 0:
        splits["dev"] = splits["train"]  # tiny user sets: fall back to training loss
    source = (
        f"DataFrame of {len(df)} rows"
        if isinstance(data, pd.DataFrame)
        else str(data)
        if data is not None
        else "bundled training pool"
    )
    seed_everything(fit_cfg.seed)  # the initial weights
    result = fit(
        CompositionGPT(cfg, vocab, specs),
        loss_fn(cfg.label_dropout),
        splits["train"],
        lambda model, device: {"dev_loss": dev_loss(model, splits["dev"], device)},
        fit_cfg,
        out_dir,
        init=init,
        meta={"vocab": vocab.labels()},
        run_info={"data": source},
    )
    if cfg.kind == "ionic" and result.best_path is not None:
        from crysvcd.stage1.sample import calibrate

        # the table belongs to the weights: recomputed whenever best.pt changed
        best = torch.load(result.best_path, map_location="cpu", weights_only=False)
        made_for = best.get("neutrality_info", {}).get("step", -1)
        if made_for != best.get("state", {}).get("step"):
            calibrate(result.best_path, cfg.neutrality_rollouts, fit_cfg.seed)
    return result
