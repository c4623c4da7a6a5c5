"""One import name: the folders install as `gavel.<folder>` (setuptools' package-dir) and nothing else lands at the
top level of site-packages but Hydra's `hydra_plugins` namespace, holding only gavel's sweeper. The package list in
pyproject.toml is checked against the tree, and the wheel itself is built and installed in a throwaway venv."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FOLDERS = ("attacks", "defenses", "targets", "experiments", "reports")
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
SETUPTOOLS = PYPROJECT["tool"]["setuptools"]


def tree_packages() -> set[str]:
    """Every folder with an __init__.py under the package folders, by the name it installs as."""
    found = {"gavel.conf", "hydra_plugins.gavel_sweeper"}
    for folder in FOLDERS:
        for init in (ROOT / folder).rglob("__init__.py"):
            parts = init.parent.relative_to(ROOT).parts
            found.add(".".join(("gavel", *parts)))
    return found


def tree_modules() -> set[str]:
    """Every module of the package folders and the sweeper plugin, as a path inside the wheel."""
    modules = {f"gavel/{p.relative_to(ROOT)}" for folder in FOLDERS for p in (ROOT / folder).rglob("*.py")}
    modules |= {str(p.relative_to(ROOT)) for p in (ROOT / "hydra_plugins" / "gavel_sweeper").rglob("*.py")}
    return {m for m in modules if "__pycache__" not in m}


def test_every_package_in_the_tree_is_listed_and_every_listed_one_exists():
    listed = set(SETUPTOOLS["packages"])
    assert listed == tree_packages()
    for top, folder in SETUPTOOLS["package-dir"].items():
        assert (ROOT / folder).is_dir(), f"package-dir {top} = {folder}: no such folder"
        assert top == "hydra_plugins" or top == f"gavel.{folder}"
    assert not (ROOT / "gavel").exists()  # the folders stay where the project card puts them


def site_packages(venv: Path) -> Path:
    (found,) = (venv / "lib").glob("python3*/site-packages")
    return found


@pytest.mark.slow
def test_the_wheel_installs_only_gavel_and_the_namespaced_sweeper(tmp_path):
    # build from a copy of the sources, so that nothing (build/, egg-info) is written into the repo
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    for folder in (*FOLDERS, "conf", "hydra_plugins"):
        shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "--quiet"]
    subprocess.run([*pip, "wheel", str(source), "--no-deps", "--no-build-isolation", "-w", str(wheels)], check=True)
    (wheel,) = wheels.glob("gavel-*.whl")

    names = zipfile.ZipFile(wheel).namelist()
    top = {n.split("/")[0] for n in names if not n.split("/")[0].endswith(".dist-info")}
    assert top == {"gavel", "hydra_plugins"}, top
    assert {n.split("/")[1] for n in names if n.startswith("hydra_plugins/")} == {"gavel_sweeper"}
    assert tree_modules() <= set(names), sorted(tree_modules() - set(names))
    yamls = {f"gavel/{p.relative_to(ROOT)}" for p in (ROOT / "conf").rglob("*.yaml")}
    assert yamls and yamls <= set(names), sorted(yamls - set(names))

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    before = {p.name for p in site_packages(venv).iterdir()}
    subprocess.run([venv / "bin" / "python", *pip[1:], "install", "--no-deps", "--no-index", str(wheel)], check=True)
    added = {p.name for p in site_packages(venv).iterdir()} - before
    assert {n for n in added if not n.endswith(".dist-info")} == {"gavel", "hydra_plugins"}, added
    assert {p.name for p in (site_packages(venv) / "hydra_plugins").iterdir()} == {"gavel_sweeper"}
    assert (venv / "bin" / "gavel").exists()
    # the installed names resolve (no dependencies are installed, so only what imports nothing heavy is imported)
    found = subprocess.run(
        [venv / "bin" / "python", "-c", "import importlib.util as u; print(u.find_spec('gavel.attacks').origin)"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert str(site_packages(venv)) in found.stdout
