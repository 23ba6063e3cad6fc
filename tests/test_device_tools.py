"""The device tools that touch a run's labels: a phonon merge must move only the phonon
step's columns and leave the run's own labels and later rows alone."""

from __future__ import annotations

import runpy
import sys
from pathlib import Path

from crysvcd.evaluate.store import ResultStore

MERGE = Path(__file__).resolve().parents[1] / "tools" / "device" / "merge_phonons.py"


def _merge(device_db: Path, run: Path, monkeypatch) -> None:
    monkeypatch.setattr(sys, "argv", ["merge_phonons.py", str(device_db), str(run)])
    runpy.run_path(str(MERGE), run_name="__main__")


def test_merge_phonons_moves_only_phonon_labels_and_clears_a_stale_outcome(
    tmp_path, monkeypatch, capsys
):
    run = tmp_path / "run"
    target = ResultStore(run / "labels.db")
    target.write("r01/a", round=1, e_above_hull=0.05, phonon_error="timeout after 900 s")
    target.write("r01/b", round=1, e_above_hull=0.02)
    target.write("r01/c", round=1, e_above_hull=0.3)  # written after the copy was taken
    device = ResultStore(tmp_path / "device.db")
    # the device's copy: a's phonons computed, b's too, and a label it must not carry back
    device.write("r01/a", round=1, e_above_hull=9.9, phonon_stable=True,
                 phonon_min_frequency_thz=-0.004)  # fmt: skip
    device.write("r01/b", round=1, e_above_hull=0.02, phonon_stable=False,
                 phonon_min_frequency_thz=-1.2)  # fmt: skip
    device.write("r01/z", round=1, phonon_stable=True)  # a key the run lacks

    _merge(tmp_path / "device.db", run, monkeypatch)
    assert "copied for 2 of 3 rows" in capsys.readouterr().out
    rows = ResultStore(run / "labels.db").rows()
    assert set(rows) == {"r01/a", "r01/b", "r01/c"}
    a = rows["r01/a"].key_value_pairs
    assert a["phonon_stable"] is True and a["phonon_min_frequency_thz"] == -0.004
    assert "phonon_error" not in a  # the recomputed step's old outcome is gone
    assert a["e_above_hull"] == 0.05  # the run's own label stays
    assert rows["r01/b"].key_value_pairs["phonon_stable"] is False
    assert "phonon_stable" not in rows["r01/c"].key_value_pairs

    _merge(tmp_path / "device.db", run, monkeypatch)  # a second merge changes nothing
    assert "copied for 0 of 3 rows" in capsys.readouterr().out
