"""What the dielectric campaign's property screen keeps from Stage I's formulas.

    python benchmarks/dielectric_screen.py [--config benchmarks/campaigns/dielectric_screen20.toml]
        [--draws 500 2000] [--n 100] [--seed 0]

Fits the screen the campaign fits in round 0 (the bundled DFPT labels, a hit being
epsilon >= the target), draws ionic formulas from the shipped Stage I as the campaign does,
and prints, for all draws, the n the screen keeps, and the n it keeps once the formulas
whose epsilon would not count are dropped (``evaluate.gap.blockers``: an element the
surrogate never saw, likely a metal): the mean predicted hit probability, the shares with
each blocker, and the share of Materials Project formulas. Composition only: no structure
is generated. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np
import pandas as pd

from crysvcd.config import GenerateConfig
from crysvcd.evaluate.gap import blockers
from crysvcd.evaluate.screen import select
from crysvcd.loop.config import LoopConfig
from crysvcd.loop.run import fit_target_screen
from crysvcd.metrics import mp_formula_known
from crysvcd.stage1.sample import load_sampler

warnings.filterwarnings("ignore")  # noble gases have no Pauling value (pymatgen warns)


def row(name: str, idx: np.ndarray, score, why: list[str], known) -> str:
    p = 1.0 / (1.0 + np.exp(-score[idx]))
    unseen = np.mean([why[i].startswith("unseen") for i in idx])
    metal = np.mean([why[i].startswith("likely a metal") for i in idx])
    return (f"| {name} | {len(idx)} | {p.mean():.3f} | {unseen:.2f} | {metal:.2f} | "
            f"{known[idx].mean():.2f} |")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", default="benchmarks/campaigns/dielectric_screen20.toml")
    ap.add_argument("--draws", type=int, nargs="+", default=[500, 2000])
    ap.add_argument("--n", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    cfg = LoopConfig.load(args.config, target="dielectric")
    screen = fit_target_screen(cfg, pd.DataFrame())
    print(f"screen: {screen.label}, fitted on {screen.n_train} rows ({screen.n_hits} hits)")
    sampler = load_sampler(None, "ionic")
    print("| formulas | n | mean P(hit), screen | unseen element | likely metal | MP formula |")
    print("|---|---|---|---|---|---|")
    for draws in args.draws:
        temperature = GenerateConfig().formula_temperature
        formulas, _ = sampler.sample(draws, temperature, seed=args.seed, conditions=[],
                                     constrained=True, neutral_only=True)  # fmt: skip
        labels = [f.cell_formula for f in formulas]
        x = np.stack([screen.descriptors(f.composition, "ionic", f.valence_string())
                      for f in formulas])  # fmt: skip
        score = screen.score(x)
        why = blockers("dielectric", labels)
        known = np.array([mp_formula_known(f.composition) for f in formulas])
        print(row(f"all {draws} drawn", np.arange(draws), score, why, known))
        kept = np.array(select(score, labels, args.n))
        print(row(f"screen keeps {args.n} of {draws}", kept, score, why, known))
        usable = np.where([not w for w in why], score, -np.inf)
        kept = np.array(select(usable, labels, args.n))
        print(row("the same, countable formulas only", kept, score, why, known))


if __name__ == "__main__":
    main()
