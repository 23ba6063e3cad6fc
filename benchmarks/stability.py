"""Energy-above-hull calibration and relaxation speed.

    python benchmarks/stability.py [--n-dev 300] [--n-unstable 40]
        [--unstable-csv ../shared/data/mpts52_partial/mpts52_val.csv.gz]
        [--mlip sevennet] [--fmax 0.02] [--reference-only]

1. Reference only: each material's own DFT formation energy placed on the offline hull with
   its own entry removed, against MP's e_above_hull. This checks the hull machinery.
2. MLIP: relax each structure (FrechetCellFilter + FIRE), MP2020-correct the energy, and
   place it on the hull without its own entry. MAE of Ehull and accuracy of the call
   "Ehull < 0.1 eV/atom", on dev-split MP-20 structures and on unstable MPTS-52 entries
   (MP Ehull 0.1-0.7; MP-20 labels are all below 0.08 and cannot show that unstable crystals
   are caught). Structures per minute of the one-by-one relaxation loop.
Prints every figure; asserts nothing.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from crysvcd.datasets import read_mp20_csv, structure_from_cif, training_pool
from crysvcd.evaluate.hull import corrected_formation_energy, e_above_hull
from crysvcd.evaluate.mlip import get_calculator
from crysvcd.evaluate.relax import relax

warnings.filterwarnings("ignore")


def report(label: str, pred: list[float], true: list[float]) -> None:
    pred, true = np.clip(np.array(pred), 0, None), np.array(true)
    mae = np.mean(np.abs(pred - true))
    acc = np.mean((pred < 0.1) == (true < 0.1))
    print(
        f"{label}: n={len(true)}  MAE {mae:.4f} eV/atom  median AE "
        f"{np.median(np.abs(pred - true)):.4f}  accuracy of 'Ehull < 0.1' {acc:.3f}"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n-dev", type=int, default=300)
    ap.add_argument("--n-unstable", type=int, default=40)
    ap.add_argument("--unstable-csv", default="../shared/data/mpts52_partial/mpts52_val.csv.gz")
    ap.add_argument("--mlip", default="sevennet")
    ap.add_argument("--fmax", type=float, default=0.02)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--reference-only", action="store_true")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    dev = training_pool("dev")
    dev = dev[dev["source"] != "mpts52_mp20like.csv.gz"].sample(frac=1, random_state=args.seed)
    dev = dev.head(args.n_dev)
    sets = {"MP-20 dev split": dev}
    try:
        uns = read_mp20_csv(args.unstable_csv)
        uns = uns[
            (uns["e_above_hull"] >= 0.1) & (uns["e_above_hull"] <= 0.7) & (uns["nsites"] <= 20)
        ]
        sets["MPTS-52 unstable (MP Ehull 0.1-0.7)"] = uns.sample(
            frac=1, random_state=args.seed
        ).head(args.n_unstable)
    except FileNotFoundError:
        print(f"(no {args.unstable_csv}: skipping the unstable set)")

    print("== 1. reference only: own DFT formation energy, own entry removed ==")
    for name, df in sets.items():
        pred = [
            e_above_hull(f, ef, exclude=(m,))
            for m, f, ef in zip(
                df["material_id"], df["cell_formula"], df["formation_energy_per_atom"]
            )
        ]
        report(name, pred, list(df["e_above_hull"]))
    if args.reference_only:
        return

    calc = get_calculator(args.mlip)
    print(
        f"\n== 2. {args.mlip}: relax (FIRE, fmax {args.fmax}, <= {args.steps} steps), "
        f"MP2020, hull without own entry =="
    )
    for name, df in sets.items():
        pred, true, unconverged, failed = [], [], 0, 0
        t0 = time.perf_counter()
        for m, cif, eh in zip(df["material_id"], df["cif"], df["e_above_hull"]):
            s = structure_from_cif(cif)
            try:
                r = relax(s, calc, fmax=args.fmax, steps=args.steps)
                ef = corrected_formation_energy(r.structure, r.energy)
                pred.append(e_above_hull(r.structure.composition, ef, exclude=(m,)))
                true.append(eh)
                unconverged += not r.converged
            except Exception as exc:  # counted and named, never silently dropped
                failed += 1
                print(f"  {m}: {type(exc).__name__}: {exc}")
        minutes = (time.perf_counter() - t0) / 60
        report(name, pred, true)
        print(
            f"  {unconverged} not converged, {failed} failed; "
            f"{len(df) / minutes:.1f} structures/min (one-by-one ASE loop, 2 CPU cores)"
        )


if __name__ == "__main__":
    main()
