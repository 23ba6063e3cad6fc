import pandas as pd

from crysvcd.cli import main


def test_valence_command(capsys):
    assert main(["valence", "Fe3O4", "Cu2ZnSnS4"]) == 0
    out = capsys.readouterr().out
    assert "Fe2+x1 Fe3+x2 O2-x4" in out
    assert "Cu+x2" in out and "ionic" in out


def test_valence_reports_bad_formula(capsys):
    assert main(["valence", "Qq3"]) == 1
    assert "unknown element symbol 'Qq'" in capsys.readouterr().out


def test_valence_csv(tmp_path, capsys):
    src = tmp_path / "f.csv"
    pd.DataFrame({"pretty_formula": ["NaCl", "Ni3Al", "KO2"]}).to_csv(src, index=False)
    out = tmp_path / "o.csv"
    assert main(["valence", "--csv", str(src), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "coverage: 0.666" in text
    df = pd.read_csv(out).fillna("")
    assert list(df["kind"]) == ["ionic", "alloy", ""]
    assert "no charge-neutral" in df["error"][2]


def test_valence_csv_missing_column(tmp_path, capsys):
    src = tmp_path / "f.csv"
    pd.DataFrame({"x": ["NaCl"]}).to_csv(src, index=False)
    assert main(["valence", "--csv", str(src), "--column", "formula"]) == 2
    assert "no column 'formula'" in capsys.readouterr().err


def test_data_info(capsys):
    assert main(["data", "info"]) == 0
    assert "materials:" in capsys.readouterr().out


def test_formulas_command_uses_the_shipped_model(capsys):
    assert main(["formulas", "--n", "5", "--seed", "3"]) == 0
    rows = [r.split("\t") for r in capsys.readouterr().out.strip().splitlines()[1:]]
    assert len(rows) == 5
    from crysvcd.chem.valence import label_valence

    for _reduced, cell, tokens in rows:
        charge = 0
        for tok in tokens.split():
            species, count = tok.rsplit("x", 1)
            sign = -1 if species.endswith("-") else (1 if species.endswith("+") else 0)
            digits = "".join(ch for ch in species.rstrip("+-") if ch.isdigit())
            charge += sign * int(digits or 1) * int(count)
        assert charge == 0
        label_valence(cell)  # a well-formed cell formula


def test_formulas_bad_n(capsys):
    assert main(["formulas", "--n", "0"]) == 2
    assert "n must be a positive integer" in capsys.readouterr().err
    assert main(["formulas", "--top-k", "-3"]) == 2
    assert "--top-k must be >= 1" in capsys.readouterr().err
