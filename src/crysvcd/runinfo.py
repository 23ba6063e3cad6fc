"""Record what produced an output: config, seed, package versions, command line."""

from __future__ import annotations

import json
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

_PACKAGES = ("crysvcd", "torch", "transformers", "pymatgen", "ase", "numpy", "pandas", "spglib")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def write_run_record(folder: str | Path, config: dict, seed: int | None, **extra) -> Path:
    """Write ``run.json`` beside a run's outputs."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv,
        "seed": seed,
        "config": config,
        "versions": versions(),
        **extra,
    }
    path = folder / "run.json"
    path.write_text(json.dumps(record, indent=2, default=str))
    return path


def log_epoch(folder: str | Path, rec: dict, log=None) -> None:
    """Append one epoch's record to ``log.jsonl`` (kept on disk, so a killed run loses
    nothing) and print it as ``key value`` pairs when ``log`` is given."""
    with open(Path(folder) / "log.jsonl", "a") as fh:
        fh.write(json.dumps(rec) + "\n")
    if log is not None:
        parts = (f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in rec.items())
        log(" ".join(parts))
