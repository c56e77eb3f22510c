"""The suite judges the code, not the checkout it runs in.

Two ways a checkout turned ``make test`` red without any change to the code: Hypothesis
replayed a stored failing example from ``.hypothesis/`` forever (``make clean`` kept it),
and tests read files git ignores (the private keys ``docs/operations.md`` has a reader
generate into ``manifests/overlays/generated-certs/certs``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from support.tracked import copy_tracked, tracked_files

ROOT = Path(__file__).resolve().parent.parent

A_FAILING_PROPERTY = """
from hypothesis import given, strategies as st

@given(st.integers(min_value=0, max_value=1000))
def test_fails_sometimes(n):
    assert n < 500
"""


def git(*args: str, cwd: Path) -> str:
    out = subprocess.run(
        ["git", "-c", "user.name=t", "-c", "user.email=t@example.invalid", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    return out.stdout


def test_a_failing_example_is_printed_with_its_replay_and_never_stored(tmp_path: Path) -> None:
    shutil.copy(ROOT / "tests" / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "test_property.py").write_text(A_FAILING_PROPERTY)
    env = {k: v for k, v in os.environ.items() if k != "MC_HYPOTHESIS_PROFILE"}
    run = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_property.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )
    assert run.returncode == 1, run.stdout
    assert "test_fails_sometimes(\n" in run.stdout  # the failing example, printed
    assert "@reproduce_failure(" in run.stdout  # print_blob: how to replay it on purpose
    # Hypothesis may cache the source's constants there; never an example to replay.
    assert not (tmp_path / ".hypothesis" / "examples").exists()


def test_make_clean_removes_the_example_database() -> None:
    dry = subprocess.run(
        ["make", "-n", "clean"], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert dry.returncode == 0, dry.stderr
    assert ".hypothesis" in dry.stdout.split()


def test_an_ignored_file_is_not_among_the_files_tests_judge(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    (repo / "d").mkdir(parents=True)
    (repo / ".gitignore").write_text("d/*.key\n")
    (repo / "d" / "kept.yaml").write_text("a: 1\n")
    git("init", "-q", cwd=repo)
    git("add", "-A", cwd=repo)
    git("commit", "-qm", "x", cwd=repo)
    (repo / "d" / "private.key").write_text("secret\n")  # ignored
    (repo / "d" / "new.yaml").write_text("b: 2\n")  # new, not ignored: judged
    assert tracked_files(repo / "d", repo) == [repo / "d" / "kept.yaml", repo / "d" / "new.yaml"]
    copied = copy_tracked(repo / "d", tmp_path / "copy", repo)
    assert sorted(p.name for p in copied.iterdir()) == ["kept.yaml", "new.yaml"]


@pytest.mark.slow
def test_following_the_certificate_steps_leaves_the_suite_green(tmp_path: Path) -> None:
    """The regression: in a checkout where a reader ran the documented ``certs`` command,
    the tests that read ``manifests/`` still pass (they failed before: "kept the existing
    CA" instead of "new CA", and a placeholder that no longer said to run ``certs``)."""
    checkout = copy_tracked(ROOT, tmp_path / "checkout")
    git("init", "-q", cwd=checkout)
    git("add", "-A", cwd=checkout)
    git("commit", "-qm", "checkout", cwd=checkout)
    certs = Path("manifests", "overlays", "generated-certs", "certs")
    subprocess.run(
        [sys.executable, "-m", "machine_catalog_cli", "certs", "--service",
         "machine-catalog-webhook", "--extra-service", "machine-catalog-extender",
         "--namespace", "machine-catalog-system", "--out", str(certs)],
        cwd=checkout, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    ignored = git("status", "--porcelain", "--ignored", "--", str(certs), cwd=checkout)
    assert f"!! {certs}/ca.key" in ignored.splitlines()  # the keys are there, and ignored
    run = subprocess.run(
        [
            sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
            "tests/test_certs.py::test_the_generated_certs_overlay_says_to_run_certs_first",
            "tests/test_docs.py::test_every_command_of_the_page_runs_as_written[docs/cli.md]",
        ],
        cwd=checkout, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:]
    assert "2 passed" in run.stdout
