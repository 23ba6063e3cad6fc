"""Valence labeller: coverage, agreement with pymatgen's BVAnalyzer, speed.

    python benchmarks/valence.py [--csv MP20_FORMAT.csv] [--bv-sample 1000] [--speed-sample 2000]

Without --csv it runs on the bundled training pool. Prints every figure; asserts nothing.
"""

from __future__ import annotations

import argparse
import random
import statistics
import time
import warnings
from collections import Counter

import numpy as np
from pymatgen.analysis.bond_valence import BVAnalyzer
from pymatgen.core import Composition

from crysvcd.chem.labels import coverage, label_formulas
from crysvcd.chem.species import all_species
from crysvcd.chem.valence import label_valence
from crysvcd.datasets import load_csv_or_pool, structure_from_cif

warnings.filterwarnings("ignore")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--csv", help="MP-20-format CSV (default: bundled training pool)")
    ap.add_argument("--bv-sample", type=int, default=1000)
    ap.add_argument("--speed-sample", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    df = load_csv_or_pool(args.csv)
    formulas = list(df["cell_formula"])
    print(f"data: {args.csv or 'bundled training pool'} ({len(df)} materials, cell formulas)")

    # Coverage
    labels = label_formulas(formulas)
    cov = coverage(labels, top=20)
    all_metal = np.array([all(e.is_metal for e in Composition(f).elements) for f in formulas])
    ok = (labels["error"] == "").to_numpy()
    print("\n== coverage ==")
    print(f"overall: {cov['labelled']}/{cov['rows']} = {100 * cov['coverage']:.2f} %")
    print(f"labelled ionic: {cov['ionic']}, labelled alloy: {cov['alloy']}")
    print(
        f"all-metal compositions (alloys by rule): {ok[all_metal].sum()}/{all_metal.sum()} = "
        f"{100 * ok[all_metal].mean():.2f} %"
    )
    print(
        f"compositions with a non-metal (ionic, or metal-rich alloy): "
        f"{ok[~all_metal].sum()}/{(~all_metal).sum()} = {100 * ok[~all_metal].mean():.2f} %"
    )
    lanth = np.array([any(e.is_lanthanoid for e in Composition(f).elements) for f in formulas])
    print(
        f"with lanthanides: {ok[lanth].sum()}/{lanth.sum()} = {100 * ok[lanth].mean():.2f} %; "
        f"without: {100 * ok[~lanth].mean():.2f} %"
    )
    reduced = Counter(Composition(f).reduced_formula for f, good in zip(formulas, ok) if not good)
    print("20 most common failures (reduced formula: count):")
    print("  " + ", ".join(f"{f}: {n}" for f, n in reduced.most_common(20)))
    print(
        f"vocabulary: {len(all_species())} species tokens "
        f"({sum(s.valence == 0 for s in all_species())} zero-valence)"
    )

    # Agreement with BVAnalyzer on structures
    rng = random.Random(args.seed)
    idx = rng.sample(range(len(df)), min(args.bv_sample, len(df)))
    bva = BVAnalyzer()
    n_bv = agree = ours_missing = 0
    t0 = time.perf_counter()
    for i in idx:
        structure = structure_from_cif(df["cif"].iloc[i])
        try:
            valences = bva.get_valences(structure)
        except ValueError:
            continue
        n_bv += 1
        bv: dict[str, list[int]] = {}
        for site, v in zip(structure, valences):
            bv.setdefault(site.specie.symbol, []).append(v)
        bv_mean = {el: sum(v) / len(v) for el, v in bv.items()}
        try:
            ours = label_valence(df["cell_formula"].iloc[i]).oxidation_states()
        except ValueError:
            ours_missing += 1
            continue
        agree += all(abs(ours[el] - bv_mean[el]) < 1e-6 for el in bv_mean)
    print("\n== agreement with pymatgen BVAnalyzer ==")
    print(
        f"{len(idx)} random structures (seed {args.seed}); BVAnalyzer succeeded on {n_bv}; "
        f"we labelled {n_bv - ours_missing} of those"
    )
    print(
        f"per-element oxidation states equal: {agree}/{n_bv} = {100 * agree / max(n_bv, 1):.2f} %"
        f" ({time.perf_counter() - t0:.0f} s)"
    )

    # Speed, side by side on the same formulas
    sample = rng.sample(formulas, min(args.speed_sample, len(formulas)))
    ours_t, pmg_t = [], []
    for f in sample:
        t = time.perf_counter()
        try:
            label_valence(f)
        except ValueError:
            pass
        ours_t.append(time.perf_counter() - t)
    for f in sample:
        comp = Composition(f)
        t = time.perf_counter()
        comp.oxi_state_guesses()
        pmg_t.append(time.perf_counter() - t)

    def q(ts, p):
        return 1e3 * float(np.percentile(ts, p))

    print("\n== speed per formula (ms), same formulas, same run ==")
    print(f"{len(sample)} formulas from the data")
    print(f"crysvcd label_valence:          median {q(ours_t, 50):.3f}  p99 {q(ours_t, 99):.3f}")
    print(f"pymatgen oxi_state_guesses():   median {q(pmg_t, 50):.3f}  p99 {q(pmg_t, 99):.3f}")
    print(f"ratio of medians: {statistics.median(pmg_t) / statistics.median(ours_t):.1f}x")


if __name__ == "__main__":
    main()
