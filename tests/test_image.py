"""The server image's build context holds everything the wheel needs.

``.dockerignore`` excludes everything, then re-includes what the Dockerfile's
``pip wheel .`` reads. A package left out builds an image whose ``machine-catalog``
entry point cannot import (the CLI moved to ``machine_catalog_cli`` and was missed once).
"""

from __future__ import annotations

import tomllib
from fnmatch import fnmatch
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def included() -> set[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    patterns = [line.strip() for line in lines if line.strip() and not line.startswith("#")]
    assert patterns[0] == "*", "the context starts empty and re-includes what it needs"
    return {p[1:].rstrip("/") for p in patterns if p.startswith("!")}


def test_every_packaged_package_is_in_the_build_context() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    wanted = project["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = {
        d.name
        for d in ROOT.iterdir()
        if (d / "__init__.py").is_file() and any(fnmatch(d.name, w) for w in wanted)
    }
    assert packages >= {"machine_catalog", "extender", "machine_catalog_cli"}
    assert packages <= included()


def test_the_files_the_metadata_names_are_in_the_build_context() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert {"pyproject.toml", project["readme"]} <= included()


def test_the_entry_point_lives_in_an_included_package() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    module = project["scripts"]["machine-catalog"].split(":")[0]
    assert module.split(".")[0] in included()
