"""Throughput where the time goes, each new path beside the old one in the same run.

    python benchmarks/throughput.py [--sections relax evaluate stage1 stage2 train]
        [--n-relax 64] [--threads 2] [--max-atoms 400] [--device cpu] [--workers 2]
        [--relax-batch 8] [--n-formulas 1000] [--n-structures 32]

1. relax: structures per minute on MP-20 dev structures (fmax 0.01, <= 500 FIRE steps,
   SevenNet-0): the one-by-one ASE loop against torch-sim's batched FIRE (one model call
   per step for all structures in flight), and the largest Ehull difference between them.
   evaluate: the same structures through ``crysvcd evaluate`` (Dask, ``--workers``), one
   ASE relaxation per task against groups of ``--relax-batch`` per task: the choice of
   the default, start-up included.
2. stage1: charge-balanced ionic formulas per second at batch 1,000: the twisted masked
   decoder (shipped) against the plain masks and sample-then-reject.
3. stage2: seconds per structure of the shipped Stage II at its default steps, with and
   without the corrector step, in fp32 and under bf16 autocast, and where a sampling step
   spends its time (profile).
4. train: Stage II training steps per second and seconds per epoch of the pool, 4 x 256 and
   6 x 512, fp32 and bf16 autocast (and TF32 on a GPU), on ``--device`` with
   ``--train-batch`` crystals per step, batches gathered by ``PackedCrystals`` (tensor ops)
   against the former per-crystal ``collate`` (rebuilt here as the reference).
Prints every figure; asserts nothing.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import itertools
import pstats
import time
import warnings

import numpy as np
import torch

warnings.filterwarnings("ignore")


def section_relax(args) -> None:
    from crysvcd.evaluate.batched import relax_batched, torch_sim_model
    from crysvcd.evaluate.hull import corrected_formation_energy, e_above_hull
    from crysvcd.evaluate.mlip import get_calculator
    from crysvcd.evaluate.relax import relax

    structures = dev_structures(args.n_relax)
    print(f"== 1. relaxation of {len(structures)} MP-20 dev structures, fmax 0.01, "
          f"<= 500 steps, SevenNet-0, {args.device}, "
          f"{torch.get_num_threads()} threads ==")  # fmt: skip
    calc = get_calculator("sevennet", device=args.device)
    t0 = time.perf_counter()
    ase = []
    for s in structures:
        try:
            ase.append(relax(s, calc, 0.01, 500))
        except Exception as exc:
            ase.append(exc)
    t_ase = time.perf_counter() - t0
    model = torch_sim_model("sevennet", args.device)
    t0 = time.perf_counter()
    batched = relax_batched(structures, model, 0.01, 500, max_atoms=args.max_atoms)
    t_b = time.perf_counter() - t0
    n = len(structures)
    print(f"ASE loop: {n / t_ase * 60:.1f} structures/min ({t_ase:.0f} s)")
    print(f"torch-sim batched (<= {args.max_atoms} atoms in flight): {n / t_b * 60:.1f} "
          f"structures/min ({t_b:.0f} s); speed-up {t_ase / t_b:.2f}x")  # fmt: skip
    diffs, fails = [], 0
    for a, b in zip(ase, batched):
        if isinstance(a, Exception) or isinstance(b, Exception):
            fails += 1
            continue
        ea = e_above_hull(
            a.structure.composition, corrected_formation_energy(a.structure, a.energy)
        )
        eb = e_above_hull(
            b.structure.composition, corrected_formation_energy(b.structure, b.energy)
        )
        diffs.append(abs(ea - eb))
    d = np.array(diffs)
    share = 100 * np.mean(d < 0.01)
    print(f"Ehull agreement: largest |difference| {d.max():.4f} eV/atom, within 0.01 on "
          f"{share:.1f} % of {len(d)} ({fails} failed in either path)")  # fmt: skip


def dev_structures(n: int):
    from crysvcd.datasets import structure_from_cif, training_pool

    dev = training_pool("dev")
    dev = dev[dev["source"] != "mpts52_mp20like.csv.gz"].sample(frac=1, random_state=0)
    return [structure_from_cif(c) for c in dev["cif"].head(n)]


def section_evaluate(args) -> None:
    import tempfile
    from pathlib import Path

    from crysvcd.evaluate.runner import evaluate
    from crysvcd.evaluate.settings import EvaluateConfig

    folder = Path(tempfile.mkdtemp(prefix="throughput-evaluate-"))
    structures = dev_structures(args.n_relax)
    for i, s in enumerate(structures):
        s.to(filename=str(folder / f"{i:03d}.cif"))
    print(f"\n== 1b. crysvcd evaluate of the same {len(structures)} structures (Ehull), "
          f"{args.workers} Dask workers, {args.device} ==")  # fmt: skip
    tables = {}
    for batch in (1, args.relax_batch):
        cfg = EvaluateConfig(fmax=0.01, relax_steps=500, device=args.device, relax_batch=batch)
        t0 = time.perf_counter()
        tables[batch] = evaluate(folder, cfg, db=folder / f"batch{batch}.db",
                                 workers=args.workers, progress=False).set_index("key")  # fmt: skip
        t = time.perf_counter() - t0
        print(f"relax_batch {batch}: {len(structures) / t * 60:.1f} structures/min ({t:.0f} s, "
              f"{(tables[batch]['status'] == 'ok').sum()} ok)")  # fmt: skip
    d = (tables[args.relax_batch]["e_above_hull"] - tables[1]["e_above_hull"]).abs().dropna()
    print(f"Ehull agreement: largest |difference| {d.max():.4f} eV/atom, within 0.01 on "
          f"{100 * (d < 0.01).mean():.1f} % of {len(d)}")  # fmt: skip


def section_stage1(args) -> None:
    from crysvcd.stage1.sample import FormulaSampler, load_sampler

    sampler = load_sampler(kind="ionic")
    n = args.n_formulas
    print(f"\n== 2. Stage I, {n} charge-balanced ionic formulas, batch 1,000, "
          f"{torch.get_num_threads()} threads ==")  # fmt: skip
    sampler.sample(50, seed=1)  # warm-up (reachability tables)
    runs = {
        "twisted masks (shipped)": lambda: sampler.sample(n, seed=0),
        "plain masks": lambda: FormulaSampler(sampler.model).sample(n, seed=0),
        "sample-then-reject": lambda: sampler.sample(n, seed=0, constrained=False),
    }
    for name, run in runs.items():
        formulas, stats = run()
        print(f"{name}: {n / stats.seconds:.0f} formulas/s ({stats.seconds:.1f} s, "
              f"{stats.dead_ends} dead ends)")  # fmt: skip
    prof = cProfile.Profile()
    prof.enable()
    sampler.sample(n, seed=2)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(8)
    print("profile of the twisted decoder (top functions by own time):")
    print("\n".join(line for line in out.getvalue().splitlines() if "(" in line)[:1600])


def section_stage2(args) -> None:
    from crysvcd.config import DEFAULT_STEPS
    from crysvcd.datasets import training_pool
    from crysvcd.stage2.sample import SamplerSettings, load_sampler

    sampler = load_sampler()
    comps = [c for c in training_pool("dev").sample(frac=1, random_state=0)["cell_formula"]][
        : args.n_structures
    ]
    cfg = sampler.model.cfg
    print(f"\n== 3. Stage II (shipped, {cfg.n_layers} x {cfg.hidden}), {len(comps)} dev "
          f"compositions, {DEFAULT_STEPS} steps, {torch.get_num_threads()} threads ==")  # fmt: skip
    for precision in ("fp32", "bf16"):
        for corrector in (True, False):
            settings = SamplerSettings(DEFAULT_STEPS, corrector=corrector, precision=precision)
            t0 = time.perf_counter()
            sampler.sample(comps, settings, seed=0)
            dt = (time.perf_counter() - t0) / len(comps)
            print(f"{precision}, corrector {corrector}: {dt:.3f} s/structure")
    prof = cProfile.Profile()
    prof.enable()
    sampler.sample(comps, SamplerSettings(steps=20), seed=0)
    prof.disable()
    out = io.StringIO()
    pstats.Stats(prof, stream=out).sort_stats("tottime").print_stats(10)
    print("profile of 20 steps (top functions by own time):")
    print("\n".join(line for line in out.getvalue().splitlines() if "(" in line)[:2000])


def _old_collate(crystals):
    """The batching of the 4 x 256 era: a Python loop over crystals for the edges."""
    from crysvcd.stage2.batch import CrystalBatch

    num = torch.tensor([len(c.atom_types) for c in crystals])
    edges, start = [], 0
    for n in num.tolist():
        idx = torch.arange(start, start + n)
        src, dst = idx.repeat_interleave(n), idx.repeat(n)
        keep = src != dst
        edges.append(torch.stack([src[keep], dst[keep]]))
        start += n
    return CrystalBatch(
        atom_types=torch.from_numpy(np.concatenate([c.atom_types for c in crystals])),
        frac=torch.from_numpy(np.concatenate([c.frac for c in crystals])),
        lattice=torch.from_numpy(np.stack([c.lattice for c in crystals])),
        num_atoms=num,
        batch=torch.repeat_interleave(torch.arange(len(crystals)), num),
        edges=torch.cat(edges, 1),
        props=torch.zeros(len(crystals), 0),
    )


def section_train(args) -> None:
    from crysvcd.config import Stage2Config
    from crysvcd.datasets import training_pool
    from crysvcd.stage2.batch import PackedCrystals
    from crysvcd.stage2.cspnet import CSPNet
    from crysvcd.stage2.loss import diffusion_loss
    from crysvcd.stage2.schedules import Schedules
    from crysvcd.stage2.train import crystals_from_frame
    from crysvcd.training import precision_context

    pool = training_pool("train").sample(args.n_train_rows, random_state=0)
    crystals = crystals_from_frame(pool, [], 20)
    packed = PackedCrystals.of(crystals)
    n_pool = len(training_pool("train"))
    device = torch.device(args.device)
    print(f"\n== 4. Stage II training speed, batch {args.train_batch}, {device}, "
          f"{torch.get_num_threads()} threads ==")  # fmt: skip
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for _ in range(50):
        rows = torch.randint(0, len(crystals), (64,), generator=g)
        packed.batch(rows, "cpu")
    t_new = (time.perf_counter() - t0) / 50
    t0 = time.perf_counter()
    for _ in range(50):
        rows = torch.randint(0, len(crystals), (64,), generator=g)
        _old_collate([crystals[j] for j in rows.tolist()])
    t_old = (time.perf_counter() - t0) / 50
    print(f"batch of 64: PackedCrystals {1e3 * t_new:.2f} ms, per-crystal collate "
          f"{1e3 * t_old:.2f} ms")  # fmt: skip
    # On a GPU the batches come from the pool already there, as training.fit gathers them
    packed = packed.to(device)
    precisions = ("fp32", "tf32", "bf16") if device.type == "cuda" else ("fp32", "bf16")
    for (hidden, layers), precision in itertools.product(((256, 4), (512, 6)), precisions):
        cfg = Stage2Config(hidden=hidden, n_layers=layers)
        model = CSPNet(cfg).to(device)
        sched = Schedules(cfg.timesteps, cfg.sigma_begin, cfg.sigma_end).to(device)
        opt = torch.optim.Adam(model.parameters())
        noise = torch.Generator(device).manual_seed(0)
        torch.backends.cuda.matmul.allow_tf32 = False  # "tf32" sets it process-wide
        for step in range(args.train_steps + 1):
            if step == 1:  # the first step pays for allocation and kernel selection
                _sync(device)
                t0 = time.perf_counter()
            rows = torch.randint(0, len(crystals), (args.train_batch,), generator=g)
            batch = packed.batch(rows.to(device), device)
            with precision_context(device, precision):  # as training.fit does
                loss, _ = diffusion_loss(model, sched, batch, noise, cfg)
            opt.zero_grad()
            loss.backward()
            opt.step()
        _sync(device)
        dt = (time.perf_counter() - t0) / args.train_steps
        minutes = dt * n_pool / args.train_batch / 60
        print(f"{layers} x {hidden}, {precision}: {1 / dt:.2f} steps/s, {minutes:.1f} min per "
              f"epoch of the {n_pool} train crystals")  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    names = ["relax", "evaluate", "stage1", "stage2", "train"]
    ap.add_argument("--sections", nargs="+", default=names, choices=names)
    ap.add_argument("--n-train-rows", type=int, default=512)
    ap.add_argument("--train-steps", type=int, default=10)
    ap.add_argument("--n-relax", type=int, default=64)
    ap.add_argument("--max-atoms", type=int, default=400)
    ap.add_argument("--train-batch", type=int, default=64, help="crystals per step (train)")
    ap.add_argument("--device", default="cpu", help="where the MLIP (relax, evaluate) and the "
                    "training steps (train) run")  # fmt: skip
    ap.add_argument("--workers", type=int, default=2, help="Dask workers (evaluate)")
    ap.add_argument("--relax-batch", type=int, default=8, help="group size (evaluate)")
    ap.add_argument("--n-formulas", type=int, default=1000)
    ap.add_argument("--n-structures", type=int, default=32)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    for name in args.sections:
        globals()[f"section_{name}"](args)


if __name__ == "__main__":
    main()
