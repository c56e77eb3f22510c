"""Write ``examples/pod-metrics.json``: a PodMetricsList for the packaged demo cluster, so
``machine-catalog calibrate`` can be tried without a cluster (the README's tour).

Each running pod uses a share of its CPU request that is the same for every replica of its
workload, divided by the *true* speed of its node's family. The true speeds are the
catalog's factors except for two families, which run 5% slower than the catalog says
(``TRUE_SPEED``): what ``calibrate`` should find. Deterministic (no randomness): the same
snapshot gives the same file, and ``--check`` (run by ``make test``) fails when the
committed file is not this script's output.

    python tools/gen_demo_metrics.py           # rewrite the file
    python tools/gen_demo_metrics.py --check   # exit 1 if it differs
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from fractions import Fraction
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SNAPSHOT = ROOT / "machine_catalog" / "data" / "demo-snapshot.json"
OUT = ROOT / "examples" / "pod-metrics.json"
#: Families whose hardware is slower than the packaged catalog claims (true / catalog).
TRUE_SPEED = {"aws-m6i": Fraction(95, 100), "aws-m7g": Fraction(95, 100)}
TIMESTAMP = "2026-11-20T08:00:00Z"


def _millis(value: str) -> int:
    from machine_catalog.quantities import to_millis

    return to_millis(value)


def _workload(pod: dict) -> str:
    owners = pod["metadata"].get("ownerReferences") or [{}]
    name = owners[0].get("name") or pod["metadata"]["name"]
    return f"{pod['metadata']['namespace']}/{name.rsplit('-', 1)[0]}"


def build() -> str:
    from machine_catalog.loading import load_catalog

    catalog = load_catalog()
    items = json.loads(SNAPSHOT.read_text())["items"]
    nodes = {i["metadata"]["name"]: i for i in items if i["kind"] == "Node"}
    out = []
    for pod in (i for i in items if i["kind"] == "Pod"):
        node = nodes.get(pod["spec"].get("nodeName") or "")
        if node is None or pod.get("status", {}).get("phase") != "Running":
            continue
        family = catalog.match(node["metadata"].get("labels") or {}).family
        if family is None:
            continue
        # A workload's load share in 30..69% of its request, from its name: stable, varied.
        share = 30 + int(hashlib.sha256(_workload(pod).encode()).hexdigest(), 16) % 40
        speed = family.factor * TRUE_SPEED.get(family.name, Fraction(1))
        containers = []
        for c in pod["spec"]["containers"]:
            request = _millis(((c.get("resources") or {}).get("requests") or {}).get("cpu", "0"))
            usage = Fraction(request * share, 100) / speed
            containers.append(
                {"name": c["name"], "usage": {"cpu": f"{round(usage)}m", "memory": "64Mi"}}
            )
        out.append(
            {
                "metadata": {
                    "name": pod["metadata"]["name"],
                    "namespace": pod["metadata"]["namespace"],
                },
                "timestamp": TIMESTAMP,
                "window": "30s",
                "containers": containers,
            }
        )
    doc = {
        "kind": "PodMetricsList",
        "apiVersion": "metrics.k8s.io/v1beta1",
        "metadata": {},
        "items": out,
    }
    return json.dumps(doc, indent=1) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the file differs")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    text = build()
    if args.check:
        if not args.out.exists() or args.out.read_text() != text:
            print(
                f"{args.out} is not the output of tools/gen_demo_metrics.py; rerun it",
                file=sys.stderr,
            )
            return 1
        return 0
    args.out.write_text(text)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
