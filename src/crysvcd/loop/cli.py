"""``crysvcd loop``: its options are the fields of ``LoopConfig`` (same names, dashes for
underscores, the same defaults), so the command line and a TOML file cannot disagree."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields

from crysvcd.loop.config import LoopConfig

_TYPES = {"int": int, "float": float, "str": str, "str | None": str, "float | None": float}
_HELP = {
    "rounds": "generate-label rounds (fine-tuning between them)",
    "n": "crystals generated per round",
    "ehull_threshold": "stable label: converged and MLIP Ehull at most this, eV/atom",
    "valence_masks": "charge-balance masks (--no-valence-masks: the unconstrained baseline)",
    "phonon_ehull_max": "phonons only below this Ehull, eV/atom",
    "phonon_share": "share of those that get phonons (fixed by a hash of the key)",
    "workers": "Dask worker processes on this machine",
    "scheduler": "address of a running Dask scheduler (tcp://host:8786)",
    "labelled_weight": "copies of each labelled crystal in the fine-tuning data",
    "stage2_pool_sample": "pool crystals beside the labelled ones in the Stage II fine-tune",
}


def add_loop_commands(sub, make_parser, register) -> None:
    p = make_parser(sub, "loop", "the learning loop: generate, label, fine-tune, by rounds")
    p.add_argument("--config", help="TOML file of loop settings (flags override it)")
    p.add_argument("--out", required=True, help="run folder (resumed when it holds a run)")
    for f in fields(LoopConfig):
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        text = _HELP.get(f.name, f.name.replace("_", " "))
        if f.type == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                           help=f"{text} (default: {default})")  # fmt: skip
        else:
            p.add_argument(flag, type=_TYPES[f.type], default=None,
                           help=f"{text} (default: {default})")  # fmt: skip
    register("loop", resume=lambda a: f"everything finished is saved in {a.out}; "
             "run the same command to resume")(_loop)  # fmt: skip


def _loop(args: argparse.Namespace) -> int:
    from crysvcd.loop.run import run_loop

    overrides = {f.name: getattr(args, f.name) for f in fields(LoopConfig)}
    cfg = LoopConfig.load(args.config, **overrides)
    shares = run_loop(cfg, args.out, progress=not args.quiet)
    cols = ["round", "generated", "ehull_below_0.1", "ehull_below_0", "phonon_stable", "sun"]
    if len(shares):
        print(shares[[c for c in cols if c in shares]].to_string(index=False))
    print(f"run folder {args.out}: labels.db, shares.csv, structures.csv, figures/")
    return 0
