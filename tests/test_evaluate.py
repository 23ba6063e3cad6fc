import numpy as np
import pytest
from ase.build import bulk
from pymatgen.core import Lattice, Structure
from pymatgen.io.ase import AseAtomsAdaptor

from crysvcd.cli import main
from crysvcd.datasets import training_pool
from crysvcd.evaluate.hull import corrected_formation_energy, e_above_hull, unreliable
from crysvcd.evaluate.mlip import get_calculator
from crysvcd.evaluate.relax import RelaxationFailed, relax
from crysvcd.evaluate.runner import EvaluateConfig, evaluate


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
    with pytest.raises(ValueError, match="NaN"):
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


def test_evaluate_folder_records_failures_and_resumes(tmp_path):
    folder = tmp_path / "cifs"
    folder.mkdir()
    cu().to(filename=str(folder / "a_cu.cif"))
    AseAtomsAdaptor.get_structure(bulk("Al", "fcc", a=4.0)).to(filename=str(folder / "b_al.cif"))
    (folder / "c_broken.cif").write_text("data_broken\n_cell_length_a 3\n")
    cfg = EvaluateConfig(mlip="emt", ehull=True, fmax=0.05, steps=100)
    table = evaluate(folder, cfg, progress=False)
    by_key = table.set_index("key")
    assert by_key.loc["a_cu", "status"] == "ok" and by_key.loc["b_al", "status"] == "ok"
    assert by_key.loc["c_broken", "status"] == "failed"
    assert "e_above_hull" in table.columns
    again = evaluate(folder, cfg, progress=False)  # everything done: nothing recomputed
    assert len(again) == 3
    assert (folder / "labels.csv").exists()


def test_evaluate_cli_missing_source(capsys, tmp_path):
    assert main(["evaluate", str(tmp_path / "nope"), "--mlip", "emt"]) == 2
    assert "no such file or folder" in capsys.readouterr().err


def test_sevennet_backend_if_installed():
    pytest.importorskip("sevenn")
    calc = get_calculator("sevennet")
    atoms = bulk("Si", "diamond", a=5.43)
    atoms.calc = calc
    assert -12 < atoms.get_potential_energy() / len(atoms) < -4
