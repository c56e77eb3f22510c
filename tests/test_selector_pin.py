"""The pin once a family is labelled: one ``spec.nodeSelector`` entry on the family label.

The webhook writes it when every node of the family carries ``machine-catalog.io/family``
(kube-scheduler checks a nodeSelector with a label lookup, a node-affinity term with a
field-set allocation per node). These tables check the three places that read or write
the pin: the first call's patch, the reinvocation's check that the pin still holds, and
the stranded-pod remedy's "the pod's own node rules" (the pin taken out again). Each
expectation is the patched pod as the API server would store it (the RFC 6902 patch
applied with ``jsonpatch``), or the rules the remedy reads.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch
import pytest

from extender.admission.patching import (
    FAMILY_SOURCE_ANNOTATION,
    REQUIRED,
    normalize_ops,
    read_cpu_values,
)
from extender.admission.reinvocation import repin_ops, without_pin
from machine_catalog.annotations import FAMILY_LABEL
from machine_catalog.loading import load_catalog
from machine_catalog.matching import INSTANCE_TYPE_LABEL, family_label_term

CATALOG = load_catalog()
FAMILY = CATALOG.families[0]
OTHER = CATALOG.families[1]
ZONE = "topology.kubernetes.io/zone"
ZONE_TERM = {"matchExpressions": [{"key": ZONE, "operator": "In", "values": ["a"]}]}
PIN = {FAMILY_LABEL: FAMILY.name}


def pod(**spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "p", "annotations": {}},
        "spec": {
            "containers": [{"name": "c", "resources": {"requests": {"cpu": "2"}}}],
            **spec,
        },
    }


def required(*terms: dict[str, Any]) -> dict[str, Any]:
    return {"nodeAffinity": {REQUIRED: {"nodeSelectorTerms": list(terms)}}}


def admitted(p: dict[str, Any], *, labelled: bool) -> dict[str, Any]:
    ops = normalize_ops(p, read_cpu_values(p), FAMILY, CATALOG.version, labelled=labelled)
    return jsonpatch.apply_patch(copy.deepcopy(p), ops)


@pytest.mark.parametrize(
    ("spec", "selector", "affinity"),
    [
        pytest.param({}, PIN, None, id="bare pod: the nodeSelector is created"),
        pytest.param(
            {"nodeSelector": {ZONE: "a"}},
            {ZONE: "a", **PIN},
            None,
            id="the pod's own nodeSelector keeps its entries",
        ),
        pytest.param(
            {"affinity": required(ZONE_TERM)},
            PIN,
            required(ZONE_TERM),
            id="the pod's own affinity is left as it was (the nodeSelector ANDs with it)",
        ),
        pytest.param(
            {"nodeSelector": dict(PIN)}, PIN, None, id="the user's own family label: unchanged"
        ),
    ],
)
def test_a_labelled_family_is_pinned_by_one_nodeselector_entry(spec, selector, affinity):
    stored = admitted(pod(**copy.deepcopy(spec)), labelled=True)
    assert stored["spec"]["nodeSelector"] == selector
    assert stored["spec"].get("affinity") == affinity


def test_until_the_family_is_labelled_the_pin_is_the_affinity_and_no_nodeselector():
    stored = admitted(pod(nodeSelector={ZONE: "a"}), labelled=False)
    assert stored["spec"]["nodeSelector"] == {ZONE: "a"}
    terms = stored["spec"]["affinity"]["nodeAffinity"][REQUIRED]["nodeSelectorTerms"]
    keys = {e["key"] for t in terms for e in t["matchExpressions"]}
    assert INSTANCE_TYPE_LABEL in keys and FAMILY_LABEL not in keys


@pytest.mark.parametrize(
    ("spec", "user"),
    [
        pytest.param({}, False, id="the webhook's choice"),
        pytest.param({"nodeSelector": dict(PIN)}, True, id="the family label in the nodeSelector"),
        pytest.param({"nodeSelector": {ZONE: "a"}}, False, id="another nodeSelector entry"),
    ],
)
def test_a_family_label_the_user_wrote_is_recorded_as_the_users_family(spec, user):
    stored = admitted(pod(**spec), labelled=True)
    assert (stored["metadata"]["annotations"].get(FAMILY_SOURCE_ANNOTATION) == "user") is user


LABEL_TERM = {"matchExpressions": family_label_term(FAMILY)}
OTHER_TERM = {"matchExpressions": family_label_term(OTHER)}


@pytest.mark.parametrize(
    ("spec", "labelled", "selector", "affinity"),
    [
        pytest.param(
            {"nodeSelector": dict(PIN), "affinity": required(ZONE_TERM, OTHER_TERM)},
            True,
            PIN,
            required(ZONE_TERM, OTHER_TERM),
            id="a later webhook ORs in terms: the nodeSelector still pins every one",
        ),
        pytest.param(
            {"nodeSelector": {ZONE: "a"}},
            True,
            {ZONE: "a", **PIN},
            None,
            id="a later webhook replaced the nodeSelector: the entry comes back",
        ),
        pytest.param(
            {"affinity": required(LABEL_TERM)},
            True,
            None,
            required(LABEL_TERM),
            id="a pod pinned by the label's affinity term (before the move): it holds",
        ),
        pytest.param(
            {"affinity": required({"matchExpressions": [*family_label_term(FAMILY)]}, ZONE_TERM)},
            True,
            PIN,
            required({"matchExpressions": [*family_label_term(FAMILY)]}, ZONE_TERM),
            id="a term lost the old pin, the family is labelled: the nodeSelector pins it",
        ),
    ],
)
def test_a_reinvocation_restores_a_lost_pin_and_leaves_one_that_holds(
    spec, labelled, selector, affinity
):
    p = pod(**copy.deepcopy(spec))
    stored = jsonpatch.apply_patch(p, repin_ops(p["spec"], FAMILY, labelled=labelled))
    assert stored["spec"].get("nodeSelector") == selector
    assert stored["spec"].get("affinity") == affinity


@pytest.mark.parametrize(
    ("spec", "rules"),
    [
        pytest.param({"nodeSelector": dict(PIN)}, {}, id="only the pin: no nodeSelector left"),
        pytest.param(
            {"nodeSelector": {ZONE: "a", **PIN}},
            {"nodeSelector": {ZONE: "a"}},
            id="the pod's own entries stay",
        ),
        pytest.param(
            {"nodeSelector": {FAMILY_LABEL: OTHER.name}},
            {"nodeSelector": {FAMILY_LABEL: OTHER.name}},
            id="another family's label is not this pin",
        ),
    ],
)
def test_the_remedy_reads_the_pods_rules_without_the_nodeselector_pin(spec, rules):
    unpinned = without_pin(pod(**spec)["spec"], FAMILY)
    assert {k: v for k, v in unpinned.items() if k == "nodeSelector"} == rules
    assert unpinned["containers"] == pod()["spec"]["containers"]
