"""The concurrent learning loop: generate -> label (while generating) -> fine-tune, by rounds.

One round:
1. generate ``n`` crystals with this round's models (Stage I + II; from round 1 on
   conditioned on ``stable=1``, Stage II with classifier-free guidance, and Stage I's
   formulas picked by a screen fitted on the labels so far: ``fit_screen``);
2. label them while generation is still running: each structure goes to a Dask worker
   as soon as it is written (relaxation, energy above the MP hull; phonons for the crystals
   under ``phonon_ehull_max``, or a fixed share of them);
3. store every structure and its labels in ``RUN/labels.db`` (ASE), with its round, seed
   and the checkpoints that made it;
4. fine-tune Stage I (ionic and alloy) and Stage II on the pool and every labelled crystal
   so far, the stability label as the condition (not after the last round);
5. write the round's figures and shares (``RUN/figures``, ``RUN/shares.csv``).

A property campaign (``target`` kappa or dielectric, ``loop.targets``) differs in four
places: with ``prime`` both stages are first fine-tuned on the target's bundled labels, so
that round 0 is conditioned too; its screen rates formulas for the target, fitted on the
bundled labels and the campaign's, from round 0 on; each round labels its target (the
dielectric surrogate on every relaxed crystal; phono3py kappa on the ``kappa_per_round``
stable, phonon-stable crystals that Slack's harmonic estimate ranks best, every other one
recorded as skipped with its reason); and the fine-tunes are conditioned on the target's hit
label, and the round writes a ranked table of candidates (``RUN/candidates.csv``,
``RUN/candidates/*.cif``).

Resumable at any point: ``RUN/loop.json`` records the settings and which phases of which
rounds are done; the generation resumes its chunks, labels already stored are not
recomputed, fine-tunes resume from their ``last.pt``. A structure whose labelling fails
(or whose worker dies) is recorded with its error and the round goes on.
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from pymatgen.core import Composition, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from crysvcd.config import GenerateConfig
from crysvcd.datasets import hash_bucket
from crysvcd.evaluate.runner import Job, load_structures, plan, record, results, submit
from crysvcd.evaluate.settings import EvaluateConfig, KappaSettings, PhononSettings
from crysvcd.evaluate.store import ResultStore
from crysvcd.loop.config import BEFORE, HOW, LoopConfig
from crysvcd.runinfo import atomic_write_text, versions

log = logging.getLogger(__name__)
STAGES = ("stage1_ionic", "stage1_alloy", "stage2")


class LoopState:
    """``RUN/loop.json``: the settings in force and the phases done, written atomically."""

    def __init__(self, out_dir: Path, cfg: LoopConfig):
        self.path = out_dir / "loop.json"
        if self.path.exists():
            data = json.loads(self.path.read_text())
            # a setting added after the run was made counts as what the run did without it
            stored = {**LoopConfig().to_dict(), **BEFORE, **data["config"]}
            differ = sorted(
                k for k, v in cfg.to_dict().items() if stored.get(k) != v and k not in HOW
            )
            if differ == ["rounds"] and cfg.rounds > stored["rounds"]:
                differ = []  # more rounds: a finished campaign goes on where it stopped
                data["config"]["rounds"] = cfg.rounds
            if differ:
                raise ValueError(
                    f"{out_dir} holds a loop run with other settings ({', '.join(differ)}): "
                    "resume it with the same settings (or more rounds) or choose another --out"
                )
            self.data = data
        else:
            start = {s: getattr(cfg, s) for s in STAGES}
            self.data = {"config": cfg.to_dict(), "versions": versions(), "rounds": {},
                         "models": {"0": start}}  # fmt: skip
            self.save()

    def save(self) -> None:
        atomic_write_text(self.path, json.dumps(self.data, indent=2, default=str))

    def done(self, r: int, phase: str) -> bool:
        return bool(self.data["rounds"].get(str(r), {}).get(phase))

    def mark(self, r: int, phase: str, value=True) -> None:
        self.data["rounds"].setdefault(str(r), {})[phase] = value
        self.save()

    def models(self, r: int) -> dict:
        return self.data["models"][str(r)]

    def set_models(self, r: int, models: dict) -> None:
        self.data["models"][str(r)] = models
        self.save()


def evaluate_config(cfg: LoopConfig, phonons: bool, kappa: bool = False) -> EvaluateConfig:
    return EvaluateConfig(
        mlip=cfg.mlip,
        fmax=cfg.fmax,
        relax_steps=cfg.relax_steps,
        timeout=cfg.timeout,
        phonons=phonons and cfg.phonons,
        phonon=PhononSettings(
            supercell_min_length=cfg.phonon_supercell, max_supercell_atoms=cfg.phonon_max_atoms
        ),
        phonon_ehull_max=cfg.phonon_ehull_max,
        dielectric=cfg.target == "dielectric",
        kappa=kappa,
        kappa_mlip=cfg.kappa_mlip,
        kappa_fc3_mlip=cfg.kappa_fc3_mlip,
        kappa_settings=KappaSettings(
            budget_s=cfg.kappa_budget,
            supercell_min_length=cfg.kappa_supercell,
            fc3_cutoff=cfg.kappa_fc3_cutoff,
            wigner=cfg.kappa_wigner,
        ),
        device=cfg.label_device,
        relax_batch=cfg.relax_batch,
    )


def generate_config(
    cfg: LoopConfig, r: int, models: dict, screen: Path | None = None
) -> GenerateConfig:
    # conditioned once a fine-tune has taught the models the condition: after priming, or
    # from round 1 on; a screen-only loop (no fine-tunes) keeps the shipped, unconditioned ones
    tuned = cfg.prime or (r > 0 and (cfg.finetune_stage1 or cfg.finetune_stage2))
    conditioned = tuned and cfg.valence_masks
    if conditioned:
        conditions = [f"{cfg.target_spec().condition}=1"]
    else:  # the starting checkpoints' own condition, if they were fine-tuned on one
        conditions = [cfg.start_condition] if cfg.start_condition else []
    return GenerateConfig(
        screen=str(screen) if screen else None,
        screen_factor=cfg.screen_factor,
        screen_label=cfg.target if cfg.screen_usable and screen else None,
        novel_formulas=cfg.novel_formulas,
        n=cfg.n,
        ionic_fraction=cfg.ionic_fraction,
        candidates=cfg.candidates,
        rank_mlip=cfg.mlip,
        steps=cfg.diffusion_steps,
        seed=cfg.seed + 1000 * r,
        conditions=conditions,
        guidance=cfg.guidance if conditions else None,
        valence_masks=cfg.valence_masks,
        device=cfg.device,
        precision=cfg.precision,
        **models,
    )


class Labeller:
    """Hands structures to the Dask cluster as they appear and stores each result as it
    comes back, so the driver can keep generating in between. With ``relax_batch`` > 1,
    fresh structures wait until a group of that size is ready (``runner.submit``)."""

    def __init__(self, client, store: ResultStore, cfg: LoopConfig, extra: dict, kappa=False):
        from distributed import as_completed

        self.client, self.store, self.cfg, self.extra = client, store, cfg, extra
        self.kappa = kappa  # the second pass of a kappa campaign: phono3py on the chosen
        self.pending = as_completed()
        self.groups = {}
        self.waiting: dict[bool, list[Job]] = {False: [], True: []}  # by phonons sampled
        self.submitted: set[str] = set()
        self.notes: dict[str, dict] = {}  # labels decided here, stored with the results
        self.surrogate = None  # a kappa campaign's composition surrogate, loaded when needed
        self.finished = 0

    def offer(self, key: str, structure: Structure | Exception) -> None:
        """Submit the labels ``key`` still needs (nothing when all are stored)."""
        if key in self.submitted:
            return
        self.submitted.add(key)
        sampled = hash_bucket(f"phonons:{key}") < 100 * self.cfg.phonon_share
        if self.cfg.target == "kappa" and not self.kappa and isinstance(structure, Structure):
            sampled = self._prescreen(key, structure, sampled)
        jobs, _ = plan([(key, structure)], self.store, self._config(sampled), extra=self.extra)
        self.waiting[sampled] += jobs
        self._submit(full_only=True)
        self.collect(block=False)

    def _prescreen(self, key: str, structure: Structure, phonons: bool) -> bool:
        """A kappa campaign's composition surrogate: recorded for every crystal, and with
        ``kappa_prescreen`` < 1 phonons only for those it puts on the target's side."""
        from crysvcd.evaluate.kappa_surrogate import KappaSurrogate

        self.surrogate = self.surrogate or KappaSurrogate.load()
        try:
            value = float(self.surrogate.predict([structure.composition])[0])
        except ValueError:  # an element beyond the surrogate's table: no screen for it
            return phonons
        self.notes[key] = {"kappa_surrogate": value}
        share, direction = self.cfg.kappa_prescreen, self.cfg.direction
        cut = self.surrogate.cut(share, direction)
        if phonons and share < 1 and (value < cut if direction == "high" else value > cut):
            self.notes[key]["phonon_skipped"] = (
                f"kappa surrogate {value:.3g} W/mK not in the {direction}est {share:.0%} "
                f"(cut {cut:.3g})"
            )
            return False
        return phonons

    def _config(self, sampled: bool) -> EvaluateConfig:
        return evaluate_config(self.cfg, phonons=sampled, kappa=self.kappa)

    def _submit(self, full_only: bool) -> None:
        for sampled, jobs in self.waiting.items():
            fresh = sum("relax" in j.steps for j in jobs)
            cfg = self._config(sampled)  # its relax_batch is the resolved group size
            if full_only and jobs and fresh == len(jobs) and fresh < cfg.relax_batch:
                continue  # a group still filling
            for future, group in submit(self.client, jobs, cfg).items():
                self.groups[future.key] = group
                self.pending.add(future)
            jobs.clear()

    def collect(self, block: bool) -> None:
        """Store every finished result (all of them, waiting, when ``block``)."""
        if block:
            self._submit(full_only=False)
        while True:
            if not block and not self.pending.has_ready():
                return
            if self.pending.is_empty():
                return
            for future in self.pending.next_batch(block=block):
                for job, labels, relaxed in results(future, self.groups.pop(future.key)):
                    labels = {**self.notes.pop(job.key, {}), **labels}
                    record(self.store, job, labels, relaxed, **self.extra)
                    self.finished += 1
                    log.info("labelled %s: %s (%d done)", job.key, labels.get("status", "ok"),
                             self.finished)  # fmt: skip


def screen_data(table: pd.DataFrame, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Descriptors and 0/1 labels of the labelled crystals of a structure table
    (``structures.csv``): stable as a campaign keeps it, with Ehull below ``threshold``; a
    failed or invalid structure counts as unstable."""
    from crysvcd.evaluate.screen import features
    from crysvcd.loop.figures import _col, kept_stable

    labelled = _col(table, "status", "").isin(["ok", "failed", "invalid"])
    table = table[labelled & (table["cell_formula"] != "")]
    rows = zip(table["cell_formula"], table["kind"], table["valence_tokens"])
    x = [features(Composition(f), kind, tokens) for f, kind, tokens in rows]
    return np.array(x).reshape(len(x), -1), kept_stable(table, threshold).to_numpy(float)


def target_screen_data(
    cfg: LoopConfig, table: pd.DataFrame
) -> tuple[list[str], np.ndarray, np.ndarray]:
    """Formulas, 0/1 hit labels and weights for a property screen: the target's bundled
    training rows (weight 1), then the campaign's labelled crystals (``labelled_weight``
    each, as in the fine-tunes).

    A campaign's crystal is judged as the campaign is: a hit when it is kept stable
    (``kept_stable``) and its property hits the target, a miss when it hits not, is not
    stable (failed, unconverged, above ``ehull_threshold``, phonon-unstable) or its value
    is not usable (``usable_values``: a metal's epsilon), left out when it is stable but its
    property was not computed. So from round 1 on the screen learns
    which chemistries give stable hits here, not only which give hits: the bundled rows
    are Materials Project ground states, while most of a round's high-epsilon crystals
    came out unstable (README, dielectric campaign)."""
    from crysvcd.loop.figures import _col, kept_stable, property_hits

    target = cfg.target_spec()
    bundled = target.bundled()
    bundled = bundled[(bundled["split"] == "train") & bundled["target_label"].notna()]
    formulas, hits = list(bundled["cell_formula"]), list(bundled["target_label"])
    weights = [1.0] * len(hits)
    if len(table):
        labelled = (
            _col(table, "status", "").isin(["ok", "failed", "invalid"]).to_numpy()
            & (_col(table, "cell_formula", "").fillna("") != "").to_numpy()
        )
        stable = kept_stable(table, cfg.ehull_threshold).to_numpy()
        y = np.where(stable, property_hits(table, target).to_numpy(), 0.0)
        keep = labelled & ~np.isnan(y)
        formulas += list(table["cell_formula"][keep])
        hits += list(y[keep])
        weights += [float(cfg.labelled_weight)] * int(keep.sum())
    return formulas, np.asarray(hits, dtype=float), np.asarray(weights)


def fit_target_screen(cfg: LoopConfig, table: pd.DataFrame):
    """A property target's screen on ``target_screen_data``: composition descriptors plus
    the atom fraction of every element in those data."""
    from crysvcd.evaluate.screen import COMPOSITION_FEATURES, Screen, element_features, features

    formulas, y, weight = target_screen_data(cfg, table)
    names = COMPOSITION_FEATURES + element_features(formulas)
    x = np.stack([features(Composition(f), "ionic", "", names) for f in formulas])
    return Screen.fit(x, y, names, cfg.target_spec().condition, weight=weight)


def fit_screen(cfg: LoopConfig, r: int, out_dir: Path, store) -> Path | None:
    """``RUN/round_RR/screen.json``: the screen of round ``r``, fitted once (a resumed round
    reuses it, so its plan is the one it started with). None (no screen this round) when
    ``screen_factor`` is 1 or the labels so far cannot fit one.

    Stability: fitted on every crystal of the rounds before ``r`` (``screen_data``), from
    round 1 on. A property target: fitted on the target's bundled labels plus the
    campaign's so far (``target_screen_data``), from round 0 on, with element fractions
    among its descriptors (``evaluate.screen``)."""
    from crysvcd.evaluate.screen import Screen
    from crysvcd.loop.figures import structure_table

    prop = cfg.target != "stability"
    if cfg.screen_factor == 1 or not cfg.valence_masks or (r == 0 and not prop):
        return None
    if cfg.recipe == "paper":  # every bundled row a hit: nothing to tell a miss by
        return None
    path = out_dir / f"round_{r:02d}" / "screen.json"
    if path.exists():
        return path
    table = structure_table(out_dir, store) if r > 0 else pd.DataFrame()
    table = table[table["round"] < r] if len(table) else table
    try:
        screen = (
            fit_target_screen(cfg, table)
            if prop
            else Screen.fit(*screen_data(table, cfg.ehull_threshold))
        )
    except ValueError as exc:  # too few labels, or all of one kind: this round goes unscreened
        log.warning("round %d: no screen (%s)", r, exc)
        return None
    path.parent.mkdir(parents=True, exist_ok=True)
    screen.save(path)
    log.info("round %d: %s screen fitted on %d crystals (%d hits)", r, screen.label,
             screen.n_train, screen.n_hits)  # fmt: skip
    return path


def generate_and_label(cfg: LoopConfig, r: int, out_dir: Path, store, client, models, progress):
    from crysvcd.pipeline import generate

    gen_cfg = generate_config(cfg, r, models, fit_screen(cfg, r, out_dir, store))
    gen_dir = out_dir / f"round_{r:02d}" / "generated"
    gen_dir.parent.mkdir(parents=True, exist_ok=True)
    extra = {
        "round": r,
        "seed": gen_cfg.seed,
        **{k: str(v or "shipped") for k, v in models.items()},
    }
    labeller = Labeller(client, store, cfg, extra)

    def on_structure(i: int, structure: Structure, row: dict) -> None:
        labeller.offer(f"r{r:02d}/{Path(row['file']).stem}", structure)

    resume = gen_dir.exists() and any(gen_dir.iterdir())
    generate(gen_cfg, gen_dir, progress=progress, resume=resume, on_structure=on_structure)
    # structures written by an earlier, interrupted run of this round: label what they lack
    for key, structure in load_structures(gen_dir):
        labeller.offer(f"r{r:02d}/{key}", structure)
    labeller.collect(block=True)
    if cfg.target == "kappa":
        label_kappa(cfg, r, store, client, extra)


def kappa_choice(cfg: LoopConfig, r: int, store) -> tuple[list[str], dict[str, str]]:
    """The crystals of round ``r`` that still need phono3py (the ``kappa_per_round`` best by
    Slack's estimate, minus those done) and, for every other relaxed crystal, why not."""
    high = cfg.direction == "high"
    settings = evaluate_config(cfg, phonons=True, kappa=True)
    scored, skipped, done = [], {}, set()
    for key, row in store.rows().items():
        if row.get("round") != r or row.get("status") != "ok":
            continue
        # phono3py ran on it with these settings (a value, an error or its budget's skip);
        # under other settings (a relabelled campaign) or a larger budget it runs again
        if settings.reuses("kappa", row):
            done.add(key)
        ehull, slack = row.get("e_above_hull"), row.get("kappa_slack")
        if not row.get("converged"):
            skipped[key] = "screen: relaxation not converged (Ehull not trusted)"
        elif not (ehull is not None and ehull <= cfg.ehull_threshold):
            skipped[key] = f"screen: not stable (Ehull {ehull}, threshold {cfg.ehull_threshold})"
        elif not row.get("phonon_stable"):
            why = row.get("phonon_skipped") or row.get("phonon_error") or "imaginary modes"
            skipped[key] = f"screen: no stable phonons ({why})"
        elif slack is None or not math.isfinite(slack):
            skipped[key] = "screen: no harmonic estimate"
        else:
            scored.append((-slack if high else slack, key))
    budget = cfg.kappa_per_round
    ranked = [key for _, key in sorted(scored)]
    for rank, key in enumerate(ranked[budget:], budget + 1):
        skipped[key] = f"screen: Slack estimate ranked {rank}, budget {budget} per round"
    chosen = [key for key in ranked[:budget] if key not in done]
    return chosen, {k: v for k, v in skipped.items() if k not in done}


def label_kappa(cfg: LoopConfig, r: int, store, client, extra: dict) -> None:
    """phono3py on the screened crystals of round ``r``; every skip stored with its reason."""
    chosen, skipped = kappa_choice(cfg, r, store)
    rows = store.rows()
    for key, reason in skipped.items():
        if rows[key].get("kappa_skipped") != reason:
            store.update(key, kappa_skipped=reason)
    log.info("round %d: kappa for %d, %d skipped by the screen", r, len(chosen), len(skipped))
    labeller = Labeller(client, store, cfg, extra, kappa=True)
    for key in chosen:
        labeller.offer(key, AseAtomsAdaptor.get_structure(rows[key].toatoms()))
    labeller.collect(block=True)


def finetune(cfg: LoopConfig, folder: Path, seed: int, store, models: dict) -> dict:
    """Fine-tune every stage on the pool (and the target's bundled labels) and the labels so
    far, into ``folder``; returns the new checkpoints."""
    from crysvcd import checkpoints
    from crysvcd.config import Stage1Config, Stage2Config
    from crysvcd.loop.data import finetune_frame, labelled_frame, pool_frame
    from crysvcd.stage1 import train as stage1
    from crysvcd.stage2 import train as stage2

    target = cfg.target_spec()
    labelled = labelled_frame(store, cfg.ehull_threshold, target)
    pool = pool_frame(cfg.ehull_threshold, target)
    n_stable = int(labelled["stable_label"].sum()) if len(labelled) else 0
    log.info(
        "fine-tuning on %d labelled crystals (%d stable) and the pool", len(labelled), n_stable
    )
    prop = target.spec
    new = dict(models)
    if cfg.finetune_stage1:
        frame = finetune_frame(pool, labelled, cfg.labelled_weight)
        shares = {"ionic": cfg.ionic_fraction, "alloy": 1 - cfg.ionic_fraction}
        for kind in [k for k, share in shares.items() if share > 0]:  # models the loop uses
            name = f"stage1_{kind}"
            init = models[name] or checkpoints.shipped(f"stage1-{kind}")
            fit_cfg = replace(stage1.FIT, max_epochs=cfg.stage1_epochs, patience=None,
                              lr=cfg.stage1_lr, min_lr=cfg.stage1_lr / 10, warmup_steps=50,
                              device=cfg.train_device, precision=cfg.precision,
                              seed=seed)  # fmt: skip
            s1cfg = checkpoints.tuned_config(init, Stage1Config, "Stage I", [prop])
            result = stage1.train(s1cfg, folder / name, fit_cfg, data=frame, init=init)
            new[name] = str(result.best_path)
    if cfg.finetune_stage2:
        init = models["stage2"] or checkpoints.shipped("stage2")
        s2cfg = checkpoints.tuned_config(init, Stage2Config, "Stage II", [prop])
        with_structure = pool[pool["cif"].notna()]  # AGL kappa rows are compositions only
        frame = finetune_frame(
            with_structure, labelled, cfg.labelled_weight, cfg.stage2_pool_sample, seed
        )
        fit_cfg = replace(stage2.FIT, max_epochs=cfg.stage2_epochs, eval_every=1, snapshots=False,
                          lr=cfg.stage2_lr, min_lr=cfg.stage2_lr / 10, seed=seed,
                          device=cfg.train_device, precision=cfg.precision)  # fmt: skip
        result = stage2.train(s2cfg, folder / "stage2", fit_cfg, data=frame, init=init)
        new["stage2"] = str(result.best_path)
    return new


def run_loop(
    cfg: LoopConfig, out_dir: str | Path, progress: bool = True, client=None
) -> pd.DataFrame:
    """Run (or resume) the loop in ``out_dir``; returns the table of shares per round."""
    from crysvcd.evaluate.cluster import close_client, start_client
    from crysvcd.loop.figures import write_figures

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise ValueError(f"--out {out_dir} is a file, not a folder")
    if not out_dir.parent.exists():
        raise ValueError(f"--out {out_dir}: its parent folder does not exist")
    out_dir.mkdir(exist_ok=True)
    state = LoopState(out_dir, cfg)
    store = ResultStore(out_dir / "labels.db")
    own = client is None
    if own:
        client = start_client(cfg.workers, cfg.scheduler)
        # the driver samples structures while the workers label: leave them their cores
        import torch

        torch.set_num_threads(max(1, (os.cpu_count() or 2) - cfg.workers))
    try:
        if cfg.prime and not state.data.get("primed"):
            log.info("fine-tuning on the bundled %s labels before round 0", cfg.target)
            state.set_models(0, finetune(cfg, out_dir / "prime", cfg.seed, store, state.models(0)))
            state.data["primed"] = True
            state.save()
        for r in range(cfg.rounds):
            models = state.models(r)
            if not state.done(r, "labelled"):
                log.info("round %d: generating %d crystals and labelling them", r, cfg.n)
                generate_and_label(cfg, r, out_dir, store, client, models, progress)
                state.mark(r, "labelled")
            table = write_figures(out_dir, store, cfg)
            if r + 1 < cfg.rounds and str(r + 1) not in state.data["models"]:
                log.info("round %d: fine-tuning", r)
                folder = out_dir / f"round_{r:02d}" / "finetune"
                state.set_models(r + 1, finetune(cfg, folder, cfg.seed + r, store, models))
                state.mark(r, "finetuned")
    finally:
        if own:
            close_client(client)
    return table
