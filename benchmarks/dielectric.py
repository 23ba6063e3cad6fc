"""Dielectric surrogate: the shipped e3nn model against baselines on the held-out test split.

    python benchmarks/dielectric.py [--checkpoint PATH] [--update-sidecar]

Data: the bundled Petousis et al. (2017) set, split by a hash of material_id exactly as in
training (``crysvcd.dielectric.data.load_frame``). Every model is fitted on
the train split only; figures are on the test split, which training never sees. Baselines
(no DFT band gap, since generated crystals have none):
  * train mean of log10 eps;
  * ridge and random forest on composition: element fractions + fraction-weighted
    statistics of elemental properties;
  * random forest on composition + volume per atom and density (structure-aware, not
    equivariant-network).
Metrics: MAE of eps (linear), MAE of log10 eps, Spearman rho; a paired bootstrap gives a
95 % interval of the MAE(log10) difference e3nn - best baseline. Prints; asserts nothing.
``--update-sidecar`` writes the figures into the checkpoint's JSON sidecar.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import numpy as np
import torch
from pymatgen.core import Composition, Element
from scipy.stats import spearmanr
from sklearn.ensemble import RandomForestRegressor
from sklearn.linear_model import Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from crysvcd import checkpoints
from crysvcd.datasets import structure_from_cif
from crysvcd.dielectric import predict_log_dielectric
from crysvcd.dielectric.data import load_frame
from crysvcd.dielectric.model import load_model

warnings.filterwarnings("ignore")
N_EL = 94
PROPS = ("Z", "X", "row", "group", "atomic_mass", "atomic_radius", "mendeleev_no")


def _prop(el: Element, name: str) -> float:
    try:
        v = float(getattr(el, name))
    except (TypeError, ValueError, AttributeError):
        return 0.0
    return v if np.isfinite(v) else 0.0


def composition_features(formula: str) -> np.ndarray:
    """Element fractions, then weighted mean, std, min and max of elemental properties."""
    comp = Composition(formula).fractional_composition
    x = np.zeros(N_EL)
    els, w = list(comp.keys()), np.array(list(comp.values()))
    for el, f in zip(els, w):
        x[el.Z - 1] = f
    stats = []
    for name in PROPS:
        v = np.array([_prop(el, name) for el in els])
        mean = float(w @ v)
        stats += [mean, float(np.sqrt(w @ (v - mean) ** 2)), v.min(), v.max()]
    return np.concatenate([x, stats, [len(els)]])


def metrics(pred_log: np.ndarray, true_log: np.ndarray) -> dict:
    rho = spearmanr(pred_log, true_log).statistic if np.ptp(pred_log) > 0 else float("nan")
    return {
        "mae_eps": float(np.mean(np.abs(10**pred_log - 10**true_log))),
        "mae_log10": float(np.mean(np.abs(pred_log - true_log))),
        "spearman": float(rho),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=str(checkpoints.shipped("dielectric")))
    ap.add_argument("--update-sidecar", action="store_true")
    ap.add_argument("--bootstrap", type=int, default=2000)
    args = ap.parse_args()
    torch.set_num_threads(1)

    model = load_model(args.checkpoint)
    cfg = model.cfg
    df = load_frame(cfg.val_percent, cfg.test_percent)
    counts = df["split"].value_counts().to_dict()
    print(f"data: {len(df)} structures ({df.attrs['n_dropped']} dropped: poly_total < 1 or NaN)")
    print(f"split by hash of material_id: {counts}")
    structures = [structure_from_cif(c) for c in df["cif"]]
    vol = np.array([[s.volume / len(s), s.density] for s in structures])
    comp = np.stack([composition_features(f) for f in df["formula"]])
    y = df["log_eps"].to_numpy()
    tr = (df["split"] == "train").to_numpy()
    te = (df["split"] == "test").to_numpy()
    seen = set(model.elements)
    unseen = [i for i in np.where(te)[0] if {e.symbol for e in structures[i].composition} - seen]
    print(
        f"checkpoint: {args.checkpoint} ({model.n_params()} parameters, "
        f"{len(seen)} training elements); test structures with an element absent from "
        f"training: {len(unseen)}"
    )

    preds: dict[str, np.ndarray] = {}
    preds["train mean of log10 eps"] = np.full(te.sum(), y[tr].mean())
    ridge = make_pipeline(StandardScaler(), Ridge(alpha=10.0)).fit(comp[tr], y[tr])
    preds["ridge, composition"] = ridge.predict(comp[te])
    rf = RandomForestRegressor(n_estimators=500, min_samples_leaf=2, random_state=0, n_jobs=1)
    preds["random forest, composition"] = rf.fit(comp[tr], y[tr]).predict(comp[te])
    xs = np.hstack([comp, vol])
    rf2 = RandomForestRegressor(n_estimators=500, min_samples_leaf=2, random_state=0, n_jobs=1)
    preds["random forest, composition + vol/atom, density"] = rf2.fit(xs[tr], y[tr]).predict(xs[te])
    t0 = time.time()
    test_structures = [structures[i] for i in np.where(te)[0]]
    preds["e3nn (shipped checkpoint)"] = predict_log_dielectric(
        test_structures, model, allow_unseen_elements=True
    )
    seconds = time.time() - t0

    results = {name: metrics(p, y[te]) for name, p in preds.items()}
    print(f"\n== held-out test split: {te.sum()} structures ==")
    print(f"{'model':<48} {'MAE eps':>8} {'MAE log10':>10} {'Spearman':>9}")
    for name, r in results.items():
        print(f"{name:<48} {r['mae_eps']:8.3f} {r['mae_log10']:10.4f} {r['spearman']:9.3f}")
    print(f"(Spearman is undefined for a constant prediction; e3nn: {seconds:.2f} s for the split)")

    e3 = preds["e3nn (shipped checkpoint)"]
    base = [n for n in preds if not n.startswith("e3nn")]
    best = min(base, key=lambda n: results[n]["mae_log10"])
    rng = np.random.default_rng(0)
    err_e3, err_b = np.abs(e3 - y[te]), np.abs(preds[best] - y[te])
    idx = rng.integers(0, te.sum(), (args.bootstrap, te.sum()))
    diff = err_e3[idx].mean(1) - err_b[idx].mean(1)
    lo, hi = np.percentile(diff, [2.5, 97.5])
    print(
        f"\nMAE(log10) e3nn - best baseline ({best}): {err_e3.mean() - err_b.mean():+.4f}, "
        f"95 % paired-bootstrap interval [{lo:+.4f}, {hi:+.4f}] ({args.bootstrap} resamples)"
    )
    if unseen:
        keep = np.array([i not in set(unseen) for i in np.where(te)[0]])
        r = metrics(e3[keep], y[te][keep])
        print(
            f"e3nn on the {keep.sum()} test structures with training elements only: "
            f"MAE eps {r['mae_eps']:.3f}, MAE log10 {r['mae_log10']:.4f}, "
            f"Spearman {r['spearman']:.3f}"
        )

    if args.update_sidecar:
        side = Path(args.checkpoint).with_suffix(".json")
        data = json.loads(side.read_text()) if side.exists() else {}
        data["benchmark"] = {
            "command": "python benchmarks/dielectric.py",
            "n_test": int(te.sum()),
            "test": results,
            "best_baseline": best,
            "mae_log10_difference_vs_best_baseline": {
                "value": float(err_e3.mean() - err_b.mean()),
                "ci95": [float(lo), float(hi)],
            },
        }
        side.write_text(json.dumps(data, indent=2))
        print(f"figures written to {side}")


if __name__ == "__main__":
    main()
