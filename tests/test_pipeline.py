import json
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from ase.io import read
from pymatgen.core import Structure

from crysvcd.cli import main
from crysvcd.config import GenerateConfig
from crysvcd.geometry import is_valid
from crysvcd.pipeline import generate


def test_generate_from_formulas_writes_everything(tiny_run, tmp_path):
    ckpt, _ = tiny_run
    cfg = GenerateConfig(
        formulas=["NaCl", "Fe3O4"],
        samples_per_formula=2,
        steps=10,
        stage2=str(ckpt / "best.pt"),
        chunk=3,
    )
    out = tmp_path / "res"
    structures = generate(cfg, out, progress=False)
    assert len(structures) == 4
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["formula"]) == ["NaCl", "NaCl", "Fe3O4", "Fe3O4"]
    assert {"valence_tokens", "space_group", "density", "n_atoms", "min_distance"} <= set(
        summary.columns
    )
    assert summary["valence_tokens"][2] == "Fe2+x1 Fe3+x2 O2-x4"
    # extxyz keeps the exact cells; a CIF (lengths and angles) of a tiny model's skewed
    # garbage cell may not read back, so only valid rows are read from CIF
    images = read(out / "structures.extxyz", index=":")
    assert [len(a) for a in images] == [2, 2, 7, 7]
    for f in summary.loc[summary["valid"], "file"]:
        assert len(Structure.from_file(out / f)) in (2, 7)
    assert all((out / f).exists() for f in summary["file"])
    assert (out / "run.json").exists()


def test_resume_takes_a_run_made_before_a_setting_existed(tiny_run, tmp_path):
    ckpt, _ = tiny_run
    cfg = GenerateConfig(formulas=["NaCl", "KCl"], steps=5, stage2=str(ckpt / "best.pt"))
    out = tmp_path / "res"
    first = generate(cfg, out, progress=False)
    record = json.loads((out / "run.json").read_text())
    del record["config"]["precision"]  # as written before precision was a setting
    (out / "run.json").write_text(json.dumps(record))
    again = generate(cfg, out, progress=False, resume=True)  # accepted: nothing left to do
    assert again == [] and len(first) == len(pd.read_csv(out / "summary.csv")) == 2
    with pytest.raises(ValueError, match=r"other settings \(\['precision'\]\)"):
        generate(replace(cfg, precision="bf16"), out, progress=False, resume=True)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--formula", "Xx2O"], "unreadable formula"),
        (["--formula", "Na11Cl11"], "22 atoms > 20"),
        (["--formula", "NaCl", "--condition", "band_gap=high"], "not a number"),
        (["--formula", "NaCl", "--condition", "band_gap=1"], "unknown property"),
        (["--formula", "NaCl", "--diffusion-steps", "0"], "steps must be an integer >= 1"),
        (["--n", "0"], "n must be an integer >= 1"),
    ],
)
def test_bad_input_writes_nothing(tiny_run, tmp_path, capsys, args, message):
    ckpt, _ = tiny_run
    out = tmp_path / "res"
    code = main(
        [
            "generate",
            "--out",
            str(out),
            "--diffusion-steps",
            "5",
            "--quiet",
            "--stage2",
            str(ckpt / "best.pt"),
            *args,
        ]
    )
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_candidates_keep_the_lowest_mlip_energy(tiny_run, tmp_path):
    from crysvcd.evaluate.mlip import get_calculator
    from crysvcd.evaluate.rank import energies_per_atom
    from crysvcd.stage2.sample import SamplerSettings, load_sampler

    ckpt, _ = tiny_run
    cfg = GenerateConfig(
        formulas=["Cu4", "Cu2"],
        candidates=3,
        rank_mlip="emt",
        steps=5,
        stage2=str(ckpt / "best.pt"),
    )
    out = tmp_path / "res"
    structures = generate(cfg, out, progress=False)
    assert len(structures) == 2
    summary = pd.read_csv(out / "summary.csv")
    assert list(summary["candidates"]) == [3, 3]
    # The same seed draws the same candidates: the kept one is the minimum over the valid
    # ones (over all when none is valid).
    drawn = load_sampler(cfg.stage2).sample(
        ["Cu4"] * 3 + ["Cu2"] * 3, SamplerSettings(steps=5), seed=0
    )
    e = energies_per_atom(drawn, get_calculator("emt"))
    valid = np.array([is_valid(s) for s in drawn])
    for row, group in enumerate((slice(0, 3), slice(3, 6))):
        eg, vg = e[group], valid[group]
        expected = eg[vg].min() if vg.any() else eg.min()
        assert summary["mlip_energy_per_atom"][row] == pytest.approx(expected, abs=1e-4)
        assert summary["valid"][row] == vg.any()


def test_unknown_rank_mlip_writes_nothing(tiny_run, tmp_path):
    ckpt, _ = tiny_run
    with pytest.raises(ValueError, match="unknown MLIP"):
        GenerateConfig(formulas=["NaCl"], candidates=2, rank_mlip="nope", steps=5)
    assert not (tmp_path / "res").exists()


def test_summary_of_a_collapsed_cell_is_invalid_not_an_error():
    from pymatgen.core import Lattice

    from crysvcd.pipeline import structure_summary

    flat = Structure(
        Lattice([[3, 0, 0], [0, 3, 0], [0, 0, 0]]), ["Na", "Cl"], [[0, 0, 0], [0.5, 0.5, 0]]
    )
    row = structure_summary(flat)
    assert row["valid"] is False and row["n_atoms"] == 2
    nan = Structure(Lattice(np.full((3, 3), np.nan)), ["Na"], [[0, 0, 0]])
    assert structure_summary(nan)["valid"] is False
