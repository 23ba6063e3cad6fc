"""The ``crysvcd`` command: argument parsing and printing only; the work lives in the modules."""

from __future__ import annotations

import argparse
import sys
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path

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
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    warnings.filterwarnings("ignore", category=UserWarning)
    args = build_parser().parse_args(argv)
    try:
        return _COMMANDS[args.command](args)
    except (ValueError, FileNotFoundError) as exc:
        print(f"crysvcd {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
