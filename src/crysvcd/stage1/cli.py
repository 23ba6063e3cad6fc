"""Stage I subcommand of the ``crysvcd`` CLI: ``formulas``."""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path


def _formulas(args: argparse.Namespace) -> int:
    from crysvcd.stage1.sample import _sampler
    from crysvcd.stage1.train import shipped_checkpoint

    path = Path(args.checkpoint) if args.checkpoint else shipped_checkpoint(args.kind)
    sampler = _sampler(str(path))
    formulas, stats = sampler.sample(
        args.n, args.temperature, args.top_k, args.top_p, args.seed, args.condition
    )
    out = open(args.out, "w", newline="") if args.out else sys.stdout
    writer = csv.writer(out, delimiter="," if args.out else "\t")
    writer.writerow(["reduced_formula", "cell_formula", "valence_tokens"])
    for f in formulas:
        writer.writerow([f.reduced_formula, f.cell_formula, f.valence_string()])
    if args.out:
        out.close()
        print(f"wrote {len(formulas)} formulas to {args.out}")
    print(
        f"# {len(formulas)} {args.kind} formulas in {stats.seconds:.2f} s "
        f"(dead ends resampled: {stats.dead_ends})",
        file=sys.stderr,
    )
    return 0


def add_stage1_commands(sub, register) -> None:
    p = sub.add_parser("formulas", help="sample charge-balanced formulas (Stage I)")
    p.add_argument("--kind", choices=["ionic", "alloy"], default="ionic")
    p.add_argument("--n", type=int, default=20)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=None)
    p.add_argument("--top-p", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--condition", action="append", help="NAME=VALUE target of a conditioned model")
    p.add_argument("--checkpoint", help="a Stage I checkpoint (default: the shipped one)")
    p.add_argument("--out", help="write a CSV here instead of printing")
    register("formulas")(_formulas)
