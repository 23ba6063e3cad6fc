"""phono3py for every stable crystal of a kappa campaign run, for a machine with a GPU.

    python tools/device/kappa_labels.py RUN [--rounds 0] [--budget 600] [--workers 8] \\
        [--device cuda] [--limit N] [--report]

On this project's CPU a kappa campaign phono3py-labels only the stable crystals that its
composition surrogate passes (``kappa_prescreen``), within ``kappa_budget`` each, so many
stable crystals stay unknown (README, kappa campaigns). This labels every one that the loop
keeps (relaxed, converged, Ehull within the run's threshold, not phonon-unstable where
phonons ran), the prescreen's misses included, with the run's own phono3py settings and
MLIP but ``--budget`` seconds each, so that every crystal of an arm carries one kappa
signature. 7net-0 phonons are not computed for the crystals that lack them: phono3py's own
harmonic part (``kappa_min_frequency``, the ``kappa_reliable`` flag) tells whether such a
value counts, as it does for every kappa label.

On a CPU, ``--screened --device cpu --budget 2400`` keeps the run's own screen and only
redoes its budget skips: a kappa value does not depend on the budget it was computed
under (``EvaluateConfig.reuses``), so the arm's values stand and its unknowns shrink.
``--unreliable --device cpu --budget 1800`` redoes only the values with imaginary modes
(``kappa_reliable`` false) with fc2 from a wider supercell (``fc2_retry_min_length``).

Labels go into RUN/labels.db (a copy of a run's folder, not the run itself: it resumes, and
a crystal already labelled under these settings is not computed again). Smallest cells
first, so a call stopped by its time limit has labelled the most crystals. ``--report``
computes nothing: it prints what is labelled and, unless ``--no-figures``, rewrites the
run's ``structures.csv``, ``shares.csv`` and candidates, which ``benchmarks/campaigns.py``
then reads like any run. A run tool, not a measurement; ``tools/device/kappa.sh`` runs it
on the device. Each labelling call is recorded in RUN/run.json (command, budget, the kappa
settings, versions), the loop's own invocations kept under ``earlier``.
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd
from pymatgen.io.ase import AseAtomsAdaptor

from crysvcd.evaluate.cluster import close_client, start_client
from crysvcd.evaluate.runner import plan, record, run_jobs
from crysvcd.evaluate.store import ResultStore
from crysvcd.loop.config import LoopConfig
from crysvcd.loop.figures import kept_stable
from crysvcd.loop.run import evaluate_config
from crysvcd.runinfo import write_run_record


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("run")
    p.add_argument("--rounds", type=int, nargs="+", default=[0])
    p.add_argument("--budget", type=float, default=600.0, help="phono3py seconds per crystal")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cuda")
    p.add_argument("--limit", type=int, help="at most this many crystals, smallest first")
    p.add_argument("--screened", action="store_true",
                   help="only those the run's screen sent to phono3py: its budget skips "
                        "redone under a larger --budget, its values kept")  # fmt: skip
    p.add_argument("--retry-failed", action="store_true", help="redo stored kappa errors")
    p.add_argument("--unreliable", action="store_true",
                   help="only stored values with imaginary modes: redone with the fc2 "
                        "retry (fc2_retry_min_length) under --budget")  # fmt: skip
    p.add_argument("--report", action="store_true", help="compute nothing; count and export")
    p.add_argument("--no-figures", action="store_true", help="with --report: counts only")
    args = p.parse_args()
    run = Path(args.run)
    if not (run / "loop.json").is_file() or not (run / "labels.db").is_file():
        raise SystemExit(f"{run}: not a loop run (needs loop.json and labels.db)")
    loop = LoopConfig(**json.loads((run / "loop.json").read_text())["config"])
    if loop.target != "kappa":
        raise SystemExit(f"{run}: a {loop.target} run, not a kappa campaign")
    base = evaluate_config(loop, phonons=False, kappa=True)
    cfg = replace(base, device=args.device,
                  kappa_settings=replace(base.kappa_settings, budget_s=args.budget))  # fmt: skip
    store = ResultStore(run / "labels.db")
    rows = store.rows()
    # the loop's own rule for a stable crystal, on the stored labels
    table = pd.DataFrame.from_dict({k: r.key_value_pairs for k, r in rows.items()}, "index")
    keep = kept_stable(table, loop.ehull_threshold) & table["round"].isin(args.rounds)
    if args.screened:
        keep &= table.get("kappa_settings", pd.Series(index=table.index)).notna()
    if args.unreliable:
        value = pd.to_numeric(table.get("kappa", pd.Series(index=table.index)), errors="coerce")
        reliable = table.get("kappa_reliable", pd.Series(False, index=table.index))
        keep &= value.notna() & (reliable != True)  # noqa: E712 (object column of bools)
    keys = list(table.index[keep])
    keys.sort(key=lambda k: (rows[k].natoms, k))
    n_stable, keys = len(keys), keys[: args.limit]
    items = [(k, AseAtomsAdaptor.get_structure(rows[k].toatoms())) for k in keys]
    jobs, done = plan(items, store, cfg, retry_failed=args.retry_failed)
    print(f"{len(keys)} of {n_stable} stable crystals in rounds {args.rounds}: kappa for "
          f"{len(jobs)}, {done} already labelled with these settings", flush=True)  # fmt: skip
    if jobs and not args.report:
        write_run_record(run, {"budget_s": args.budget, "device": args.device,
                         "kappa_signature": cfg.signature("kappa")}, None,
                         tool="tools/device/kappa_labels.py")  # fmt: skip
        t0 = time.perf_counter()
        client = start_client(args.workers)
        try:
            for job, labels, _ in run_jobs(client, jobs, cfg):
                record(store, job, labels, None)
                what = labels.get("kappa", labels.get("kappa_skipped", labels.get("kappa_error")))
                print(f"  {job.key}: {what} (reliable {labels.get('kappa_reliable')}, "
                      f"{labels.get('kappa_seconds')} s)", flush=True)  # fmt: skip
        finally:
            close_client(client)
        print(f"{len(jobs)} kappa calculations in {(time.perf_counter() - t0) / 60:.1f} min")
    stored = store.rows()
    ours = [stored[k] for k in keys if cfg.reuses("kappa", stored[k])]
    print(f"labelled under these settings: {len(ours)} of {len(keys)}; with a value "
          f"{sum(r.get('kappa') is not None for r in ours)}, reliable "
          f"{sum(bool(r.get('kappa_reliable')) for r in ours)}")  # fmt: skip
    if args.report and not args.no_figures:
        from crysvcd.loop.figures import write_figures

        write_figures(run, store, loop)
        print(f"wrote {run / 'structures.csv'} and {run / 'shares.csv'}")


if __name__ == "__main__":
    main()
