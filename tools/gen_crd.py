"""Write ``manifests/base/crd.yaml``, the MachineCatalog CustomResourceDefinition, from the
pydantic model (:func:`machine_catalog.crd.crd_yaml`; ``machine-catalog schema --crd``
prints the same text).

    .venv/bin/python tools/gen_crd.py            # write the file
    .venv/bin/python tools/gen_crd.py --check    # fail when the committed file differs

``make test`` runs ``--check`` (tests/test_crd.py): a change to the model goes with a
regenerated CRD in the same commit, as scheduler-plugins' ``hack/verify-crdgen.sh`` does.
"""

from __future__ import annotations

import argparse
import difflib
import sys
from pathlib import Path

from machine_catalog.crd import crd_yaml

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "manifests" / "base" / "crd.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--out", type=Path, default=OUT, help="the CRD file")
    args = parser.parse_args(argv)
    text = crd_yaml()
    if not args.check:
        args.out.write_text(text)
        print(f"wrote {args.out}")
        return 0
    try:
        committed = args.out.read_text()
    except OSError as exc:
        print(f"{args.out}: cannot read: {exc.strerror}", file=sys.stderr)
        return 1
    if committed == text:
        print(f"{args.out}: up to date")
        return 0
    diff = difflib.unified_diff(
        committed.splitlines(keepends=True), text.splitlines(keepends=True), "committed", "model"
    )
    sys.stderr.writelines(list(diff)[:60])
    print(
        f"{args.out} differs from what the model generates; run: .venv/bin/python tools/gen_crd.py",
        file=sys.stderr,
    )
    return 1


if __name__ == "__main__":
    sys.exit(main())
