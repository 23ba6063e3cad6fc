"""Crystal-structure prediction on an MP-20-format CSV (DiffCSP's protocol).

    python benchmarks/csp.py [--csv FILE] [--n 200] [--samples 1 20] [--steps 1000 100]
                             [--checkpoint CKPT] [--curve RUN_DIR] [--curve-steps 100]
                             [--save DIR] [--relax sevennet --relax-n 100]
                             [--best-of 8 --best-of-steps 100 --rank-mlip sevennet]
                             [--skip 0] [--precision fp32|bf16]

For each row, generate structures from its cell composition and compare them with the true
one with pymatgen StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3). A row matches when
any of its k samples matches; RMSE is that of the best match. Without --csv the dev split
of the bundled pool is used (the MP-20 test split is never bundled: pass its path).
--curve evaluates the EMA snapshots of a training run (ema_epochNNNN.pt) to draw the match
rate against CPU-hours of training. --save writes the 1-sample predictions as extxyz.
--relax relaxes the 1-sample predictions of the first --steps setting with an MLIP (cell and
positions, as `crysvcd evaluate` does) and reports the match rate before and after on the
same rows: a separate figure, not DiffCSP's protocol. --best-of K draws K structures per
composition and keeps the one with the lowest single-point MLIP energy per atom (what
`crysvcd generate --candidates K` does): one structure per composition is scored, but it
costs K samples, so it is reported apart from the 1-sample figure. --skip starts after that
many rows of the seeded order (to split one evaluation over several processes).
Prints every figure; asserts nothing.
"""

from __future__ import annotations

import argparse
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from ase.io import write as ase_write
from pymatgen.analysis.structure_matcher import StructureMatcher
from pymatgen.io.ase import AseAtomsAdaptor

from crysvcd import checkpoints
from crysvcd.config import PRECISIONS
from crysvcd.datasets import load_csv_or_pool, structure_from_cif
from crysvcd.evaluate.rank import lowest_energy
from crysvcd.pipeline import structure_summary
from crysvcd.stage2.cspnet import load_model
from crysvcd.stage2.sample import SamplerSettings, StructureSampler

warnings.filterwarnings("ignore")
MATCHER = StructureMatcher(stol=0.5, angle_tol=10, ltol=0.3)


def evaluate(sampler, truths, k: int, settings: SamplerSettings, seed: int) -> dict:
    comps = [s.composition for s in truths for _ in range(k)]
    t0 = time.perf_counter()
    preds = sampler.sample(comps, settings, seed=seed)
    seconds = time.perf_counter() - t0
    return {**score(truths, preds, k), "sec_per_structure": seconds / len(preds), "preds": preds}


def score(truths: list, preds: list, k: int = 1) -> dict:
    """Match rate, mean RMSE of matches and validity; ``None`` predictions count as misses."""
    matched, rms, valid = 0, [], []
    for i, truth in enumerate(truths):
        best = None
        for pred in preds[i * k : (i + 1) * k]:
            ok = pred is not None and structure_summary(pred)["valid"]
            valid.append(ok)
            if not ok:
                continue
            try:
                r = MATCHER.get_rms_dist(pred, truth)
            except Exception:
                r = None
            if r is not None and (best is None or r[0] < best):
                best = r[0]
        if best is not None:
            matched += 1
            rms.append(best)
    return {
        "match_rate": matched / len(truths),
        "rmse": float(np.mean(rms)) if rms else float("nan"),
        "valid": float(np.mean(valid)),
    }


def relaxed_figures(truths: list, preds: list, args) -> None:
    """Match rate of MLIP-relaxed predictions next to that of the same raw predictions."""
    from crysvcd.evaluate.mlip import get_calculator
    from crysvcd.evaluate.relax import relax

    calc = get_calculator(args.relax)
    n = min(args.relax_n, len(preds))
    relaxed, t0 = [], time.perf_counter()
    for pred in preds[:n]:
        try:
            r = relax(pred, calc, args.relax_fmax, args.relax_steps, timeout=args.relax_timeout)
            relaxed.append(r.structure)
        except Exception:  # an exploded or timed-out relaxation is a miss, not a crash
            relaxed.append(None)
    sec = (time.perf_counter() - t0) / max(n, 1)
    print(
        f"\n== {args.relax} relaxation (fmax {args.relax_fmax}, <= {args.relax_steps} FIRE "
        f"steps) of the first {n} predictions of {args.steps[0]} steps =="
    )
    print(line("raw", {**score(truths[:n], preds[:n]), "sec_per_structure": float("nan")}))
    print(line("relaxed", {**score(truths[:n], relaxed), "sec_per_structure": sec}))


def best_of(sampler, truths, k: int, settings: SamplerSettings, seed: int, mlip: str) -> None:
    """Lowest-MLIP-energy pick of k samples per composition, next to the any-of-k oracle."""
    comps = [s.composition for s in truths for _ in range(k)]
    t0 = time.perf_counter()
    preds = sampler.sample(comps, settings, seed=seed)
    t1 = time.perf_counter()
    picks = [lowest_energy(preds[i * k : (i + 1) * k], mlip)[0] for i in range(len(truths))]
    t2 = time.perf_counter()
    r = {**score(truths, picks), "sec_per_structure": (t2 - t0) / len(truths)}
    print(line(f"lowest {mlip} energy of {k}, per composition", r))
    oracle = {**score(truths, preds, k), "sec_per_structure": (t1 - t0) / len(preds)}
    print(line(f"any of {k} (needs the answer; for scale)", oracle))


def line(label: str, r: dict) -> str:
    return (
        f"{label}: match {100 * r['match_rate']:.1f} %  RMSE {r['rmse']:.4f}  "
        f"valid {100 * r['valid']:.1f} %  {r['sec_per_structure']:.3f} s/structure"
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--csv", help="MP-20-format CSV (default: dev split of the bundled pool)")
    ap.add_argument("--n", type=int, default=200, help="rows evaluated (first n, seeded order)")
    ap.add_argument("--samples", type=int, nargs="+", default=[1, 20])
    ap.add_argument("--steps", type=int, nargs="+", default=[1000, 100])
    ap.add_argument("--k20-steps", type=int, default=100, help="steps used for k > 1 samples")
    ap.add_argument("--k-n", type=int, default=50, help="rows used for k > 1 samples")
    ap.add_argument("--checkpoint", help="Stage II checkpoint (default: shipped)")
    ap.add_argument("--curve", help="training run folder: evaluate its EMA snapshots")
    ap.add_argument("--curve-steps", type=int, default=100)
    ap.add_argument("--curve-n", type=int, default=100)
    ap.add_argument(
        "--hours-offset",
        type=float,
        default=0.0,
        help="training hours before the run's start (a run initialised from a checkpoint)",
    )
    ap.add_argument("--save", help="folder for the 1-sample predictions (extxyz per setting)")
    ap.add_argument("--relax", help="MLIP backend to relax the 1-sample predictions with")
    ap.add_argument("--relax-n", type=int, default=100)
    ap.add_argument("--relax-fmax", type=float, default=0.05)
    ap.add_argument("--relax-steps", type=int, default=300)
    ap.add_argument("--relax-timeout", type=float, default=300.0)
    ap.add_argument("--best-of", type=int, nargs="*", default=[], help="K: pick by MLIP energy")
    ap.add_argument("--best-of-steps", type=int, default=100)
    ap.add_argument("--best-of-n", type=int, default=None, help="rows for --best-of (default n)")
    ap.add_argument("--rank-mlip", default="sevennet")
    ap.add_argument("--skip", type=int, default=0, help="rows of the seeded order to skip")
    ap.add_argument(
        "--anti-anneal", type=float, default=0.0, help="coordinate drift grows to 1 + this"
    )
    ap.add_argument("--temperature", type=float, default=1.0, help="predictor noise scale")
    ap.add_argument("--no-corrector", action="store_true", help="predictor steps only")
    ap.add_argument("--precision", choices=PRECISIONS, default="fp32", help="network arithmetic")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    df = load_csv_or_pool(args.csv, split=None if args.csv else "dev")
    df = df.sample(frac=1.0, random_state=args.seed).iloc[args.skip : args.skip + args.n]
    truths = [structure_from_cif(c) for c in df["cif"]]
    source = args.csv or "bundled pool, dev split"
    ckpt = Path(args.checkpoint) if args.checkpoint else checkpoints.shipped("stage2")
    print(f"data: {source}, rows {args.skip}-{args.skip + len(truths)}; checkpoint: {ckpt}")
    print(
        f"sampler: anti_anneal {args.anti_anneal}, temperature {args.temperature}, "
        f"corrector {not args.no_corrector}, precision {args.precision}"
    )

    def settings(steps: int) -> SamplerSettings:
        return SamplerSettings(
            steps=steps, anti_anneal=args.anti_anneal, temperature=args.temperature,
            corrector=not args.no_corrector, precision=args.precision,
        )  # fmt: skip

    if args.curve:
        snaps = sorted(Path(args.curve).glob("ema_epoch*.pt"))
        print(
            f"\n== match rate vs CPU-hours ({len(snaps)} snapshots, first {args.curve_n} rows, "
            f"{args.curve_steps} steps, 1 sample) =="
        )
        for snap in snaps:
            state = torch.load(snap, map_location="cpu", weights_only=False)["state"]
            sampler = StructureSampler(load_model(snap))
            r = evaluate(
                sampler,
                truths[: args.curve_n],
                1,
                settings(args.curve_steps),
                args.seed,
            )
            hours = state["hours"] + args.hours_offset
            print(line(f"epoch {state['epoch']:4d}, {hours:.2f} h", r))

    sampler = StructureSampler(load_model(ckpt))
    print(f"\n== CSP, 1 sample per composition, {len(truths)} rows ==")
    first_preds = None
    for steps in args.steps:
        r = evaluate(sampler, truths, 1, settings(steps), args.seed)
        kind = "predictor only" if args.no_corrector else "predictor-corrector"
        print(line(f"{steps} steps, {kind}", r), flush=True)
        first_preds = first_preds or r["preds"]
        if args.save:
            Path(args.save).mkdir(parents=True, exist_ok=True)
            atoms = [AseAtomsAdaptor.get_atoms(p) for p in r["preds"]]
            ase_write(Path(args.save) / f"csp_{steps}steps.extxyz", atoms, format="extxyz")
    if args.relax and first_preds:
        relaxed_figures(truths, first_preds, args)
    for k in args.samples:
        if k == 1:
            continue
        rows = truths[: args.k_n]
        print(
            f"\n== CSP, {k} samples per composition, first {len(rows)} rows "
            f"({args.k20_steps} steps) =="
        )
        r = evaluate(sampler, rows, k, settings(args.k20_steps), args.seed)
        print(line(f"k={k}", r))
    for k in args.best_of:
        rows = truths[: args.best_of_n or len(truths)]
        print(
            f"\n== CSP, lowest {args.rank_mlip} energy of {k} samples, first {len(rows)} rows "
            f"({args.best_of_steps} steps) =="
        )
        best_of(sampler, rows, k, settings(args.best_of_steps), args.seed, args.rank_mlip)


if __name__ == "__main__":
    main()
