"""Energy-above-hull calibration, phonon checks and relaxation speed.

    python benchmarks/stability.py [--sections reference mlip phonons speed]
        [--n-dev 300] [--n-unstable 40] [--unstable-csv FILE]
        [--mlip sevennet] [--fmax 0.01] [--workers 2] [--supercell-length 20] [--n-speed 16]

1. reference: each material's own DFT formation energy placed on the offline hull with its
   own entry removed, against MP's e_above_hull. This checks the hull machinery.
2. mlip: relax each structure (FrechetCellFilter + FIRE), MP2020-correct the energy, and
   place it on the hull without its own entry. MAE of Ehull and accuracy of the call
   "Ehull < 0.1 eV/atom", on dev-split MP-20 structures and on unstable MPTS-52 entries
   (MP Ehull 0.1-0.7, bundled as ``mpts52_unstable.csv.gz``; MP-20 labels are all below 0.08
   and cannot show that unstable crystals are caught). Also the seconds per structure.
3. phonons: Si, NaCl and GaN must have no imaginary mode; cubic BaTiO3 (a textbook
   ferroelectric instability) must have some.
4. speed: structures per minute of the plain one-by-one ASE loop (one process, all cores)
   against ``--workers`` Dask worker processes of one thread each, on the same structures.
Prints every figure; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numpy as np
from ase.build import bulk
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from crysvcd.datasets import data_path, read_mp20_csv, structure_from_cif, training_pool
from crysvcd.evaluate.hull import corrected_formation_energy, e_above_hull
from crysvcd.evaluate.mlip import get_calculator
from crysvcd.evaluate.phonons import phonon_stability
from crysvcd.evaluate.relax import relax
from crysvcd.evaluate.settings import PhononSettings

warnings.filterwarnings("ignore")


def report(label: str, pred: list[float], true: list[float]) -> None:
    pred, true = np.clip(np.array(pred), 0, None), np.array(true)
    mae = np.mean(np.abs(pred - true))
    acc = np.mean((pred < 0.1) == (true < 0.1))
    print(
        f"{label}: n={len(true)}  MAE {mae:.4f} eV/atom  median AE "
        f"{np.median(np.abs(pred - true)):.4f}  accuracy of 'Ehull < 0.1' {acc:.3f}"
    )


def _ehull_without_own_entry(item: tuple, mlip: str) -> tuple[float, bool, float]:
    material_id, structure, fmax, steps = item
    t0 = time.perf_counter()
    r = relax(structure, get_calculator(mlip), fmax=fmax, steps=steps)
    ef = corrected_formation_energy(r.structure, r.energy)
    ehull = e_above_hull(r.structure.composition, ef, exclude=(material_id,))
    return ehull, r.converged, time.perf_counter() - t0


def _relax_only(item: tuple, mlip: str) -> bool:
    structure, fmax, steps = item
    return relax(structure, get_calculator(mlip), fmax=fmax, steps=steps).converged


def map_structures(fn, items: list, mlip: str, workers: int):
    """(index, result or exception) as each finishes: a plain loop in this process for one
    worker, Dask worker processes (one thread each) for more."""
    if workers == 1:
        for i, item in enumerate(items):
            try:
                yield i, fn(item, mlip)
            except Exception as exc:
                yield i, exc
        return
    from distributed import as_completed

    from crysvcd.evaluate.cluster import close_client, start_client

    client = start_client(workers)
    try:
        futures = {client.submit(fn, item, mlip, pure=False): i for i, item in enumerate(items)}
        for future in as_completed(futures):
            try:
                yield futures[future], future.result()
            except Exception as exc:
                yield futures[future], exc
    finally:
        close_client(client)


def load_sets(args) -> dict:
    dev = training_pool("dev")
    dev = dev[dev["source"] != "mpts52_mp20like.csv.gz"].sample(frac=1, random_state=args.seed)
    sets = {"MP-20 dev split": dev.head(args.n_dev)}
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
    return sets


def section_reference(sets: dict) -> None:
    print("== 1. reference only: own DFT formation energy, own entry removed ==")
    for name, df in sets.items():
        pred = [
            e_above_hull(f, ef, exclude=(m,))
            for m, f, ef in zip(
                df["material_id"], df["cell_formula"], df["formation_energy_per_atom"]
            )
        ]
        report(name, pred, list(df["e_above_hull"]))


def section_mlip(sets: dict, args) -> None:
    print(
        f"\n== 2. {args.mlip}: relax (FIRE, fmax {args.fmax}, <= {args.steps} steps), "
        f"MP2020, hull without own entry; {args.workers} worker process(es) =="
    )
    for name, df in sets.items():
        items = [
            (m, structure_from_cif(cif), args.fmax, args.steps)
            for m, cif in zip(df["material_id"], df["cif"])
        ]
        truth = list(df["e_above_hull"])
        pred, true, unconverged, failed = [], [], 0, 0
        t0 = time.perf_counter()
        results = map_structures(_ehull_without_own_entry, items, args.mlip, args.workers)
        seconds = []
        for i, res in results:
            if isinstance(res, Exception):  # counted and named, never silently dropped
                failed += 1
                print(f"  {items[i][0]}: {type(res).__name__}: {res}")
                continue
            pred.append(res[0])
            true.append(truth[i])
            unconverged += not res[1]
            seconds.append(res[2])
        minutes = (time.perf_counter() - t0) / 60
        report(name, pred, true)
        print(
            f"  {unconverged} not converged (kept), {failed} failed; "
            f"{len(items) / minutes:.1f} structures/min; median {np.median(seconds):.1f} s, "
            f"mean {np.mean(seconds):.1f} s per structure"
        )


def phonon_cases() -> dict[str, Structure]:
    to_s = AseAtomsAdaptor.get_structure
    batio3 = Structure(
        Lattice.cubic(4.0),
        ["Ba", "Ti", "O", "O", "O"],
        [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
    )
    return {
        "Si (diamond)": to_s(bulk("Si", "diamond", a=5.43)),
        "NaCl (rock salt)": to_s(bulk("NaCl", "rocksalt", a=5.64)),
        "GaN (wurtzite)": to_s(bulk("GaN", "wurtzite", a=3.19, c=5.19)),
        "BaTiO3 (cubic, expected unstable)": batio3,
    }


def section_phonons(args) -> None:
    settings = PhononSettings(supercell_min_length=args.supercell_length)
    print(
        f"\n== 3. phonons with {args.mlip}: relax to fmax 0.003 (<= 200 steps), supercell "
        f">= {settings.supercell_min_length} A, displacement {settings.displacement} A, "
        f"mesh {settings.mesh}, threshold {settings.threshold} THz =="
    )
    calc = get_calculator(args.mlip)
    for name, s in phonon_cases().items():
        r = relax(s, calc, fmax=0.003, steps=200)
        p = phonon_stability(r.structure, calc, settings)
        print(
            f"{name}: relax converged {r.converged}; {'stable' if p.stable else 'UNSTABLE'}, "
            f"min frequency {p.min_frequency:+.3f} THz, {p.n_imaginary} imaginary (q, band), "
            f"supercell {p.supercell} = {p.supercell_atoms} atoms, "
            f"{p.n_displacements} displacements, {p.seconds:.1f} s"
        )


def section_symmetry(args) -> None:
    """Phonon cost with and without the symmetry reduction, on freely relaxed cells (whose
    symmetry is broken at the 1e-5 A level by the relaxation, as in a real run)."""
    print(
        f"\n== 5. phonons with {args.mlip}, symmetry used or not: free relaxation to fmax "
        "0.003, supercell >= 20 A (perpendicular width), 0.01 A, 8x8x8 =="
    )
    to_s = AseAtomsAdaptor.get_structure
    cases = {
        "GaAs (F-43m)": to_s(bulk("GaAs", "zincblende", a=5.75)),
        "CuAu (P4/mmm)": Structure(Lattice.tetragonal(2.85, 3.70), ["Cu", "Au"],
                                   [[0, 0, 0], [0.5, 0.5, 0.5]]),  # fmt: skip
        "SrTiO3 (Pm-3m)": Structure(
            Lattice.cubic(3.95), ["Sr", "Ti", "O", "O", "O"],
            [[0, 0, 0], [0.5, 0.5, 0.5], [0.5, 0.5, 0], [0.5, 0, 0.5], [0, 0.5, 0.5]],
        ),
    }  # fmt: skip
    calc = get_calculator(args.mlip)
    for name, s in cases.items():
        rng = np.random.default_rng(0)
        s = s.copy()
        for i, shift in enumerate(rng.normal(0, 0.002, (len(s), 3))):  # one vector per call
            s.translate_sites([i], shift, frac_coords=False)
        r = relax(s, calc, fmax=0.003, steps=300)
        for label, symprec in (("cell as relaxed", None), ("idealised, symmetry used", 1e-3)):
            p = phonon_stability(r.structure, calc, PhononSettings(symprec=symprec))
            print(
                f"{name}, {label}: {p.n_displacements} displacements, supercell "
                f"{p.supercell_atoms} atoms, {p.seconds:.0f} s; "
                f"{'stable' if p.stable else 'UNSTABLE'} (min {p.min_frequency:+.2f} THz)"
            )


def section_speed(sets: dict, args) -> None:
    df = next(iter(sets.values())).tail(args.n_speed)
    items = [(structure_from_cif(c), args.fmax, args.steps) for c in df["cif"]]
    print(
        f"\n== 4. relaxation speed, {len(items)} MP-20 dev structures, fmax {args.fmax}, "
        f"{os.cpu_count()} CPU cores =="
    )
    for workers in (1, args.workers):
        t0 = time.perf_counter()
        results = [r for _, r in map_structures(_relax_only, items, args.mlip, workers)]
        minutes = (time.perf_counter() - t0) / 60
        label = (
            "plain one-by-one ASE loop, 1 process" if workers == 1 else f"{workers} Dask workers"
        )
        fails = sum(isinstance(r, Exception) for r in results)
        print(f"{label}: {len(items) / minutes:.1f} structures/min ({fails} failed)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--sections",
        nargs="+",
        default=["reference", "mlip", "phonons", "speed"],
        choices=["reference", "mlip", "phonons", "speed", "symmetry"],
    )
    ap.add_argument("--n-dev", type=int, default=300)
    ap.add_argument("--n-unstable", type=int, default=40)
    ap.add_argument("--unstable-csv", default=str(data_path("mpts52_unstable.csv.gz")))
    ap.add_argument("--mlip", default="sevennet")
    ap.add_argument("--fmax", type=float, default=0.01)
    ap.add_argument("--steps", type=int, default=500)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--supercell-length", type=float, default=20.0)
    ap.add_argument("--n-speed", type=int, default=16)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    sets = load_sets(args)
    if "reference" in args.sections:
        section_reference(sets)
    if "mlip" in args.sections:
        section_mlip(sets, args)
    if "phonons" in args.sections:
        section_phonons(args)
    if "speed" in args.sections:
        section_speed(sets, args)
    if "symmetry" in args.sections:
        section_symmetry(args)


if __name__ == "__main__":
    main()
