"""On the GPU machine (torch and numpy only): sample the evaluation compositions with a
Stage II checkpoint, ``--k`` structures each, for ``score_stage2.py`` to score here (a row
matches when any of its k structures matches, as ``benchmarks/csp.py --samples K``).

    python tools/device/sample_stage2.py --data tools/device/data/stage2.npz --out $OUT \
        [--checkpoint src/crysvcd/weights/stage2_csp.pt] [--rows 100] [--k 20] \
        [--steps 100 1000] [--device cuda]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from crysvcd.stage2.batch import Crystal
from crysvcd.stage2.sample import SamplerSettings, load_sampler


def eval_crystals(data, rows: int | None = None, k: int = 1) -> list[Crystal]:
    """The evaluation compositions (the first ``rows``), each ``k`` times in a row: row i's
    structures sit at i*k .. i*k+k-1, the order score_stage2.py reads."""
    types = np.split(data["eval_types"], np.cumsum(data["eval_natoms"])[:-1])[:rows]
    return [Crystal(t, np.zeros((len(t), 3)), np.eye(3)) for t in types for _ in range(k)]


def draw(sampler, crystals: list[Crystal], steps: list[int], seed: int) -> dict:
    """Lattices, fractional coordinates and seconds per setting of ``steps``, as arrays."""
    samples = {}
    for n in steps:
        t0 = time.time()
        drawn = sampler.sample_crystals(crystals, SamplerSettings(steps=n), seed=seed)
        samples[f"lattice_{n}"] = np.stack([lat for lat, _ in drawn])
        samples[f"frac_{n}"] = np.concatenate([f for _, f in drawn])
        samples[f"seconds_{n}"] = np.array(time.time() - t0)
        print(f"{n} steps: {len(crystals)} structures in {time.time() - t0:.1f} s")
    return samples


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--checkpoint", default=None, help="Stage II weights (default: shipped)")
    ap.add_argument("--rows", type=int, default=100, help="the first N evaluation rows")
    ap.add_argument("--k", type=int, default=20, help="structures per composition")
    ap.add_argument("--steps", type=int, nargs="+", default=[100])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    data = np.load(args.data)
    crystals = eval_crystals(data, args.rows, args.k)
    sampler = load_sampler(args.checkpoint, args.device)
    samples = draw(sampler, crystals, args.steps, args.seed)
    samples.update(eval_ids=data["eval_ids"][: args.rows], k=np.array(args.k))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(out / f"samples_k{args.k}.npz", **samples)


if __name__ == "__main__":
    main()
