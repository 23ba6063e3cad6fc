import numpy as np
import pandas as pd
import pytest
from ase.build import bulk
from ase.db import connect
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from crysvcd.cli import main
from crysvcd.datasets import training_pool
from crysvcd.evaluate.hull import corrected_formation_energy, e_above_hull, unreliable
from crysvcd.evaluate.mlip import get_calculator
from crysvcd.evaluate.phonons import PhononSkipped, phonon_stability
from crysvcd.evaluate.relax import RelaxationFailed, relax
from crysvcd.evaluate.runner import evaluate
from crysvcd.evaluate.settings import EvaluateConfig, PhononSettings


def cu(a=3.8):
    return AseAtomsAdaptor.get_structure(bulk("Cu", "fcc", a=a))


def test_relax_with_a_real_calculator():
    r = relax(cu(), get_calculator("emt"), fmax=0.01, steps=200)
    assert r.converged and r.fmax < 0.01
    assert r.structure.lattice.a == pytest.approx(3.59 / 2**0.5, abs=0.02)  # EMT Cu


def test_non_convergence_is_reported():
    r = relax(cu(3.4), get_calculator("emt"), fmax=1e-6, steps=2)
    assert not r.converged and r.steps == 2


def test_bad_structures_give_clear_errors():
    s = cu()
    bad = Structure(s.lattice, ["Cu"], [[np.nan, 0, 0]])
    with pytest.raises(ValueError, match="non-finite"):
        relax(bad, get_calculator("emt"))
    with pytest.raises(ValueError, match="periodic"):
        relax("not a structure", get_calculator("emt"))
    with pytest.raises(ValueError, match="unknown MLIP"):
        get_calculator("vasp")
    with pytest.raises(RelaxationFailed, match="timeout"):
        relax(cu(3.4), get_calculator("emt"), fmax=1e-9, steps=10_000, timeout=0.0)


def test_reference_hull_reproduces_mp_values():
    dev = training_pool("dev")
    dev = dev[dev["source"] != "mpts52_mp20like.csv.gz"].head(20)
    errors = [
        abs(max(e_above_hull(f, ef, exclude=(m,)), 0) - eh)
        for m, f, ef, eh in zip(
            dev["material_id"],
            dev["cell_formula"],
            dev["formation_energy_per_atom"],
            dev["e_above_hull"],
        )
    ]
    assert np.mean(errors) < 0.05
    assert e_above_hull("Si", 0.0) == pytest.approx(0.0, abs=1e-6)
    assert unreliable(
        Structure(Lattice.cubic(5), ["Yb", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]]).composition
    )


def test_mp2020_correction_of_an_oxide():
    s = Structure(Lattice.cubic(4.2), ["Fe", "O"], [[0, 0, 0], [0.5, 0.5, 0.5]])
    # Fe (GGA+U) and O corrections apply; the formation energy moves accordingly.
    ef = corrected_formation_energy(s, energy=-2 * 7.0)
    assert np.isfinite(ef)


def test_evaluate_folder_records_failures_and_resumes(tmp_path, dask_client):
    folder = tmp_path / "cifs"
    folder.mkdir()
    cu().to(filename=str(folder / "a_cu.cif"))
    AseAtomsAdaptor.get_structure(bulk("Al", "fcc", a=4.0)).to(filename=str(folder / "b_al.cif"))
    (folder / "c_broken.cif").write_text("data_broken\n_cell_length_a 3\n")
    cfg = EvaluateConfig(mlip="emt", ehull=True, fmax=0.05, relax_steps=100)
    table = evaluate(folder, cfg, progress=False, client=dask_client)
    by_key = table.set_index("key")
    assert by_key.loc["a_cu", "status"] == "ok" and by_key.loc["b_al", "status"] == "ok"
    assert by_key.loc["c_broken", "status"] == "failed"
    assert "e_above_hull" in table.columns
    again = evaluate(folder, cfg, progress=False, client=dask_client)  # all done: no work
    assert len(again) == 3
    assert (folder / "labels.csv").exists()


def test_numeric_file_names_are_keys_too(tmp_path, dask_client):
    # ase.db refuses a string value that reads as a number: CIFs named 000.cif, 1e5.cif
    folder = tmp_path / "cifs"
    folder.mkdir()
    for name in ("000", "1e5", "True", "key:x"):
        cu().to(filename=str(folder / f"{name}.cif"))
    cfg = EvaluateConfig(mlip="emt", ehull=False, fmax=0.05, relax_steps=50)
    table = evaluate(folder, cfg, progress=False, client=dask_client)
    assert sorted(table["key"]) == ["000", "1e5", "True", "key:x"]
    assert (table["status"] == "ok").all()
    again = evaluate(folder, cfg, progress=False, client=dask_client)  # resumes: no new rows
    assert len(again) == 4 and len(connect(str(folder / "labels.db"))) == 4


def test_evaluate_cli_missing_source(capsys, tmp_path):
    assert main(["evaluate", str(tmp_path / "nope"), "--mlip", "emt"]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_sevennet_backend_if_installed():
    pytest.importorskip("sevenn")
    calc = get_calculator("sevennet")
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.calc = calc
    assert -12 < atoms.get_potential_energy() / len(atoms) < -4


def _relaxed(structure, fmax=1e-4):
    return relax(structure, get_calculator("emt"), fmax=fmax, steps=300).structure


def test_phonons_stable_and_unstable_cells():
    small = PhononSettings(supercell_min_length=7.0, mesh=(4, 4, 4))
    fcc = phonon_stability(_relaxed(cu()), get_calculator("emt"), small)
    assert fcc.stable and fcc.n_imaginary == 0 and fcc.min_frequency > 0.5
    assert fcc.frequencies.shape == (fcc.qpoints.shape[0], 3)
    # Simple cubic Cu is a textbook dynamically unstable cell.
    sc = _relaxed(Structure(Lattice.cubic(2.4), ["Cu"], [[0, 0, 0]]))
    unstable = phonon_stability(sc, get_calculator("emt"), small)
    assert not unstable.stable and unstable.min_frequency < -1.0


def test_phonons_skip_when_over_budget():
    with pytest.raises(PhononSkipped, match="max_supercell_atoms"):
        phonon_stability(cu(), get_calculator("emt"), PhononSettings(max_supercell_atoms=10))


def test_evaluate_phonons_in_parallel_workers_and_resume(tmp_path):
    folder = tmp_path / "cifs"
    folder.mkdir()
    cu().to(filename=str(folder / "a_cu.cif"))
    AseAtomsAdaptor.get_structure(bulk("Ni", "fcc", a=3.5)).to(filename=str(folder / "b_ni.cif"))
    Structure(Lattice.cubic(4.0), ["Fe"], [[0, 0, 0]]).to(filename=str(folder / "c_fe.cif"))
    cfg = EvaluateConfig(
        mlip="emt",
        ehull=False,
        phonons=True,
        fmax=0.01,
        phonon_fmax=1e-3,
        phonon=PhononSettings(supercell_min_length=6.0, mesh=(3, 3, 3)),
    )
    table = evaluate(folder, cfg, workers=2, progress=False).set_index("key")
    assert bool(table.loc["a_cu", "phonon_stable"]) and bool(table.loc["b_ni", "phonon_stable"])
    assert table.loc["a_cu", "phonon_displacements"] == 1
    # EMT has no Fe: recorded as a failure naming the problem, the others are kept.
    assert table.loc["c_fe", "status"] == "failed" and "Fe" in table.loc["c_fe", "error"]
    first_ids = {r.key: r.id for r in connect(str(folder / "labels.db")).select()}
    AseAtomsAdaptor.get_structure(bulk("Al", "fcc", a=4.0)).to(filename=str(folder / "d_al.cif"))
    evaluate(folder, cfg, workers=2, progress=False)
    rows = {r.key: r.id for r in connect(str(folder / "labels.db")).select()}
    assert set(rows) == {"a_cu", "b_ni", "c_fe", "d_al"}
    assert all(rows[k] == first_ids[k] for k in first_ids)  # nothing redone


def test_recomputed_step_clears_its_earlier_outcome(tmp_path, dask_client):
    from crysvcd.evaluate.labels import OUTCOMES

    folder = tmp_path / "cifs"
    folder.mkdir()
    cu().to(filename=str(folder / "a_cu.cif"))
    # over its supercell budget: the phonon step records an error, the relaxation is kept
    cfg = EvaluateConfig(mlip="emt", ehull=False, phonons=True, fmax=0.05, phonon_fmax=1e-3,
                         phonon=PhononSettings(supercell_min_length=6.0, mesh=(3, 3, 3),
                                               max_supercell_atoms=2))  # fmt: skip
    row = evaluate(folder, cfg, progress=False, client=dask_client).iloc[0]
    assert "max_supercell_atoms" in row["phonon_error"] and "phonon_stable" not in row
    # new settings: phonons computed again on the stored relaxation, the error gone
    cfg.phonon = PhononSettings(supercell_min_length=6.0, mesh=(3, 3, 3))
    row = evaluate(folder, cfg, progress=False, client=dask_client).iloc[0]
    assert bool(row["phonon_stable"]) and not isinstance(row.get("phonon_error"), str)
    # every label the step left is one it declares (what a later recomputation clears)
    stored = {k for k in row.index if k.startswith("phonon_") and not pd.isna(row[k])}
    assert stored <= set(OUTCOMES["phonons"])  # phonons_settings: the step's own record


def test_evaluate_dielectric_label(tmp_path, dask_client):
    folder = tmp_path / "cifs"
    folder.mkdir()
    cu().to(filename=str(folder / "a_cu.cif"))
    cfg = EvaluateConfig(mlip="emt", ehull=False, dielectric=True, fmax=0.05)
    row = evaluate(folder, cfg, progress=False, client=dask_client).iloc[0]
    assert row["status"] == "ok" and 1.0 < row["dielectric_total"] < 1e3
    assert row["dielectric_log10"] == pytest.approx(np.log10(row["dielectric_total"]))


def test_evaluate_kappa_label_and_skip(tmp_path, dask_client):
    from crysvcd.evaluate.labels import OUTCOMES
    from crysvcd.evaluate.settings import KappaSettings

    folder = tmp_path / "cifs"
    folder.mkdir()
    cu().to(filename=str(folder / "a_cu.cif"))
    settings = KappaSettings(mesh=(4, 4, 4), supercell_min_length=5.0, max_supercell_atoms=200)
    cfg = EvaluateConfig(mlip="emt", ehull=False, kappa=True, fmax=0.05, kappa_settings=settings,
                         kappa_mlip=None)  # fmt: skip
    row = evaluate(folder, cfg, progress=False, client=dask_client).iloc[0]
    assert row["status"] == "ok" and row["kappa"] > 0 and row["kappa_method"]
    # every kappa label is one the step declares (what a recomputation clears)
    stored = {k for k in row.index if k.startswith("kappa") and not pd.isna(row[k])}
    assert stored - {"kappa_settings"} <= set(OUTCOMES["kappa"])
    # over the supercell limit: a recorded skip with its reason, the relaxation kept
    cfg.kappa_settings = KappaSettings(
        mesh=(4, 4, 4), supercell_min_length=5.0, max_supercell_atoms=2
    )
    row = evaluate(folder, cfg, db=tmp_path / "again.db", progress=False, client=dask_client)
    row = row.iloc[0]
    assert row["status"] == "ok" and "kappa" not in row and row["kappa_skipped"]
    # the same database under the first settings: kappa computed again, the skip cleared
    cfg.kappa_settings = settings
    row = evaluate(folder, cfg, db=tmp_path / "again.db", progress=False, client=dask_client)
    row = row.iloc[0]
    assert row["kappa"] > 0 and not isinstance(row.get("kappa_skipped"), str)


def test_lowest_energy_picks_the_relaxed_cell():
    from crysvcd.evaluate.rank import energies_per_atom, lowest_energy

    calc = get_calculator("emt")
    good = Structure(Lattice.cubic(3.61), ["Cu"] * 4, bulk("Cu", cubic=True).get_scaled_positions())
    squeezed = good.copy()
    squeezed.scale_lattice(good.volume * 0.7)
    e = energies_per_atom([squeezed, good], calc)
    assert e[1] < e[0]
    best, energy = lowest_energy([squeezed, good], calc)
    assert best is good and energy == pytest.approx(e[1])
    with pytest.raises(ValueError, match="at least one candidate"):
        lowest_energy([], calc)


def test_pick_lowest_passes_over_invalid_candidates():
    from crysvcd.evaluate.rank import pick_lowest

    inf = float("inf")
    # an overlapping structure that an MLIP scores lowest must not be chosen ...
    assert pick_lowest([-9.0, -4.0, -5.0], [False, True, True]) == 2
    # ... nor one whose energy failed, while a valid one ran
    assert pick_lowest([inf, -1.0, -5.0], [True, True, False]) == 1
    # with no valid candidate, still the lowest energy: the run keeps an output
    assert pick_lowest([-2.0, -3.0], [False, False]) == 1
    assert pick_lowest([-2.0, -3.0], [True, False]) == 0


def test_kappa_has_its_own_mlip():
    from crysvcd.evaluate.settings import EvaluateConfig

    default = EvaluateConfig(mlip="sevennet", kappa=True)
    assert default.kappa_mlip == "sevennet-l3i5" and "sevennet-l3i5" in default.signature("kappa")
    same = EvaluateConfig(mlip="sevennet", kappa=True, kappa_mlip=None)
    assert same.signature("kappa") != default.signature("kappa")  # a stored kappa is redone
    assert same.signature("relax") == default.signature("relax")  # the relaxation is not
    with pytest.raises(ValueError, match="unknown kappa MLIP 'vasp'"):
        EvaluateConfig(kappa_mlip="vasp")
    with pytest.raises(ValueError, match="kappa needs smooth forces"):
        EvaluateConfig(mlip="sevennet", kappa=True, kappa_mlip="chgnet")


def test_a_kappa_stands_under_another_budget_but_a_budget_skip_is_redone_under_a_larger():
    from crysvcd.evaluate.settings import EvaluateConfig, KappaSettings

    def cfg(budget, **kw):
        return EvaluateConfig(kappa=True, kappa_settings=KappaSettings(budget_s=budget, **kw))

    value = {"kappa": 12.0, "kappa_settings": cfg(900).signature("kappa")}
    skip = {"kappa_skipped": "projected 1200 s ...", "kappa_settings": value["kappa_settings"]}
    assert cfg(900).reuses("kappa", value) and cfg(2400).reuses("kappa", value)
    assert cfg(None).reuses("kappa", value) and cfg(100).reuses("kappa", value)
    assert not cfg(2400).reuses("kappa", skip) and not cfg(None).reuses("kappa", skip)
    assert cfg(900).reuses("kappa", skip) and cfg(600).reuses("kappa", skip)
    assert not cfg(900, mesh=20.0).reuses("kappa", value)  # another setting: redone
    assert not cfg(900).reuses("kappa", {})  # never labelled
    relax = {"relax_settings": cfg(900).signature("relax")}
    assert cfg(2400).reuses("relax", relax)  # the budget is no relaxation setting


def test_a_new_fc2_retry_setting_redoes_only_the_values_with_imaginary_modes():
    import json

    from crysvcd.evaluate.settings import FC2_RETRY, EvaluateConfig, KappaSettings

    def cfg(budget=600.0, **kw):
        return EvaluateConfig(kappa=True, kappa_settings=KappaSettings(budget_s=budget, **kw))

    # labels stored before the retry existed: their settings lack its fields
    before = json.loads(cfg().signature("kappa"))
    before = json.dumps({k: v for k, v in before.items() if k not in FC2_RETRY})
    reliable = {"kappa": 12.0, "kappa_reliable": True, "kappa_settings": before}
    unreliable = {**reliable, "kappa_reliable": False}
    skip = {"kappa_skipped": "projected ...", "kappa_settings": before}
    assert cfg().reuses("kappa", reliable) and cfg().reuses("kappa", skip)
    assert not cfg().reuses("kappa", unreliable)  # the retry may make it usable
    assert cfg(fc2_retry_min_length=None).reuses("kappa", unreliable)  # no retry: stands
    now = cfg().signature("kappa")
    retried = {"kappa": 1.0, "kappa_reliable": True, "kappa_fc2_retried": True,
               "kappa_settings": now}  # fmt: skip
    assert cfg(900.0).reuses("kappa", retried)
    assert not cfg(fc2_retry_min_length=15.0).reuses("kappa", retried)
    over = {**unreliable, "kappa_settings": now,
            "kappa_fc2_retry": "not retried: ... over budget_s=600"}  # fmt: skip
    assert cfg().reuses("kappa", over) and not cfg(1800.0).reuses("kappa", over)


def test_a_cheaper_fc3_mlip_is_part_of_the_kappa_signature_only_when_set():
    from crysvcd.evaluate.settings import EvaluateConfig

    default = EvaluateConfig(mlip="sevennet", kappa=True)
    assert "fc3_mlip" not in default.signature("kappa")  # labels stored before still match
    named_same = EvaluateConfig(mlip="sevennet", kappa=True, kappa_fc3_mlip="sevennet-l3i5")
    assert named_same.signature("kappa") == default.signature("kappa")
    assert named_same.kappa_fc3_mlip is None  # one engine: no second calculator is built
    mixed = EvaluateConfig(mlip="sevennet", kappa=True, kappa_fc3_mlip="sevennet")
    assert mixed.signature("kappa") != default.signature("kappa")
    assert mixed.signature("relax") == default.signature("relax")
    with pytest.raises(ValueError, match="unknown kappa fc3 MLIP 'vasp'"):
        EvaluateConfig(kappa_fc3_mlip="vasp")
    with pytest.raises(ValueError, match="kappa needs smooth forces"):
        EvaluateConfig(mlip="sevennet", kappa=True, kappa_fc3_mlip="chgnet")


def test_a_step_with_its_own_mlip_does_not_load_the_relaxation_one(monkeypatch):
    # a kappa-only relabel with kappa_mlip loads that MLIP alone (tools/device/kappa.sh
    # carries only its weights); relaxation and phonons still load the run's MLIP
    import crysvcd.evaluate.labels as labels
    import crysvcd.evaluate.mlip as mlip

    loaded = []
    real = mlip.get_calculator

    def spy(name, *args, **kwargs):
        loaded.append(name)
        return real("emt")

    monkeypatch.setattr(mlip, "get_calculator", spy)
    monkeypatch.setattr(labels, "kappa_labels", lambda relaxed, cfg, calc: {"kappa": 1.0})
    monkeypatch.setitem(labels.RUNS, "kappa", labels.kappa_labels)
    cfg = EvaluateConfig(mlip="sevennet", kappa=True)  # kappa_mlip: sevennet-l3i5
    out, _ = labels.label_structure(cu(), cfg, ("kappa",), relaxed=cu(), known={})
    assert out["kappa"] == 1.0 and loaded == []
    assert labels._needs_relaxation_mlip(cfg, ("phonons", "kappa"))
    assert labels._needs_relaxation_mlip(EvaluateConfig(kappa=True, kappa_mlip=None), ("kappa",))
