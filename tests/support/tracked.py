"""The repository as git tracks it: what tests judge, never the files a reader adds.

Following ``docs/operations.md`` writes private keys into
``manifests/overlays/generated-certs/certs`` (ignored by git) and rewrites the tracked
placeholder there. A test that copied or walked ``manifests/`` as it lies on disk then judged
those files too, and two tests failed in any checkout that had been used to deploy. So tests
list files with ``git ls-files --cached --others --exclude-standard`` (tracked, and new files
not ignored) and read their working-tree content (an edit in progress is judged before it is
committed); a test about what the repository *ships* reads the index (:func:`committed_text`).

Outside a git checkout (an unpacked sdist) there is nothing ignored, and every file counts.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _git(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, timeout=60)


def in_git_checkout(root: Path = ROOT) -> bool:
    probe = _git("rev-parse", "--is-inside-work-tree", cwd=root)
    return probe.returncode == 0 and probe.stdout.strip() == b"true"


def tracked_files(path: Path, root: Path = ROOT) -> list[Path]:
    """Files under ``path`` that git tracks or would (new, not ignored), sorted."""
    if not in_git_checkout(root):
        return sorted(p for p in path.rglob("*") if p.is_file())
    listed = _git(
        "ls-files",
        "-z",
        "--cached",
        "--others",
        "--exclude-standard",
        "--",
        str(path.relative_to(root)),
        cwd=root,
    )
    listed.check_returncode()
    names = [n for n in listed.stdout.decode().split("\0") if n]
    return sorted({p for p in (root / n for n in names) if p.is_file()})


def copy_tracked(path: Path, dest: Path, root: Path = ROOT) -> Path:
    """Copy what git tracks under ``path`` to ``dest`` (layout kept); returns ``dest``."""
    dest.mkdir(parents=True, exist_ok=True)
    for file in tracked_files(path, root):
        target = dest / file.relative_to(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(file, target)
    return dest


def committed_text(path: Path, root: Path = ROOT) -> str:
    """``path`` as the index holds it: the shipped file, whatever a reader wrote over it."""
    if not in_git_checkout(root):
        return path.read_text()
    shown = _git("show", f":{path.relative_to(root).as_posix()}", cwd=root)
    shown.check_returncode()
    return shown.stdout.decode()
