"""The commands in the README and docs/, run as written.

Every fenced shell block (``sh``, ``bash``, ``console``) of the pages below is read:

- ``console`` blocks show ``$ command`` lines and their output. Each command runs in
  order, and its output (stdout and stderr, as a terminal shows them) must be the one
  printed, line for line; ``$ echo $?`` shows the exit code of the command before it.
  Without it a command exits 0, or non-zero when its output shows an error.
- ``sh`` blocks: every ``machine-catalog`` (or ``.venv/bin/machine-catalog``) command and
  every ``cp``/``mkdir`` setup line runs, and must exit 0. Lines for other programs
  (kubectl, docker, make) need a cluster or a daemon; the README's ``curl`` tour runs
  against a real ``machine-catalog serve`` below.

Commands run with ``bash -c`` in a directory laid out like the repository root (its
``machine_catalog/data``, ``examples`` and ``manifests``), plus the files a reader is told
they have (``catalog.yaml``, ``old/catalog.yaml``, ``fleet.json``). Only a date
(``YYYY-MM-DD``, from ``certs``) is not compared.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import stat
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from support.helpers import serve, wait_until
from support.tracked import copy_tracked

ROOT = Path(__file__).resolve().parent.parent
PAGES = [
    "README.md",
    "docs/cli.md",
    "docs/operations.md",
    "docs/design.md",
    "docs/default-scheduler-extender.md",
]
CLI = ("machine-catalog", ".venv/bin/machine-catalog")
SETUP = ("cp", "mkdir")
#: Needs a cluster, so not run here (the e2e harness covers the live paths).
NEEDS_CLUSTER = ("kubectl", "<(", "~/.kube")
DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass
class Command:
    text: str
    output: list[str] = field(default_factory=list)
    code: int | None = None  # None: 0, or non-zero when the output shows an error


@dataclass
class Block:
    page: str
    line: int
    lang: str
    lines: list[str]


def blocks(page: str) -> list[Block]:
    found, current = [], None
    for number, line in enumerate((ROOT / page).read_text().splitlines(), 1):
        if current is None:
            opening = re.fullmatch(r"\s*```(\w+)\s*", line)
            if opening and opening.group(1) in ("sh", "bash", "console", "shell"):
                current = Block(page, number, opening.group(1), [])
            elif line.strip().startswith("```"):
                current = Block(page, number, "other", [])
        elif line.strip() == "```":
            if current.lang != "other":
                found.append(current)
            current = None
        else:
            current.lines.append(line)
    return found


def logical(lines: list[str]) -> list[str]:
    """Lines joined as the shell reads them: ``\\`` continuations and open quotes."""
    out: list[str] = []
    pending = ""
    for line in lines:
        line = pending + "\n" + line if pending else line
        if line.rstrip().endswith("\\") or not _quotes_closed(line):
            pending = line
            continue
        pending = ""
        out.append(line)
    return out


def _quotes_closed(text: str) -> bool:
    try:
        shlex.split(text, comments=True)
    except ValueError:  # "No closing quotation"
        return False
    return True


def console_commands(block: Block) -> list[Command]:
    commands: list[Command] = []
    lines = block.lines
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith("$ "):
            text = line[2:]
            while text.rstrip().endswith("\\") and i + 1 < len(lines):
                i += 1
                text += "\n" + lines[i]
            commands.append(Command(text))
        elif commands:
            commands[-1].output.append(line)
        i += 1
    merged: list[Command] = []
    for command in commands:
        if command.text.strip() == "echo $?":
            merged[-1].code = int(command.output[0])
        else:
            merged.append(command)
    return merged


def sh_commands(block: Block) -> list[Command]:
    out = []
    for line in logical(block.lines):
        words = line.split()
        if not words or words[0].startswith("#"):
            continue
        code = " ".join(shlex.split(line, comments=True))  # comments may name kubectl
        if any(marker in code for marker in NEEDS_CLUSTER):
            continue
        if words[0] in CLI or words[0] in SETUP:
            out.append(Command(line, code=0))
    return out


def reader_directory(tmp_path: Path) -> Path:
    """A directory laid out like the repository root, with the reader's own files."""
    work = tmp_path / "reader"
    work.mkdir()
    # What git tracks only: a checkout used to deploy holds ignored keys in
    # manifests/overlays/generated-certs/certs, which a reader's clone does not.
    for tree in (Path("machine_catalog", "data"), Path("examples"), Path("manifests")):
        copy_tracked(ROOT / tree, work / tree)
    # What operations.md calls the reader's own files.
    shutil.copy(ROOT / "manifests" / "base" / "catalog.yaml", work / "catalog.yaml")
    (work / "old").mkdir()
    shutil.copy(ROOT / "manifests" / "base" / "catalog.yaml", work / "old" / "catalog.yaml")
    shutil.copy(ROOT / "machine_catalog" / "data" / "demo-snapshot.json", work / "fleet.json")
    # `machine-catalog` on PATH and `.venv/bin/machine-catalog`, both this interpreter's.
    wrapper = f'#!/bin/sh\nexec "{sys.executable}" -m machine_catalog_cli "$@"\n'
    for where in (work / "bin", work / ".venv" / "bin"):
        where.mkdir(parents=True)
        script = where / "machine-catalog"
        script.write_text(wrapper)
        script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return work


def run(command: str, work: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{work / 'bin'}{os.pathsep}{os.environ['PATH']}"}
    env.pop("MACHINE_CATALOG_DEBUG", None)
    return subprocess.run(
        ["bash", "-c", command],
        cwd=work,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )


def trimmed(lines: list[str]) -> list[str]:
    """Compared lines: dates masked; argparse's usage synopsis before a usage error left
    out (it lists every flag and is not what a page means to show)."""
    if lines and lines[0].startswith("usage: "):
        error = next((i for i, line in enumerate(lines) if ": error: " in line), 0)
        lines = lines[error:]
    lines = [DATE.sub("DATE", line.rstrip()) for line in lines]
    while lines and not lines[-1]:
        lines.pop()
    return lines


ALL = [b for page in PAGES for b in blocks(page)]


def test_the_pages_have_the_blocks_this_test_reads() -> None:
    pages = {b.page for b in ALL if b.lang == "console"}
    assert "docs/cli.md" in pages
    commands = [c.text for b in ALL for c in (console_commands(b) + sh_commands(b))]
    for verb in ("validate", "explain", "convert", "diff", "report", "certs", "schema"):
        assert any(f"machine-catalog {verb}" in c for c in commands), verb


def check_console(block: Block, work: Path) -> None:
    for command in console_commands(block):
        result = run(command.text, work)
        where = f"{block.page}:{block.line}: $ {command.text}"
        assert trimmed(result.stdout.splitlines()) == trimmed(command.output), where
        if command.code is not None:
            assert result.returncode == command.code, where
        else:
            shows_error = any(": error:" in line for line in command.output)
            assert (result.returncode != 0) == shows_error, where


def check_sh(block: Block, work: Path) -> None:
    for command in sh_commands(block):
        result = run(command.text, work)
        where = f"{block.page}:{block.line}: {command.text}"
        assert result.returncode == 0, f"{where}\n{result.stdout}"


@pytest.mark.parametrize("page", PAGES)
def test_every_command_of_the_page_runs_as_written(page: str, tmp_path: Path) -> None:
    """In page order, in a fresh reader's directory: setup lines run before the blocks
    that need their files, as a reader following the page would."""
    work = reader_directory(tmp_path)
    for block in blocks(page):
        (check_console if block.lang == "console" else check_sh)(block, work)


# -- the README's tour against a served demo -------------------------------------------------


def tour_commands() -> list[str]:
    (tour,) = [b for b in blocks("README.md") if any("curl" in line for line in b.lines)]
    return [line for line in logical(tour.lines) if line.split() and line.split()[0] == "curl"]


@pytest.mark.slow
def test_the_readme_tour_runs_against_make_run(tmp_path: Path) -> None:
    workdir = reader_directory(tmp_path)
    # `make run` is `machine-catalog serve`: packaged catalog, demo cluster.
    served = serve(tmp_path)
    try:
        wait_until(lambda: served.readyz()[0] == 200, "the demo server is ready")
        outputs = []
        for command in tour_commands():
            command = command.replace("localhost:8080", f"127.0.0.1:{served.port}")
            result = run(f"set -o pipefail; {command}", workdir)
            assert result.returncode == 0, f"{command}\n{result.stdout}"
            outputs.append(result.stdout)
    finally:
        served.stop()
    readyz, filtered, prioritized, metrics = outputs
    assert json.loads(readyz)["status"] == "ready"
    # What the README says the filter answers.
    answer = json.loads(filtered)
    assert answer["NodeNames"] == ["ip-10-0-47-9.eu-west-1.compute.internal"]
    assert set(answer["FailedAndUnresolvableNodes"]) == {
        "ip-10-0-12-34.eu-west-1.compute.internal",
        "ip-10-0-15-96.eu-west-1.compute.internal",
    }
    assert [h["Host"] for h in json.loads(prioritized)] == [
        "ip-10-0-47-9.eu-west-1.compute.internal",
        "ip-10-0-12-34.eu-west-1.compute.internal",
        "ip-10-0-15-96.eu-west-1.compute.internal",
    ]
    assert "machine_catalog_family_capacity_scu" in metrics


def test_the_prioritize_step_posts_the_same_request_as_the_filter_step() -> None:
    filter_step = next(c for c in tour_commands() if "/scheduler/filter" in c)
    inline = json.loads(re.search(r"-d '(\{.*\})'", filter_step, re.S).group(1))
    assert json.loads((ROOT / "examples" / "extender-request.json").read_text()) == inline
