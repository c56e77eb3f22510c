"""Writing results: each harness owns one marked section of ``benchmarks/README.md``.

A harness rewrites only the text between ``<!-- BEGIN name -->`` and ``<!-- END name -->``,
so the two harnesses (and the hand-written prose around them) never overwrite each other.
"""

from __future__ import annotations

import json
import os
import platform
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
README = BENCH_DIR / "README.md"
RESULTS = BENCH_DIR / "results"


def machine() -> str:
    """One line naming the machine the numbers come from."""
    model = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = ""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal"):
                mem = f", {int(line.split()[1]) // 1024 // 1024} GiB RAM"
                break
    except OSError:
        pass
    return (
        f"{cpus} CPUs ({model}){mem}, {platform.system()} {platform.release()}, "
        f"Python {sys.version.split()[0]}"
    )


def stamp() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC")


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def run_or_load(
    script: str,
    argv: Sequence[str] | None,
    render_from: Path | None,
    json_out: Path | None,
    run: Callable[[], tuple[list[Any], dict[str, Any]]],
    load: Callable[[Path], tuple[list[Any], dict[str, Any]]],
) -> tuple[list[Any], dict[str, Any]]:
    """A harness's results and metadata: those of ``render_from`` (a ``--json`` file of an
    earlier run, rendered again without running), or a new ``run()``, whose command line is
    recorded and whose JSON is written to ``json_out`` before anything is rendered, so a
    run's data outlives a bug in its tables."""
    if render_from is not None:
        return load(render_from)
    results, meta = run()
    command = " ".join(sys.argv[1:] if argv is None else argv)
    meta["command"] = f"python benchmarks/{script} {command}".strip()
    if json_out is not None:
        json_out.write_text(
            json.dumps({"meta": meta, "results": [asdict(r) for r in results]}, indent=1)
        )
    return results, meta


def replace_section(readme: Path, name: str, content: str) -> None:
    """Replace the marked section ``name`` of ``readme`` (appended when missing)."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{content.strip()}\n{end}"
    text = readme.read_text() if readme.exists() else ""
    pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text, count=1)
    else:
        text = text.rstrip() + ("\n\n" if text else "") + block + "\n"
    readme.write_text(text)
