"""Property campaigns (kappa, dielectric) end to end on tiny models and EMT."""

import json
import math
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ase.db import connect
from pymatgen.core import Composition, Lattice, Structure

from crysvcd.evaluate.phonons import slack_kappa
from crysvcd.loop.cli import campaign_config
from crysvcd.loop.config import LoopConfig
from crysvcd.loop.data import finetune_frame, pool_frame
from crysvcd.loop.run import kappa_choice, run_loop
from crysvcd.loop.targets import HIT_COLUMN, Target

from .test_loop import tiny_loop, tiny_models  # noqa: F401 (the fixture)


def test_targets_and_their_bundled_labels():
    high, low = Target("kappa", "high"), Target("kappa", "low")
    # HiBoFL's 90th and 10th percentiles, W/mK
    assert 10 < high.threshold() < 12 and 0.1 < low.threshold() < 0.2
    assert list(high.hit([20.0, 1.0, float("nan")])[:2]) == [1.0, 0.0]
    assert math.isnan(high.hit([float("nan")])[0])
    assert list(low.hit([0.1, 1.0])) == [1.0, 0.0]
    bundled = high.bundled()
    # each source's own top decile is a hit (AGL and HiBoFL are on different scales)
    shares = bundled.groupby("source")[HIT_COLUMN].mean()
    assert set(shares.index) == {"aflow_agl", "hibofl"} and np.allclose(shares, 0.1, atol=0.01)
    assert bundled.loc[bundled.source == "aflow_agl", "cif"].isna().all()
    diel = Target("dielectric", value=50.0)
    assert diel.condition == "dielectric_high" and diel.spec == "dielectric_high=target_label>0.5"
    assert 0.02 < diel.bundled()[HIT_COLUMN].mean() < 0.05
    # the pool joins with the condition unknown, and a pool sample keeps every labelled row
    pool = pool_frame(0.1, diel)
    assert pool[HIT_COLUMN].notna().sum() == len(diel.bundled())
    frame = finetune_frame(pool, pd.DataFrame(), 1, pool_sample=10)
    assert len(frame) == len(diel.bundled()) + 10


def test_the_papers_kappa_subset_by_its_rules():
    from crysvcd.datasets import training_pool
    from crysvcd.loop.targets import paper_kappa_subset

    pool = training_pool()
    picks = ["SiC", "BP", "BeO", "BN", "LiBr", "CoO", "O2", "KMgAs"]
    rows = pool[pool["pretty_formula"].isin(picks)].drop_duplicates("pretty_formula")
    kept = set(rows["pretty_formula"][paper_kappa_subset(rows)])
    # covalent, light, gapped 3D networks pass; layered h-BN, molecular O2, an ionic
    # halide, a transition-metal oxide and an alkali compound do not
    assert {"SiC", "BP", "BeO"} <= kept and not kept & {"BN", "LiBr", "CoO", "O2", "KMgAs"}
    bundled = Target("kappa", "high", recipe="paper").bundled()
    assert (bundled[HIT_COLUMN] == 1).all() and bundled["cif"].notna().all()
    assert "SiC" in set(bundled["pretty_formula"]) and bundled["material_id"].is_unique
    # the few dozen crystals weigh about 1,000 rows in a fine-tune, beside a pool sample
    frame = finetune_frame(pool_frame(0.1, Target("kappa", "high", recipe="paper")),
                           pd.DataFrame(), 10, pool_sample=50)  # fmt: skip
    assert (frame[HIT_COLUMN] == 1).sum() >= 1000 and frame[HIT_COLUMN].isna().sum() == 50
    assert "copies" not in frame


def test_slack_estimate_ranks_stiff_light_crystals_first():
    def fcc(a, species, second):
        lattice = Lattice([[0, a / 2, a / 2], [a / 2, 0, a / 2], [a / 2, a / 2, 0]])
        return Structure(lattice, species, [[0, 0, 0], second])

    si = fcc(5.43, ["Si", "Si"], [0.25, 0.25, 0.25])
    pbte = fcc(6.46, ["Pb", "Te"], [0.5, 0.5, 0.5])
    # Si's acoustic branches reach ~12 THz, PbTe's ~3 THz; with one Grueneisen parameter
    # for all, Slack's formula gives ~70 W/mK for Si (PBE ~140) and a few for PbTe (~2)
    k_si, k_pbte = slack_kappa(si, 12.0, 2), slack_kappa(pbte, 3.0, 2)
    assert 30 < k_si < 300 and k_pbte < k_si / 5
    assert slack_kappa(si * (2, 1, 1), 12.0, 2) == pytest.approx(k_si)  # any cell of it
    assert math.isnan(slack_kappa(si, float("nan"), 2))


@pytest.mark.parametrize(
    "prop, goal, message",
    [
        ("kappa", "medium", "--target for kappa is high or low"),
        ("dielectric", "big", "--target for dielectric is a number"),
        ("dielectric", "-3", "target_value must be > 0"),
    ],
)
def test_bad_targets_fail_before_any_work(prop, goal, message, tmp_path):
    from crysvcd.cli import main

    with pytest.raises(ValueError, match=message):
        campaign_config(prop, goal)
    assert main(["campaign", prop, "--target", goal, "--out", str(tmp_path / "run")]) == 2
    assert not (tmp_path / "run").exists()


def test_settings_a_target_cannot_run_with():
    with pytest.raises(ValueError, match="phonons must be on"):
        LoopConfig(target="kappa", phonons=False)
    with pytest.raises(ValueError, match="prime needs a property target"):
        LoopConfig(prime=True)
    with pytest.raises(ValueError, match="has no direction 'low'"):
        LoopConfig(target="dielectric", direction="low")
    with pytest.raises(ValueError, match="unknown recipe 'expert'"):
        campaign_config("kappa", "high", recipe="expert")
    with pytest.raises(ValueError, match="for the kappa high target only"):
        campaign_config("kappa", "low", recipe="paper")
    cfg = campaign_config("dielectric", "50", n=3)
    assert (cfg.prime, cfg.ehull_threshold, cfg.target_value, cfg.n) == (True, 0.1, 50.0, 3)


def test_campaign_defaults_yield_to_the_file_and_the_file_to_flags(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text("prime = false\nn = 30\nehull_threshold = 0.05\n")
    cfg = campaign_config("dielectric", "50", toml, n=7, prime=None)
    assert (cfg.prime, cfg.n, cfg.ehull_threshold, cfg.phonons) == (False, 7, 0.05, False)
    assert campaign_config("dielectric", "50", toml, prime=True).prime


def _campaign(models, **kw) -> LoopConfig:
    return tiny_loop(models, **{"rounds": 1, "n": 4, "prime": True, "stage2_pool_sample": 10, **kw})


def test_dielectric_campaign_runs_end_to_end(tiny_models, tmp_path, dask_client):  # noqa: F811
    cfg = _campaign(tiny_models, target="dielectric", target_value=50.0, phonons=False,
                    ehull_threshold=1.0)  # fmt: skip
    out = tmp_path / "run"
    shares = run_loop(cfg, out, progress=False, client=dask_client)
    rows = list(connect(str(out / "labels.db")).select())
    assert len(rows) == 4
    relaxed = [r for r in rows if r.get("status") == "ok"]
    # every relaxed crystal got the surrogate's label, or the reason it has none
    assert relaxed and all("dielectric_total" in r or "dielectric_error" in r for r in relaxed)
    # round 0 came from the primed models, conditioned on the target
    assert (out / "prime/stage2/best.pt").exists()
    run0 = (out / "round_00/generated/run.json").read_text()
    assert "dielectric_high=1" in run0 and "prime" in run0
    # round 0's formulas were screened for the target, by a screen fitted on the bundled
    # DFPT labels (element fractions among its descriptors)
    screen = json.loads((out / "round_00/screen.json").read_text())
    assert screen["label"] == "dielectric_high" and "frac:Ti" in screen["features"]
    assert screen["n_train"] > 2000 and 0 < screen["n_hits"] < 200
    summary = pd.read_csv(out / "round_00/generated/summary.csv")
    assert summary["screen_score"].notna().all()
    assert "target_hit" in shares
    cand = pd.read_csv(out / "candidates.csv")
    assert len(cand) == len(relaxed) and list(cand["rank"]) == list(range(1, len(cand) + 1))
    assert (out / cand["cif"].iloc[0]).exists()
    assert (out / "figures/dielectric.png").exists()


def test_kappa_campaign_screens_then_labels_the_best(tiny_models, tmp_path, dask_client,  # noqa: F811
                                                     monkeypatch):  # fmt: skip
    # EMT energies are far from the MP hull: count every converged crystal as on it, so that
    # the screen has candidates (the workers are threads of this process)
    monkeypatch.setattr("crysvcd.evaluate.labels.e_above_hull", lambda comp, ef: 0.0)
    # not primed (the dielectric test primes): the tiny models then stay valid crystals
    cfg = _campaign(tiny_models, target="kappa", direction="high", n=6, relax_steps=200,
                    prime=False, kappa_per_round=1, kappa_budget=120.0,
                    kappa_mlip=None)  # fmt: skip
    out = tmp_path / "run"
    run_loop(cfg, out, progress=False, client=dask_client)
    rows = {r.key: r for r in connect(str(out / "labels.db")).select()}
    screened = [r for r in rows.values() if r.get("kappa_slack") is not None]
    # phono3py ran (a value, an error or its own budget's skip) on one crystal only: the
    # best phonon-stable one by the screen
    with_kappa = [r for r in rows.values() if "kappa_settings" in r]
    assert len(screened) >= 2 and len(with_kappa) == 1
    best = max((r for r in screened if r.get("phonon_stable")), key=lambda r: r.kappa_slack)
    assert with_kappa[0].key == best.key
    assert "kappa" in with_kappa[0] or not with_kappa[0].kappa_skipped.startswith("screen:")
    # every other relaxed crystal says why it got no kappa
    for r in rows.values():
        if r.get("status") == "ok" and r not in with_kappa:
            assert r.get("kappa_skipped", "").startswith("screen:")
    assert kappa_choice(cfg, 0, _store(out))[0] == []  # nothing left to compute
    # under other phono3py settings the same crystal is chosen again, to be recomputed
    other = replace(cfg, kappa_fc3_cutoff=3.0)
    assert kappa_choice(other, 0, _store(out))[0] == [best.key]
    cand = pd.read_csv(out / "candidates.csv")
    assert cand["flags"].notna().any() and (cand["kappa_surrogate"] > 0).all()


def test_kappa_surrogate_ranks_and_refuses():
    from crysvcd.evaluate.kappa_surrogate import KappaSurrogate

    surrogate = KappaSurrogate.load()  # the shipped one
    k = surrogate.predict(["C", "BN", "PbTe", "CsPbI3"])
    assert k[0] > k[2] and k[1] > k[2] > k[3] > 0  # diamond, BN >> PbTe > a halide perovskite
    assert surrogate.cut(0.1, "high") > surrogate.cut(0.5, "high") > surrogate.cut(0.1, "low")
    with pytest.raises(ValueError, match="share in"):
        surrogate.cut(0.0, "high")
    with pytest.raises(ValueError, match="not a kappa surrogate"):
        KappaSurrogate.load(Path(__file__))


def test_kappa_prescreen_spends_phonons_on_the_target_side(tmp_path, dask_client, monkeypatch):
    from ase.build import bulk
    from pymatgen.io.ase import AseAtomsAdaptor

    from crysvcd.evaluate.kappa_surrogate import KappaSurrogate
    from crysvcd.loop.run import Labeller

    monkeypatch.setattr("crysvcd.evaluate.labels.e_above_hull", lambda comp, ef: 0.0)
    cfg = LoopConfig(target="kappa", direction="high", kappa_prescreen=0.5, mlip="emt",
                     kappa_mlip=None, fmax=0.05, relax_steps=100, phonon_supercell=7.0)  # fmt: skip
    surrogate = KappaSurrogate.load()
    assert surrogate.predict(["Pt"])[0] > surrogate.cut(0.5, "high") > surrogate.predict(["Cu"])[0]
    store = _store(tmp_path)
    labeller = Labeller(dask_client, store, cfg, {"round": 0})
    for name, a in (("Pt", 3.92), ("Cu", 3.61)):
        labeller.offer(name, AseAtomsAdaptor.get_structure(bulk(name, "fcc", a=a)))
    labeller.collect(block=True)
    rows = store.rows()
    assert "phonons_settings" in rows["Pt"] and "phonon_skipped" not in rows["Pt"]
    assert rows["Cu"].phonon_skipped.startswith("kappa surrogate")
    assert "phonons_settings" not in rows["Cu"] and rows["Cu"].get("status") == "ok"
    assert rows["Pt"].kappa_surrogate == pytest.approx(surrogate.predict(["Pt"])[0])
    with pytest.raises(ValueError, match="kappa_prescreen"):
        LoopConfig(target="kappa", kappa_prescreen=0.0)


def _store(out):
    from crysvcd.evaluate.store import ResultStore

    return ResultStore(out / "labels.db")


def test_a_property_screen_learns_from_the_campaigns_labels_too():
    from crysvcd.loop.run import fit_target_screen, target_screen_data

    cfg = LoopConfig(target="dielectric", target_value=50.0, phonons=False, ehull_threshold=0.1)
    formulas, y, w = target_screen_data(cfg, pd.DataFrame())
    bundled = Target("dielectric", value=50.0).bundled()
    assert len(formulas) == int((bundled["split"] == "train").sum()) and set(y) == {0.0, 1.0}
    assert set(w) == {1.0}
    # the campaign's crystals join as the campaign judges them: a hit only when stable; an
    # unstable one is a miss whatever its value; a stable one without a value stays out
    # (and a stable metal's epsilon is not usable: a miss too)
    table = pd.DataFrame({
        "cell_formula": ["Sr1 Ti1 O3", "Na1 Cl1", "Mg1 O1", "", "Ba1 Ti1 O3", "Pb1 Ti1 O3",
                         "Zr1 C1"],
        "status": ["ok", "ok", "ok", "ok", "ok", "failed", "ok"],
        "converged": [True, True, True, True, True, False, True],
        "e_above_hull": [0.02, 0.0, 0.01, 0.0, 0.4, np.nan, 0.01],
        "dielectric_total": [120.0, 5.0, np.nan, 80.0, 300.0, np.nan, 116.7],
    })  # fmt: skip
    more, y2, w2 = target_screen_data(cfg, table)
    assert more[len(formulas) :] == ["Sr1 Ti1 O3", "Na1 Cl1", "Ba1 Ti1 O3", "Pb1 Ti1 O3",
                                     "Zr1 C1"]  # fmt: skip
    assert list(y2[len(y) :]) == [1, 0, 0, 0, 0]
    assert list(w2[len(w) :]) == [cfg.labelled_weight] * 5
    # weighted ten times, an unstable BaTiO3 of epsilon 300 pulls its formula's score down
    base = fit_target_screen(cfg, pd.DataFrame())
    fed = fit_target_screen(cfg, table.iloc[[4]])
    x = base.descriptors(Composition("BaTiO3"), "ionic")
    assert fed.score(fed.descriptors(Composition("BaTiO3"), "ionic"))[0] < base.score(x)[0]


def test_the_papers_recipe_runs_without_a_property_screen(tmp_path):
    from crysvcd.loop.run import fit_screen

    # every bundled row of the paper's subset is a hit: nothing to fit a screen on
    cfg = campaign_config("kappa", "high", recipe="paper", screen_factor=5)
    assert fit_screen(cfg, 0, tmp_path, store=None) is None
    assert not (tmp_path / "round_00").exists()


def test_candidates_flag_a_kappa_with_imaginary_modes(tmp_path):
    from ase.build import bulk

    from crysvcd.evaluate.store import ResultStore
    from crysvcd.loop.figures import write_candidates

    store = ResultStore(tmp_path / "labels.db")
    labels = {"status": "ok", "converged": True, "e_above_hull": 0.01, "round": 0,
              "phonon_stable": True}  # fmt: skip
    store.write("r00/a", bulk("Si"), **labels, kappa=80.0, kappa_reliable=True,
                kappa_min_frequency=0.0)  # fmt: skip
    store.write("r00/b", bulk("Ge"), **labels, kappa=0.004, kappa_reliable=False,
                kappa_min_frequency=-0.33)  # fmt: skip
    table = store.frame()
    write_candidates(tmp_path, store, table, Target("kappa", "low"))
    cand = pd.read_csv(tmp_path / "candidates.csv").set_index("formula")
    # the value is not counted, and the table says why and what was computed
    assert pd.isna(cand.loc["Ge", "value"]) and not cand.loc["Ge", "reliable"]
    assert "imaginary modes" in cand.loc["Ge", "flags"] and "-0.33 THz" in cand.loc["Ge", "flags"]
    assert "0.004 W/mK" in cand.loc["Ge", "flags"]
    assert cand.loc["Si", "value"] == 80.0 and pd.isna(cand.loc["Si", "flags"])


def test_a_loop_without_fine_tunes_keeps_generating_unconditioned():
    from crysvcd.loop.run import STAGES, generate_config

    models = dict.fromkeys(STAGES)
    screen_only = LoopConfig(target="dielectric", phonons=False, finetune_stage1=False,
                             finetune_stage2=False)  # fmt: skip
    # the shipped models were never taught "dielectric_high": round 1 must not ask for it
    assert generate_config(screen_only, 1, models).conditions == []
    tuned = replace(screen_only, finetune_stage2=True)
    assert generate_config(tuned, 1, models).conditions == ["dielectric_high=1"]
    assert generate_config(tuned, 0, models).conditions == []


def test_a_campaign_started_from_tuned_models_asks_for_their_condition_until_it_tunes_its_own():
    from crysvcd.loop.run import STAGES, generate_config

    models = dict.fromkeys(STAGES)
    cfg = LoopConfig(target="dielectric", phonons=False, stage2="stability_run/stage2/best.pt",
                     start_condition="stable=1", guidance=1.5)  # fmt: skip
    first = generate_config(cfg, 0, models)
    assert first.conditions == ["stable=1"] and first.guidance == 1.5
    # from round 1 the models were fine-tuned on the campaign's own label: ask for that
    assert generate_config(cfg, 1, models).conditions == ["dielectric_high=1"]
    screen_only = replace(cfg, finetune_stage1=False, finetune_stage2=False)
    assert generate_config(screen_only, 2, models).conditions == ["stable=1"]
    assert generate_config(replace(cfg, start_condition=None), 0, models).guidance is None


def test_the_fine_tunes_judge_a_hit_as_the_screen_does(tmp_path):
    """A metal's epsilon and a kappa with imaginary modes are misses in the fine-tune labels
    as in the property screen (figures.property_hits); an unstable crystal carries none."""
    from ase.build import bulk

    from crysvcd.evaluate.store import ResultStore
    from crysvcd.loop.data import labelled_frame

    store = ResultStore(tmp_path / "labels.db")
    ok = {"status": "ok", "converged": True, "round": 0, "e_above_hull": 0.0}
    salt = bulk("NaCl", "rocksalt", a=5.64)
    store.write("r00/salt", salt, **ok, dielectric_total=60.0)
    store.write("r00/metal", bulk("Cu"), **ok, dielectric_total=80.0)  # MP: Cu has no gap
    store.write("r00/low", salt, **ok, dielectric_total=5.0)
    store.write("r00/none", salt, **ok)  # epsilon not computed: no label
    store.write("r00/unstable", salt, **{**ok, "e_above_hull": 0.5}, dielectric_total=60.0)
    hit = labelled_frame(store, 0.1, Target("dielectric", value=50.0)).set_index("material_id")
    assert hit[HIT_COLUMN].fillna(-1).to_dict() == {
        "r00/salt": 1.0, "r00/metal": 0.0, "r00/low": 0.0, "r00/none": -1, "r00/unstable": -1,
    }  # fmt: skip
    store = ResultStore(tmp_path / "kappa.db")
    store.write("r00/stiff", salt, **ok, kappa=40.0, kappa_reliable=True)
    store.write("r00/soft", salt, **ok, kappa=40.0, kappa_reliable=False)
    hit = labelled_frame(store, 0.1, Target("kappa", "high")).set_index("material_id")
    assert hit[HIT_COLUMN].to_dict() == {"r00/stiff": 1.0, "r00/soft": 0.0}
