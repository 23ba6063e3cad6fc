import pandas as pd
import pytest

from crysvcd.datasets import DatasetError, pool_info, read_mp20_csv, split_of, training_pool


def test_pool_counts_and_split():
    info = pool_info()
    pool = training_pool()
    assert info["materials"] == len(pool) == pool["material_id"].nunique()
    assert len(pool) > 11000
    dev = training_pool("dev")
    assert 0.03 < len(dev) / len(pool) < 0.07
    assert split_of("mp-149") == split_of("mp-149")
    assert (pool["nsites"] <= 20).all()


def test_read_any_mp20_csv(tmp_path):
    rows = training_pool().head(5)[["material_id", "cif", "band_gap"]]
    path = tmp_path / "mini.csv"
    rows.to_csv(path, index=False)
    df = read_mp20_csv(path)
    assert list(df["material_id"]) == list(rows["material_id"])
    assert {"cell_formula", "nsites", "split", "formation_energy_per_atom"} <= set(df.columns)


def test_bad_csv(tmp_path):
    path = tmp_path / "bad.csv"
    pd.DataFrame({"formula": ["NaCl"]}).to_csv(path, index=False)
    with pytest.raises(DatasetError, match="missing column"):
        read_mp20_csv(path)
    with pytest.raises(FileNotFoundError):
        read_mp20_csv(tmp_path / "nope.csv")
