"""The docs cannot drift from the tree: the layout on docs/architecture.md lists every module and only paths that
exist, mkdocs.yml's nav holds every page of docs/ once and nothing else, the README's links land on pages (and
headings) that exist, and the benchmarks page names every bench script. `make docs` (mkdocs build --strict) checks
the links between pages; this runs without mkdocs installed."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PACKAGE_FOLDERS = ("attacks", "defenses", "targets", "experiments", "reports", "hydra_plugins")
LISTED_PATH = re.compile(r"^\|\s*`([^`]+)`\s*\|")
"""A layout row: the first cell of a table row on docs/architecture.md, a path in backticks."""
LINK = re.compile(r"\]\(([^)\s]+)\)")


def section(markdown: str, heading: str) -> str:
    """The text under `heading` (a `## ` line), up to the next heading of the same level."""
    start = markdown.index(f"\n{heading}\n")
    end = markdown.find("\n## ", start + len(heading) + 2)
    return markdown[start : end if end != -1 else None]


def layout_paths() -> list[str]:
    layout = section((DOCS / "architecture.md").read_text(), "## Layout")
    return [match.group(1) for line in layout.splitlines() if (match := LISTED_PATH.match(line))]


def modules() -> list[str]:
    return sorted(
        path.relative_to(ROOT).as_posix()
        for folder in PACKAGE_FOLDERS
        for path in (ROOT / folder).rglob("*.py")
        if path.name != "__init__.py" and "__pycache__" not in path.parts
    )


def nav_pages(nav) -> list[str]:
    """Every page a mkdocs nav names, nested sections included."""
    if isinstance(nav, str):
        return [nav]
    if isinstance(nav, list):
        return [page for entry in nav for page in nav_pages(entry)]
    return [page for value in nav.values() for page in nav_pages(value)]


def slug(heading: str) -> str:
    """The anchor of a heading, as Python-Markdown's toc extension (and GitHub) make it."""
    text = unicodedata.normalize("NFKD", heading.replace("`", "")).encode("ascii", "ignore").decode()
    return re.sub(r"[-\s]+", "-", re.sub(r"[^\w\s-]", "", text).strip().lower())


def anchors(page: Path) -> set[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # a `# comment` in a code block is no heading
    return {slug(line.lstrip("#").strip()) for line in text.splitlines() if re.match(r"#{1,6} ", line)}


def test_the_layout_lists_every_module():
    listed = set(layout_paths())
    missing = [module for module in modules() if module not in listed]
    assert not missing, f"add a row for each to the Layout on docs/architecture.md: {', '.join(missing)}"


def test_every_path_on_the_layout_exists():
    paths = layout_paths()
    assert len(paths) > len(PACKAGE_FOLDERS)
    gone = [path for path in paths if not (ROOT / path).exists()]
    assert not gone, f"listed on docs/architecture.md but not in the tree: {', '.join(gone)}"
    assert len(paths) == len(set(paths)), "a path is listed twice"


def test_the_nav_holds_every_page_once():
    nav = nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])
    pages = sorted(path.relative_to(DOCS).as_posix() for path in DOCS.rglob("*.md"))
    assert len(nav) == len(set(nav)), "a page is in the nav twice"
    assert sorted(nav) == pages


def test_readme_links_land_on_pages_and_headings_that_exist():
    readme = (ROOT / "README.md").read_text()
    local = [target for target in LINK.findall(readme) if not re.match(r"[a-z]+://", target)]
    to_docs = [target for target in local if target.startswith("docs/")]
    assert to_docs, "the README links to the docs pages"
    for target in local:
        path, _, anchor = target.partition("#")
        assert (ROOT / path).is_file(), f"README links to {target}: no such file"
        if anchor:
            assert anchor in anchors(ROOT / path), f"README links to {target}: no such heading"
    linked = {target.partition("#")[0].removeprefix("docs/") for target in to_docs}
    unlinked = set(nav_pages(yaml.safe_load((ROOT / "mkdocs.yml").read_text())["nav"])) - linked - {"index.md"}
    assert not unlinked, f"the README's list of pages lacks {', '.join(sorted(unlinked))}"


def test_readme_starts_with_the_two_commands_and_marks_what_the_docs_home_includes():
    readme = (ROOT / "README.md").read_text()
    first_block = readme.split("```")[1]
    assert [line.split()[:2] for line in first_block.strip().splitlines()] == [["make", "demo"], ["make", "test"]]
    for name in ("pitch", "demo"):  # docs/index.md includes them (pymdownx.snippets)
        assert readme.count(f"--8<-- [start:{name}]") == readme.count(f"--8<-- [end:{name}]") == 1
        assert f'--8<-- "README.md:{name}"' in (DOCS / "index.md").read_text()


@pytest.mark.parametrize("script", sorted(p.name for p in (ROOT / "bench").glob("*.py")))
def test_the_benchmarks_page_names_every_bench_script(script):
    assert f"bench/{script}" in (DOCS / "benchmarks.md").read_text()
