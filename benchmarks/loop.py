"""The learning loop's figures: campaigns compared (the paper's Fig. 3b), phonons on samples
of each round (Fig. 3c), and the throughput of labelling (``tools/branch_run.py``
makes the runs that share rounds).

    python benchmarks/loop.py compare RUN [RUN ...] [--names A B ...] [--out DIR]
    python benchmarks/loop.py phonons RUN [--per-round 30] [--rounds 0 2] [--workers 2] [--report]
        [--device cuda] [--no-figures]
    python benchmarks/loop.py throughput [--n 24] [--workers 1 2]
    python benchmarks/loop.py guidance RUN --round 1 [--n 50] [--workers 2] [--shipped]
    python benchmarks/loop.py formulas RUN --round 1 [--n 1000] [--guidance 0 2]
    python benchmarks/loop.py screen RUN [RUN ...] [--splits 20] [--train-round 0]
    python benchmarks/loop.py target-screen --target dielectric --value 50 [RUN ...] [--cut 20]

compare: the shares of every round of every run (with Wilson 95 % intervals), and one
  energy-above-hull histogram of all of them beside the training pool's DFT values.
phonons: for a random sample (seeded) of ``--per-round`` crystals of each round whose
  relaxation converged below 0.1 eV/atom, the paper's phonon protocol (tight relaxation
  to 0.003 eV/A within 200 steps with the symmetry kept, supercell >= 20 A, 8x8x8 mesh,
  0.01 THz); the labels go into the run's database beside the others, so a re-run only
  adds what is missing. The rounds take turns, so a run stopped part-way has even samples;
  ``--report`` prints the shares of what is stored without computing more.
throughput: labelled structures per minute (relaxation + Ehull) with 1 and 2 Dask workers
  on the same generated crystals, and the wall time of a small round with generation and
  labelling overlapped (the loop) against one after the other (generate, then evaluate).
guidance: Stage II conditioning tested for real: the fine-tuned Stage II of RUN that made
  round ``--round``, on that round's first ``--n`` compositions, sampled with guidance
  toward stable=1 (w = the run's guidance) and without any condition, same seed; both sets
  relaxed and placed on the hull; the two Ehull distributions compared.
formulas: what the fine-tuned ionic Stage I of RUN's round ``--round`` learned from the
  stability label: ``--n`` formulas sampled under stable=1 and stable=0 (and with Stage I
  guidance ``--guidance``), against the shipped model: share of formulas known in the
  pool, share among the formulas that were stable in round 0, elements per formula,
  unique; and the KL divergence between the first-token distributions under stable=1
  and stable=0 (how much the condition changes the start of a formula).
screen: how well the stability screen (evaluate.screen) predicts the label from the
  formula alone, on every labelled crystal of the given runs (a crystal two runs share is
  counted once): held-out AUC and the stable share of the best half, third and fifth by
  score, over ``--splits`` random 75/25 splits; then trained on ``--train-round`` alone
  (what round 1 of a loop sees) and tested on all later rounds; then its weights.
Prints every figure; asserts nothing.
"""

from __future__ import annotations

import argparse
import itertools
import shutil
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

warnings.filterwarnings("ignore")
SHARES = ("ehull_below_0.1", "ehull_below_0", "phonon_stable", "valid", "unique", "novel", "sun")


def compare(args) -> None:
    from crysvcd.loop.data import pool_frame
    from crysvcd.loop.figures import ehull_histogram

    names = args.names or [Path(r).name for r in args.runs]
    series, rows = {}, []
    for name, run in zip(names, args.runs):
        shares = pd.read_csv(Path(run) / "shares.csv")
        table = pd.read_csv(Path(run) / "structures.csv", low_memory=False)
        for rec in shares.to_dict("records"):
            rows.append({"run": name, **rec})
            ehull = pd.to_numeric(table.loc[table["round"] == rec["round"], "e_above_hull"],
                                  errors="coerce")  # fmt: skip
            values = ehull.to_numpy()
            # a branch shares its first rounds with its source: draw those once
            if not any(np.array_equal(values, v, equal_nan=True) for v in series.values()):
                series[f"{name}, round {rec['round']}"] = values
    out = pd.DataFrame(rows)
    print("== shares per round (k/n, Wilson 95 % interval) ==")
    for rec in out.to_dict("records"):
        parts = []
        for s in SHARES:
            n = rec.get(f"{s}_n", 0)
            if n:
                parts.append(f"{s} {100 * rec[s]:.1f} % [{100 * rec[f'{s}_lo']:.0f}-"
                             f"{100 * rec[f'{s}_hi']:.0f}] (n={int(n)})")  # fmt: skip
        print(f"{rec['run']}, round {rec['round']}: " + "; ".join(parts))
    dest = Path(args.out)
    dest.mkdir(parents=True, exist_ok=True)
    out.to_csv(dest / "loop_shares.csv", index=False)
    series["training pool (MP, DFT)"] = pool_frame(0.0)["e_above_hull"].to_numpy()
    ehull_histogram(series, dest / "loop_ehull.png", "Energy above the hull: campaigns compared")
    rounds_plot(out, dest / "loop_rounds.png")
    print(f"wrote {dest / 'loop_shares.csv'}, {dest / 'loop_ehull.png'} and "
          f"{dest / 'loop_rounds.png'}")  # fmt: skip


def rounds_plot(shares: pd.DataFrame, path: Path, share: str = "ehull_below_0.1") -> None:
    """The stable share of every round of every run, with its Wilson interval."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    runs = list(dict.fromkeys(shares["run"]))
    for k, name in enumerate(runs):
        part = shares[shares["run"] == name]
        x = part["round"].to_numpy() + 0.06 * (k - (len(runs) - 1) / 2)  # side by side
        y = 100 * part[share].to_numpy()
        err = [y - 100 * part[f"{share}_lo"].to_numpy(), 100 * part[f"{share}_hi"].to_numpy() - y]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=name)
    ax.set_xlabel("round")
    ax.set_ylabel("generated crystals with Ehull < 0.1 eV/atom (%)")
    ax.set_xticks(sorted(set(shares["round"])))
    ax.set_title("Stable share per round (Wilson 95 % intervals, 100 crystals each)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def phonons(args) -> None:
    from crysvcd.datasets import hash_bucket
    from crysvcd.evaluate.cluster import close_client, start_client
    from crysvcd.evaluate.runner import plan, record, run_jobs
    from crysvcd.evaluate.settings import EvaluateConfig, PhononSettings
    from crysvcd.evaluate.store import ResultStore
    from crysvcd.loop.config import LoopConfig

    run = Path(args.run)
    import json

    loop = LoopConfig(**json.loads((run / "loop.json").read_text())["config"])
    cfg = EvaluateConfig(
        mlip=loop.mlip, fmax=loop.fmax, relax_steps=loop.relax_steps, timeout=args.timeout,
        phonons=True, phonon=PhononSettings(max_supercell_atoms=args.max_atoms),
        device=args.device,
    )  # fmt: skip
    store = ResultStore(run / "labels.db")
    rows = store.rows()
    samples = []
    for r in args.rounds:
        keys = sorted(
            k for k, row in rows.items()
            if row.get("round") == r and row.get("status") == "ok" and row.get("converged")
            and (row.get("e_above_hull") is not None and row.get("e_above_hull") < 0.1)
        )  # fmt: skip
        keys.sort(key=lambda k: hash_bucket(f"phonon-sample:{args.seed}:{k}"))
        samples.append(keys[: args.per_round])
        print(f"round {r}: {min(len(keys), args.per_round)} of {len(keys)} crystals below 0.1")
    # the rounds take turns, so a run stopped part-way (it resumes) has even samples so far
    chosen = [k for turn in itertools.zip_longest(*samples) for k in turn if k is not None]
    from pymatgen.io.ase import AseAtomsAdaptor

    items = [(k, AseAtomsAdaptor.get_structure(rows[k].toatoms())) for k in chosen]
    jobs, done = plan(items, store, cfg)
    print(f"phonons to compute: {len(jobs)} ({done} already have them)")
    t0 = time.perf_counter()
    if jobs and args.report:
        print("--report: nothing computed, the shares below are of what is stored so far")
    elif jobs:
        client = start_client(args.workers)
        try:
            for job, labels, relaxed in run_jobs(client, jobs, cfg):
                record(store, job, labels, relaxed)
                note = labels.get("phonon_note") or labels.get("phonon_error") or ""
                print(f"  {job.key}: stable {labels.get('phonon_stable')}, min "
                      f"{labels.get('phonon_min_frequency_thz')} THz, "
                      f"{labels.get('phonon_seconds')} s {note}", flush=True)  # fmt: skip
        finally:
            close_client(client)
    if not args.report:
        print(f"{len(jobs)} phonon calculations in {(time.perf_counter() - t0) / 60:.1f} min")
    if args.no_figures:  # e.g. on a GPU machine without matplotlib: counts only
        stored = store.rows()
        for r, keys in zip(args.rounds, samples):
            flags = [stored[k].get("phonon_stable") for k in keys]
            done = [f for f in flags if f is not None]
            print(f"round {r}: phonon-stable {sum(map(bool, done))} of {len(done)} labelled")
        return
    from crysvcd.loop.figures import frequency_histogram, write_figures

    shares = write_figures(run, store, loop)
    table = pd.read_csv(run / "structures.csv", low_memory=False)
    freq = pd.to_numeric(table.get("phonon_min_frequency_thz"), errors="coerce")
    series = {f"round {r}": freq[table["round"] == r].dropna().to_numpy() for r in args.rounds}
    frequency_histogram(series, run / "figures" / "phonon_rounds.png",
                        "Lowest phonon frequency, sampled crystals below 0.1 eV/atom")  # fmt: skip
    for rec in shares.to_dict("records"):
        if rec.get("phonon_stable_n"):
            print(f"round {rec['round']}: phonon-stable {100 * rec['phonon_stable']:.1f} % "
                  f"[{100 * rec['phonon_stable_lo']:.0f}-{100 * rec['phonon_stable_hi']:.0f}] "
                  f"of {int(rec['phonon_stable_n'])}")  # fmt: skip


def throughput(args) -> None:
    from crysvcd.config import GenerateConfig
    from crysvcd.evaluate.runner import evaluate
    from crysvcd.evaluate.settings import EvaluateConfig
    from crysvcd.loop.config import LoopConfig
    from crysvcd.loop.run import run_loop
    from crysvcd.pipeline import generate

    work = Path(tempfile.mkdtemp(prefix="loop-throughput-"))
    gen = GenerateConfig(n=args.n, steps=args.steps, seed=args.seed)
    t0 = time.perf_counter()
    generate(gen, work / "gen", progress=False)
    t_gen = time.perf_counter() - t0
    print(f"== throughput: {args.n} generated crystals ({args.steps} diffusion steps, "
          f"{t_gen:.0f} s to generate) ==")  # fmt: skip
    cfg = EvaluateConfig(mlip=args.mlip)
    seconds = {}
    for workers in args.workers:
        db = work / f"labels_{workers}.db"
        t0 = time.perf_counter()
        evaluate(work / "gen", cfg, db=db, workers=workers, progress=False)
        dt = seconds[workers] = time.perf_counter() - t0
        print(f"{workers} Dask worker(s): {args.n / dt * 60:.1f} structures/min ({dt:.0f} s, "
              f"start-up included)")  # fmt: skip
    w = max(args.workers)
    t_seq = t_gen + seconds[w]
    loop = LoopConfig(rounds=1, n=args.n, diffusion_steps=args.steps, phonons=False,
                      workers=w, mlip=args.mlip, seed=args.seed)  # fmt: skip
    t0 = time.perf_counter()
    run_loop(loop, work / "loop", progress=False)
    t_loop = time.perf_counter() - t0
    print(
        f"one round of {args.n}, {w} workers: generate then evaluate {t_seq:.0f} s; "
        f"overlapped (crysvcd loop, figures included) {t_loop:.0f} s; gain {t_seq / t_loop:.2f}x"
    )
    shutil.rmtree(work, ignore_errors=True)


def guidance(args) -> None:
    import json

    from pymatgen.core import Composition
    from scipy.stats import mannwhitneyu

    from crysvcd.evaluate.runner import evaluate
    from crysvcd.evaluate.settings import EvaluateConfig
    from crysvcd.loop.config import LoopConfig
    from crysvcd.metrics import share
    from crysvcd.stage2.sample import SamplerSettings, load_sampler

    run = Path(args.run)
    data = json.loads((run / "loop.json").read_text())
    loop = LoopConfig(**data["config"])
    stage2 = data["models"][str(args.round)]["stage2"]
    summary = pd.read_csv(run / f"round_{args.round:02d}" / "generated" / "summary.csv")
    comps = [Composition(c) for c in summary["cell_formula"].head(args.n)]
    sampler = load_sampler(stage2)
    print(f"== guidance on {stage2}: {len(comps)} compositions of round {args.round} ==")
    out = Path(args.out)
    tables = {}
    arms = [("guided stable=1", sampler, ["stable=1"], loop.guidance),
            ("unconditioned", sampler, None, None)]  # fmt: skip
    if args.shipped:  # did the fine-tune itself help or hurt? the shipped model, same seed
        arms.append(("shipped model", load_sampler(None), None, None))
    for name, model, conditions, w in arms:
        structures = model.sample(comps, SamplerSettings(steps=loop.diffusion_steps, guidance=w),
                                  seed=args.seed, conditions=conditions)  # fmt: skip
        folder = out / name.split()[0]
        if folder.exists():
            shutil.rmtree(folder)
        (folder / "cif").mkdir(parents=True)
        for i, s in enumerate(structures):
            s.to(filename=str(folder / "cif" / f"{i:03d}_{s.composition.reduced_formula}.cif"))
        cfg = EvaluateConfig(mlip=loop.mlip, fmax=loop.fmax, relax_steps=loop.relax_steps)
        tables[name] = evaluate(folder, cfg, workers=args.workers, progress=False)
    for name, t in tables.items():
        ok = (t["status"] == "ok") & t["converged"].fillna(False).astype(bool)
        e = pd.to_numeric(t["e_above_hull"], errors="coerce")
        s = share(list(ok & (e < 0.1)))
        median = np.nanmedian(e[ok])
        print(f"{name}: Ehull < 0.1 {100 * s['share']:.1f} % [{100 * s['lo']:.0f}-"
              f"{100 * s['hi']:.0f}] of {s['n']}; median Ehull {median:.3f} eV/atom")  # fmt: skip
    a, b = (pd.to_numeric(tables[k]["e_above_hull"], errors="coerce").dropna()
            for k in ("guided stable=1", "unconditioned"))  # fmt: skip
    p = mannwhitneyu(a, b, alternative="less").pvalue
    print(f"Mann-Whitney U, guided Ehull lower than unconditioned: p = {p:.3g}")


def _runs_table(runs) -> pd.DataFrame:
    """The crystals of several runs' ``structures.csv``, each once (branches share rounds)."""
    frames = [pd.read_csv(Path(run) / "structures.csv", low_memory=False, keep_default_na=False)
              for run in runs]  # fmt: skip
    return pd.concat(frames, ignore_index=True).drop_duplicates(["key", "e_above_hull"])


def screen(args) -> None:
    from crysvcd.evaluate.screen import FEATURES, Screen
    from crysvcd.loop.run import screen_data

    table = _runs_table(args.runs)
    x, y = screen_data(table, args.threshold)  # it keeps the labelled rows
    print(f"== {len(y)} labelled crystals, {y.mean():.3f} stable (Ehull < {args.threshold}) ==")

    def scores_of(train, test):
        s = Screen.fit(x[train], y[train]).score(x[test])
        order = np.argsort(-s)
        top = [y[test][order[: int(len(s) * q)]].mean() for q in (1 / 2, 1 / 3, 1 / 5)]
        return [_auc(s, y[test]), y[test].mean(), *top]

    rng = np.random.default_rng(args.seed)
    rows = []
    for _ in range(args.splits):
        test = np.zeros(len(y), bool)
        test[rng.permutation(len(y))[: len(y) // 4]] = True
        rows.append(scores_of(~test, test))
    head = "AUC  base  best1/2  best1/3  best1/5"
    print(f"random 75/25 splits ({args.splits}): {head}: "
          + "  ".join(f"{v:.3f}" for v in np.mean(rows, 0)))  # fmt: skip
    rounds = table["round"].astype(int).to_numpy()
    first = rounds == args.train_round
    print(f"trained on round {args.train_round} ({first.sum()}), tested on later rounds "
          f"({(rounds > args.train_round).sum()}): {head}: "
          + "  ".join(f"{v:.3f}" for v in scores_of(first, rounds > args.train_round)))  # fmt: skip
    fit = Screen.fit(x, y)
    weights = ", ".join(f"{n} {w:+.2f}" for n, w in zip(FEATURES, fit.weights))
    print(f"weights on all {len(y)} (standardised): {weights}")


def target_screen(args) -> None:
    """A property campaign's screen as round 0 fits it (on the target's bundled training
    rows): its AUC on the bundled dev rows, then, on the crystals of each RUN that have the
    property, the share at or beyond the target and beyond ``--cut`` in the best fifth by
    score against all. With ``--stability RUN...``: a stability screen fitted on those runs'
    labels as well, and the stable share and stable hits in the best fifth of each RUN's
    labelled crystals by the property screen, the stability screen, and both (the sum of
    their log-probabilities: a screen for crystals both stable and a hit)."""
    from pymatgen.core import Composition

    from crysvcd.evaluate.screen import Screen, features
    from crysvcd.loop.config import LoopConfig
    from crysvcd.loop.figures import kept_stable, usable_values
    from crysvcd.loop.run import fit_target_screen, screen_data

    cfg = LoopConfig(target=args.target, direction=args.direction, target_value=args.value,
                     phonons=args.target == "kappa")  # fmt: skip
    target = cfg.target_spec()
    fit = fit_target_screen(cfg, pd.DataFrame())  # the fit round 0 makes
    dev = target.bundled()
    dev = dev[(dev["split"] == "dev") & dev["target_label"].notna()]
    xd = np.stack([fit.descriptors(Composition(f), "ionic") for f in dev["cell_formula"]])
    yd = dev["target_label"].to_numpy()
    auc = _auc(fit.score(xd), yd)
    print(f"{target.condition} screen: {fit.n_train} training rows ({fit.n_hits} hits); "
          f"AUC on the {len(yd)} dev rows ({int(yd.sum())} hits): {auc:.3f}")  # fmt: skip
    stab = None
    if args.stability:
        stab = Screen.fit(*screen_data(_runs_table(args.stability), 0.1))
        print(f"stability screen: {stab.n_train} labelled crystals ({stab.n_hits} stable)")
    for run in args.runs:
        table = pd.read_csv(Path(run) / "structures.csv", low_memory=False, keep_default_na=False)
        table = table[table["status"].isin(["ok", "failed", "invalid"])]
        table = table[table["cell_formula"] != ""]
        comps = [Composition(f) for f in table["cell_formula"]]
        score = fit.score(np.stack([fit.descriptors(c, "ionic") for c in comps]))
        value = pd.to_numeric(usable_values(table, target), errors="coerce").to_numpy()
        has, v = ~np.isnan(value), value[~np.isnan(value)]
        best = score[has] >= np.quantile(score[has], 0.8)
        beyond = v >= args.cut if target.direction == "high" else v <= args.cut
        hit = target.hit(v) == 1
        print(f"{run}: {len(v)} crystals with {target.label}; best fifth by the screen: "
              f"{beyond[best].mean():.3f} beyond {args.cut} ({hit[best].sum()} hits of "
              f"{best.sum()}); all: {beyond.mean():.3f} ({hit.sum()} hits)")  # fmt: skip
        if stab is None:
            continue
        rows = zip(comps, table["kind"], table["valence_tokens"])
        s_stab = stab.score(np.stack([features(c, k, t) for c, k, t in rows]))
        stable = kept_stable(table).to_numpy()
        good = stable & (target.hit(value) == 1)
        near = stable & ((value >= args.cut) if target.direction == "high" else (value <= args.cut))
        log_p = lambda s: -np.logaddexp(0, -s)  # noqa: E731  log sigmoid
        print(f"  all {len(table)}: stable {stable.mean():.3f}, stable hits {good.sum()}, "
              f"stable beyond {args.cut} {near.sum()}")  # fmt: skip
        for name, s in (("property", score), ("stability", s_stab),
                        ("both", log_p(score) + log_p(s_stab))):  # fmt: skip
            top = s >= np.quantile(s, 0.8)
            print(f"  best fifth ({top.sum()}) by {name}: stable {stable[top].mean():.3f}, "
                  f"stable hits {good[top].sum()}, "
                  f"stable beyond {args.cut} {near[top].sum()}")  # fmt: skip


def _auc(scores: np.ndarray, y: np.ndarray) -> float:
    """Mann-Whitney AUC: the chance a stable crystal outscores an unstable one."""
    from scipy.stats import mannwhitneyu

    pos, neg = scores[y == 1], scores[y == 0]
    return float(mannwhitneyu(pos, neg).statistic / (len(pos) * len(neg)))


def formulas(args) -> None:
    import json
    from collections import Counter

    import torch

    from crysvcd.datasets import training_pool
    from crysvcd.stage1.sample import load_sampler
    from crysvcd.stage1.tokens import START

    run = Path(args.run)
    ionic = json.loads((run / "loop.json").read_text())["models"][str(args.round)]["stage1_ionic"]
    table = pd.read_csv(run / "structures.csv")
    r0 = table[table["round"] == 0]
    ok = (r0["status"] == "ok") & r0["converged"].astype(str).isin(["True", "1.0"])
    stable0 = set(r0.loc[ok & (pd.to_numeric(r0["e_above_hull"]) < 0.1), "reduced_formula"])
    known = set(training_pool()["pretty_formula"])
    print(
        f"== Stage I of round {args.round} ({ionic}); {len(stable0)} stable formulas in round 0 =="
    )
    arms = [("shipped", None, None, None)]
    for w in args.guidance:
        arms += [(f"stable=1, w={w}", ionic, {"stable": 1.0}, w or None),
                 (f"stable=0, w={w}", ionic, {"stable": 0.0}, w or None)]  # fmt: skip
    for name, ckpt, cond, w in arms:
        sampler = load_sampler(ckpt, "ionic")
        fs, _ = sampler.sample(args.n, seed=args.seed, conditions=cond, guidance=w)
        red = [f.reduced_formula for f in fs]
        nel = Counter(len(f.composition) for f in fs)
        print(f"{name:16s} known {np.mean([r in known for r in red]):.3f}  "
              f"in round-0 stable {np.mean([r in stable0 for r in red]):.3f}  "
              f"elements/formula {np.mean([len(f.composition) for f in fs]):.2f} "
              f"{dict(sorted(nel.items()))}  unique {len(set(red)) / len(red):.3f}")  # fmt: skip
    model = load_sampler(ionic, "ionic").model
    spec = model.properties[0]
    props = torch.tensor([[spec.encode_target(1.0)], [spec.encode_target(0.0)]])
    with torch.no_grad():
        first, _, _ = model.step(torch.full((2, 1), START), torch.zeros(2, 1, dtype=torch.long),
                                 props, None, torch.ones(2, 1, dtype=torch.long))  # fmt: skip
    logp = first.log_softmax(-1)
    kl = float((logp[0].exp() * (logp[0] - logp[1])).sum())
    print(f"KL(first token | stable=1 || stable=0) = {kl:.4f} nats")


def main() -> None:
    raw = argparse.RawDescriptionHelpFormatter
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=raw)
    sub = ap.add_subparsers(dest="section", required=True)
    p = sub.add_parser("compare")
    p.add_argument("runs", nargs="+")
    p.add_argument("--names", nargs="*")
    p.add_argument("--out", default="runs/loop_figures")
    p = sub.add_parser("phonons")
    p.add_argument("run")
    p.add_argument("--per-round", type=int, default=30)
    p.add_argument("--rounds", type=int, nargs="+", default=[0])
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--max-atoms", type=int, default=2000)
    p.add_argument("--timeout", type=float, default=3600.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--report", action="store_true", help="compute nothing: shares so far")
    p.add_argument("--device", default="cpu", help="the MLIP's device: cpu, cuda, auto")
    p.add_argument(
        "--no-figures",
        action="store_true",
        help="print the counts, write no figures (a machine without matplotlib)",
    )
    p = sub.add_parser("throughput")
    p.add_argument("--n", type=int, default=24)
    p.add_argument("--steps", type=int, default=100)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--mlip", default="sevennet")
    p.add_argument("--seed", type=int, default=7)
    p = sub.add_parser("guidance")
    p.add_argument("run")
    p.add_argument("--round", type=int, default=1)
    p.add_argument("--n", type=int, default=50)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--out", default="runs/guidance")
    p.add_argument(
        "--shipped",
        action="store_true",
        help="also sample the shipped Stage II (no fine-tune), same seed",
    )
    p = sub.add_parser("formulas")
    p.add_argument("run")
    p.add_argument("--round", type=int, default=1)
    p.add_argument("--n", type=int, default=1000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--guidance", type=float, nargs="+", default=[0.0, 2.0])
    p = sub.add_parser("screen")
    p.add_argument("runs", nargs="+")
    p.add_argument("--splits", type=int, default=20)
    p.add_argument("--train-round", type=int, default=0)
    p.add_argument("--threshold", type=float, default=0.1, help="stable: Ehull below this")
    p.add_argument("--seed", type=int, default=0)
    p = sub.add_parser("target-screen")
    p.add_argument("runs", nargs="*")
    p.add_argument("--target", choices=["dielectric", "kappa"], default="dielectric")
    p.add_argument("--direction", choices=["high", "low"], default="high")
    p.add_argument("--value", type=float, default=None, help="the target (dielectric: 50)")
    p.add_argument("--cut", type=float, default=20.0, help="a softer cut to report beside")
    p.add_argument("--stability", nargs="*", default=[], metavar="RUN",
                   help="runs whose labels fit a stability screen to judge beside")  # fmt: skip
    args = ap.parse_args()
    sections = {"compare": compare, "phonons": phonons, "throughput": throughput}
    sections.update(guidance=guidance, formulas=formulas, screen=screen)
    sections["target-screen"] = target_screen
    sections[args.section](args)


if __name__ == "__main__":
    main()
