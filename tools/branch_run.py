"""Branch a loop run: share its first rounds with a new run that goes on another way.

    python tools/branch_run.py SRC DEST --rounds 1 --config OTHER.toml [--finetune] [--relabel]

A new run that shares the first ``--rounds`` generated and labelled rounds of SRC
(copied: folders and database rows) and continues with OTHER.toml's settings, which may
differ only in what happens after those rounds (the fine-tuning label, epochs, ...): two
thresholds compared from the same round 0. With ``--finetune`` the fine-tune after the
last shared round is shared too (copied, when OTHER.toml fine-tunes the same way);
``--rounds 0 --finetune`` shares a property campaign's prime (its fine-tune on the
target's bundled labels) and nothing else: a campaign re-run with another screen.
``--relabel`` copies the shared rounds (and a prime) but leaves them open: the loop
resumes them, regenerates nothing, and computes only the labels whose settings OTHER.toml
changes (a kappa campaign re-labelled with other phono3py settings).
Then ``crysvcd loop --config OTHER.toml --out DEST`` (or the same ``crysvcd campaign``
command) continues DEST. A run tool, not a measurement: the figures of branched runs come
from ``benchmarks/loop.py`` and ``benchmarks/campaigns.py``.
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from crysvcd.evaluate.store import ResultStore
from crysvcd.loop.config import LoopConfig
from crysvcd.loop.run import LoopState


def branch(args) -> None:
    src, dest = Path(args.src), Path(args.dest)
    old = LoopConfig(**json.loads((src / "loop.json").read_text())["config"])
    # a campaign's target comes from `crysvcd campaign`'s flags, not its file: keep SRC's
    target = {k: getattr(old, k) for k in ("target", "direction", "target_value")}
    new = LoopConfig.load(args.config, defaults=target)
    same = ("n", "seed", "valence_masks", "ionic_fraction", "diffusion_steps", "candidates",
            "stage1_ionic", "stage1_alloy", "stage2", "mlip", "fmax", "relax_steps")  # fmt: skip
    differ = [k for k in same if getattr(old, k) != getattr(new, k)]
    if differ:
        raise SystemExit(f"the shared rounds were made with other {differ}")
    if dest.exists():
        raise SystemExit(f"{dest} exists")
    dest.mkdir(parents=True)
    state = LoopState(dest, new)
    store, source = ResultStore(dest / "labels.db"), ResultStore(src / "labels.db")
    source_models = json.loads((src / "loop.json").read_text())["models"]
    if args.relabel:
        # the shared rounds' structures are resumed, not remade: everything that made them
        # must be SRC's, fine-tunes included
        tuning = ("prime", "recipe", "finetune_stage1", "finetune_stage2", "stage1_epochs",
                  "stage2_epochs", "stage2_pool_sample", "labelled_weight",
                  "screen_factor")  # fmt: skip
        differ = [k for k in tuning if getattr(old, k) != getattr(new, k)]
        if differ:
            raise SystemExit(f"--relabel: the shared rounds were made with other {differ}")
        if old.prime and args.rounds:
            shutil.copytree(src / "prime", dest / "prime")
            state.data["primed"] = True
    moved = lambda models: {k: v and v.replace(str(src), str(dest)) for k, v in models.items()}  # noqa: E731
    for r in range(args.rounds):
        labelled = json.loads((src / "loop.json").read_text())["rounds"].get(str(r), {})
        if not labelled.get("labelled") and not args.relabel:  # relabelled rounds resume
            raise SystemExit(f"round {r} of {src} is not labelled yet")
        folder = dest / f"round_{r:02d}"
        shutil.copytree(src / f"round_{r:02d}" / "generated", folder / "generated")
        for key, row in source.rows().items():
            if row.get("round") == r:
                atoms = row.toatoms() if row.natoms else None
                labels = {k: v for k, v in row.key_value_pairs.items() if k != "key"}
                store.write(key, atoms, **labels)
        if not args.relabel:
            state.mark(r, "labelled")
            if r > 0:  # the models that made a shared round are those of SRC
                state.set_models(r, source_models[str(r)])
            continue
        # left open: the loop resumes the round, finds every structure made and labelled,
        # and computes only the labels whose settings changed (their signatures differ).
        # The round's generate run then reads as DEST's own (its screen, its models)
        if (src / f"round_{r:02d}" / "screen.json").exists():
            shutil.copy(src / f"round_{r:02d}" / "screen.json", folder / "screen.json")
        record = folder / "generated" / "run.json"
        record.write_text(record.read_text().replace(str(src), str(dest)))
        state.set_models(r, moved(source_models[str(r)]))
        if r > 0:
            shutil.copytree(src / f"round_{r - 1:02d}" / "finetune",
                            dest / f"round_{r - 1:02d}" / "finetune")  # fmt: skip
            state.mark(r - 1, "finetuned")
    if args.finetune:
        tuning = ("ehull_threshold", "target", "direction", "target_value", "prime",
                  "finetune_stage1", "finetune_stage2", "stage1_epochs", "stage2_epochs",
                  "stage1_lr", "stage2_lr", "stage2_pool_sample", "labelled_weight")  # fmt: skip
        differ = [k for k in tuning if getattr(old, k) != getattr(new, k)]
        models = source_models.get(str(args.rounds))
        if differ or models is None:
            raise SystemExit(f"the fine-tune is not shareable: {differ or 'not done in SRC'}")
        # --rounds 0: share the prime (the fine-tune on the target's bundled labels)
        done = "prime" if args.rounds == 0 else f"round_{args.rounds - 1:02d}/finetune"
        if args.rounds == 0 and not json.loads((src / "loop.json").read_text()).get("primed"):
            raise SystemExit(f"{src} was not primed")
        if not (dest / done).exists():  # --relabel may have copied the prime already
            shutil.copytree(src / done, dest / done)
        state.set_models(args.rounds, moved(models))
        if args.rounds == 0:
            state.data["primed"] = True
            state.save()
        else:
            state.mark(args.rounds - 1, "finetuned")
    shared = f"rounds 0-{args.rounds - 1}" if args.rounds else "the prime"
    print(f"{dest}: {shared} shared with {src}; "
          f"now: crysvcd loop --config {args.config} --out {dest}")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("src")
    ap.add_argument("dest")
    ap.add_argument("--rounds", type=int, default=1, help="rounds shared with SRC")
    ap.add_argument("--config", required=True)
    ap.add_argument("--finetune", action="store_true", help="share the fine-tune after them")
    ap.add_argument("--relabel", action="store_true",
                    help="copy the shared rounds' structures and labels but leave the rounds "
                    "open: the loop then computes only the labels DEST's settings lack (say, "
                    "kappa with other phono3py settings), and regenerates nothing")  # fmt: skip
    branch(ap.parse_args())


if __name__ == "__main__":
    main()
