"""The HTML report as a reviewer opens it: rendered by headless Chromium (Debian's, which `.ci/run` installs),
with every figure drawn."""

from __future__ import annotations

import re
import shutil
import subprocess

import matplotlib.image
import pytest
from helpers.configs import tiny_settings

from gavel.experiments import runner
from gavel.experiments.cli import report_command

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="no chromium on this machine (.ci/run installs Debian's chromium)")
def test_the_report_renders_in_chromium_with_every_figure(tmp_path):
    for budget in (5, 20):
        # eps 0.3: some example is fooled on any judge, so the figures of successes are drawn too
        settings = tiny_settings("square", "access=hidden_probabilities", f"access.budget={budget}",
                                 "attack.eps=0.3", "experiment_name=browser")  # fmt: skip
        runner.run(settings, runner.prepare(settings))
    assert report_command(["--experiment", "browser", "--out", str(tmp_path / "report")]) == 0
    page = tmp_path / "report" / "report.html"
    figures = page.read_text().count("<img ")
    assert figures >= 3
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--no-first-run",
             "--disable-component-update", "--disable-sync", f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    dom = subprocess.run(
        [CHROMIUM, *flags, "--virtual-time-budget=5000", "--dump-dom", page.as_uri()],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert dom.returncode == 0, dom.stderr[-2000:]
    drawn = re.search(r'data-images-drawn="(\d+)"', dom.stdout)
    assert drawn and int(drawn.group(1)) == figures, dom.stdout[-500:]
    shot = tmp_path / "page.png"
    subprocess.run(
        [CHROMIUM, *flags, f"--screenshot={shot}", "--window-size=1200,2400", page.as_uri()],
        capture_output=True, timeout=120, check=True,
    )  # fmt: skip
    pixels = matplotlib.image.imread(shot)
    assert pixels.shape[0] > 1000 and (pixels[..., :3] < 0.9).mean() > 0.01  # a page with tables and plots on it
