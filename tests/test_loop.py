"""The learning loop end to end on tiny models and the EMT calculator."""

from dataclasses import replace

import pandas as pd
import pytest
from ase.db import connect
from pymatgen.core import Composition

from crysvcd.config import FitConfig, Stage1Config, Stage2Config
from crysvcd.datasets import training_pool
from crysvcd.loop.config import LoopConfig
from crysvcd.loop.run import Labeller, LoopState, run_loop

from .conftest import TINY_FIT2, TINY_STAGE2

EMT = {"Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt"}


@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    """A tiny alloy Stage I and Stage II trained on pool alloys of EMT's elements."""
    from crysvcd.stage1.train import train as train1
    from crysvcd.stage2.train import train as train2

    pool = training_pool()
    elements = [{el.symbol for el in Composition(f).elements} for f in pool["cell_formula"]]
    emt = pool[[e <= EMT for e in elements]]
    emt = emt[emt["nsites"] <= 6].reset_index(drop=True)
    assert len(emt) >= 20
    out = tmp_path_factory.mktemp("loop_models")
    s1 = train1(Stage1Config(kind="alloy", n_layer=1, n_head=2, n_embd=32, permutations=1),
                out / "s1", FitConfig(batch_size=16, max_epochs=80, lr=3e-3), data=emt)  # fmt: skip
    # long enough (about 8 s) to learn cell sizes, so that most samples are valid crystals
    fit2 = replace(TINY_FIT2, batch_size=8, lr=3e-3, max_epochs=300, eval_every=50)
    s2 = train2(Stage2Config(**TINY_STAGE2), out / "s2", fit2, data=emt)
    return str(s1.best_path), str(s2.best_path)


def tiny_loop(models, **kw) -> LoopConfig:
    s1, s2 = models
    base = dict(
        rounds=2, n=5, ionic_fraction=0.0, diffusion_steps=20, mlip="emt", fmax=0.2,
        relax_steps=20, phonons=True, phonon_ehull_max=1.0, phonon_supercell=4.0,
        stage1_epochs=1, stage2_epochs=1, stage2_pool_sample=20, labelled_weight=2,
        stage1_alloy=s1, stage2=s2, train_device="cpu",
    )  # fmt: skip
    return LoopConfig(**{**base, **kw})


def test_two_rounds_finish_and_resume_without_duplicates(tiny_models, tmp_path, dask_client,
                                                         monkeypatch):  # fmt: skip
    cfg = tiny_loop(tiny_models, screen_factor=3)
    out = tmp_path / "run"
    # the driver dies while round 0 is being generated and labelled ...
    real_offer, calls = Labeller.offer, []

    def crash_on_fourth(self, key, structure):
        calls.append(key)
        if len(calls) == 4:
            raise KeyboardInterrupt("simulated crash")
        real_offer(self, key, structure)

    monkeypatch.setattr(Labeller, "offer", crash_on_fourth)
    with pytest.raises(KeyboardInterrupt):
        run_loop(cfg, out, progress=False, client=dask_client)
    monkeypatch.setattr(Labeller, "offer", real_offer)
    before = {row.key for row in connect(str(out / "labels.db")).select()}
    assert len(before) <= 3
    # ... and the same call resumes it
    shares = run_loop(cfg, out, progress=False, client=dask_client)
    keys = [row.key for row in connect(str(out / "labels.db")).select()]
    assert len(keys) == len(set(keys)) == 10  # every crystal once, none twice
    assert before <= set(keys)
    assert list(shares["round"]) == [0, 1] and list(shares["generated"]) == [5, 5]
    table = pd.read_csv(out / "structures.csv")
    assert set(table["round"]) == {0, 1}
    rows = list(connect(str(out / "labels.db")).select())
    assert {r.get("round") for r in rows} == {0, 1}
    assert all(r.get("stage2") for r in rows)
    # round 1 used the fine-tuned models, conditioned on stable=1
    assert (out / "round_00/finetune/stage2/best.pt").exists()
    assert (out / "figures/ehull.png").exists() and (out / "shares.csv").exists()
    run1 = (out / "round_01/generated/run.json").read_text()
    assert "stable=1" in run1 and "round_00/finetune" in run1
    # five labels cannot fit a stability screen: round 1 went on unscreened
    assert not (out / "round_01/screen.json").exists()
    # a finished run resumed again does nothing new
    again = run_loop(cfg, out, progress=False, client=dask_client)
    assert len(list(connect(str(out / "labels.db")).select())) == 10
    pd.testing.assert_frame_equal(again, shares)
    # a finished campaign may go on with more rounds, not with other settings
    assert LoopState(out, replace(cfg, rounds=3)).data["config"]["rounds"] == 3
    with pytest.raises(ValueError, match=r"other settings \(n\)"):
        LoopState(out, replace(cfg, n=6))
    with pytest.raises(ValueError, match=r"other settings \(rounds\)"):
        LoopState(out, replace(cfg, rounds=1))
    # how labels are computed (workers, grouping, device) may change on resume
    LoopState(out, replace(cfg, workers=cfg.workers + 1, relax_batch=1, label_device="auto"))


def test_a_labelling_failure_is_recorded_and_the_round_goes_on(tiny_models, tmp_path, dask_client):
    cfg = tiny_loop(tiny_models, rounds=1, n=4, timeout=1e-9)  # every relaxation times out
    shares = run_loop(cfg, tmp_path / "run", progress=False, client=dask_client)
    rows = list(connect(str(tmp_path / "run" / "labels.db")).select())
    assert len(rows) == 4
    assert all(r.get("status") in ("failed", "invalid") for r in rows)
    assert any("timeout" in (r.get("error") or "") for r in rows)
    assert shares["ehull_below_0.1"].iloc[0] == 0.0


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"n": 0}, "n must be a positive integer"),
        ({"rounds": -1}, "rounds must be a positive integer"),
        ({"target": "hardness"}, "unknown label 'hardness'"),
        ({"ehull_threshold": 5.0}, "ehull_threshold must be in"),
        ({"phonon_share": 1.5}, "phonon_share must be in"),
        ({"mlip": "vasp"}, "unknown MLIP"),
        ({"precision": "fp16"}, "precision must be one of"),
        ({"start_condition": "stable", "stage2": "x.pt"}, "start_condition: bad condition"),
        ({"start_condition": "stable=yes", "stage2": "x.pt"}, "start_condition: .* not a number"),
        ({"start_condition": "stable=1"}, "start_condition needs starting checkpoints"),
        ({"screen_usable": True}, "screen_usable has composition rules for the dielectric"),
    ],
)
def test_bad_settings_fail_before_any_work(bad, message, tmp_path):
    from crysvcd.cli import main

    with pytest.raises(ValueError, match=message):
        LoopConfig(**bad)
    flags = [f"--{k.replace('_', '-')}" + ("" if v is True else f"={v}") for k, v in bad.items()]
    assert main(["loop", "--out", str(tmp_path / "run"), *flags]) == 2
    assert not (tmp_path / "run").exists()


def test_config_file_and_flags(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('rounds = 4\nn = 50\nmlip = "emt"\n')
    cfg = LoopConfig.load(toml, n=7)
    assert (cfg.rounds, cfg.n, cfg.mlip) == (4, 7, "emt")
    toml.write_text("roundz = 4\n")
    with pytest.raises(ValueError, match="unknown loop setting"):
        LoopConfig.load(toml)
    # TOML has no null: "none" sets an optional setting to None, from a file or a flag
    toml.write_text('kappa_fc3_cutoff = "none"\n')
    assert LoopConfig.load(toml).kappa_fc3_cutoff is None
    assert LoopConfig().kappa_fc3_cutoff == 4.5


def test_optional_setting_none_from_a_flag(tmp_path, monkeypatch):
    from crysvcd.cli import main
    from crysvcd.loop import cli

    seen = []  # the settings each command would run with
    monkeypatch.setattr(cli, "_run", lambda cfg, args: seen.append(cfg) or 0)
    for flag in ("none", "3.5", "NONE"):
        assert main(["loop", "--out", str(tmp_path / "run"), "--kappa-fc3-cutoff", flag]) == 0
    assert [c.kappa_fc3_cutoff for c in seen] == [None, 3.5, None]
    with pytest.raises(SystemExit):  # argparse names the flag and the bad value
        main(["loop", "--out", str(tmp_path / "run"), "--kappa-fc3-cutoff", "far"])


def test_the_stable_label_counts_imaginary_modes_where_phonons_ran(tmp_path):
    from ase.build import bulk

    from crysvcd.evaluate.store import ResultStore
    from crysvcd.loop.data import LABEL_COLUMN, labelled_frame

    store = ResultStore(tmp_path / "labels.db")
    labels = {"status": "ok", "converged": True, "e_above_hull": 0.01, "round": 0}
    store.write("r00/a", bulk("Si"), **labels, phonon_stable=True)
    store.write("r00/b", bulk("Ge"), **labels, phonon_stable=False)
    store.write("r00/c", bulk("Cu"), **labels)  # no phonons: Ehull alone decides
    frame = labelled_frame(store, 0.1).set_index("material_id")
    assert frame[LABEL_COLUMN].to_dict() == {"r00/a": 1.0, "r00/b": 0.0, "r00/c": 1.0}


def test_the_screen_and_the_fine_tunes_label_the_same_crystals_stable(tmp_path):
    from ase.build import bulk

    from crysvcd.evaluate.store import ResultStore
    from crysvcd.loop.data import LABEL_COLUMN, labelled_frame
    from crysvcd.loop.figures import kept_stable

    store = ResultStore(tmp_path / "labels.db")
    ok = {"status": "ok", "converged": True, "round": 0}
    store.write("r00/at", bulk("Si"), **ok, e_above_hull=0.1)  # at the threshold: stable
    store.write("r00/above", bulk("Ge"), **ok, e_above_hull=0.1001)
    store.write("r00/soft", bulk("Cu"), **ok, e_above_hull=0.0, phonon_stable=False)
    store.write("r00/loose", bulk("Al"), **{**ok, "converged": False}, e_above_hull=0.0)
    label = labelled_frame(store, 0.1).set_index("material_id")[LABEL_COLUMN]
    kept = kept_stable(store.frame().set_index("key"), 0.1)
    assert label.to_dict() == {"r00/at": 1.0, "r00/above": 0.0, "r00/soft": 0.0, "r00/loose": 0.0}
    assert kept.astype(float).to_dict() == label.to_dict()


def test_a_branch_shares_the_labelled_round_and_relabels_only_what_changed(
    tiny_models, tmp_path, dask_client, monkeypatch
):
    """tools/branch_run.py --relabel: DEST resumes SRC's round without regenerating it and
    recomputes only the step whose settings changed (phonons with another supercell)."""
    import json
    import runpy
    import sys
    from pathlib import Path

    src, dest = tmp_path / "src", tmp_path / "dest"
    cfg = tiny_loop(tiny_models, rounds=1, n=4)
    run_loop(cfg, src, progress=False, client=dask_client)
    other = replace(cfg, phonon_supercell=5.0)
    toml = tmp_path / "other.toml"
    toml.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in other.to_dict().items()
                            if v is not None))  # JSON's scalars are TOML's  # fmt: skip
    tool = Path(__file__).resolve().parents[1] / "tools" / "branch_run.py"
    argv = ["branch_run.py", str(src), str(dest), "--rounds", "1", "--relabel",
            "--config", str(toml)]  # fmt: skip
    monkeypatch.setattr(sys, "argv", argv)
    runpy.run_path(str(tool), run_name="__main__")
    before = {r.key: r for r in connect(str(src / "labels.db")).select()}
    run_loop(other, dest, progress=False, client=dask_client)
    after = {r.key: r for r in connect(str(dest / "labels.db")).select()}
    assert set(after) == set(before)  # nothing regenerated
    recomputed = 0
    for key, row in after.items():
        old = before[key]
        assert row.get("mlip_energy") == old.get("mlip_energy")  # the relaxation was copied
        assert row.get("relax_settings") == old.get("relax_settings")
        if old.get("phonons_settings") is not None:  # phonons ran again with 5 A
            assert row.get("phonons_settings") != old.get("phonons_settings")
            assert '"supercell_min_length": 5.0' in row.get("phonons_settings")
            recomputed += 1
    assert recomputed > 0
    with pytest.raises(SystemExit, match="exists"):
        runpy.run_path(str(tool), run_name="__main__")
