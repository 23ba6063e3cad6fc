"""Open a report in headless Chromium and read the page's own check of what rendered.

Chromium is Debian's ``chromium`` (or any Chromium/Chrome given by ``CHROMIUM``); the
flags keep it off the network (this machine has none) and let WebGL run in software.
"""

from __future__ import annotations

import html
import json
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--enable-unsafe-swiftshader",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--no-first-run", "--disable-quic",
]  # fmt: skip


def chromium() -> str | None:
    """Path of a Chromium to drive, or None."""
    given = os.environ.get("CHROMIUM")
    if given:
        return given
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def check(page: str | Path, screenshot: str | Path | None = None, budget_ms: int = 5000) -> dict:
    """The report's self-check (figures decoded, viewer drawn, script errors), after
    Chromium ran the page for ``budget_ms`` of virtual time; optionally a screenshot."""
    exe = chromium()
    if exe is None:
        raise RuntimeError("no Chromium found (install Debian's chromium or set CHROMIUM)")
    url = Path(page).resolve().as_uri()
    with tempfile.TemporaryDirectory() as profile:
        base = [exe, *FLAGS, f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}"]
        dom = subprocess.run(
            [*base, "--dump-dom", url], capture_output=True, text=True, timeout=120
        ).stdout
        if screenshot is not None:
            subprocess.run(
                [*base, "--window-size=1400,1800", f"--screenshot={Path(screenshot).resolve()}",
                 url], capture_output=True, timeout=120,
            )  # fmt: skip
    match = re.search(r'data-report="([^"]*)"', dom)
    if match is None:
        raise RuntimeError("the page did not finish its self-check (no data-report on <body>)")
    return json.loads(html.unescape(match.group(1)))
