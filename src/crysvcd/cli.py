"""The ``crysvcd`` command: argument parsing and printing only; the work lives in the modules.

Every default shown by ``--help`` is read from the config dataclass it belongs to, and
every value is checked (by constructing that dataclass) before the first file is written.
Errors end in one line on stderr and exit code 2; Ctrl-C says what was saved and how to
resume, and exits with 130.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

from crysvcd import __version__

_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {}
_RESUME: dict[str, Callable[[argparse.Namespace], str]] = {}


def _command(name: str, resume: Callable[[argparse.Namespace], str] | None = None):
    def register(fn):
        _COMMANDS[name] = fn
        if resume is not None:
            _RESUME[name] = resume
        return fn

    return register


# ----------------------------------------------------------------------------- commands


@_command("valence")
def _valence(args: argparse.Namespace) -> int:
    from crysvcd.chem.valence import label_valence

    if args.csv is None and not args.formulas:
        raise ValueError("give formulas or --csv FILE")
    if args.csv is None:
        failed = 0
        for formula in args.formulas:
            try:
                a = label_valence(formula)
                print(f"{formula}\t{a.kind}\t{a}")
            except ValueError as exc:
                failed += 1
                print(f"{formula}\terror\t{exc}")
        return 1 if failed else 0

    from crysvcd.chem.labels import label_csv

    src = Path(args.csv)
    if not src.is_file():
        raise ValueError(
            f"--csv {src}: {'a folder, not a file' if src.is_dir() else 'no such file'}"
        )
    out = Path(args.out) if args.out else src.with_suffix(".valence.csv")
    if not out.parent.is_dir():
        raise ValueError(f"--out {out}: folder {out.parent} does not exist")
    summary = label_csv(src, column=args.column, out=out)
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


@_command("formulas")
def _formulas(args: argparse.Namespace) -> int:
    import csv

    from crysvcd.stage1.sample import load_sampler

    if args.top_k is not None and args.top_k < 1:
        raise ValueError(f"--top-k must be >= 1, got {args.top_k}")
    if args.out and not Path(args.out).parent.is_dir():
        raise ValueError(f"--out {args.out}: folder {Path(args.out).parent} does not exist")
    sampler = load_sampler(args.stage1, args.kind)
    formulas, stats = sampler.sample(
        args.n, args.formula_temperature, args.top_k, args.top_p, args.seed, args.condition
    )
    out = open(args.out, "w", newline="") if args.out else sys.stdout
    writer = csv.writer(out, delimiter="," if args.out else "\t")
    writer.writerow(["reduced_formula", "cell_formula", "valence_tokens"])
    for f in formulas:
        writer.writerow([f.reduced_formula, f.cell_formula, f.valence_string()])
    if args.out:
        out.close()
        print(f"wrote {len(formulas)} formulas to {args.out}")
    logging.getLogger("crysvcd").info(
        "# %d %s formulas in %.2f s (dead ends resampled: %d)",
        len(formulas), sampler.cfg.kind, stats.seconds, stats.dead_ends,
    )  # fmt: skip
    return 0


def _fit_config(args: argparse.Namespace, defaults):
    from dataclasses import replace

    changes = {
        "max_epochs": args.epochs, "max_hours": args.max_hours, "lr": args.lr,
        "min_lr": args.min_lr, "batch_size": args.batch_size, "device": args.device,
        "precision": args.precision, "seed": args.seed,
    }  # fmt: skip
    return replace(defaults, **{k: v for k, v in changes.items() if v is not None})


@_command("train", resume=lambda a: f"{a.out}/last.pt holds the last finished epoch; "
          "run the same command to resume")  # fmt: skip
def _train(args: argparse.Namespace) -> int:
    from crysvcd import checkpoints

    props = list(args.property or [])
    if args.stage == "stage1":
        from crysvcd.config import Stage1Config
        from crysvcd.stage1.train import FIT, train

        # a property model is a fine-tune of the shipped one unless told otherwise
        init = args.init or (checkpoints.shipped(f"stage1-{args.kind}") if props else None)
        cfg = (
            checkpoints.tuned_config(init, Stage1Config, "Stage I", props)
            if init else Stage1Config(kind=args.kind, properties=props)
        )  # fmt: skip
        fit_cfg = _fit_config(args, FIT)
        run = lambda: train(cfg, args.out, fit_cfg, data=args.data, init=init)  # noqa: E731
    elif args.stage == "stage2":
        from crysvcd.config import Stage2Config
        from crysvcd.stage2.train import FIT, train

        if args.init is None and props:
            args.init = checkpoints.shipped("stage2")
        cfg = (
            checkpoints.tuned_config(args.init, Stage2Config, "Stage II", props)
            if args.init else Stage2Config(properties=props)
        )  # fmt: skip
        fit_cfg = _fit_config(args, FIT)
        run = lambda: train(cfg, args.out, fit_cfg, data=args.data, init=args.init)  # noqa: E731
    else:
        from crysvcd.dielectric.model import DielectricConfig
        from crysvcd.dielectric.train import FIT, train

        if props or args.init or args.data:
            raise ValueError("train dielectric takes no --property, --init or --data")
        cfg, fit_cfg = DielectricConfig(), _fit_config(args, FIT)
        run = lambda: train(cfg, args.out, fit_cfg)  # noqa: E731
    if args.export and Path(args.export).exists() and not args.overwrite:
        raise ValueError(f"--export {args.export} exists: add --overwrite to replace it")
    result = run()
    if int(os.environ.get("RANK", "0")) != 0:  # under torchrun, rank 0 speaks and writes
        return 0
    print(f"{result.epochs} epochs, {result.steps} steps, {result.seconds / 3600:.2f} h; "
          f"best dev {result.best:.4f}; run folder {args.out}")  # fmt: skip
    if args.export:
        dest = checkpoints.export(args.out, args.export, fp16=args.fp16)
        print(f"exported {dest} (+ {dest.with_suffix('.json').name})")
    return 0


@_command("generate", resume=lambda a: f"structures made so far are in {a.out} "
          "(summary.csv); run the same command with --resume to continue")  # fmt: skip
def _generate(args: argparse.Namespace) -> int:
    from crysvcd.config import GenerateConfig
    from crysvcd.pipeline import generate

    cfg = GenerateConfig(
        n=args.n,
        ionic_fraction=args.ionic_fraction,
        formulas=list(args.formula or []),
        samples_per_formula=args.samples_per_formula,
        candidates=args.candidates,
        rank_mlip=args.mlip,
        steps=args.diffusion_steps,
        corrector=args.corrector,
        seed=args.seed,
        formula_temperature=args.formula_temperature,
        screen=args.screen,
        screen_factor=args.screen_factor,
        screen_label=args.screen_label,
        novel_formulas=args.novel_formulas,
        conditions=list(args.condition or []),
        guidance=args.guidance,
        valence_masks=args.valence_masks,
        stage1_ionic=args.stage1_ionic,
        stage1_alloy=args.stage1_alloy,
        stage2=args.stage2,
        device=args.device,
        precision=args.precision,
    )
    structures = generate(cfg, args.out, progress=not args.quiet, resume=args.resume,
                          overwrite=args.overwrite)  # fmt: skip
    print(f"wrote {len(structures)} structures to {args.out} "
          "(cif/, structures.extxyz, summary.csv, run.json)")  # fmt: skip
    return 0


def _float_or_none(text: str) -> float | None:
    return None if text.lower() == "none" else float(text)


_float_or_none.__name__ = "float"  # argparse names the type in its error


def _evaluate_config(args: argparse.Namespace):
    from crysvcd.evaluate.settings import EvaluateConfig, KappaSettings, PhononSettings

    mesh = args.kappa_mesh
    return EvaluateConfig(
        mlip=args.mlip,
        model_path=args.model_path,
        ehull=args.ehull,
        fmax=args.fmax,
        relax_steps=args.relax_steps,
        optimizer=args.optimizer,
        timeout=args.timeout,
        phonons=args.phonons,
        phonon_fmax=args.phonon_fmax,
        phonon_steps=args.phonon_relax_steps,
        phonon=PhononSettings(
            supercell_min_length=args.phonon_supercell,
            displacement=args.phonon_displacement,
            mesh=tuple(args.phonon_mesh),
            max_supercell_atoms=args.phonon_max_atoms,
        ),
        phonon_ehull_max=args.phonon_ehull_max,
        kappa=args.kappa,
        kappa_mlip=None if args.kappa_mlip == "same" else args.kappa_mlip,
        kappa_fc3_mlip=None if args.kappa_fc3_mlip == "same" else args.kappa_fc3_mlip,
        kappa_settings=KappaSettings(
            mesh=mesh[0] if len(mesh) == 1 else [int(m) for m in mesh],
            supercell_min_length=args.kappa_supercell,
            fc3_cutoff=args.kappa_fc3_cutoff,
            wigner=args.kappa_wigner,
            budget_s=args.kappa_budget,
        ),
        dielectric=args.dielectric,
        dielectric_checkpoint=args.dielectric_model,
        device=args.device,
        relax_batch=args.relax_batch,
    )


@_command("evaluate", resume=lambda a: "labels finished so far are saved in "
          f"{a.db or 'labels.db beside the source'}; run the same command to resume")  # fmt: skip
def _evaluate(args: argparse.Namespace) -> int:
    from crysvcd.evaluate.runner import evaluate

    cfg = _evaluate_config(args)
    if args.workers < 1:
        raise ValueError(f"--workers must be >= 1, got {args.workers}")
    table = evaluate(args.source, cfg, db=args.db, workers=args.workers, scheduler=args.scheduler,
                     retry_failed=args.retry_failed, progress=not args.quiet)  # fmt: skip
    status = table["status"] if "status" in table else []
    counts = {s: int((status == s).sum()) for s in ("ok", "failed", "invalid")}
    print(f"{len(table)} structures: {counts['ok']} labelled, {counts['failed']} failed, "
          f"{counts['invalid']} invalid; table in labels.csv beside the source")  # fmt: skip
    return 0


@_command("report")
def _report(args: argparse.Namespace) -> int:
    from crysvcd.report import build_report

    path = build_report(args.run_dir, args.out)
    print(f"wrote {path}")
    if args.check:
        from crysvcd.report.browser import check

        shot = path.with_suffix(".png")
        result = check(path, screenshot=shot)
        print(f"headless Chromium: {json.dumps(result)}; screenshot {shot}")
        if result["errors"] or result["figures_ok"] < result["figures"]:
            return 1
    return 0


# ----------------------------------------------------------------------------- parser


class _Formatter(argparse.ArgumentDefaultsHelpFormatter):
    pass


def _sub(sub, name: str, help: str) -> argparse.ArgumentParser:
    p = sub.add_parser(name, help=help, description=help, formatter_class=_Formatter)
    p.add_argument("--quiet", action="store_true", help="no progress bars or info lines")
    return p


def _fit_options(p: argparse.ArgumentParser) -> None:
    from crysvcd.config import PRECISIONS

    g = p.add_argument_group("training loop (defaults: the model's, see its FIT)")
    g.add_argument("--epochs", type=int, help="maximum epochs")
    g.add_argument("--max-hours", type=float, help="wall-time budget over all resumes")
    g.add_argument("--lr", type=float, help="peak learning rate")
    g.add_argument("--min-lr", type=float, help="final learning rate of the cosine")
    g.add_argument("--batch-size", type=int, help="crystals or formulas per step")
    g.add_argument("--device", help="auto, cpu, cuda or cuda:N (torchrun: one per process)")
    g.add_argument(
        "--precision", choices=PRECISIONS, help="tf32 (CUDA) or bf16 (GPUs; CPUs with AVX512-BF16)"
    )
    g.add_argument("--seed", type=int, help="random seed")


def build_parser() -> argparse.ArgumentParser:
    from crysvcd.config import PRECISIONS, SCREEN_LABELS, GenerateConfig
    from crysvcd.evaluate.settings import BACKENDS, EvaluateConfig, KappaSettings, PhononSettings

    G, E, P, K = GenerateConfig, EvaluateConfig, PhononSettings, KappaSettings
    parser = argparse.ArgumentParser(
        prog="crysvcd", description="Valence-constrained crystal generation.",
        formatter_class=_Formatter,
    )  # fmt: skip
    parser.add_argument("--version", action="version", version=f"crysvcd {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    p = _sub(sub, "valence", "label formulas with charge-neutral valence tokens")
    p.add_argument("formulas", nargs="*", help="cell formulas, e.g. Fe3O4 Cu2ZnSnS4")
    p.add_argument("--csv", help="label every row of this CSV instead")
    p.add_argument("--column", default="pretty_formula", help="formula column of --csv")
    p.add_argument("--out", help="output CSV (default: <csv>.valence.csv)")

    p = _sub(sub, "data", "bundled data")
    p.add_argument("what", choices=["info"], help="info: counts of the training pool")

    p = _sub(sub, "formulas", "sample charge-balanced formulas (Stage I)")
    p.add_argument("--kind", choices=["ionic", "alloy"], default="ionic", help="which model")
    p.add_argument("--n", type=int, default=20, help="formulas to sample")
    p.add_argument("--formula-temperature", "--temperature", type=float, default=1.0,
                   help="sampling temperature")  # fmt: skip
    p.add_argument("--top-k", type=int, default=None, help="keep the k likeliest moves")
    p.add_argument("--top-p", type=float, default=None, help="nucleus sampling mass")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.add_argument("--condition", action="append", help="NAME=VALUE target of a conditioned model")
    p.add_argument("--stage1", help="a Stage I checkpoint (default: the shipped one of --kind)")
    p.add_argument("--out", help="write a CSV here instead of printing")

    p = _sub(sub, "train", "train or fine-tune a model; resumes from OUT/last.pt")
    p.add_argument("stage", choices=["stage1", "stage2", "dielectric"], help="which model")
    p.add_argument("--kind", choices=["ionic", "alloy"], default="ionic", help="stage1 only")
    p.add_argument("--data", help="MP-20-format CSV (default: the bundled training pool)")
    p.add_argument("--property", action="append",
                   help="NAME=COLUMN (continuous) or NAME=COLUMN>THRESHOLD (binary)")  # fmt: skip
    p.add_argument("--init", help="start from this checkpoint (default with --property: shipped)")
    p.add_argument("--out", default="runs/train", help="run folder")
    p.add_argument("--export", help="after training, copy best.pt here with a JSON sidecar")
    p.add_argument("--fp16", action="store_true", help="--export stores fp16 weights")
    p.add_argument("--overwrite", action="store_true", help="--export may replace a file")
    _fit_options(p)

    p = _sub(sub, "generate", "Stage I + Stage II: new charge-balanced crystals")
    p.add_argument("--n", type=int, default=G.n, help="formulas from Stage I")
    p.add_argument("--ionic-fraction", type=float, default=G.ionic_fraction,
                   help="share of formulas from the ionic model")  # fmt: skip
    p.add_argument("--formula", action="append", help="skip Stage I: use these cell formulas")
    p.add_argument("--samples-per-formula", type=int, default=G.samples_per_formula,
                   help="structures per formula")  # fmt: skip
    p.add_argument(
        "--candidates",
        type=int,
        default=G.candidates,
        help="draw K structures per output, keep the lowest --mlip energy (unrelaxed)",
    )
    p.add_argument("--mlip", default=G.rank_mlip, choices=BACKENDS,
                   help="MLIP that ranks --candidates")  # fmt: skip
    p.add_argument("--diffusion-steps", type=int, default=G.steps, help="reverse diffusion steps")
    p.add_argument("--corrector", action=argparse.BooleanOptionalAction, default=G.corrector,
                   help="Langevin corrector step before each predictor step")  # fmt: skip
    p.add_argument("--formula-temperature", type=float, default=G.formula_temperature,
                   help="Stage I sampling temperature")  # fmt: skip
    p.add_argument("--screen", help="stability screen (RUN/round_RR/screen.json of a loop): "
                   "keep the Stage I formulas it rates best")  # fmt: skip
    p.add_argument("--screen-factor", type=int, default=G.screen_factor,
                   help="with --screen: Stage I draws this many times --n formulas")  # fmt: skip
    p.add_argument("--screen-label", choices=[x for x in SCREEN_LABELS if x], default=None,
                   help="with --screen: drop first the formulas this label cannot count "
                   "(dielectric: elements the surrogate never saw, likely metals)")  # fmt: skip
    p.add_argument("--novel-formulas", action="store_true",
                   help="only Stage I formulas that are not Materials Project entries")  # fmt: skip
    p.add_argument("--condition", action="append", help="NAME=VALUE for conditioned models")
    p.add_argument("--guidance", type=float, default=G.guidance,
                   help="classifier-free guidance w (default: the model's)")  # fmt: skip
    p.add_argument("--valence-masks", action=argparse.BooleanOptionalAction,
                   default=G.valence_masks,
                   help="charge-balance masks in Stage I (--no-valence-masks: the unconstrained "
                   "baseline, non-neutral formulas kept)")  # fmt: skip
    p.add_argument("--stage1-ionic", help="ionic Stage I checkpoint (default: shipped)")
    p.add_argument("--stage1-alloy", help="alloy Stage I checkpoint (default: shipped)")
    p.add_argument("--stage2", help="Stage II checkpoint (default: shipped)")
    p.add_argument("--device", default=G.device, help="Stage II sampling: cpu, cuda or auto")
    p.add_argument("--precision", choices=PRECISIONS, default=G.precision,
                   help="Stage II's arithmetic: bf16 is several times faster on GPUs and on "
                   "CPUs with AVX512-BF16 (README)")  # fmt: skip
    p.add_argument("--seed", type=int, default=G.seed, help="random seed")
    p.add_argument("--out", default="results", help="output folder")
    p.add_argument("--resume", action="store_true", help="continue the run in --out")
    p.add_argument("--overwrite", action="store_true", help="replace the run in --out")

    p = _sub(sub, "evaluate", "relax with an MLIP and label (Ehull, phonons, kappa, epsilon)")
    p.add_argument("source", help="folder of CIFs (or a generate output), extxyz, or ASE db")
    p.add_argument("--mlip", default=E.mlip, choices=BACKENDS, help="MLIP backend")
    p.add_argument("--model-path", help="weights file (required for mattersim)")
    p.add_argument("--ehull", action=argparse.BooleanOptionalAction, default=E.ehull,
                   help="energy above the MP hull (MP2020)")  # fmt: skip
    p.add_argument("--fmax", type=float, default=E.fmax, help="relaxation force limit, eV/A")
    p.add_argument("--relax-steps", type=int, default=E.relax_steps, help="relaxation steps")
    p.add_argument("--optimizer", choices=["FIRE", "BFGS"], default=E.optimizer,
                   help="relaxation optimizer")  # fmt: skip
    p.add_argument("--timeout", type=float, default=E.timeout,
                   help="seconds per relaxation or phonon calculation")  # fmt: skip
    p.add_argument("--phonons", action="store_true", help="phonon stability (phonopy)")
    p.add_argument("--phonon-fmax", type=float, default=E.phonon_fmax,
                   help="tight relaxation before phonons, eV/A")  # fmt: skip
    p.add_argument(
        "--phonon-relax-steps",
        type=int,
        default=E.phonon_steps,
        help="steps of that relaxation (not converged: counted unstable)",
    )
    p.add_argument("--phonon-supercell", type=float, default=P.supercell_min_length,
                   help="smallest perpendicular width of the supercell, A")  # fmt: skip
    p.add_argument("--phonon-displacement", type=float, default=P.displacement,
                   help="finite displacement, A")  # fmt: skip
    p.add_argument("--phonon-mesh", type=int, nargs=3, default=list(P.mesh),
                   help="Gamma-centred q-mesh (three integers)")  # fmt: skip
    p.add_argument("--phonon-max-atoms", type=int, default=P.max_supercell_atoms,
                   help="skip larger supercells")  # fmt: skip
    p.add_argument("--phonon-ehull-max", type=float, default=E.phonon_ehull_max,
                   help="phonons only below this Ehull, eV/atom")  # fmt: skip
    p.add_argument("--kappa", action="store_true", help="lattice thermal conductivity (phono3py)")
    p.add_argument("--kappa-mlip", default=E.kappa_mlip, choices=[*BACKENDS, "same"],
                   help="MLIP of the kappa step ('same': the relaxation's)")  # fmt: skip
    p.add_argument("--kappa-fc3-mlip", default="same", choices=[*BACKENDS, "same"],
                   help="a cheaper MLIP for fc3 alone ('same': --kappa-mlip's)")  # fmt: skip
    p.add_argument("--kappa-mesh", type=float, nargs="+", default=[K.mesh],
                   help="q-mesh: a length in A, or three integers")  # fmt: skip
    p.add_argument("--kappa-supercell", type=float, default=K.supercell_min_length,
                   help="smallest perpendicular width of the fc3 supercell, A")  # fmt: skip
    p.add_argument("--kappa-fc3-cutoff", type=_float_or_none, default=K.fc3_cutoff,
                   help="drop fc3 pairs farther apart, A ('none': keep all)")  # fmt: skip
    p.add_argument("--kappa-wigner", action=argparse.BooleanOptionalAction, default=K.wigner,
                   help="the Wigner total (particle + coherence); --no-kappa-wigner: "
                        "the particle (RTA) part alone")  # fmt: skip
    p.add_argument(
        "--kappa-budget",
        type=float,
        default=K.budget_s,
        help="seconds per material; larger ones are skipped with the reason",
    )
    p.add_argument("--dielectric", action="store_true", help="e3nn dielectric-constant surrogate")
    p.add_argument("--dielectric-model", help="surrogate checkpoint (default: shipped)")
    p.add_argument("--device", default=E.device, help="where the MLIP runs: cpu, cuda, auto")
    p.add_argument("--relax-batch", type=int, default=E.relax_batch,
                   help="relax this many structures at once with torch-sim (default: 32 for "
                   "SevenNet models on a GPU, else 1: one at a time with ASE)")  # fmt: skip
    p.add_argument("--workers", type=int, default=1, help="Dask worker processes (1 thread each)")
    p.add_argument("--scheduler", help="address of a running Dask scheduler (tcp://host:8786)")
    p.add_argument("--db", help="ASE database path or PostgreSQL URL (default: SOURCE/labels.db)")
    p.add_argument("--retry-failed", action="store_true", help="recompute failed structures")

    p = _sub(sub, "report", "one self-contained HTML page for a generate, evaluate or loop folder")
    p.add_argument("run_dir", help="the run folder")
    p.add_argument("--out", help="the HTML file (default: RUN_DIR/report.html)")
    p.add_argument(
        "--check",
        action="store_true",
        help="open it in headless Chromium: did every figure and the viewer render?",
    )

    from crysvcd.loop.cli import add_loop_commands

    add_loop_commands(sub, _sub, _command)
    return parser


def _check_kappa_mesh(args: argparse.Namespace) -> None:
    mesh = getattr(args, "kappa_mesh", None)
    if mesh is not None and len(mesh) not in (1, 3):
        raise ValueError("--kappa-mesh takes one length (A) or three integers")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")  # library chatter; errors still surface
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    root = logging.getLogger("crysvcd")
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if args.quiet else logging.INFO)
    root.propagate = False
    name = args.command
    try:
        _check_kappa_mesh(args)
        return _COMMANDS[name](args)
    except KeyboardInterrupt:
        hint = _RESUME.get(name, lambda a: "")(args)
        print(f"\ncrysvcd {name}: interrupted. {hint}".rstrip(), file=sys.stderr)
        return 130
    except Exception as exc:
        text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        print(f"crysvcd {name}: error: {text}", file=sys.stderr)
        if logging.getLogger("crysvcd").isEnabledFor(logging.DEBUG):
            raise
        return 2


if __name__ == "__main__":
    sys.exit(main())
