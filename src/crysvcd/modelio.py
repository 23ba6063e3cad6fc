"""Checkpoint files shared by both stages: config, property specs and weights in one dict."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import torch
from torch import nn

from crysvcd.conditioning import PropertySpec


def save_model(path: Path, model: nn.Module, **extra) -> None:
    """Write ``model`` (with ``.cfg`` and ``.properties``) and any extra entries."""
    torch.save(
        {
            "config": model.cfg.to_dict(),
            "properties": [s.to_dict() for s in model.properties],
            "model": model.state_dict(),
            **extra,
        },
        path,
    )


def read_checkpoint(path: str | Path, config_cls, stage: str):
    """(checkpoint dict, config, property specs), or a clear error if the file is missing."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"no {stage} checkpoint at {path}")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    names = {f.name for f in fields(config_cls)}
    cfg = config_cls(**{k: v for k, v in ckpt["config"].items() if k in names})
    specs = [PropertySpec(**s) for s in ckpt["properties"]]
    return ckpt, cfg, specs


def export_checkpoint(best: str | Path, dest: str | Path, **figures) -> Path:
    """Copy a run's best weights to ``dest`` (no optimizer state) with a JSON sidecar that
    records the config, the training history and the run record."""
    best, dest = Path(best), Path(dest)
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    history = ckpt.get("state", {}).get("history", [])
    torch.save({k: v for k, v in ckpt.items() if k not in ("optimizer", "state", "ema")}, dest)
    run = best.parent / "run.json"
    sidecar = {
        "config": ckpt["config"],
        "properties": ckpt["properties"],
        "source": str(best),
        "epochs_trained": ckpt.get("state", {}).get("epoch", len(history)),
        "best_dev_loss": ckpt.get("state", {}).get("best_dev"),
        "history": history,
        "run": json.loads(run.read_text()) if run.exists() else None,
        **figures,
    }
    dest.with_suffix(".json").write_text(json.dumps(sidecar, indent=2, default=str))
    return dest


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """ema <- decay * ema + (1 - decay) * model, parameter by parameter."""
    for pe, pm in zip(ema.parameters(), model.parameters()):
        pe.lerp_(pm, 1 - decay)
