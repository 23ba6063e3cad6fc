"""Here (with pymatgen): the Stage II data of a GPU run as flat arrays, for a machine that
has torch and numpy only.

    python tools/device/prepare_stage2.py [--out tools/device/data/stage2.npz] [--rows 200]

Writes the canonical (Niggli) train and dev crystals of the bundled pool (<= 20 atoms) and
the first ``--rows`` dev rows in ``benchmarks/csp.py``'s seeded order (their compositions
go to the GPU sampler; their true structures stay here for ``score_stage2.py``).
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np

from crysvcd.datasets import structure_from_cif, training_pool
from crysvcd.stage2.batch import canonical

warnings.filterwarnings("ignore")


def flat(crystals, prefix: str) -> dict[str, np.ndarray]:
    return {
        f"{prefix}_natoms": np.array([len(c.atom_types) for c in crystals], dtype=np.int64),
        f"{prefix}_types": np.concatenate([c.atom_types for c in crystals]).astype(np.int64),
        f"{prefix}_frac": np.concatenate([c.frac for c in crystals]).astype(np.float32),
        f"{prefix}_lattice": np.stack([c.lattice for c in crystals]).astype(np.float32),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", default="tools/device/data/stage2.npz")
    ap.add_argument("--rows", type=int, default=200, help="dev rows sampled on the device")
    ap.add_argument("--n-train", type=int, default=None, help="first N train crystals (tests)")
    args = ap.parse_args()
    pool = training_pool()
    arrays = {}
    for split in ("train", "dev"):
        df = pool[pool["split"] == split]
        if split == "train" and args.n_train:
            df = df.head(args.n_train)
        crystals = [canonical(structure_from_cif(c)) for c in df["cif"]]
        arrays |= flat([c for c in crystals if len(c.atom_types) <= 20], split)
    dev = training_pool("dev").sample(frac=1.0, random_state=0).head(args.rows)  # csp.py order
    arrays |= flat([canonical(structure_from_cif(c)) for c in dev["cif"]], "eval")
    arrays["eval_ids"] = np.array(dev["material_id"].tolist())
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out, **arrays)
    n = {k.split("_")[0]: len(v) for k, v in arrays.items() if k.endswith("_natoms")}
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB): {n}")


if __name__ == "__main__":
    main()
