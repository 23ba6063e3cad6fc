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
