"""The composition kappa surrogate (``evaluate/kappa_surrogate.py``): train, measure, ship.

    python benchmarks/kappa_surrogate.py [--epochs 400] [--seed 0] [--export FILE]

Trains on CrabNet's train + val splits of AFLOW-AGL kappa (300 K, bundled) and prints, on
CrabNet's test split: MAE in log10 kappa and Spearman rho, beside the training mean and a
ridge regression on the same descriptors. Then the rank correlation with two other
references: phononDB PBE kappa (103 crystals; also without the formulas that are in the
training set) and the HiBoFL set (661 MP crystals, kappa from a different AFLOW model).
``--export`` writes the model with its provenance and figures (the shipped file is
``src/crysvcd/weights/kappa_surrogate.json``). Prints every figure; asserts nothing.
"""

from __future__ import annotations

import argparse
import platform
import subprocess
import time
import warnings

import numpy as np
import pandas as pd
from pymatgen.core import Composition
from scipy.stats import spearmanr

from crysvcd.datasets import data_path
from crysvcd.evaluate.kappa_surrogate import KappaSurrogate, descriptors

warnings.filterwarnings("ignore")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--epochs", type=int, default=400)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--export", help="write the trained surrogate here (JSON)")
    args = ap.parse_args()

    agl = pd.read_csv(data_path("crabnet_aflow_agl_thermal_conductivity_300K_splits.csv.gz"))
    x = np.array([descriptors(f) for f in agl["formula"]])
    y = np.log10(agl["target"].to_numpy())
    train, test = (agl["split"] != "test").to_numpy(), (agl["split"] == "test").to_numpy()
    t0 = time.perf_counter()
    model = KappaSurrogate.fit(x[train], y[train], seed=args.seed, epochs=args.epochs)
    seconds = time.perf_counter() - t0
    pred = model.log_kappa(x[test])
    figures = {
        "n_train": int(train.sum()),
        "n_test": int(test.sum()),
        "test_mae_log10": float(np.abs(pred - y[test]).mean()),
        "test_spearman": float(spearmanr(pred, y[test])[0]),
        "mean_baseline_mae_log10": float(np.abs(y[train].mean() - y[test]).mean()),
        "train_seconds": round(seconds, 1),
    }
    a = np.c_[(x - x[train].mean(0)) / (x[train].std(0) + 1e-9), np.ones(len(x))]
    w = np.linalg.solve(a[train].T @ a[train] + np.eye(a.shape[1]), a[train].T @ y[train])
    ridge = a[test] @ w
    print(f"== AFLOW-AGL kappa, CrabNet splits: {figures['n_train']} train+val, "
          f"{figures['n_test']} test (log10 W/mK) ==")  # fmt: skip
    print(f"surrogate MLP: MAE {figures['test_mae_log10']:.3f}, Spearman "
          f"{figures['test_spearman']:.3f} ({seconds:.0f} s to train)")  # fmt: skip
    print(f"ridge, same descriptors: MAE {np.abs(ridge - y[test]).mean():.3f}, Spearman "
          f"{spearmanr(ridge, y[test])[0]:.3f}")  # fmt: skip
    print(f"training mean: MAE {figures['mean_baseline_mae_log10']:.3f}")

    seen = {Composition(f).reduced_formula for f in agl["formula"][train]}
    ref = pd.read_csv(data_path("kappa103_phonondb_pbe.csv.gz"))
    pk = model.predict(ref["formula"])
    true = ref["kappa_dft_phonondb_pbe_300K"].to_numpy()
    unseen = ~ref["formula"].map(lambda f: Composition(f).reduced_formula in seen).to_numpy()
    figures["phonondb_spearman"] = float(spearmanr(pk, true)[0])
    figures["phonondb_unseen_spearman"] = float(spearmanr(pk[unseen], true[unseen])[0])
    figures["phonondb_unseen_n"] = int(unseen.sum())
    print(f"phononDB PBE kappa, 103 crystals: Spearman {figures['phonondb_spearman']:.3f}; "
          f"the {unseen.sum()} whose formula is not in training: "
          f"{figures['phonondb_unseen_spearman']:.3f}")  # fmt: skip
    hib = pd.read_csv(data_path("hibofl_mp_kappa_661_with_cif.csv.gz"))
    figures["hibofl_spearman"] = float(spearmanr(model.predict(hib["formula_pretty"]),
                                                 hib["k_ao"])[0])  # fmt: skip
    print(f"HiBoFL kappa (AFLOW AO), 661 MP crystals: Spearman {figures['hibofl_spearman']:.3f}")
    prescreen_recall(hib)

    if args.export:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()  # fmt: skip
        model.provenance = {
            "made_by": f"benchmarks/kappa_surrogate.py --epochs {args.epochs} --seed "
            f"{args.seed}, commit {commit}",
            "data": "crabnet_aflow_agl_thermal_conductivity_300K_splits.csv.gz, train + val",
            "hardware": f"CPU ({platform.machine()}), {seconds:.0f} s",
            "figures": figures,
        }
        model.save(args.export)
        print(f"wrote {args.export}")


def prescreen_recall(hib: pd.DataFrame) -> None:
    """What a kappa campaign's prescreen (``kappa_prescreen``: phonons only for a formula the
    shipped surrogate puts in the best share of its training formulas toward the target)
    passes of HiBoFL, and how many of HiBoFL's own hits (top / bottom decile, the
    campaigns' thresholds) it keeps: the hits a campaign's share loses by counting a
    prescreened crystal as a miss."""
    from crysvcd.loop.targets import Target

    shipped = KappaSurrogate.load()
    pred = shipped.predict(hib["formula_pretty"])
    print("the shipped surrogate as a campaign's prescreen, on HiBoFL:")
    for direction in ("high", "low"):
        threshold = Target("kappa", direction).threshold()
        hit = hib["k_ao"] >= threshold if direction == "high" else hib["k_ao"] <= threshold
        for share in (0.5, 0.3):
            cut = shipped.cut(share, direction)
            passed = pred >= cut if direction == "high" else pred <= cut
            print(f"  {direction}, best {share:.0%} (cut {cut:.3g} W/mK): passes "
                  f"{int(passed.sum())} of {len(hib)}, keeps {int((passed & hit).sum())} of "
                  f"the {int(hit.sum())} with kappa {'>=' if direction == 'high' else '<='} "
                  f"{threshold:.3g} W/mK")  # fmt: skip


if __name__ == "__main__":
    main()
