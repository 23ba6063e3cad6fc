"""The ``crysvcd`` command: argument parsing and printing only; the work lives in the modules."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from crysvcd.evaluate.mlip import BACKENDS

_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}


def _command(name: str):
    def register(fn):
        _COMMANDS[name] = fn
        return fn

    return register


@_command("valence")
def _valence(args: argparse.Namespace) -> int:
    from crysvcd.chem.valence import label_valence

    if args.csv is None and not args.formulas:
        raise SystemExit("crysvcd valence: give formulas or --csv FILE")
    if args.csv is None:
        failed = 0
        for formula in args.formulas:
            try:
                a = label_valence(formula)
                print(f"{formula}\t{a.kind}\t{a}")
            except ValueError as exc:
                failed += 1
                print(f"{formula}\terror\t{exc}")
        return 1 if failed == len(args.formulas) else 0

    from crysvcd.chem.labels import label_csv

    out = Path(args.out) if args.out else Path(args.csv).with_suffix(".valence.csv")
    summary = label_csv(args.csv, column=args.column, out=out)
    print(f"wrote {out}")
    for key, value in summary.items():
        print(f"{key}: {value}")
    return 0


@_command("data")
def _data(args: argparse.Namespace) -> int:
    from crysvcd.datasets import pool_info

    for key, value in pool_info().items():
        print(f"{key}: {value}")
    return 0


@_command("train")
def _train(args: argparse.Namespace) -> int:
    if args.stage == "stage1":
        from crysvcd.config import Stage1Config
        from crysvcd.stage1.train import shipped_checkpoint, train

        cfg = Stage1Config(kind=args.kind, properties=list(args.property or []), seed=args.seed)
        if args.epochs is not None:
            cfg.max_epochs = args.epochs
        init = args.init or (shipped_checkpoint(args.kind) if cfg.properties else None)
        result = train(cfg, args.out or f"runs/stage1_{args.kind}", data=args.data, init=init)
    else:
        from crysvcd.config import Stage2Config
        from crysvcd.stage2.train import shipped_checkpoint, train

        cfg = Stage2Config(
            properties=list(args.property or []), seed=args.seed, max_hours=args.max_hours
        )
        if args.epochs is not None:
            cfg.max_epochs = args.epochs
        if args.lr is not None:
            cfg.lr = args.lr
        if args.min_lr is not None:
            cfg.min_lr = args.min_lr
        init = args.init or (shipped_checkpoint() if cfg.properties else None)
        result = train(cfg, args.out or "runs/stage2", data=args.data, init=init)
    print(f"best dev loss {result['best_dev_loss']:.4f} after {result['epochs']} epochs")
    return 0


@_command("generate")
def _generate(args: argparse.Namespace) -> int:
    from crysvcd.pipeline import GenerateConfig, generate

    cfg = GenerateConfig(
        n=args.n,
        ionic_fraction=args.ionic_fraction,
        formulas=list(args.formula or []),
        samples_per_formula=args.samples_per_formula,
        candidates=args.candidates,
        rank_mlip=args.rank_mlip,
        steps=args.steps,
        seed=args.seed,
        conditions=list(args.condition or []),
        stage2=args.stage2_checkpoint,
        corrector=not args.no_corrector,
    )
    structures = generate(cfg, args.out, progress=not args.quiet)
    print(
        f"wrote {len(structures)} structures to {args.out} "
        "(cif/, structures.extxyz, summary.csv, run.json)"
    )
    return 0


@_command("evaluate")
def _evaluate(args: argparse.Namespace) -> int:
    from crysvcd.evaluate.kappa import KappaSettings
    from crysvcd.evaluate.phonons import PhononSettings
    from crysvcd.evaluate.runner import EvaluateConfig, evaluate

    cfg = EvaluateConfig(
        mlip=args.mlip,
        model_path=args.model_path,
        ehull=args.ehull,
        phonons=args.phonons,
        fmax=args.fmax,
        steps=args.steps,
        optimizer=args.optimizer,
        timeout=args.timeout,
        phonon_fmax=args.phonon_fmax,
        phonon_steps=args.phonon_steps,
        phonon=PhononSettings(
            supercell_min_length=args.supercell_length,
            displacement=args.displacement,
            mesh=tuple(args.mesh),
            max_supercell_atoms=args.max_supercell_atoms,
            timeout=args.timeout,
        ),
        kappa=args.kappa,
        kappa_settings=KappaSettings(
            mesh=args.kappa_mesh,
            supercell_min_length=args.kappa_supercell_length,
            fc3_cutoff=args.kappa_fc3_cutoff,
            budget_s=args.kappa_budget,
        ),
        dielectric=args.dielectric,
        dielectric_checkpoint=args.dielectric_checkpoint,
        workers=args.workers,
    )
    table = evaluate(args.source, cfg, db=args.db, progress=not args.quiet)
    ok = int((table.get("status") == "ok").sum()) if len(table) else 0
    print(f"{ok}/{len(table)} structures labelled; table in labels.csv beside the database")
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="crysvcd", description="Valence-constrained crystal generation."
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("valence", help="label formulas with charge-neutral valence tokens")
    p.add_argument("formulas", nargs="*", help="cell formulas, e.g. Fe3O4 Cu2ZnSnS4")
    p.add_argument("--csv", help="label every row of this CSV instead")
    p.add_argument("--column", default="pretty_formula", help="formula column of --csv")
    p.add_argument("--out", help="output CSV (default: <csv>.valence.csv)")

    p = sub.add_parser("data", help="bundled data")
    p.add_argument("what", choices=["info"], help="info: counts of the training pool")

    from crysvcd.stage1.cli import add_stage1_commands

    add_stage1_commands(sub, _command)

    p = sub.add_parser("train", help="train or fine-tune a model; resumes from its last checkpoint")
    p.add_argument("stage", choices=["stage1", "stage2"])
    p.add_argument("--kind", choices=["ionic", "alloy"], default="ionic", help="stage1 only")
    p.add_argument("--data", help="MP-20-format CSV (default: the bundled training pool)")
    p.add_argument(
        "--property",
        action="append",
        help="NAME=COLUMN (continuous) or NAME=COLUMN>THRESHOLD (binary)",
    )
    p.add_argument("--init", help="start from this checkpoint (default with --property: shipped)")
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--max-hours", type=float, default=None, help="stage2: wall-time budget")
    p.add_argument("--lr", type=float, default=None, help="stage2: peak learning rate")
    p.add_argument("--min-lr", type=float, default=None, help="stage2: final learning rate")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="run folder (default runs/stage1_<kind> or runs/stage2)")

    p = sub.add_parser("generate", help="Stage I + Stage II: new charge-balanced crystals")
    p.add_argument("--n", type=int, default=20, help="formulas from Stage I")
    p.add_argument("--ionic-fraction", type=float, default=0.7)
    p.add_argument("--formula", action="append", help="skip Stage I: use these cell formulas")
    p.add_argument("--samples-per-formula", type=int, default=1)
    p.add_argument(
        "--candidates",
        type=int,
        default=1,
        help="draw K structures per output, keep the lowest MLIP energy per atom (unrelaxed)",
    )
    p.add_argument("--rank-mlip", default="sevennet", choices=BACKENDS)
    p.add_argument("--steps", type=int, default=1000, help="diffusion steps (1000: full PC)")
    p.add_argument("--no-corrector", action="store_true", help="predictor steps only")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--condition", action="append", help="NAME=VALUE (conditioned models)")
    p.add_argument("--stage2-checkpoint", help="a Stage II checkpoint (default: shipped)")
    p.add_argument("--out", default="results", help="output folder")
    p.add_argument("--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("evaluate", help="relax with an MLIP and label (Ehull, phonons)")
    p.add_argument("source", help="folder of CIFs (or a generate output), extxyz, or ASE db")
    p.add_argument("--mlip", default="sevennet", choices=BACKENDS)
    p.add_argument("--model-path", help="weights file (required for mattersim)")
    p.add_argument("--ehull", action="store_true", help="energy above the MP hull (MP2020)")
    p.add_argument("--fmax", type=float, default=0.01)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--optimizer", choices=["FIRE", "BFGS"], default="FIRE")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per calculation")
    p.add_argument("--phonons", action="store_true", help="phonon stability (phonopy)")
    p.add_argument("--phonon-fmax", type=float, default=0.003, help="relaxation before phonons")
    p.add_argument("--phonon-steps", type=int, default=200)
    p.add_argument("--supercell-length", type=float, default=20.0, help="phonon supercell, A")
    p.add_argument("--displacement", type=float, default=0.01, help="phonon displacement, A")
    p.add_argument("--mesh", type=int, nargs=3, default=[8, 8, 8], help="phonon q-mesh")
    p.add_argument("--max-supercell-atoms", type=int, default=2000)
    p.add_argument("--kappa", action="store_true", help="lattice thermal conductivity (phono3py)")
    p.add_argument("--kappa-mesh", type=float, default=60.0, help="q-mesh length, A")
    p.add_argument("--kappa-supercell-length", type=float, default=9.0, help="fc3 supercell, A")
    p.add_argument("--kappa-fc3-cutoff", type=float, default=None, help="fc3 pair cutoff, A")
    p.add_argument("--kappa-budget", type=float, default=3600.0, help="seconds per material")
    p.add_argument("--dielectric", action="store_true", help="e3nn dielectric-constant surrogate")
    p.add_argument("--dielectric-checkpoint", help="surrogate weights (default: shipped)")
    p.add_argument("--workers", type=int, default=1, help="parallel processes (1 thread each)")
    p.add_argument("--db", help="ASE database path or PostgreSQL URL (default: labels.db)")
    p.add_argument("--quiet", action="store_true")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    warnings.filterwarnings("ignore", category=UserWarning)
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError, RuntimeError) as exc:
        print(f"crysvcd {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
