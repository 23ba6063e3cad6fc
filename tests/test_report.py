"""The HTML report, rendered for real in headless Chromium (Debian's chromium, which
``.ci/run`` installs): every figure decodes, the 3D viewer draws a crystal, no script
error. The screenshot is kept in $CRYSVCD_ARTIFACTS (default test-artifacts/)."""

import os
import shutil
from pathlib import Path

import pytest

from crysvcd.cli import main
from crysvcd.config import GenerateConfig
from crysvcd.evaluate.runner import evaluate
from crysvcd.evaluate.settings import EvaluateConfig
from crysvcd.pipeline import generate
from crysvcd.report import build_report
from crysvcd.report.browser import check, chromium


@pytest.fixture
def browser():
    if chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("CI must provide Chromium for the report test")
        pytest.skip("no Chromium on this machine")


def test_report_renders_in_chromium(tiny_run, tmp_path, dask_client, browser):
    ckpt, _ = tiny_run
    out = tmp_path / "run"
    cfg = GenerateConfig(formulas=["Cu3Au", "NiAl", "Cu2"], steps=20, stage2=str(ckpt / "best.pt"))
    generate(cfg, out, progress=False)
    evaluate(out, EvaluateConfig(mlip="emt", fmax=0.2, relax_steps=30), progress=False,
             client=dask_client)  # fmt: skip
    page = build_report(out)
    shot = tmp_path / "report.png"
    result = check(page, screenshot=shot)
    assert result["errors"] == []
    assert result["figures"] >= 2 and result["figures_ok"] == result["figures"]
    assert result["rows"] == 3
    assert result["viewer"] and result["viewer_atoms"] > 0
    assert shot.stat().st_size > 10_000
    artifacts = Path(os.environ.get("CRYSVCD_ARTIFACTS", "test-artifacts"))
    artifacts.mkdir(exist_ok=True)
    shutil.copy(shot, artifacts / "report.png")


def test_report_of_a_folder_that_is_no_run(tmp_path, capsys):
    assert main(["report", str(tmp_path)]) == 2
    assert "not a crysvcd run" in capsys.readouterr().err


def test_report_out_must_be_a_web_page(tmp_path, capsys):
    # a page without .html is shown as plain text by a browser: refused before the folder
    # is even read (this one is no run, which would be the next error)
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "report")]) == 2
    assert "name it *.html" in capsys.readouterr().err
    assert not (tmp_path / "report").exists()
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "no" / "r.html")]) == 2
    assert "does not exist" in capsys.readouterr().err
