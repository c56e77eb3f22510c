"""A family choice that fits: free SCU scattered in pieces smaller than the pod counts for
nothing, what is pending or reserved is taken off, and when no family fits the choice falls
back to aggregated free SCU (with a warning).

Tables over :func:`extender.admission.placement.holdable_scu` and :func:`choose_family`, on a real
:class:`ClusterState` filled with synthetic nodes and pods.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.reviews import Hook, create_review, labelled_node, patched

from extender.admission.converting import CPU_CONVERSION_ANNOTATION
from extender.admission.placement import (
    FAMILIES_ANNOTATION,
    FAMILY_ANNOTATION,
    NodeConstraints,
    Placement,
    ReservationLedger,
    choose_family,
    family_capacity,
    holdable_scu,
)
from extender.state.cluster import ClusterState
from machine_catalog.loading import parse_catalog

IT = "node.kubernetes.io/instance-type"

CATALOG = parse_catalog(
    """
apiVersion: machine-catalog.io/v1alpha1
kind: MachineCatalog
metadata: {name: fit-test}
spec:
  baseline: std
  families:
    - {name: std, scuPerCore: 1.0, instanceTypes: [std.large]}
    - {name: wide, scuPerCore: 1.0, instanceTypes: [wide.large]}
    - {name: quick, scuPerCore: 1.18, instanceTypes: [quick.large]}
"""
)

_uids = itertools.count()


def node(name: str, family: str, cpu: str, cordoned: bool = False) -> dict:
    return {
        "metadata": {"name": name, "labels": {IT: f"{family}.large"}},
        "spec": {"unschedulable": True} if cordoned else {},
        "status": {"allocatable": {"cpu": cpu}},
    }


def bound(node_name: str, cpu: str) -> dict:
    return {
        "metadata": {"uid": f"u{next(_uids)}", "namespace": "x", "name": f"p{next(_uids)}"},
        "spec": {
            "nodeName": node_name,
            "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}],
        },
        "status": {"phase": "Running"},
    }


def pending(family: str, cpu: str) -> dict:
    return {
        "metadata": {
            "uid": f"u{next(_uids)}",
            "namespace": "x",
            "name": f"p{next(_uids)}",
            "annotations": {FAMILY_ANNOTATION: family},
        },
        "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]},
        "status": {"phase": "Pending"},
    }


def fleet(nodes: Sequence[dict], pods: Sequence[dict] = ()) -> ClusterState:
    state = ClusterState(CATALOG)
    state.replace(nodes, pods)
    return state


def choose(
    state: ClusterState, pod_scu: int, reserved: Mapping[str, int] | None = None
) -> Placement:
    view = state.all_nodes()
    decision = choose_family(
        view,
        family_capacity(CATALOG, view, None, fixed=False),
        constraints=NodeConstraints(),
        allowed_nodes=None,
        requested=None,
        pending_physical=state.pending_millis(),
        reserved_scu=reserved or {},
        pod_scu=pod_scu,
    )
    assert isinstance(decision, Placement)
    return decision


# std: 8 SCU free as 2 SCU on each of four nodes; wide: 6 SCU free on one node.
FRAGMENTED = [node(f"std-{i}", "std", "4") for i in range(4)] + [node("wide-0", "wide", "8")]
FRAGMENTED_PODS = [bound(f"std-{i}", "2") for i in range(4)] + [bound("wide-0", "2")]


@pytest.mark.parametrize(
    ("pod_scu", "reserved", "family", "fits_warning"),
    [
        # Aggregated, std has more (8 > 6); but no std node holds 5 SCU: wide.
        (5_000, {}, "wide", False),
        # 2 SCU fits both: the old rule (most free SCU) decides among them.
        (2_000, {}, "std", False),
        # This worker promised wide 2 SCU: 4 left on its node, a 5 SCU pod no longer fits
        # anywhere, so aggregated free SCU decides (std 8 > wide 4), with a warning.
        (5_000, {"wide": 2_000}, "std", True),
        # Nothing holds 7 SCU: fall back to the most free SCU (std), warn.
        (7_000, {}, "std", True),
        # A reservation on std does not matter for a pod std cannot hold anyway.
        (5_000, {"std": 6_000}, "wide", False),
    ],
)
def test_a_family_is_a_candidate_only_if_one_allowed_node_can_hold_the_pod(
    pod_scu, reserved, family, fits_warning
):
    decision = choose(fleet(FRAGMENTED, FRAGMENTED_PODS), pod_scu, reserved)
    assert decision.family.name == family
    assert any("no allowed node of any family" in w for w in decision.warnings) == fits_warning


def test_pending_pods_of_a_family_use_up_its_nodes_before_the_next_pod():
    # wide has exactly one 6 SCU hole; a 5 SCU pod already pinned to wide and not yet bound
    # will take it, so the next 5 SCU pod cannot count on it.
    state = fleet(FRAGMENTED, [*FRAGMENTED_PODS, pending("wide", "5")])
    decision = choose(state, 5_000)
    assert decision.family.name == "std"
    assert any("it may stay Pending" in w for w in decision.warnings)


def test_a_burst_fills_the_holes_one_by_one_then_falls_back():
    # wide-0 holds two 3 SCU pods (6 free); std holds none (2 SCU per node).
    state = fleet(FRAGMENTED, FRAGMENTED_PODS)
    ledger = ReservationLedger(ttl=60.0)
    chosen = []
    for _ in range(3):
        decision = choose(state, 3_000, ledger.totals())
        ledger.reserve(decision.family.name, 3_000)
        chosen.append((decision.family.name, bool(decision.warnings)))
    assert chosen == [("wide", False), ("wide", False), ("std", True)]


def test_cordoned_nodes_do_not_hold_pods():
    nodes = [node("std-0", "std", "16", cordoned=True), node("std-1", "std", "2")]
    nodes.append(node("wide-0", "wide", "4"))
    assert choose(fleet(nodes), 3_000).family.name == "wide"


@pytest.mark.parametrize(
    ("free_cores", "pod_scu", "expected"),
    [
        # quick is 1.18 SCU/core: a 2 SCU pod requests ceil(2000 / 1.18) = 1695m.
        (["1.695"], 2_000, 2_000),
        (["1.694"], 2_000, 0),
        (["3.39"], 2_000, 4_000),  # two copies on one node
        (["3.389", "1.695"], 2_000, 4_000),  # 1 + 1
        (["0.5", "0.5", "0.5", "0.5"], 2_000, 0),  # 2.36 SCU in crumbs
        # A pod without a CPU request fits anywhere: the family's whole free SCU counts.
        (["1", "2"], 0, 3_540),
    ],
)
def test_holdable_scu(free_cores, pod_scu, expected):
    nodes = [node(f"q-{i}", "quick", cpu) for i, cpu in enumerate(free_cores)]
    view = fleet(nodes).all_nodes()
    capacity = family_capacity(CATALOG, view, None, fixed=False)
    index = CATALOG.family_index["quick"]
    factors = [f.factor for f in CATALOG.families]
    assert factors[index] == Fraction(118, 100)
    holdable = holdable_scu(capacity, factors, pod_scu)
    assert holdable[index] == expected
    assert holdable[CATALOG.family_index["std"]] == 0  # no std node at all
    if pod_scu:
        largest = max(int(Fraction(c) * 1000) for c in free_cores)
        assert capacity.largest_free_physical[index] == largest


@settings(max_examples=60, deadline=None)
@given(
    frees=st.lists(
        st.tuples(st.sampled_from(["std", "wide", "quick"]), st.integers(0, 20_000)),
        max_size=12,
    ),
    pod_scu=st.integers(1, 9_000),
)
def test_holdable_scu_agrees_with_placing_copies_node_by_node(frees, pod_scu):
    nodes = [node(f"n{i}", family, f"{millis}m") for i, (family, millis) in enumerate(frees)]
    view = fleet(nodes).all_nodes()
    capacity = family_capacity(CATALOG, view, None, fixed=False)
    holdable = holdable_scu(capacity, [f.factor for f in CATALOG.families], pod_scu)
    for family in CATALOG.families:
        need = math.ceil(Fraction(pod_scu) / family.factor)
        copies = 0
        for node_family, millis in frees:
            free = millis
            while node_family == family.name and free >= need:  # NodeResourcesFit, one at a time
                free -= need
                copies += 1
        assert holdable[CATALOG.family_index[family.name]] == copies * pod_scu


# -- room for exactly what the patch writes (whole cores, per-container rounding) ----------

WHOLE = parse_catalog(
    """
apiVersion: machine-catalog.io/v1alpha1
kind: MachineCatalog
metadata: {name: whole-cores}
spec:
  baseline: base
  families:
    - {name: base, scuPerCore: 1.0, instanceTypes: [base.large]}
    - {name: spr, scuPerCore: 1.3, instanceTypes: [spr.large]}
"""
)
# The cluster: one 1.3-family node with 1.9 cores free (2.47 SCU), one baseline
# node with 2.1 free.
WHOLE_NODES = [
    labelled_node("spr-0", "spr.large", "4"),
    labelled_node("base-0", "base.large", "4"),
]
WHOLE_PODS = [bound("spr-0", "2100m"), bound("base-0", "1900m")]


def app(requests: dict[str, str], limits: dict[str, str] | None = None) -> dict[str, Any]:
    resources: dict[str, Any] = {"requests": requests}
    if limits is not None:
        resources["limits"] = limits
    return {"name": "app", "image": "x", "resources": resources}


GUARANTEED_2 = app({"cpu": "2", "memory": "1Gi"}, {"cpu": "2", "memory": "1Gi"})


@pytest.mark.parametrize(
    ("containers", "annotations", "family", "cpu", "warning"),
    [
        # Guaranteed, whole SCU: 2 cores wherever it goes. The 1.3 node's 1.9 cores cannot
        # hold them, the baseline's 2.1 can: baseline, no warning.
        ([GUARANTEED_2], {}, "base", "2", None),
        # Burstable: 1539m on spr fits its 1.9 cores, and spr has the most free SCU.
        ([app({"cpu": "2"})], {}, "spr", "1539m", None),
        # Opted out of whole cores: exact, as Burstable.
        ([GUARANTEED_2], {CPU_CONVERSION_ANNOTATION: "exact"}, "spr", "1539m", None),
        # Held to spr by the user: pinned there, and told it cannot fit (2 cores there is
        # 2.6 SCU, 2.47 free).
        (
            [GUARANTEED_2],
            {FAMILIES_ANNOTATION: "spr"},
            "spr",
            "2",
            "family spr has 2.47 SCU free, the pod asks 2 (2 cores there: 2.6 SCU): it may",
        ),
    ],
)
def test_room_is_checked_for_the_values_the_patch_writes(
    containers, annotations, family, cpu, warning
):
    hook = Hook(WHOLE_NODES, WHOLE_PODS, catalog=WHOLE)
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": "web", "namespace": "shop", "annotations": annotations},
        "spec": {"containers": containers},
    }
    review = create_review(pod)
    response = hook.review(review)
    assert response["allowed"]
    out = patched(review, response)
    assert out["metadata"]["annotations"][FAMILY_ANNOTATION] == family
    assert out["spec"]["containers"][0]["resources"]["requests"]["cpu"] == cpu
    warnings = response.get("warnings", [])
    if warning is None:
        assert not any("Pending" in w for w in warnings), warnings
    else:
        assert any(warning in w for w in warnings), warnings


def test_a_burst_of_whole_core_pods_reserves_what_each_takes():
    # spr-0 with 5 cores free holds two Guaranteed 2-SCU pods (2 cores each), not the
    # three of 1539m that ceil(2000 / 1.3) would count (4617m); each admission reserves
    # the 2.6 SCU a pod takes there, so the third goes to base.
    nodes = [labelled_node("spr-0", "spr.large", "5"), labelled_node("base-0", "base.large", "2")]
    hook = Hook(nodes, [], catalog=WHOLE)
    chosen = []
    for i in range(3):
        pod = {
            "metadata": {"name": f"web-{i}", "namespace": "shop"},
            "spec": {"containers": [GUARANTEED_2]},
        }
        review = create_review(pod)
        out = patched(review, hook.review(review))
        chosen.append(out["metadata"]["annotations"][FAMILY_ANNOTATION])
    assert chosen == ["spr", "spr", "base"]
