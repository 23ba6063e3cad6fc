"""``crysvcd evaluate``: relax every structure with an MLIP and label it, resumably.

Sources: a folder of CIFs (or a results folder with ``cif/``), an extxyz file, or an ASE
database. Each structure's labels go to the database as soon as it is done; a failure
(bad input, explosion, timeout, missing elemental reference, a skipped phonon calculation)
is recorded with its reason and the run goes on. With ``workers > 1`` structures are
labelled in parallel processes (one thread each).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import pandas as pd
from ase.io import read
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor
from tqdm import tqdm

from crysvcd.evaluate.hull import corrected_formation_energy, e_above_hull, unreliable
from crysvcd.evaluate.kappa import (
    KappaSettings,
    KappaSkipped,
    lattice_thermal_conductivity,
    relax_for_kappa,
)
from crysvcd.evaluate.parallel import map_structures
from crysvcd.evaluate.phonons import PhononSettings, phonon_stability
from crysvcd.evaluate.relax import relax
from crysvcd.evaluate.store import ResultStore
from crysvcd.runinfo import write_run_record


@dataclass
class EvaluateConfig:
    mlip: str = "sevennet"
    model_path: str | None = None
    ehull: bool = True
    phonons: bool = False
    fmax: float = 0.01  # the paper's value for Ehull
    steps: int = 500
    optimizer: str = "FIRE"
    timeout: float | None = 900.0  # seconds per relaxation
    # Phonons need a tighter minimum than Ehull (the paper: 0.003 eV/A, 200 steps); a
    # relaxation that does not reach it counts as unstable.
    phonon_fmax: float = 0.003
    phonon_steps: int = 200
    phonon: PhononSettings = field(default_factory=PhononSettings)
    kappa: bool = False  # phono3py RTA; use sevennet (CHGNet forces give nonsense kappa)
    kappa_settings: KappaSettings = field(default_factory=KappaSettings)
    dielectric: bool = False  # e3nn surrogate on the relaxed structure (no MLIP involved)
    dielectric_checkpoint: str | None = None  # None: the shipped model
    workers: int = 1


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


def _error(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


def label_structure(
    structure: Structure, cfg: EvaluateConfig, calculator
) -> tuple[dict, Structure | None]:
    """Every requested label of one structure and its relaxed form.

    A failed relaxation raises; a failure of a later label is stored as ``<label>_error``
    so that the labels already computed are kept.
    """
    start = time.perf_counter()
    r = relax(structure, calculator, cfg.fmax, cfg.steps, cfg.optimizer, cfg.timeout)
    labels: dict = {
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
            labels["ehull_error"] = _error(exc)
    if cfg.phonons:
        labels.update(_phonon_labels(r.structure, cfg, calculator))
    if cfg.kappa:
        labels.update(_kappa_labels(r.structure, cfg, calculator))
    if cfg.dielectric:
        from crysvcd.evaluate.dielectric import dielectric_labels

        labels.update(dielectric_labels(r.structure, cfg.dielectric_checkpoint))
    labels["seconds"] = round(time.perf_counter() - start, 2)
    return labels, r.structure


def _phonon_labels(structure: Structure, cfg: EvaluateConfig, calculator) -> dict:
    try:
        tight = relax(
            structure, calculator, cfg.phonon_fmax, cfg.phonon_steps, cfg.optimizer, cfg.timeout
        )
        if not tight.converged:
            return {
                "phonon_stable": False,
                "phonon_note": f"relaxation to fmax {cfg.phonon_fmax} did not converge "
                f"in {cfg.phonon_steps} steps (counted unstable)",
            }
        p = phonon_stability(tight.structure, calculator, cfg.phonon)
    except Exception as exc:
        return {"phonon_error": _error(exc)}
    return {
        "phonon_stable": p.stable,
        "phonon_min_frequency_thz": p.min_frequency,
        "phonon_n_imaginary": p.n_imaginary,
        "phonon_supercell": "x".join(map(str, p.supercell)),
        "phonon_displacements": p.n_displacements,
        "phonon_seconds": round(p.seconds, 2),
    }


def _kappa_labels(structure: Structure, cfg: EvaluateConfig, calculator) -> dict:
    # Its own symmetry-keeping tight relaxation: a slightly broken symmetry multiplies the
    # number of displaced supercells.
    try:
        tight = relax_for_kappa(structure, calculator, timeout=cfg.timeout)
        k = lattice_thermal_conductivity(tight.structure, calculator, cfg.kappa_settings)
    except KappaSkipped as skip:
        return {"kappa_skipped": skip.reason, "kappa_seconds": round(skip.seconds or 0.0, 2)}
    except Exception as exc:
        return {"kappa_error": _error(exc)}
    return {
        "kappa": k.kappa,
        "kappa_xx": k.kappa_xx,
        "kappa_yy": k.kappa_yy,
        "kappa_zz": k.kappa_zz,
        "kappa_method": k.method,
        "kappa_supercells": k.n_supercells,
        "kappa_mesh": "x".join(map(str, k.mesh)),
        "kappa_min_frequency_thz": k.min_frequency,
        # imaginary modes drop out of the RTA sum: such a kappa is not a usable label
        "kappa_reliable": k.dynamically_stable,
        "kappa_seconds": round(k.seconds, 2),
    }


def _work(item: tuple[Structure, EvaluateConfig], calculator) -> tuple[dict, Structure | None]:
    structure, cfg = item
    return label_structure(structure, cfg, calculator)


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
    write_run_record(out_dir / "evaluate_run", asdict(cfg), None, source=str(source), db=str(db))
    todo = []
    for key, structure in items:
        if key in done:
            continue
        if isinstance(structure, Exception):
            store.record(key, status="failed", error=f"unreadable: {structure}")
            continue
        todo.append((key, structure))
    bar = tqdm(total=len(todo), disable=not progress, desc="evaluate", unit="str")
    jobs = [(s, cfg) for _, s in todo]
    for i, result in map_structures(_work, jobs, cfg.mlip, cfg.model_path, cfg.workers):
        key, structure = todo[i]
        if isinstance(result, Exception):
            store.record(
                key,
                AseAtomsAdaptor.get_atoms(structure) if structure.is_ordered else None,
                status="failed",
                error=_error(result),
                reduced_formula=structure.composition.reduced_formula,
            )
            bar.set_postfix_str(f"{key} failed")
        else:
            labels, relaxed = result
            store.record(key, AseAtomsAdaptor.get_atoms(relaxed), **labels)
            bar.set_postfix_str(f"{key} {labels['seconds']:.1f} s")
        bar.update()
    bar.close()
    table = store.frame()
    table.to_csv(out_dir / "labels.csv", index=False)
    return table
