"""Stage I composition models: validity, diversity, distribution match, speed, conditioning.

    python benchmarks/stage1.py [--n 10000] [--throughput-n 2000] [--finetune-epochs 6]
                                [--skip-conditioning] [--temperatures 1.0 1.15 1.3 1.5]
                                [--sweep-only]

Runs on the shipped checkpoints and the bundled training pool (dev split as reference).
Conditioning fine-tunes the shipped ionic model into runs/bench_stage1_* (resumed if there).
Prints every figure; asserts nothing.
"""

from __future__ import annotations

import argparse
import time
import warnings
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
from pymatgen.core import Composition
from scipy.stats import pearsonr, spearmanr, wasserstein_distance
from sklearn.ensemble import HistGradientBoostingClassifier, HistGradientBoostingRegressor
from smact.screening import smact_validity

from crysvcd import checkpoints
from crysvcd.chem.valence import label_valence
from crysvcd.config import Stage1Config
from crysvcd.datasets import training_pool
from crysvcd.stage1.model import load_model
from crysvcd.stage1.sample import FormulaSampler, load_sampler
from crysvcd.stage1.train import FIT, train

warnings.filterwarnings("ignore")
N_EL = 94


def features(formula: str) -> np.ndarray:
    """Element-fraction vector: the composition-only predictor's input."""
    x = np.zeros(N_EL + 2)
    comp = Composition(formula)
    for el, frac in comp.fractional_composition.items():
        x[el.Z - 1] = frac
    x[N_EL] = len(comp)
    x[N_EL + 1] = sum(frac * el.X for el, frac in comp.fractional_composition.items())
    return x


def smact_ok(formula: str) -> bool:
    try:
        return bool(smact_validity(Composition(formula)))
    except Exception:
        return False


def diversity(reduced: list[str], k: int, train: set[str], seed: int) -> tuple[float, float]:
    """Unique share (%) of k of the formulas (mean of 20 subsamples) and the share (%) of
    the distinct ones that the train split lacks."""
    rng = np.random.default_rng(seed)
    unique = np.mean([len(set(rng.choice(reduced, k, replace=False))) / k for _ in range(20)])
    return 100 * unique, 100 * np.mean([r not in train for r in set(reduced)])


def report_model(kind: str, n: int, seed: int, pool, dev_kind) -> None:
    sampler = load_sampler(kind=kind)  # with its neutrality table (ionic)
    formulas, stats = sampler.sample(n, seed=seed)
    reduced = [f.reduced_formula for f in formulas]
    pool_reduced = set(Composition(f).reduced_formula for f in pool["cell_formula"])
    print(f"\n== {kind} model: {len(formulas)} formulas (seed {seed}), {stats.seconds:.1f} s ==")
    print(
        f"neutral (sum count*valence = 0): {100 * np.mean([f.charge == 0 for f in formulas]):.2f} %"
    )
    print(
        f"dead ends resampled: {stats.dead_ends} "
        f"({100 * stats.dead_ends / (stats.dead_ends + stats.drawn):.2f} % of rows)"
    )
    t0 = time.perf_counter()
    valid = [smact_ok(f.cell_formula) for f in formulas]
    print(f"SMACT-valid: {100 * np.mean(valid):.2f} % ({time.perf_counter() - t0:.0f} s)")
    unique = set(reduced)
    share = len(unique) / len(reduced)
    print(f"unique reduced formulas: {len(unique)}/{len(reduced)} = {100 * share:.2f} %")
    novel = [r not in pool_reduced for r in unique]
    print(f"novel (not in the 11,796-material pool), of unique: {100 * np.mean(novel):.2f} %")
    # The same two figures for the data itself, at equal size: how many distinct formulas
    # len(dev) draws give, and how many of a held-out split's formulas the training split
    # lacks. A model of the data should come near these, not above them.
    train_reduced = set(
        Composition(f).reduced_formula for f in pool.loc[pool["split"] == "train", "cell_formula"]
    )
    dev_reduced = [Composition(f).reduced_formula for f in dev_kind]
    k = len(dev_reduced)
    u, v = diversity(reduced, k, train_reduced, seed)
    print(f"unique at the dev split's size ({k} of {len(reduced)}, 20 subsamples): {u:.2f} %; "
          f"the dev split's own: {100 * len(set(dev_reduced)) / k:.2f} %")  # fmt: skip
    own = np.mean([r not in train_reduced for r in set(dev_reduced)])
    print(f"novel against the train split, of unique: {v:.2f} %; the dev split's own: "
          f"{100 * own:.2f} %")  # fmt: skip
    # Distribution match against the dev split of the same kind
    gen_nel = [len({t.element for t in f.tokens}) for f in formulas]
    gen_nat = [f.n_atoms for f in formulas]
    dev_nel = [len(Composition(f)) for f in dev_kind]
    dev_nat = [int(Composition(f).num_atoms) for f in dev_kind]
    print(f"reference: {len(dev_kind)} dev-split {kind} materials")
    print(
        f"Wasserstein, elements per formula: {wasserstein_distance(gen_nel, dev_nel):.3f} "
        f"(mean gen {np.mean(gen_nel):.2f} vs dev {np.mean(dev_nel):.2f})"
    )
    print(
        f"Wasserstein, atoms per cell: {wasserstein_distance(gen_nat, dev_nat):.3f} "
        f"(mean gen {np.mean(gen_nat):.2f} vs dev {np.mean(dev_nat):.2f})"
    )
    gen_el = Counter(t.element for f in formulas for t in f.tokens)
    dev_el = Counter(str(e) for f in dev_kind for e in Composition(f).elements)
    els = sorted(set(gen_el) | set(dev_el))
    g = np.array([gen_el[e] / len(formulas) for e in els])
    d = np.array([dev_el[e] / len(dev_kind) for e in els])
    print(
        f"element-frequency correlation (Pearson over {len(els)} elements): {pearsonr(g, d)[0]:.3f}"
    )
    if sampler.neutrality is not None:  # the same model with the plain masks, for scale
        plain = FormulaSampler(sampler.model)
        old, _ = plain.sample(n, seed=seed)
        old_nel = [len({t.element for t in f.tokens}) for f in old]
        w_old = wasserstein_distance(old_nel, dev_nel)
        u, v = diversity([f.reduced_formula for f in old], k, train_reduced, seed)
        print(
            f"plain masks (no neutrality table), same model: Wasserstein, elements per "
            f"formula {w_old:.3f} (mean {np.mean(old_nel):.2f}); unique at {k} {u:.2f} %, "
            f"novel against the train split {v:.2f} %"
        )
    return sampler


def temperature_sweep(temperatures: list[float], n: int, seed: int, pool, dev_kind) -> None:
    """Sampling temperature trades the distribution match for diversity: what each
    temperature gives of the ionic model (twisted masks) on the figures of ``report_model``."""
    sampler = load_sampler(kind="ionic")
    pool_reduced = set(Composition(f).reduced_formula for f in pool["cell_formula"])
    dev_nel = [len(Composition(f)) for f in dev_kind]
    print(f"\n== ionic model, sampling temperature against diversity ({n} formulas each) ==")
    for t in temperatures:
        formulas, _ = sampler.sample(n, temperature=t, seed=seed)
        reduced = [f.reduced_formula for f in formulas]
        unique = set(reduced)
        novel = np.mean([r not in pool_reduced for r in unique])
        nel = [len({tok.element for tok in f.tokens}) for f in formulas]
        neutral = np.mean([f.charge == 0 for f in formulas])
        print(f"T {t}: unique {100 * len(unique) / len(reduced):.2f} %, novel (not in the pool) "
              f"{100 * novel:.2f} % of unique, Wasserstein elements per formula "
              f"{wasserstein_distance(nel, dev_nel):.3f} (mean {np.mean(nel):.2f}), "
              f"neutral {100 * neutral:.1f} %")  # fmt: skip


def throughput(sampler: FormulaSampler, n: int, seed: int) -> None:
    print(f"\n== throughput, ionic, {n} charge-balanced formulas, same model, same run ==")
    _, masked = sampler.sample(n, seed=seed, constrained=True)
    _, free = sampler.sample(n, seed=seed, constrained=False)
    r_masked = n / masked.seconds
    r_free = n / free.seconds
    print(
        f"masked decoding: {r_masked:.0f} formulas/s ({masked.seconds:.1f} s; "
        f"{masked.dead_ends} dead-end rows resampled)"
    )
    print(
        f"sample-then-reject: {r_free:.0f} formulas/s ({free.seconds:.1f} s; drew "
        f"{free.drawn}, kept {free.drawn - free.rejected_non_neutral} "
        f"= {100 * (1 - free.rejected_non_neutral / free.drawn):.1f} % neutral)"
    )
    print(f"speed-up of masking: {r_masked / r_free:.2f}x")


def conditioning(pool, epochs: int, n: int, seed: int) -> None:
    train_df = pool[pool["split"] == "train"]
    dev_df = pool[pool["split"] == "dev"]
    print("\n== conditioning (ionic model) ==")
    # Judges: composition-only gradient boosting trained on the pool's train split.
    lab = train_df.dropna(subset=["band_gap"])
    lab_dev = dev_df.dropna(subset=["band_gap"])
    xtr = np.stack([features(f) for f in lab["cell_formula"]])
    xdv = np.stack([features(f) for f in lab_dev["cell_formula"]])
    clf = HistGradientBoostingClassifier(random_state=0).fit(xtr, lab["band_gap"] > 0.5)
    acc = np.mean(clf.predict(xdv) == (lab_dev["band_gap"] > 0.5))
    base = max(np.mean(lab_dev["band_gap"] > 0.5), 1 - np.mean(lab_dev["band_gap"] > 0.5))
    print(
        f"judge 'band_gap > 0.5' on {len(lab_dev)} dev materials: accuracy {acc:.3f} "
        f"(majority class {base:.3f})"
    )
    xtr_e = np.stack([features(f) for f in train_df["cell_formula"]])
    xdv_e = np.stack([features(f) for f in dev_df["cell_formula"]])
    reg = HistGradientBoostingRegressor(random_state=0).fit(
        xtr_e, train_df["formation_energy_per_atom"]
    )
    ef_dev = dev_df["formation_energy_per_atom"]
    mae = np.mean(np.abs(reg.predict(xdv_e) - ef_dev))
    mae_mean = np.mean(np.abs(ef_dev - train_df["formation_energy_per_atom"].mean()))
    print(
        f"judge formation energy on {len(dev_df)} dev materials: MAE {mae:.3f} eV/atom "
        f"(predicting the mean: {mae_mean:.3f})"
    )

    runs = {
        "gapped": ("gapped=band_gap>0.5", [0, 1]),
        "ef": ("ef=formation_energy_per_atom", [-3.0, -2.0, -1.0, 0.0]),
    }
    for name, (prop, targets) in runs.items():
        out = Path(f"runs/bench_stage1_{name}")
        cfg = Stage1Config(kind="ionic", properties=[prop])
        fit_cfg = replace(FIT, max_epochs=epochs, patience=epochs)
        t0 = time.perf_counter()
        train(cfg, out, fit_cfg, init=checkpoints.shipped("stage1-ionic"))
        print(
            f"fine-tuned on {prop} for {epochs} epochs from the shipped ionic model "
            f"({time.perf_counter() - t0:.0f} s; {out}/best.pt)"
        )
        sampler = FormulaSampler(load_model(out / "best.pt"))
        preds = []
        for target in targets:
            formulas, _ = sampler.sample(n, seed=seed, conditions={name: target})
            x = np.stack([features(f.cell_formula) for f in formulas])
            if name == "gapped":
                share = float(np.mean(clf.predict(x)))
                print(
                    f"  condition gapped={target}: predicted gapped share {100 * share:.1f} % "
                    f"of {n}"
                )
            else:
                p = reg.predict(x)
                preds.append((target, float(np.mean(p)), float(np.median(p))))
                print(
                    f"  condition ef={target:+.1f} eV/atom: predicted Ef mean {np.mean(p):+.3f}, "
                    f"median {np.median(p):+.3f}"
                )
        if preds:
            rho = spearmanr([t for t, _, _ in preds], [m for _, m, _ in preds])[0]
            slope = np.polyfit([t for t, _, _ in preds], [m for _, m, _ in preds], 1)[0]
            print(f"  target vs mean predicted Ef: Spearman {rho:.2f}, slope {slope:.2f}")
        uncond, _ = sampler.sample(n, seed=seed)
        x = np.stack([features(f.cell_formula) for f in uncond])
        if name == "gapped":
            print(f"  unconditioned: predicted gapped share {100 * np.mean(clf.predict(x)):.1f} %")
        else:
            print(f"  unconditioned: predicted Ef mean {np.mean(reg.predict(x)):+.3f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=10000)
    ap.add_argument("--throughput-n", type=int, default=2000)
    ap.add_argument("--conditioning-n", type=int, default=2000)
    ap.add_argument("--finetune-epochs", type=int, default=6)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-conditioning", action="store_true")
    ap.add_argument("--temperatures", type=float, nargs="*", default=[1.0, 1.15, 1.3, 1.5],
                    help="sampling temperatures of the diversity sweep")  # fmt: skip
    ap.add_argument("--sweep-only", action="store_true", help="only the temperature sweep")
    args = ap.parse_args()
    pool = training_pool()
    kinds = {}
    for f in pool.loc[pool["split"] == "dev", "cell_formula"]:
        try:
            kinds.setdefault(label_valence(f).kind, []).append(f)
        except ValueError:
            pass
    print(
        f"data: bundled training pool ({len(pool)} materials); "
        f"checkpoints: {checkpoints.WEIGHTS_DIR}"
    )
    if args.temperatures:
        temperature_sweep(args.temperatures, args.n, args.seed, pool, kinds["ionic"])
    if args.sweep_only:
        return
    ionic = report_model("ionic", args.n, args.seed, pool, kinds["ionic"])
    report_model("alloy", args.n, args.seed, pool, kinds["alloy"])
    throughput(ionic, args.throughput_n, args.seed + 1)
    if not args.skip_conditioning:
        conditioning(pool, args.finetune_epochs, args.conditioning_n, args.seed)


if __name__ == "__main__":
    main()
