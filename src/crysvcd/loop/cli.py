"""``crysvcd loop``: its options are the fields of ``LoopConfig`` (same names, dashes for
underscores, the same defaults), so the command line and a TOML file cannot disagree."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields

from crysvcd.loop.config import LoopConfig


def _optional(kind):
    """A flag of an optional setting: a ``kind`` value, or "none" (LoopConfig makes it None)."""

    def parse(text: str):
        return "none" if text.lower() == "none" else kind(text)

    parse.__name__ = kind.__name__  # argparse names the type in its error
    return parse


_TYPES = {
    "int": int,
    "float": float,
    "str": str,
    "str | None": str,
    "float | None": _optional(float),
    "int | None": _optional(int),
}
_HELP = {
    "rounds": "generate-label rounds (fine-tuning between them)",
    "n": "crystals generated per round",
    "ehull_threshold": "stable label: converged and MLIP Ehull at most this, eV/atom",
    "valence_masks": "charge-balance masks (--no-valence-masks: the unconstrained baseline)",
    "phonon_ehull_max": "phonons only below this Ehull, eV/atom",
    "phonon_share": "share of those that get phonons (fixed by a hash of the key)",
    "workers": "Dask worker processes on this machine",
    "label_device": "where the MLIP runs: cpu, cuda, cuda:N or auto",
    "relax_batch": "relax this many at once with torch-sim (default: 32 on a GPU, else 1)",
    "scheduler": "address of a running Dask scheduler (tcp://host:8786)",
    "labelled_weight": "copies of each labelled crystal in the fine-tuning data",
    "stage2_pool_sample": "pool crystals beside the labelled ones in the Stage II fine-tune",
    "prime": "fine-tune on the target's bundled labels before round 0 (round 0 conditioned)",
    "recipe": "what the priming fine-tune learns the target from: labels (the bundled "
    "property labels) or paper (kappa high: the paper's expert-screened subset of the pool)",
    "kappa_per_round": "phono3py for at most this many crystals per round (best by the screen)",
    "kappa_budget": "phono3py wall-time budget per crystal, s",
    "kappa_fc3_mlip": "phono3py: a cheaper MLIP for fc3 alone (none: kappa_mlip's)",
    "kappa_supercell": "phono3py: smallest width of the fc3 supercell, A",
    "kappa_fc3_cutoff": "phono3py: drop fc3 pairs farther apart than this, A (none: keep all)",
    "kappa_wigner": "phono3py: the Wigner total, particle + coherence (--no-kappa-wigner: RTA "
    "particle part only)",
    "start_condition": "NAME=VALUE the starting checkpoints were fine-tuned on (a stability "
    "run's stable=1): asked for until the loop tunes them for its own target",
    "kappa_prescreen": "kappa campaigns: phonons only for the crystals the composition "
    "surrogate puts in this best share toward the target (1: all)",
    "screen_usable": "dielectric: the screen keeps only formulas the surrogate can label and "
    "does not call metals",
    "screen_factor": "Stage I draws this many times n formulas and a screen fitted on the "
    "labels so far keeps the best n (stability: from round 1; a property target: from round "
    "0, on its bundled labels too; 1: no screen)",
}
# what `crysvcd campaign` sets unless told otherwise (the paper's recipe: fine-tune on the
# property data first; keep what is within 0.1 eV/atom of the hull)
CAMPAIGN_DEFAULTS = {
    # phonons cost minutes per crystal on a CPU: spend them on the half the kappa surrogate
    # puts on the target's side (README, kappa surrogate)
    "kappa": {"prime": True, "ehull_threshold": 0.1, "phonons": True, "kappa_prescreen": 0.5},
    # epsilon is a property of insulators: ionic compounds only (an alloy is a metal)
    "dielectric": {
        "prime": True,
        "ehull_threshold": 0.1,
        "phonons": False,
        "ionic_fraction": 1.0,
        "screen_usable": True,
    },
}
CAMPAIGN_FIELDS = ("target", "direction", "target_value")


def _add_fields(p, skip=()) -> None:
    p.add_argument("--config", help="TOML file of loop settings (flags override it)")
    p.add_argument("--out", required=True, help="run folder (resumed when it holds a run)")
    for f in fields(LoopConfig):
        if f.name in skip:
            continue
        flag = "--" + f.name.replace("_", "-")
        default = f.default if f.default is not MISSING else None
        text = _HELP.get(f.name, f.name.replace("_", " "))
        if f.type == "bool":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                           help=f"{text} (default: {default})")  # fmt: skip
        else:
            p.add_argument(flag, type=_TYPES[f.type], default=None,
                           help=f"{text} (default: {default})")  # fmt: skip


def add_loop_commands(sub, make_parser, register) -> None:
    p = make_parser(sub, "loop", "the learning loop: generate, label, fine-tune, by rounds")
    _add_fields(p)
    resume = lambda a: f"everything finished is saved in {a.out}; run the same command to resume"  # noqa: E731
    register("loop", resume=resume)(_loop)
    p = make_parser(sub, "campaign", "a property campaign: the loop steered to high/low kappa "
                    "or a dielectric constant")  # fmt: skip
    p.add_argument("property", choices=sorted(CAMPAIGN_DEFAULTS))
    p.add_argument("--target", dest="goal", required=True,
                   help="kappa: high or low; dielectric: the epsilon, e.g. 50")  # fmt: skip
    _add_fields(p, skip=CAMPAIGN_FIELDS)
    register("campaign", resume=resume)(_campaign)


def campaign_config(prop: str, goal: str, config: str | None = None, **overrides) -> LoopConfig:
    """The loop settings of ``crysvcd campaign PROP --target GOAL``."""
    if prop == "kappa":
        if goal not in ("high", "low"):
            raise ValueError(f"--target for kappa is high or low, got {goal!r}")
        target = {"target": "kappa", "direction": goal}
    else:
        try:
            target = {"target": "dielectric", "target_value": float(goal)}
        except ValueError:
            raise ValueError(
                f"--target for dielectric is a number (epsilon), got {goal!r}"
            ) from None
    # the campaign's defaults yield to the file, the file to the flags
    return LoopConfig.load(config, defaults=CAMPAIGN_DEFAULTS[prop], **overrides, **target)


def _loop(args: argparse.Namespace) -> int:
    overrides = {f.name: getattr(args, f.name) for f in fields(LoopConfig)}
    cfg = LoopConfig.load(args.config, **overrides)
    return _run(cfg, args)


def _campaign(args: argparse.Namespace) -> int:
    skip = CAMPAIGN_FIELDS
    overrides = {f.name: getattr(args, f.name) for f in fields(LoopConfig) if f.name not in skip}
    return _run(campaign_config(args.property, args.goal, args.config, **overrides), args)


def _run(cfg: LoopConfig, args: argparse.Namespace) -> int:
    from crysvcd.loop.run import run_loop

    shares = run_loop(cfg, args.out, progress=not args.quiet)
    cols = ["round", "generated", "ehull_below_0.1", "ehull_below_0", "phonon_stable", "sun",
            "target_hit", "target_hit_n"]  # fmt: skip
    if len(shares):
        print(shares[[c for c in cols if c in shares]].to_string(index=False))
    print(f"run folder {args.out}: labels.db, shares.csv, structures.csv, figures/")
    return 0
