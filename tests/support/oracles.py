"""Upstream rules written out again, independently of the code under test.

Each function states how kube-scheduler or the API server decides something, built only
from :func:`machine_catalog.selectors.requirement_matches` (one label requirement) and exact
fractions, so a test compares the code's answer with an answer it did not compute.
:func:`term_selects` is the one node-selector oracle of the test suite.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction
from typing import Any

from extender.admission.patching import REQUIRED
from machine_catalog.quantities import parse_quantity
from machine_catalog.selectors import requirement_matches


def term_selects(term: Mapping[str, Any], name: str, labels: Mapping[str, str]) -> bool:
    """One nodeSelectorTerm, as kube-scheduler's nodeaffinity evaluates it."""
    expressions = term.get("matchExpressions") or []
    fields = term.get("matchFields") or []
    if not expressions and not fields:
        return False  # an empty term selects nothing
    return all(
        requirement_matches(labels, e["key"], e["operator"], e.get("values") or ())
        for e in expressions
    ) and all(
        requirement_matches({"metadata.name": name}, f["key"], f["operator"], f.get("values") or ())
        for f in fields
    )


def pod_selects(pod: Mapping[str, Any], node_obj: Mapping[str, Any]) -> bool:
    """nodeSelector AND (ORed required terms), for one node."""
    spec = pod.get("spec") or {}
    labels = node_obj["metadata"].get("labels") or {}
    name = node_obj["metadata"]["name"]
    if any(labels.get(k) != v for k, v in (spec.get("nodeSelector") or {}).items()):
        return False
    required = ((spec.get("affinity") or {}).get("nodeAffinity") or {}).get(REQUIRED)
    if required is None:
        return True
    return any(term_selects(t, name, labels) for t in required.get("nodeSelectorTerms") or [])


def requirement_terms_select(
    terms: list[list[dict[str, Any]]], name: str, labels: Mapping[str, str]
) -> bool:
    """Terms given as lists of ``matchExpressions`` (``family_selector_terms``), ORed."""
    return any(term_selects({"matchExpressions": t}, name, labels) for t in terms)


def qos_class(pod: Mapping[str, Any]) -> str:
    """``v1.PodQOSClass`` as ``pkg/apis/core/v1/helper/qos`` computes it (cpu and memory)."""
    containers = list(pod["spec"].get("containers") or []) + list(
        pod["spec"].get("initContainers") or []
    )
    any_set = False
    guaranteed = True
    for c in containers:
        res = c.get("resources") or {}
        requests, limits = res.get("requests") or {}, res.get("limits") or {}
        for name in ("cpu", "memory"):
            if name in requests or name in limits:
                any_set = True
            if name not in limits:
                guaranteed = False
                continue
            request = requests.get(name, limits[name])  # defaulting copies limit to request
            if parse_quantity(request) != parse_quantity(limits[name]):
                guaranteed = False
    if not any_set:
        return "BestEffort"
    return "Guaranteed" if guaranteed else "Burstable"


def expected_physical(scu: str, scu_per_core: Decimal) -> int:
    """ceil(scu millis / factor), with exact fractions, computed independently."""
    return math.ceil(Fraction(parse_quantity(scu)) * 1000 / Fraction(scu_per_core))
