"""On the GPU machine (torch and numpy only): train Stage II for a wall budget, sample the
evaluation compositions, and leave in --out what must come back (files under 16 MiB).

    python tools/device/train_stage2.py --data tools/device/data/stage2.npz --out $OUT \
        [--state runs/device_stage2] [--init src/crysvcd/weights/stage2_csp.pt] \
        [--hidden 512 --layers 6] [--seconds 480] [--total-seconds 960] [--batch 256] \
        [--lr 5e-4] [--precision tf32] [--sample-steps 1000 100] [--device cuda]

It is crysvcd's own training loop (``training.fit``: EMA, cosine schedule over
``--total-seconds``, resume), model (``CSPNet``), loss and sampler, on batches gathered on
the GPU (``PackedCrystals``). The full state (weights, EMA, Adam, step) is kept in
``--state``, an ignored folder that stays on the machine while it is warm, so two calls in
a row continue one run. What comes back, in --out: the EMA weights in fp16 as a normal
crysvcd Stage II checkpoint split into 15 MiB parts (``cat stage2.pt.part* > stage2.pt``),
its JSON sidecar, the training log, and ``samples.npz`` (the sampled lattices and
coordinates of the evaluation rows, scored here by ``score_stage2.py``). A fresh machine
has no ``--state``: the run then starts from ``--init`` (the returned weights, once shipped)
and continues its schedule from the step recorded in the init's sidecar, with new Adam
moments: the Adam state of the 6 x 512 model (98 MB even in bf16) cannot travel within the
64 MiB per call.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from sample_stage2 import draw, eval_crystals  # the sibling script (run from this folder)

from crysvcd import checkpoints
from crysvcd.config import FitConfig, Stage2Config
from crysvcd.stage2.batch import PackedCrystals
from crysvcd.stage2.cspnet import CSPNet
from crysvcd.stage2.loss import dev_loss, diffusion_loss
from crysvcd.stage2.sample import StructureSampler
from crysvcd.stage2.schedules import Schedules
from crysvcd.training import fit, seed_everything

PART = 15 * 2**20


def packed(data, prefix: str) -> PackedCrystals:
    natoms = torch.from_numpy(data[f"{prefix}_natoms"])
    return PackedCrystals(
        atom_types=torch.from_numpy(data[f"{prefix}_types"]),
        frac=torch.from_numpy(data[f"{prefix}_frac"]),
        lattice=torch.from_numpy(data[f"{prefix}_lattice"]),
        num_atoms=natoms,
        starts=torch.cumsum(natoms, 0) - natoms,
        props=torch.zeros(len(natoms), 0),
    )


def split_file(path: Path) -> list[Path]:
    data, parts = path.read_bytes(), []
    for k in range(0, len(data), PART):
        part = path.with_name(f"{path.name}.part{k // PART}")
        part.write_bytes(data[k : k + PART])
        parts.append(part)
    path.unlink()
    return parts


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--data", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--state", default="runs/device_stage2")
    ap.add_argument("--init", help="starting weights when --state holds no run")
    ap.add_argument("--hidden", type=int, default=512)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--seconds", type=float, default=480, help="this call's training time")
    ap.add_argument("--total-seconds", type=float, default=None, help="the schedule's budget")
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--min-lr", type=float, default=1e-5)
    ap.add_argument("--precision", default="tf32", choices=["fp32", "tf32", "bf16"])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--sample-steps", type=int, nargs="*", default=[1000, 100])
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    out, state_dir = Path(args.out), Path(args.state)
    out.mkdir(parents=True, exist_ok=True)
    data = np.load(args.data)
    train, dev = packed(data, "train"), packed(data, "dev")
    cfg = Stage2Config(hidden=args.hidden, n_layers=args.layers)
    init, step0 = None, 0
    if not (state_dir / "last.pt").exists() and args.init:
        init = args.init
        cfg = checkpoints.read(init, Stage2Config, "Stage II")[1]
        step0 = checkpoints.sidecar(init).get("steps") or 0
    total = args.total_seconds or args.seconds
    fit_cfg = FitConfig(
        batch_size=args.batch, lr=args.lr, min_lr=args.min_lr, ema_decay=0.999,
        max_epochs=100_000, max_hours=total / 3600, session_hours=args.seconds / 3600,
        eval_every=25, device=args.device, precision=args.precision, seed=args.seed,
    )  # fmt: skip
    sched = Schedules(cfg.timesteps, cfg.sigma_begin, cfg.sigma_end)
    seed_everything(args.seed)
    t0 = time.time()
    result = fit(
        CSPNet(cfg),
        lambda net, batch, gen: diffusion_loss(net, sched.to(batch.frac.device), batch, gen, cfg),
        train,
        lambda model, device: {"dev_loss": dev_loss(model, sched, dev, device)},
        fit_cfg,
        state_dir,
        init=init,
        run_info={"device_script": "tools/device/train_stage2.py", "steps_before": step0},
    )
    seconds = time.time() - t0
    ckpt = torch.load(state_dir / "last.pt", map_location="cpu", weights_only=False)
    model = CSPNet(cfg)
    checkpoints.load_weights(model, ckpt["ema"])
    dest = out / "stage2.pt"
    checkpoints.atomic_save(
        {
            "config": cfg.to_dict(),
            "properties": [],
            "model": checkpoints.fp16_weights(model.state_dict()),
        },
        dest,
    )
    side = {
        "config": cfg.to_dict(),
        "storage": "fp16 weights, fp32 compute",
        "hardware": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "wall_seconds_this_call": round(seconds, 1),
        "seconds_trained": round(result.seconds, 1),
        "epochs_trained": result.epochs,
        "steps": step0 + result.steps,
        "best_dev_loss": result.best,
        "fit": {k: v for k, v in vars(fit_cfg).items()},
        "history": result.history,
    }
    dest.with_suffix(".json").write_text(json.dumps(side, indent=2, default=str))
    parts = split_file(dest)
    sampler = StructureSampler(model, args.device)
    samples = draw(sampler, eval_crystals(data), args.sample_steps, args.seed)
    np.savez_compressed(out / "samples.npz", eval_ids=data["eval_ids"], **samples)
    for name in ("log.jsonl", "run.json"):
        if (state_dir / name).exists():
            (out / name).write_text((state_dir / name).read_text())
    print(json.dumps({"epochs": result.epochs, "steps": step0 + result.steps,
                      "seconds": round(result.seconds, 1), "best_dev_loss": result.best,
                      "parts": [p.name for p in parts]}))  # fmt: skip


if __name__ == "__main__":
    main()
