"""Hypothesis strategies for pods, their resources and node-selector terms.

The pods are shaped as users write them: containers, init containers (some restartable
sidecars), pod-level resources, and every shape of ``affinity`` the webhook must handle
(absent, empty, empty ``nodeAffinity``, required terms). Terms draw label keys and values
that the nodes of :data:`support.nodes.NODES` carry, and ``matchFields`` on their names.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from hypothesis import strategies as st

from extender.admission.patching import REQUIRED
from machine_catalog.matching import INSTANCE_TYPE_LABEL
from support.nodes import NODES, ZONE

KEYS = [ZONE, "kubernetes.io/arch", INSTANCE_TYPE_LABEL, "pool"]
VALUES = ["z0", "z1", "z2", "amd64", "arm64", "m5.large", "us-east-1a", "p1"]


@st.composite
def cpu_quantity(draw) -> str:
    millis = draw(st.integers(min_value=0, max_value=96_000))
    style = draw(st.sampled_from(["milli", "cores", "decimal"]))
    if style == "cores" and millis % 1000 == 0:
        return str(millis // 1000)
    if style == "decimal" and millis % 100 == 0:
        return str(Decimal(millis) / 1000)
    return f"{millis}m"


@st.composite
def resources(draw) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in ("requests", "limits"):
        values = {}
        if draw(st.booleans()):
            values["cpu"] = draw(cpu_quantity())
        if draw(st.booleans()):
            values["memory"] = draw(st.sampled_from(["64Mi", "1Gi", "1.5G", "100"]))
        if values or draw(st.booleans()):
            out[kind] = values
    return out


@st.composite
def requirement(draw) -> dict[str, Any]:
    op = draw(st.sampled_from(["In", "NotIn", "Exists", "DoesNotExist"]))
    req: dict[str, Any] = {"key": draw(st.sampled_from(KEYS)), "operator": op}
    if op in ("In", "NotIn"):
        req["values"] = draw(st.lists(st.sampled_from(VALUES), min_size=1, max_size=3, unique=True))
    return req


@st.composite
def term(draw) -> dict[str, Any]:
    t: dict[str, Any] = {}
    expressions = draw(st.lists(requirement(), max_size=3))
    if expressions or draw(st.booleans()):
        t["matchExpressions"] = expressions
    if draw(st.integers(0, 4)) == 0:
        names = [n["metadata"]["name"] for n in NODES]
        t["matchFields"] = [
            {
                "key": "metadata.name",
                "operator": draw(st.sampled_from(["In", "NotIn"])),
                "values": draw(
                    st.lists(st.sampled_from(names), min_size=1, max_size=4, unique=True)
                ),
            }
        ]
    return t


@st.composite
def pods(draw) -> dict[str, Any]:
    n_containers = draw(st.integers(1, 4))
    containers = [
        {"name": f"c{i}", "image": "x", "resources": draw(resources())} for i in range(n_containers)
    ]
    init = []
    for i in range(draw(st.integers(0, 3))):
        c: dict[str, Any] = {"name": f"i{i}", "image": "x", "resources": draw(resources())}
        if draw(st.booleans()):
            c["restartPolicy"] = "Always"
        init.append(c)
    spec: dict[str, Any] = {"containers": containers}
    if init:
        spec["initContainers"] = init
    shape = draw(st.sampled_from(["none", "empty", "node-empty", "required"]))
    if shape == "empty":
        spec["affinity"] = {}
    elif shape == "node-empty":
        spec["affinity"] = {"nodeAffinity": {}}
    elif shape == "required":
        spec["affinity"] = {
            "nodeAffinity": {
                REQUIRED: {"nodeSelectorTerms": draw(st.lists(term(), min_size=1, max_size=3))}
            }
        }
    if draw(st.booleans()):
        spec["resources"] = draw(resources())
    meta: dict[str, Any] = {"generateName": "p-"}
    if draw(st.booleans()):
        meta["annotations"] = {"other/key": "v"}
    return {"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": spec}
