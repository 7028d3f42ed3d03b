"""The import contracts in .importlinter cover every module, and hold.

`lint-imports` (run by .ci/run) checks the contracts; these tests check that the layers
contract names every module of the product, so that a new module cannot sit outside it.
"""

from __future__ import annotations

import configparser
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO

PRODUCT = ("rag", "ingest")
TOP = ("ui", "lab")


def layer_names() -> list[str]:
    config = configparser.ConfigParser()
    config.read(REPO / ".importlinter", encoding="utf-8")
    layers = config["importlinter:contract:layers"]["layers"]
    names = []
    for line in layers.strip().splitlines():
        names += [name.strip() for name in line.replace("|", ":").split(":")]
    return names


def product_modules() -> list[str]:
    """Every module of rag and ingest, a package's modules under the package's name."""
    modules = []
    for package in PRODUCT:
        for path in sorted((REPO / package).rglob("*.py")):
            parts = path.relative_to(REPO).with_suffix("").parts
            if parts[-1] == "__init__":
                continue
            modules.append(".".join(parts))
    return modules


def covered(module: str, names: list[str]) -> bool:
    return any(module == name or module.startswith(name + ".") for name in names)


def test_every_module_of_the_product_has_a_layer():
    names = layer_names()
    missing = [m for m in product_modules() if not covered(m, names)]
    assert not missing, f"add these to a layer in .importlinter: {missing}"


def test_the_app_and_the_lab_are_the_top_layer():
    first = (REPO / ".importlinter").read_text(encoding="utf-8")
    assert f"layers =\n    {TOP[0]} | {TOP[1]}\n" in first


def test_every_layer_name_is_a_module():
    names = layer_names()
    for name in names:
        path = REPO / Path(*name.split("."))
        assert path.with_suffix(".py").is_file() or (path / "__init__.py").is_file(), name


@pytest.mark.parametrize("bad", ["rag/store.py", "rag/types.py"])
def test_the_contracts_catch_an_import_against_the_layers(tmp_path, bad):
    """A component that imports the pipeline breaks the layers and makes a cycle."""
    copy = tmp_path / "repo"
    for top in (*PRODUCT, *TOP):
        shutil.copytree(REPO / top, copy / top, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / ".importlinter").write_text(
        (REPO / ".importlinter").read_text(encoding="utf-8"), encoding="utf-8"
    )
    with open(copy / bad, "a", encoding="utf-8") as f:
        f.write("\nimport rag.pipeline  # noqa: E402,F401\n")
    lint = Path(sys.executable).with_name("lint-imports")
    done = subprocess.run(
        [str(lint), "--no-logo", "--no-cache"],
        cwd=copy,
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(copy), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1, done.stdout + done.stderr
    assert "The app and the lab, then the command lines" in done.stdout
    assert "BROKEN" in done.stdout
    assert f"{bad[:-3].replace('/', '.')} -> rag.pipeline" in done.stdout
