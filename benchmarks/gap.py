"""The metal flag of the dielectric surrogate (``evaluate/gap.py``): train, measure, ship.

    python benchmarks/gap.py [--export src/crysvcd/weights/gap_screen.json]

Fits P(band gap > 0) on the training pool's train split (one row per reduced formula) and
prints, on the dev split: accuracy against the majority class and ROC AUC; for several
cuts, the share of dev formulas flagged as metals, the share of those that are metals in
MP, and the share of insulators left unflagged; and the share of the bundled DFPT crystals
(Petousis and Petretto: all insulators) that it would flag, in all and among those with
epsilon >= 50. Then the formulas it flags among a few known cases. ``--compare``: the same
cuts for a gradient-boosted classifier on the same descriptors (scikit-learn, not shipped),
to say how much a composition flag could gain over the shipped logistic regression, and both
models' P(gapped) for ``--formulas``. Prints; asserts nothing.
"""

from __future__ import annotations

import argparse
import warnings
from pathlib import Path

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.metrics import roc_auc_score

from crysvcd.datasets import training_pool
from crysvcd.evaluate import gap
from crysvcd.loop.targets import Target

warnings.filterwarnings("ignore")  # noble gases have no Pauling value (pymatgen warns)
CASES = ["ZrTiSb", "ZrSi", "Co2Ru2C", "Al2CrSi2", "CaFe2P2", "SrTiO3", "BaTiO3", "TiO2",
         "PbO2", "BaBiO3", "KTaO3", "ZrTe2"]  # fmt: skip
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


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--l2", type=float, default=0.01)
    ap.add_argument("--export", type=Path, default=None)
    ap.add_argument("--compare", action="store_true", help="also a gradient-boosted classifier")
    ap.add_argument("--formulas", nargs="*", default=[], help="print P(gapped) of these too")
    args = ap.parse_args()
    pool = training_pool()
    model = gap.fit(pool[pool["split"] == "train"], l2=args.l2)
    dev = pool[pool["split"] == "dev"].drop_duplicates("pretty_formula")
    y = (dev["band_gap"] > 0).to_numpy()
    p = gap.p_gapped(dev["cell_formula"], model)
    acc = float(((p >= 0.5) == y).mean())
    auc = float(roc_auc_score(y, p))
    print(f"fitted on {model.n_train} train formulas ({model.n_hits} gapped); dev {len(y)} "
          f"formulas ({int(y.sum())} gapped)")  # fmt: skip
    print(f"dev accuracy at 0.5: {acc:.3f} (majority {max(y.mean(), 1 - y.mean()):.3f}); "
          f"AUC {auc:.3f}")  # fmt: skip
    dfpt = Target("dielectric", value=50.0).bundled()
    pd_ = gap.p_gapped(dfpt["cell_formula"], model)
    hit = dfpt["target_label"].to_numpy() == 1
    figures = {"dev_accuracy": acc, "dev_auc": auc, "cuts": cut_table(p, y, pd_, hit)}
    cases = CASES + args.formulas
    boosted = None
    if args.compare:
        train = pool[pool["split"] == "train"].drop_duplicates("pretty_formula")
        boosted = HistGradientBoostingClassifier(max_iter=400, learning_rate=0.05, random_state=0)
        boosted.fit(gap.descriptors(train["cell_formula"], model.features),
                    (train["band_gap"] > 0).to_numpy())  # fmt: skip
        pb = boosted.predict_proba(gap.descriptors(dev["cell_formula"], model.features))[:, 1]
        print(f"gradient-boosted, same descriptors: dev AUC {roc_auc_score(y, pb):.3f}")
        pdb = boosted.predict_proba(gap.descriptors(dfpt["cell_formula"], model.features))[:, 1]
        cut_table(pb, y, pdb, hit)
    shipped = gap.p_gapped(cases, model)
    other = (boosted.predict_proba(gap.descriptors(cases, model.features))[:, 1]
             if boosted is not None else [None] * len(cases))  # fmt: skip
    for formula, value, b in zip(cases, shipped, other):
        flag = "likely metal" if value < gap.METAL_BELOW else ""
        extra = f"  gradient-boosted {b:.3f}" if b is not None else ""
        print(f"  {formula:10s} P(gapped) {value:.3f}{extra} {flag}")
    if args.export is not None:
        figures["metal_below"] = gap.METAL_BELOW
        gap.export(model, args.export, figures)
        print(f"wrote {args.export}")


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
