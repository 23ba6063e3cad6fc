"""The metal flag of the dielectric surrogate (``evaluate/gap.py``): train, measure, ship.

    python benchmarks/gap.py [--export src/crysvcd/weights/gap_trees.npz] [--compare]

Fits the classifier P(band gap > 0) on the training pool's train split (the rows with a
band gap, one per reduced formula) and prints, on the dev formulas that the train split
does not hold (the classifier only answers for formulas the bundled pool does not hold;
the pool's MP gaps answer the rest): accuracy against the majority class and ROC AUC; for
several cuts, the share of those formulas flagged as metals, the share of metals (in MP)
among them and the share of insulators left unflagged; and, for the whole flag (pool lookup
and classifier), the share of the bundled DFPT crystals (Petousis and Petretto: all
insulators) that it would flag, in all and among those with epsilon >= 50. Then the flag
on a few known cases and ``--formulas``. ``--compare``: the same for each of the flag's two
classifiers alone (``evaluate.gap.GapModel``: gradient-boosted trees, logistic regression),
whose P(gapped) is printed beside. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from crysvcd.datasets import training_pool
from crysvcd.evaluate import gap
from crysvcd.loop.targets import Target

warnings.filterwarnings("ignore")  # noble gases have no Pauling value (pymatgen warns)
CASES = ["ZrTiSb", "ZrSi", "Co2Ru2C", "Al2CrSi2", "CaFe2P2", "ZrC", "FeAs", "Fe2P", "SrTiO3",
         "BaTiO3", "TiO2", "PbO2", "BaBiO3", "KTaO3", "ZrTe2", "CdSb"]  # fmt: skip
CUTS = (0.05, 0.1, 0.15, 0.2, 0.3)


def cut_table(p: np.ndarray, y: np.ndarray, p_dfpt: np.ndarray, hit: np.ndarray) -> dict:
    """For each cut, printed: the dev formulas flagged (P(gapped) ``p`` below it), the share of
    metals among them (``y``: gapped in MP), the insulators kept, and the bundled DFPT
    crystals flagged (``p_dfpt``), in all and among the epsilon >= 50 ones (``hit``)."""
    rows = {}
    for cut in CUTS:
        flag = p < cut
        row = {
            "dev_flagged": float(flag.mean()),
            "metal_among_flagged": float(1 - y[flag].mean()) if flag.any() else float("nan"),
            "insulators_kept": float((~flag[y]).mean()),
            "dfpt_flagged": float((p_dfpt < cut).mean()),
            "dfpt_eps50_flagged": f"{int((p_dfpt[hit] < cut).sum())}/{int(hit.sum())}",
        }
        rows[str(cut)] = row
        print(f"cut {cut}: dev flagged {row['dev_flagged']:.3f}, metals among them "
              f"{row['metal_among_flagged']:.3f}, insulators kept {row['insulators_kept']:.3f};"
              f" DFPT crystals flagged {row['dfpt_flagged']:.3f} of {len(p_dfpt)}, with eps >= "
              f"50 {row['dfpt_eps50_flagged']}")  # fmt: skip
    return rows


def measure(name: str, p_of, dev, y, dfpt, hit) -> dict:
    """Print and return the figures of a classifier ``p_of`` (formulas -> P(gapped))."""
    p = p_of(dev["cell_formula"])
    acc, auc = float(((p >= 0.5) == y).mean()), float(roc_auc_score(y, p))
    print(f"{name}: dev accuracy at 0.5 {acc:.3f} (majority {max(y.mean(), 1 - y.mean()):.3f}),"
          f" AUC {auc:.3f}")  # fmt: skip
    gap_dfpt = gap.mp_gaps(dfpt["cell_formula"])
    # the whole flag on the DFPT crystals: the pool's MP gap where it has the formula
    p_dfpt = gap.with_mp_gaps(dfpt["cell_formula"], p_of(dfpt["cell_formula"]))
    print(f"  DFPT crystals whose formula the pool holds: {int((~np.isnan(gap_dfpt)).sum())}, "
          f"of them gap 0 in MP: {int((gap_dfpt == 0).sum())}")  # fmt: skip
    return {"dev_accuracy": acc, "dev_auc": auc, "cuts": cut_table(p, y, p_dfpt, hit)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--export", type=Path, default=None)
    ap.add_argument("--compare", action="store_true", help="also each classifier alone")
    ap.add_argument("--formulas", nargs="*", default=[], help="print P(gapped) of these too")
    args = ap.parse_args()
    pool = training_pool()
    train = gap.labelled(pool[pool["split"] == "train"])
    dev = gap.labelled(pool[pool["split"] == "dev"])
    dev = dev[~dev["pretty_formula"].isin(train["pretty_formula"])]
    y = (dev["band_gap"] > 0).to_numpy()
    model = gap.fit(train)
    print(f"fitted on {model.trees.n_train} train formulas ({model.trees.n_hits} gapped); dev: "
          f"{len(y)} formulas not in train ({int(y.sum())} gapped)")  # fmt: skip
    dfpt = Target("dielectric", value=50.0).bundled()
    hit = dfpt["target_label"].to_numpy() == 1
    figures = measure("the flag (mean log-odds)", lambda f: gap.p_gapped(f, model), dev, y,
                      dfpt, hit)  # fmt: skip
    figures["dev_formulas"], figures["train_formulas"] = len(y), model.trees.n_train
    cases = CASES + args.formulas
    columns = {"P(gapped)": gap.p_gapped(cases, model)}
    if args.compare:
        for name, part in (("trees", model.trees), ("logistic", model.logistic)):

            def p_part(formulas, part=part):
                x = gap.descriptors(list(formulas), model.features)
                return 1.0 / (1.0 + np.exp(-part.score(x)))

            measure(f"{name} alone", p_part, dev, y, dfpt, hit)
            columns[name] = p_part(cases)
    metal = gap.likely_metal(cases, model=model)
    mp_gaps = gap.mp_gaps(cases)
    for i, formula in enumerate(cases):
        mp = None if np.isnan(mp_gaps[i]) else mp_gaps[i]
        cells = "  ".join(f"{k} {v[i]:.3f}" for k, v in columns.items())
        print(f"  {formula:10s} {cells}  MP gap {'-' if mp is None else f'{mp:.2f}'}"
              f"{'  metal' if metal[i] else ''}")  # fmt: skip
    if args.export is not None:
        figures["metal_below"] = gap.METAL_BELOW
        gap.export(model, args.export, figures)
        print(f"wrote {args.export}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
