"""``crysvcd evaluate``: relax every structure with an MLIP and label it, resumably, with the
work fanned out over Dask.

Sources: a folder of CIFs (or a results folder with ``cif/``), an extxyz file, or an ASE
database. An entry that cannot be read, is not periodic or breaks the validity rule
(``geometry``) is recorded with its reason and never reaches the MLIP. Each structure's
labels go to the database as soon as it is done; a failure is recorded with its reason and
the run goes on. On a re-run a label is reused only when it was computed with the same
settings: adding ``--phonons`` computes phonons for the rows that lack them, changing
``--fmax`` relaxes again, ``--retry-failed`` retries failures.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path

import pandas as pd
from pymatgen.core import Structure
from pymatgen.io.ase import AseAtomsAdaptor
from tqdm import tqdm

from crysvcd import geometry
from crysvcd.evaluate.labels import (
    EvaluateConfig,
    error_text,
    label_batch,
    label_structure,
    stale_outcomes,
)
from crysvcd.evaluate.store import ResultStore, bare_key
from crysvcd.runinfo import atomic_write_text, write_run_record

log = logging.getLogger(__name__)


def _structure(atoms) -> Structure:
    if not all(atoms.pbc):
        raise ValueError("not periodic (a molecule?): crystals need pbc on all three axes")
    return AseAtomsAdaptor.get_structure(atoms)


def load_structures(source: str | Path) -> list[tuple[str, Structure | Exception]]:
    """(key, structure) pairs; an entry that cannot be read carries its exception instead."""
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
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    out.append((f.stem, Structure.from_file(f)))
            except Exception as exc:  # a broken file is recorded, not fatal
                out.append((f.stem, exc))
        return out
    if source.suffix in (".db", ".sqlite"):
        from ase.db import connect

        for row in connect(str(source)).select():
            key = bare_key(str(row.get("key", row.id)))
            try:
                out.append((key, _structure(row.toatoms())))
            except Exception as exc:
                out.append((key, exc))
        return out
    from ase.io import iread

    try:
        for i, atoms in enumerate(iread(source, index=":")):
            try:
                out.append((f"{source.stem}_{i:05d}", _structure(atoms)))
            except Exception as exc:
                out.append((f"{source.stem}_{i:05d}", exc))
    except Exception as exc:
        raise ValueError(f"{source}: not a structure file ASE can read ({exc})") from None
    if not out:
        raise ValueError(f"{source}: no structures in it")
    return out


@dataclass
class Job:
    key: str
    structure: Structure  # the input, or the stored relaxed structure
    steps: tuple[str, ...]
    known: dict  # stored labels of the key (when the relaxation is reused)


def plan(
    items: list[tuple[str, Structure | Exception]],
    store: ResultStore,
    cfg: EvaluateConfig,
    retry_failed: bool = False,
    extra: dict | None = None,
) -> tuple[list[Job], int]:
    """What to compute for each structure; unreadable and invalid ones are recorded at once
    (with the ``extra`` labels). Returns the jobs and the number that need nothing."""
    extra = extra or {}
    rows = store.rows()
    jobs, done = [], 0
    for key, structure in items:
        row = rows.get(key)
        if isinstance(structure, Exception):
            if row is None or retry_failed:
                store.write(key, status="failed", error=f"unreadable: {error_text(structure)}",
                            **extra)  # fmt: skip
            done += 1
            continue
        reason = geometry.invalid_reason(structure)
        if reason:
            if row is None or row.get("status") != "invalid":
                store.write(
                    key,
                    status="invalid",
                    invalid_reason=reason,
                    reduced_formula=structure.composition.reduced_formula,
                    **extra,
                )
            done += 1
            continue
        known = dict(row.key_value_pairs) if row is not None else {}
        fresh = (
            row is None
            or not cfg.reuses("relax", known)
            or (known.get("status") == "failed" and retry_failed)
        )
        if known.get("status") == "failed" and not retry_failed:
            done += 1
            continue
        if fresh:
            jobs.append(Job(key, structure, cfg.wanted(), {}))
            continue
        steps = tuple(
            s
            for s in cfg.wanted()[1:]
            if not cfg.reuses(s, known) or (retry_failed and f"{s}_error" in known)
        )
        if steps:
            relaxed = AseAtomsAdaptor.get_structure(row.toatoms())
            jobs.append(Job(key, relaxed, steps, known))
        else:
            done += 1
    return jobs, done


def record(store: ResultStore, job: Job, labels: dict, relaxed: Structure | None, **extra) -> None:
    """Store one job's result: a new row after a relaxation, else new labels on the row."""
    if "relax" in job.steps:
        atoms = AseAtomsAdaptor.get_atoms(relaxed) if relaxed is not None else None
        if relaxed is None:
            labels.setdefault("reduced_formula", job.structure.composition.reduced_formula)
        store.write(job.key, atoms, **extra, **labels)
    else:  # the steps' earlier outcomes go: a recomputed step leaves only its new one
        store.update(job.key, **{**stale_outcomes(job.steps, job.known), **labels})


def submit(client, jobs: list[Job], cfg: EvaluateConfig) -> dict:
    """Submit ``jobs`` to the Dask cluster; returns {future: [jobs]}. With
    ``cfg.relax_batch`` > 1, fresh relaxations go together in groups of that size (one
    ``label_batch`` task each, one torch-sim batch); everything else one job per task."""
    grouped = [j for j in jobs if cfg.relax_batch > 1 and "relax" in j.steps]
    single = [j for j in jobs if not (cfg.relax_batch > 1 and "relax" in j.steps)]
    futures = {}
    for i in range(0, len(grouped), cfg.relax_batch):
        group = grouped[i : i + cfg.relax_batch]
        future = client.submit(
            label_batch, [j.structure for j in group], cfg, [j.steps for j in group],
            key=f"label-batch-{group[0].key}-{len(group)}", pure=False,
        )  # fmt: skip
        futures[future] = group
    for job in single:
        future = client.submit(
            label_structure, job.structure, cfg, job.steps, job.structure, job.known,
            key=f"label-{job.key}-{'+'.join(job.steps)}", pure=False,
        )  # fmt: skip
        futures[future] = [job]
    return futures


def results(future, group: list[Job]) -> list[tuple[Job, dict, Structure | None]]:
    """(job, labels, relaxed) for each job of a finished task; a task whose worker died
    (``KilledWorker``) gives a failure for each of its jobs."""
    try:
        out = future.result()
    except Exception as exc:
        labels = {"status": "failed", "error": f"worker: {error_text(exc)}"}
        return [(j, labels if "relax" in j.steps else {f"{j.steps[0]}_error": labels["error"]},
                 None) for j in group]  # fmt: skip
    out = out if isinstance(out, list) else [out]
    return [(j, labels, relaxed) for j, (labels, relaxed) in zip(group, out)]


def run_jobs(client, jobs: list[Job], cfg: EvaluateConfig):
    """Submit every job (``submit``); yield (job, labels, relaxed) as each finishes."""
    from distributed import as_completed

    futures = submit(client, jobs, cfg)
    for future in as_completed(futures):
        yield from results(future, futures.pop(future))


def evaluate(
    source: str | Path,
    cfg: EvaluateConfig | None = None,
    db: str | Path | None = None,
    workers: int = 1,
    scheduler: str | None = None,
    retry_failed: bool = False,
    progress: bool = True,
    client=None,
) -> pd.DataFrame:
    """Label every structure of ``source``; returns (and writes as ``labels.csv`` beside the
    source) the table. ``client``: a running Dask client to use instead of starting one."""
    from crysvcd.evaluate.cluster import close_client, start_client

    cfg = cfg or EvaluateConfig()
    source = Path(source)
    items = load_structures(source)
    out_dir = source if source.is_dir() else source.parent
    store = ResultStore(db or out_dir / "labels.db")
    write_run_record(
        out_dir / "evaluate_run", asdict(cfg), None, source=str(source), db=store.url,
        workers=workers, scheduler=scheduler, retry_failed=retry_failed,
    )  # fmt: skip
    jobs, done = plan(items, store, cfg, retry_failed)
    log.info("%d structures: %d to label, %d already done or refused", len(items), len(jobs), done)
    bar = tqdm(total=len(jobs), disable=not progress, desc="evaluate", unit="str")
    own = client is None and bool(jobs)
    try:
        if jobs:
            client = client or start_client(workers, scheduler)
            for job, labels, relaxed in run_jobs(client, jobs, cfg):
                record(store, job, labels, relaxed)
                bar.set_postfix_str(f"{job.key} {labels.get('status', 'ok')}")
                bar.update()
    finally:
        bar.close()
        if own and client is not None:
            close_client(client)
        table = store.frame()
        if len(table):
            atomic_write_text(out_dir / "labels.csv", table.to_csv(index=False))
    return table
