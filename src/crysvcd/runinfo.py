"""Record what produced an output: config, seed, package versions, command line."""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from importlib import metadata
from pathlib import Path

_PACKAGES = ("crysvcd", "torch", "pymatgen", "ase", "numpy", "pandas", "spglib", "sevenn", "dask")


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return out


def write_run_record(folder: str | Path, config: dict, seed: int | None, **extra) -> Path:
    """Write ``run.json`` beside a run's outputs: this invocation's record at the top level,
    and every earlier invocation's (a resumed or extended run) under ``earlier``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "run.json"
    earlier = []
    if path.exists():
        try:
            old = json.loads(path.read_text())
            earlier = old.pop("earlier", []) + [old]
        except json.JSONDecodeError:
            earlier = []  # a torn file from a killed run: start the history afresh
    record = {
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": sys.argv,
        "seed": seed,
        "config": config,
        "versions": versions(),
        **extra,
        "earlier": earlier,
    }
    atomic_write_text(path, json.dumps(record, indent=2, default=str))
    return path


def atomic_write_text(path: str | Path, text: str) -> None:
    """Write to a temporary file beside ``path``, then rename: never half a file."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def log_epoch(folder: str | Path, rec: dict) -> None:
    """Append one epoch's record to ``log.jsonl`` (kept on disk, so a killed run loses
    nothing)."""
    with open(Path(folder) / "log.jsonl", "a") as fh:
        fh.write(json.dumps(rec, default=str) + "\n")
