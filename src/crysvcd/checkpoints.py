"""Checkpoint files of every model: where the shipped ones live, how one is written, read
and exported with its JSON sidecar.

A checkpoint is one ``torch.save`` dict: ``config`` (the model's dataclass as a dict),
``properties`` (its property specs), ``model`` (weights; fp16 storage allowed, computed in
fp32) and whatever the caller adds (``vocab``, ``elements``; in a training run's
``last.pt`` also ``ema``, ``optimizer`` and ``state``). Every model class has ``.cfg``
and ``.properties``, so one writer serves them all. Each stage owns its public
``load_model(path=None)`` / ``load_sampler(path=None)`` on top of ``read``.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import fields
from pathlib import Path

import torch
from torch import nn

from crysvcd.conditioning import PropertySpec

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"
SHIPPED = {
    "stage1-ionic": "stage1_ionic.pt",
    "stage1-alloy": "stage1_alloy.pt",
    "stage2": "stage2_csp.pt",
    "dielectric": "dielectric_e3nn.pt",
}


class CheckpointError(ValueError):
    """A checkpoint that is missing, unreadable or made for another model."""


def shipped(name: str) -> Path:
    """Path of a shipped checkpoint: one of ``SHIPPED``'s names."""
    if name not in SHIPPED:
        raise ValueError(f"no shipped checkpoint {name!r}; known: {', '.join(SHIPPED)}")
    return WEIGHTS_DIR / SHIPPED[name]


def weights(module: nn.Module) -> dict:
    """State dict without the constants that ``copy.deepcopy`` of an e3nn tensor product
    turns into entries (``._tensor_constant``): the model rebuilds them itself."""
    return {k: v for k, v in module.state_dict().items() if "._tensor_constant" not in k}


def load_weights(module: nn.Module, state: dict, allow_missing: tuple[str, ...] = ()) -> None:
    """Load ``state`` (any float dtype) into ``module``; keys starting with one of
    ``allow_missing`` may be absent (new property adapters of a fine-tune)."""
    state = {k: v for k, v in state.items() if "._tensor_constant" not in k}
    try:
        missing, unexpected = module.load_state_dict(state, strict=False)
    except RuntimeError as exc:  # shapes differ: another architecture
        first = str(exc).splitlines()[1].strip() if "\n" in str(exc) else str(exc)
        raise CheckpointError(
            f"weights do not fit this {type(module).__name__} (another architecture: {first})"
        ) from None
    missing = [k for k in missing if "._tensor_constant" not in k]
    bad = [k for k in missing if not k.startswith(allow_missing)]
    if unexpected or bad:
        raise CheckpointError(
            f"weights do not fit this {type(module).__name__}: "
            f"{len(bad)} missing (e.g. {bad[:2]}), {len(unexpected)} unexpected "
            f"(e.g. {unexpected[:2]})"
        )


def atomic_save(obj, path: str | Path) -> None:
    """``torch.save`` to a temporary file in the same folder, then rename: a reader (or a
    resumed run after ``kill -9``) sees the old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a checkpoint is shared like any file
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save(path: str | Path, model: nn.Module, **extra) -> None:
    """Write ``model`` (which has ``.cfg`` and ``.properties``) and any extra entries."""
    atomic_save(
        {
            "config": model.cfg.to_dict(),
            "properties": [s.to_dict() for s in model.properties],
            "model": weights(model),
            **extra,
        },
        path,
    )


def read(path: str | Path, config_cls, what: str):
    """(checkpoint dict, config, property specs) of a checkpoint of ``config_cls``.

    Raises ``FileNotFoundError`` for a missing file and ``CheckpointError`` for a corrupt
    one or one whose config is not a ``config_cls`` (another model's checkpoint).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no {what} checkpoint at {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable checkpoint ({exc})") from None
    if not isinstance(ckpt, dict) or not {"config", "model"} <= set(ckpt):
        raise CheckpointError(f"{path}: not a crysvcd checkpoint (no config and weights)")
    names = {f.name for f in fields(config_cls)}
    given = set(ckpt["config"])
    required = set(_ARCH_KEYS.get(config_cls.__name__, ()))
    if not required <= given:
        raise CheckpointError(
            f"{path}: a checkpoint of another model, not {what} "
            f"(its config lacks {sorted(required - given)})"
        )
    try:
        cfg = config_cls(**{k: v for k, v in ckpt["config"].items() if k in names})
    except (TypeError, ValueError) as exc:
        raise CheckpointError(f"{path}: its config is not a valid {what} config ({exc})") from None
    specs = [PropertySpec(**s) for s in ckpt.get("properties", [])]
    return ckpt, cfg, specs


# Config keys that identify a model family: a checkpoint without them belongs to another.
_ARCH_KEYS = {
    "Stage1Config": ("kind", "n_layer", "n_embd", "max_tokens"),
    "Stage2Config": ("hidden", "n_layers", "n_freq", "timesteps"),
    "DielectricConfig": ("cutoff", "hidden_irreps", "sh_lmax"),
}


def tuned_config(path: str | Path, config_cls, what: str, properties: list[str]):
    """The config of a checkpoint to fine-tune from, with new property specs: a fine-tune
    keeps the architecture of its starting point."""
    cfg = read(path, config_cls, what)[1]
    return config_cls(**{**cfg.to_dict(), "properties": list(properties)})


def fp16_weights(state: dict) -> dict:
    """Floating-point tensors stored as fp16 (half the file); loading casts them back."""
    return {k: v.half() if v.is_floating_point() else v for k, v in state.items()}


def export(source: str | Path, dest: str | Path, fp16: bool = False, **provenance) -> Path:
    """Copy a run's weights (``best.pt`` of a run folder, or a checkpoint file) to ``dest``
    without optimizer state, the EMA weights when the file holds them, with a JSON sidecar:
    config, training history, the run record and ``provenance`` (hardware, wall time,
    commit, figures)."""
    source = Path(source)
    best = source / "best.pt" if source.is_dir() else source
    run_dir = best.parent
    ckpt = torch.load(best, map_location="cpu", weights_only=False)
    state = ckpt.get("state", {})
    last = run_dir / "last.pt"
    if last.exists() and last != best:
        state = torch.load(last, map_location="cpu", weights_only=False).get("state", state)
    keep = {k: v for k, v in ckpt.items() if k not in ("optimizer", "state", "ema")}
    keep["model"] = ckpt.get("ema", ckpt["model"])
    if fp16:
        keep["model"] = fp16_weights(keep["model"])
    dest = Path(dest)
    atomic_save(keep, dest)
    run = run_dir / "run.json"
    sidecar = {
        "config": ckpt["config"],
        "properties": ckpt.get("properties", []),
        "source": str(best),
        "storage": "fp16 weights, fp32 compute" if fp16 else "fp32",
        "epochs_trained": state.get("epoch"),
        "steps": state.get("step"),
        "hours_trained": round(state.get("seconds", 0.0) / 3600, 4) if state else None,
        "best": state.get("best"),
        "history": state.get("history", []),
        "run": json.loads(run.read_text()) if run.exists() else None,
        **provenance,
    }
    dest.with_suffix(".json").write_text(json.dumps(sidecar, indent=2, default=str))
    return dest


def sidecar(path: str | Path) -> dict:
    """The JSON sidecar of a checkpoint (empty when there is none)."""
    side = Path(path).with_suffix(".json")
    return json.loads(side.read_text()) if side.exists() else {}
