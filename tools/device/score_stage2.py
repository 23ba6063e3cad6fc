"""Here (with pymatgen): score the samples a device run brought back against the true
structures of the evaluation rows (StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3), as
``benchmarks/csp.py``).

    python tools/device/score_stage2.py --data tools/device/data/stage2.npz \
        --samples DIR/samples.npz   (or samples_kK.npz of sample_stage2.py)
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
from pymatgen.core import Lattice, Structure

from crysvcd.datasets import structure_from_cif, training_pool

warnings.filterwarnings("ignore")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", required=True)
    ap.add_argument("--samples", required=True)
    args = ap.parse_args()
    import sys

    sys.path.insert(0, "benchmarks")
    from csp import score  # the benchmark's own scoring

    data, samples = np.load(args.data), np.load(args.samples)
    pool = training_pool("dev").set_index("material_id")
    ids = list(samples["eval_ids"])
    k = int(samples["k"]) if "k" in samples else 1  # sample_stage2.py: k per row, row-major
    truths = [structure_from_cif(pool.loc[m, "cif"]) for m in ids]
    types = np.split(data["eval_types"], np.cumsum(data["eval_natoms"])[:-1])[: len(ids)]
    types = [t for t in types for _ in range(k)]
    for key in sorted(name for name in samples if name.startswith("lattice_")):
        steps = key.split("_")[1]
        fracs = np.split(samples[f"frac_{steps}"], np.cumsum([len(t) for t in types])[:-1])
        preds = [
            Structure(Lattice(lat.astype(float)), [int(z) for z in t], f.astype(float))
            for lat, t, f in zip(samples[key], types, fracs)
        ]
        r = score(truths, preds, k)
        sec = float(samples[f"seconds_{steps}"]) / len(preds)
        print(
            f"{steps} steps, {k} per row: match {100 * r['match_rate']:.1f} %  RMSE "
            f"{r['rmse']:.4f}  valid {100 * r['valid']:.1f} %  ({len(ids)} rows; "
            f"{sec:.4f} s/structure there)"
        )


if __name__ == "__main__":
    main()
