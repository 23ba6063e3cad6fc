"""Functional-property labels in one run: kappa validation, then the dielectric surrogate.

    OMP_NUM_THREADS=1 RAYON_NUM_THREADS=1 python benchmarks/properties.py \\
        [--kappa "--n 10 --mesh 30"] [--dielectric "--bootstrap 2000"] [--skip-kappa]

Runs ``benchmarks/kappa.py`` (Si and >= 10 bundled reference materials with SevenNet and
phono3py) and ``benchmarks/dielectric.py`` (e3nn surrogate against the mean and
composition-only baselines on the held-out split), passing each its own options. Prints
their figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import runpy
import shlex
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run(script: str, options: str) -> None:
    print(f"\n######## benchmarks/{script} {options}".rstrip(), flush=True)
    sys.argv = [script, *shlex.split(options)]
    runpy.run_path(str(HERE / script), run_name="__main__")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--kappa", default="", help="options for benchmarks/kappa.py")
    ap.add_argument("--dielectric", default="", help="options for benchmarks/dielectric.py")
    ap.add_argument("--skip-kappa", action="store_true", help="only the surrogate (fast)")
    args = ap.parse_args()
    if not args.skip_kappa:
        run("kappa.py", args.kappa)
    run("dielectric.py", args.dielectric)


if __name__ == "__main__":
    main()
