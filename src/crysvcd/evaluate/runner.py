"""``crysvcd evaluate``: relax every structure with an MLIP and label it, resumably.

Sources: a folder of CIFs (or a results folder with ``cif/``), an extxyz file, or an ASE
database. Each structure's labels go to the database as soon as it is done; a failure
(bad input, explosion, timeout, missing elemental reference) is recorded with its reason
and the run goes on.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from ase.io import read
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor
from tqdm import tqdm

from crysvcd.evaluate.hull import corrected_formation_energy, e_above_hull, unreliable
from crysvcd.evaluate.mlip import get_calculator
from crysvcd.evaluate.relax import relax
from crysvcd.evaluate.store import ResultStore
from crysvcd.runinfo import write_run_record


@dataclass
class EvaluateConfig:
    mlip: str = "sevennet"
    model_path: str | None = None
    ehull: bool = True
    fmax: float = 0.01  # the paper's value for Ehull
    steps: int = 500
    optimizer: str = "FIRE"
    timeout: float | None = 900.0  # seconds per structure


def load_structures(source: str | Path) -> list[tuple[str, Structure | Exception]]:
    """(key, structure) pairs; an unreadable entry carries its exception instead."""
    source = Path(source)
    if not source.exists():
        raise FileNotFoundError(f"no such file or folder: {source}")
    out: list[tuple[str, Structure | Exception]] = []
    if source.is_dir():
        folder = source / "cif" if (source / "cif").is_dir() else source
        files = sorted(folder.glob("*.cif"))
        if not files:
            raise ValueError(f"{source}: no CIF files found")
        for f in files:
            try:
                out.append((f.stem, Structure.from_file(f)))
            except Exception as exc:  # a broken file is recorded, not fatal
                out.append((f.stem, exc))
        return out
    if source.suffix in (".db", ".sqlite"):
        from ase.db import connect

        rows = connect(str(source)).select()
        return [(str(r.get("key", r.id)), AseAtomsAdaptor.get_structure(r.toatoms())) for r in rows]
    images = read(source, index=":")
    return [
        (f"{source.stem}_{i:05d}", AseAtomsAdaptor.get_structure(a)) for i, a in enumerate(images)
    ]


def evaluate(
    source: str | Path,
    cfg: EvaluateConfig | None = None,
    db: str | Path | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Label every structure of ``source``; returns (and writes beside the db) the table."""
    cfg = cfg or EvaluateConfig()
    source = Path(source)
    items = load_structures(source)
    out_dir = source if source.is_dir() else source.parent
    db = db or out_dir / "labels.db"
    store = ResultStore(db)
    done = store.done()
    calc = get_calculator(cfg.mlip, cfg.model_path)
    write_run_record(out_dir / "evaluate_run", asdict(cfg), None, source=str(source), db=str(db))
    todo = [(k, s) for k, s in items if k not in done]
    bar = tqdm(todo, disable=not progress, desc="evaluate", unit="str")
    for key, structure in bar:
        bar.set_postfix_str(key)
        if isinstance(structure, Exception):
            store.record(key, status="failed", error=f"unreadable: {structure}")
            continue
        try:
            r = relax(structure, calc, cfg.fmax, cfg.steps, cfg.optimizer, cfg.timeout)
        except Exception as exc:
            store.record(
                key,
                AseAtomsAdaptor.get_atoms(structure) if structure.is_ordered else None,
                status="failed",
                error=f"{type(exc).__name__}: {exc}",
                reduced_formula=structure.composition.reduced_formula,
            )
            continue
        labels = {
            "status": "ok",
            "reduced_formula": r.structure.composition.reduced_formula,
            "mlip": cfg.mlip,
            "mlip_energy": r.energy,
            "energy_per_atom": r.energy / len(r.structure),
            "converged": r.converged,
            "relax_steps": r.steps,
            "residual_fmax": r.fmax,
            "relax_seconds": round(r.seconds, 2),
        }
        if cfg.ehull:
            try:
                ef = corrected_formation_energy(r.structure, r.energy)
                labels["formation_energy_per_atom"] = ef
                labels["e_above_hull"] = e_above_hull(r.structure.composition, ef)
                labels["ehull_unreliable"] = unreliable(r.structure.composition)
                # A relaxation that did not converge counts as unstable (the paper's rule).
                labels["stable"] = bool(r.converged and labels["e_above_hull"] < 0.1)
            except Exception as exc:
                labels["ehull_error"] = f"{type(exc).__name__}: {exc}"
        store.record(key, AseAtomsAdaptor.get_atoms(r.structure), **labels)
    table = store.frame()
    table.to_csv(out_dir / "labels.csv", index=False)
    return table
