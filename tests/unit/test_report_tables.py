"""The report's tables are sound whatever a run's name or overrides hold: every Markdown row has the header's
cells, each cell renders back to its text, nothing in the HTML is read as a tag, and the config column shows
each job's overrides exactly as the job was given them."""

from __future__ import annotations

import html
import re
import uuid
from html.parser import HTMLParser

import mlflow
import numpy as np
import pytest
from helpers.configs import tiny_settings

from gavel.experiments import tracking
from gavel.experiments.tracking import CLASSES_TAG
from gavel.reports.curves import CURVE
from gavel.reports.report import _html_table, _md_table, report
from gavel.reports.table import run_overrides

WHITE_LABEL = """0 pgd "open" | <i>x</i>"""
SCORE_LABEL = "1 <b>sq</b> & 'x' |"
DECISION_LABEL = "2 `hsj` *b* _100_ $\\x$ [l](u) ~s"
FAILED_NAME = "3 <script>alert(1)</script> | transfer_pgd-label-cnn-s0"
NOTE = """+note='two  words | <x> & "y" \\'z\\' `c` *d*'"""
"""An override every job was given (a setting the table shows, the same for all: one row)."""


def per_example_csv(success: list[int]) -> str:
    lines = ["index,attacked,success,queries,linf"]
    lines += [f"{i},1,{s},{10 * (i + 1)},0.1" for i, s in enumerate(success)]
    return "\n".join(lines) + "\n"


def log_results(success: list[int], curve: bool = False, grid: bool = False) -> None:
    n = len(success)
    mlflow.log_metrics({
        "attack_success_rate": sum(success) / n, "attack_success_rate_ci_low": 0.0,
        "attack_success_rate_ci_high": 1.0, "n_attacked": float(n),
    })  # fmt: skip
    mlflow.log_text(per_example_csv(success), "per_example.csv")
    if curve:
        for step, rate in ((10, 0.25), (100, 0.5)):
            mlflow.log_metric(CURVE, rate, step=step)
    if grid:
        mlflow.log_image(np.zeros((4, 4, 3), dtype=np.uint8), artifact_file="adversarial_grid.png")


def logged_run(experiment: str, sweep: str, name: str, overrides: list[str] | None, line: str | None = None,
               status: str = "FINISHED", **tags) -> str:  # fmt: skip
    """A job's run as the runner logs it; `line` instead of `overrides`: a run recorded before the JSON list was
    (only the `overrides` line)."""
    recorded = tracking.overrides_tags(overrides) if overrides is not None else {tracking.OVERRIDES: line}
    mlflow.set_experiment(experiment)
    tags = {"judge": "cnn", "defense": "none", "access.weights": "hidden", "sweep_id": sweep, **JUDGE_PIN, **recorded,
            **tags}  # fmt: skip
    with mlflow.start_run(run_name=name, tags=tags) as run:
        mlflow.log_params({"seed": "0", "access.budget": tags.get("access.budget", "null"), "attack.eps": "0.1"})
        if status == "FINISHED":
            log_results([1, 0, 1, 0], curve=tags["threat_model"] != "white_box")
    if status != "FINISHED":
        mlflow.MlflowClient().set_terminated(run.info.run_id, status)
    return run.info.run_id


JUDGE_PIN = {"judge.sha256": "ab" * 32, "judge.file": "/models/fraud|judge <v2>.pt", "dataset": "my *own* data",
             CLASSES_TAG: "cat | dog, <b>eel</b>"}  # fmt: skip
"""A judge of the user's own, pinned by its file, on data whose names need escaping everywhere."""


@pytest.fixture
def sweep(isolated_stores):
    """A sweep whose run names and overrides hold pipes, quotes, tags, entities and Markdown syntax: one run
    through the runner's own `mlflow_run`, one recorded with the overrides line alone (a run from before the JSON
    list), two logged as the runner logs them."""
    experiment, sweep_id = f"escaping-{uuid.uuid4().hex[:8]}", f"sweep-{uuid.uuid4().hex[:8]}"
    white_overrides = ["attack=pgd", "access=open", f"run_label='{WHITE_LABEL}'", NOTE]
    settings = tiny_settings(
        "pgd", f"experiment_name={experiment}", white_overrides[2]
    )  # NOTE is no key gavel reads: recorded, not composed
    with tracking.mlflow_run(settings, sweep_id, overrides=white_overrides):
        log_results([1, 1, 0, 0], grid=True)
    white_name = tracking.run_name(settings)
    score_line = f"attack=square access=hidden_probabilities access.budget=100 run_label='{SCORE_LABEL}' {NOTE}"
    score_name = f"{SCORE_LABEL} | square-probabilities-b100-cnn-s0"
    logged_run(experiment, sweep_id, score_name, None, score_line, threat_model="score_based", attack="square",
               **{"access.output": "probabilities", "access.budget": "100"})  # fmt: skip
    decision_overrides = ["attack=hopskipjump", "access=hidden_label", "access.budget=100",
                          f"run_label='{DECISION_LABEL}'", NOTE]  # fmt: skip
    decision_name = f"{DECISION_LABEL} | hopskipjump-label-b100-cnn-s0"
    logged_run(experiment, sweep_id, decision_name, decision_overrides, threat_model="decision_based",
               attack="hopskipjump", **{"access.output": "label", "access.budget": "100"})  # fmt: skip
    failed_overrides = ["attack=transfer_pgd", "access=hidden_label", "run_label='3 <script>alert(1)</script>'"]
    logged_run(experiment, sweep_id, FAILED_NAME, failed_overrides, status="FAILED", threat_model="transfer",
               attack="transfer_pgd", **{"access.output": "label"})  # fmt: skip
    configs = {
        white_name: " ".join(o for o in white_overrides if not o.startswith("run_label=")),
        score_name: f"attack=square access=hidden_probabilities access.budget=100 {NOTE}",
        decision_name: f"attack=hopskipjump access=hidden_label access.budget=100 {NOTE}",
        FAILED_NAME: "attack=transfer_pgd access=hidden_label",
    }
    return experiment, sweep_id, configs


# -- a reader of GitHub-flavoured Markdown tables, as the GFM spec splits and unescapes them --------------------

PUNCTUATION = r"""!"#$%&'()*+,-./:;<=>?@[\]^_`{|}~"""
INLINE = re.compile(r"\\(.)|<br>|&(#\d+|#x[0-9a-fA-F]+|[A-Za-z]+);|(.)", re.S)


def gfm_row(line: str) -> list[str]:
    """The cells of a table row: split at each | not escaped by a backslash (a backslash pair is one character)."""
    assert line.startswith("|") and line.endswith("|"), line
    cells, cell, i = [], [], 1
    while i < len(line):
        if line[i] == "\\" and i + 1 < len(line):
            cell.append(line[i : i + 2])
            i += 2
            continue
        if line[i] == "|":
            cells.append("".join(cell))
            cell = []
        else:
            cell.append(line[i])
        i += 1
    assert not cell, f"text after the row's last |: {line}"
    return [rendered(c.strip().replace("\\|", "|")) for c in cells]


def rendered(cell: str) -> str:
    """The cell's text as CommonMark renders it; syntax left unescaped (code, emphasis, links, raw HTML, maths)
    fails the test, as it would render as something else than the text."""
    text = []
    for match in INLINE.finditer(cell):
        escaped, entity, char = match.group(1), match.group(2), match.group(3)
        if escaped is not None:
            text.append(escaped if escaped in PUNCTUATION else "\\" + escaped)
        elif entity is not None:
            text.append(html.unescape(f"&{entity};"))
        elif char is None:  # <br>
            text.append("\n")
        else:
            assert char not in "`*<>~$&\\", f"unescaped {char!r} in the cell {cell!r}"
            before, after = cell[match.start() - 1 : match.start()], cell[match.end() : match.end() + 1]
            if char == "_":
                assert before.isalnum() and after.isalnum(), f"an _ that may be emphasis in the cell {cell!r}"
            assert not (char == "]" and after in "([:" and after), f"a link's brackets in the cell {cell!r}"
            assert not (char == "[" and after == "^"), f"a footnote in the cell {cell!r}"
            text.append(char)
    return "".join(text)


def md_tables(markdown: str) -> list[list[list[str]]]:
    """Each table of the page as rows of rendered cells (the delimiter row checked and dropped)."""
    tables, lines = [], markdown.split("\n")
    for i, line in enumerate(lines):
        if line.startswith("|") and (i == 0 or not lines[i - 1].startswith("|")):
            end = i
            while end < len(lines) and lines[end].startswith("|"):
                end += 1
            block = lines[i:end]
            header = gfm_row(block[0])
            assert re.fullmatch(r"\|(---\|)+", block[1]) and block[1].count("|") - 1 == len(header)
            rows = [header, *(gfm_row(row) for row in block[2:])]
            assert all(len(row) == len(header) for row in rows), [len(row) for row in rows]
            tables.append(rows)
    return tables


class Page(HTMLParser):
    """Every tag the page opens, each table's cells as text (a <br> as a newline) and each image's alt text."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.tags, self.tables, self.alts, self.cell = [], [], [], None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        if tag == "table":
            self.tables.append([])
        elif tag == "tr":
            self.tables[-1].append([])
        elif tag in ("td", "th"):
            self.cell = []
        elif tag == "br" and self.cell is not None:
            self.cell.append("\n")
        elif tag == "img":
            self.alts.append(dict(attrs)["alt"])

    def handle_endtag(self, tag):
        if tag in ("td", "th"):
            self.tables[-1][-1].append("".join(self.cell))
            self.cell = None

    def handle_data(self, data):
        if self.cell is not None:
            self.cell.append(data)


def test_report_tables_keep_every_cell_whole_and_escaped(sweep, tmp_path):
    experiment, sweep_id, configs = sweep
    report(experiment, sweep_id, tmp_path)  # the figures too: a $\x$ in a legend would stop matplotlib
    markdown = (tmp_path / "report.md").read_text()
    assert "<" not in markdown.replace("<br>", "")  # no raw HTML at all
    assert markdown.splitlines()[2] == "## Sanity checks"  # first: what not to trust below
    assert "sanity check" in markdown.splitlines()[4]
    judges, value, gains, missing, behind = md_tables(markdown)
    assert judges[0] == ["judge", "pinned by", "data", "classes", "runs"]
    pinned = f"fraud|judge <v2>.pt, sha256 {'ab' * 32}"
    assert ["cnn", pinned, "my *own* data", "cat | dog, <b>eel</b>", "3"] in judges[1:]
    assert behind[0][:4] == ["run", "status", "judge", "config (the job's overrides)"]
    assert {row[0]: row[3] for row in behind[1:]} == configs  # the overrides as given, less the run label
    assert {row[0]: row[1] for row in behind[1:]}[FAILED_NAME] == "FAILED"
    assert [row[:2] for row in missing[1:]] == [[FAILED_NAME, "FAILED"]]
    names = {row[3] for row in gains[1:]} | {row[4] for row in gains[1:]}
    assert names <= set(configs) and len(names) == 3  # white box, scores, labels: the steps between them
    assert [row[2] for row in value[1:]] == [NOTE.lstrip("+")]  # the setting every run shares: one row

    page = Page()
    page.feed((tmp_path / "report.html").read_text())
    assert set(page.tags) <= {"html", "head", "meta", "title", "style", "body", "h1", "h2", "table", "tr", "th",
                              "td", "p", "figure", "img", "figcaption", "script"}  # fmt: skip
    assert page.tags.count("script") == 1  # the page's own, which counts the figures drawn
    assert page.tables == [judges, value, gains, missing, behind]  # the same text, cell for cell
    (white_name,) = [name for name in configs if name.startswith("0 ")]
    assert f"Adversarial examples of {white_name} with their perturbations" in page.alts


def test_the_overrides_are_read_back_as_the_job_was_given_them(sweep):
    experiment, sweep_id, configs = sweep
    runs = mlflow.search_runs(experiment_names=[experiment], output_format="list")
    by_name = {run.info.run_name: run.data.tags for run in runs}
    white = next(tags for name, tags in by_name.items() if name.startswith("0 "))
    assert run_overrides(white)["run_label"] == f"'{WHITE_LABEL}'"
    assert tracking.recorded_overrides(white)[-1] == NOTE  # two spaces kept
    score = by_name[f"{SCORE_LABEL} | square-probabilities-b100-cnn-s0"]  # only the line: split outside quotes
    assert tracking.recorded_overrides(score) == ["attack=square", "access=hidden_probabilities",
                                                  "access.budget=100", f"run_label='{SCORE_LABEL}'", NOTE]  # fmt: skip
    assert tracking.split_overrides("a=[1, 2] b={k: 'v w'} c='x \\' y' ~d") == ["a=[1, 2]", "b={k: 'v w'}",
                                                                                "c='x \\' y'", "~d"]  # fmt: skip


@pytest.mark.parametrize(
    "text",
    ["a | b", "a \\| b", "back\\slash\\", "<img src=x onerror=alert(1)>", "&amp; &lt;", "line\nbreak\r\nand\r",
     "`code` ``two``", "*em* **strong** _u_ __uu__ white_box", "[link](http://x) ![img](y) [ref][r] [d]: x",
     "[^1] [0.1, 0.2]", "~~gone~~ ~one", "$x^2$ and $$y$$", "# not a heading", "'single' \"double\"", ""],
)  # fmt: skip
def test_a_cell_renders_back_to_its_text_in_markdown_and_html(text):
    rows = [["header | one", "two"], [text, "x"], ["y", text]]
    (table,) = md_tables(_md_table(rows))
    assert table == rows
    page = Page()
    page.feed(_html_table(rows))
    assert set(page.tags) <= {"table", "tr", "th", "td", "br"}
    assert page.tables == [[[cell.replace("\r\n", "\n") for cell in row] for row in rows]]
