"""Choosing the family: candidates, free SCU, ties, reservations, node-fixed pods, denials.

Pure functions over a real :class:`ClusterState` filled with synthetic nodes and pods; the
expected choices are recomputed here from the node objects with exact fractions.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from fractions import Fraction
from typing import Any

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support.nodes import NODES
from support.oracles import pod_selects
from support.strategies import term

from extender.admission.placement import (
    FAMILIES_ANNOTATION,
    FAMILY_ANNOTATION,
    MAX_FAMILIES_ANNOTATION,
    Denied,
    Placement,
    PlacementError,
    ReservationLedger,
    Unchanged,
    choose_family,
    family_capacity,
    node_mask,
    pod_constraints,
    pod_tolerations,
    requested_families,
    tolerates,
    toleration_mask,
)
from extender.state.cluster import ClusterState
from machine_catalog.catalog import Catalog
from machine_catalog.loading import parse_catalog

ZONE = "topology.kubernetes.io/zone"
VENDOR = "example.com/cpu-vendor"
IT = "node.kubernetes.io/instance-type"

CATALOG_YAML = """
apiVersion: machine-catalog.io/v1alpha1
kind: MachineCatalog
metadata: {name: placement-test}
spec:
  baseline: std
  unknownNodes: %(unknown)s
  families:
    - name: std
      scuPerCore: 1.0
      instanceTypes: [std.large, std.xlarge]
    - name: fast
      scuPerCore: 1.25
      nodeSelector:
        matchLabels: {example.com/cpu-vendor: amd}
    - name: old
      scuPerCore: 0.8
      schedulable: false
      instanceTypes: [old.large]
    - name: quick
      scuPerCore: 1.18
      instanceTypes: [quick.large]
"""


def make_catalog(unknown: str = "reject") -> Catalog:
    return parse_catalog(CATALOG_YAML % {"unknown": unknown})


def node(name: str, labels: Mapping[str, str], cpu: str, cordoned: bool = False) -> dict:
    spec = {"unschedulable": True} if cordoned else {}
    return {
        "metadata": {"name": name, "labels": dict(labels)},
        "spec": spec,
        "status": {"allocatable": {"cpu": cpu}},
    }


BASE_NODES = [
    node("std-a1", {IT: "std.large", ZONE: "a"}, "8"),
    node("std-b1", {IT: "std.xlarge", ZONE: "b"}, "16"),
    node("fast-a1", {VENDOR: "amd", ZONE: "a"}, "8"),
    node("fast-b1", {VENDOR: "amd", ZONE: "b"}, "8", cordoned=True),
    node("old-a1", {IT: "old.large", ZONE: "a"}, "32"),
    node("quick-c1", {IT: "quick.large", ZONE: "c"}, "4"),
    node("unknown-a1", {IT: "weird.large", ZONE: "a"}, "8"),
    node("amb-a1", {IT: "std.large", VENDOR: "amd", ZONE: "a"}, "8"),
]

_uids = itertools.count()


def bound(node_name: str, cpu: str) -> dict:
    return {
        "metadata": {"uid": f"u{next(_uids)}", "namespace": "x", "name": "p"},
        "spec": {
            "nodeName": node_name,
            "containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}],
        },
        "status": {"phase": "Running"},
    }


def pending(family: str, cpu: str) -> dict:
    return {
        "metadata": {"uid": f"u{next(_uids)}", "annotations": {FAMILY_ANNOTATION: family}},
        "spec": {"containers": [{"name": "c", "resources": {"requests": {"cpu": cpu}}}]},
        "status": {"phase": "Pending"},
    }


def cluster(nodes: Sequence[dict] = BASE_NODES, pods: Sequence[dict] = (), unknown: str = "reject"):
    state = ClusterState(make_catalog(unknown))
    state.replace(nodes, pods)
    return state


def pod(
    spec: Mapping[str, Any] | None = None, annotations: Mapping[str, str] | None = None
) -> dict:
    return {
        "metadata": {"generateName": "w-", "annotations": dict(annotations or {})},
        "spec": {"containers": [{"name": "app"}], **(spec or {})},
    }


def decide(
    state: ClusterState,
    p: Mapping[str, Any],
    *,
    ledger: ReservationLedger | None = None,
    pod_scu: int = 1000,
):
    view = state.all_nodes()
    constraints = pod_constraints(p)
    mask = None
    if not constraints.unconstrained:
        mask = node_mask(constraints, view.names, state.labels_of(view.names))
    requested, _ = requested_families(
        p["metadata"].get("annotations") or {}, view.catalog, trusted_family=False
    )
    capacity = family_capacity(view.catalog, view, mask, fixed=constraints.fixed_nodes is not None)
    return choose_family(
        view,
        capacity,
        constraints=constraints,
        allowed_nodes=mask,
        requested=requested,
        pending_physical=state.pending_millis(),
        reserved_scu=ledger.totals() if ledger else {},
        pod_scu=pod_scu,
    )


def reference_free_scu(
    catalog: Catalog, nodes: Sequence[dict], pods: Sequence[dict], p: Mapping[str, Any]
) -> dict[str, int]:
    """Free SCU millis per family, recomputed from the objects with exact fractions."""
    used: dict[str, int] = {}
    waiting: dict[str, int] = {}
    for q in pods:
        cpu = int(Fraction(q["spec"]["containers"][0]["resources"]["requests"]["cpu"]) * 1000)
        if q["spec"].get("nodeName"):
            used[q["spec"]["nodeName"]] = used.get(q["spec"]["nodeName"], 0) + cpu
        else:
            family = q["metadata"]["annotations"][FAMILY_ANNOTATION]
            waiting[family] = waiting.get(family, 0) + cpu
    free: dict[str, Fraction] = {}
    for n in nodes:
        match = catalog.match(n["metadata"]["labels"])
        if match.family is None or n["spec"].get("unschedulable") or not pod_selects(p, n):
            continue
        physical = int(Fraction(n["status"]["allocatable"]["cpu"]) * 1000)
        room = max(0, physical - used.get(n["metadata"]["name"], 0))
        free[match.family.name] = free.get(match.family.name, Fraction(0)) + room
    return {
        name: math.floor(total * catalog.factor(name))
        - math.floor(waiting.get(name, 0) * catalog.factor(name))
        for name, total in free.items()
        if catalog.by_name[name].schedulable
    }


# -- the choice ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "pods",
    [
        [],
        [bound("std-a1", "6"), bound("std-b1", "10")],
        [bound("std-b1", "15"), bound("fast-a1", "1")],
        [bound("std-a1", "20"), pending("std", "9"), pending("fast", "2")],  # overcommitted node
        [bound("fast-a1", "8"), bound("std-a1", "8"), bound("std-b1", "16")],  # all full
    ],
)
def test_the_family_with_the_most_free_scu_wins(pods):
    state = cluster(pods=pods)
    p = pod()
    decision = decide(state, p)
    assert isinstance(decision, Placement)
    free = reference_free_scu(state.catalog, BASE_NODES, pods, p)
    best = max(free.values())
    winners = [n for n, f in free.items() if f == best]
    assert decision.family.name in winners
    assert decision.free_scu == best


def test_an_overcommitted_node_does_not_eat_its_familys_other_nodes():
    # std-a1 holds 20 cores on 8: it offers 0, not -12; std-b1's 16 still count.
    state = cluster(pods=[bound("std-a1", "20")])
    decision = decide(state, pod())
    assert isinstance(decision, Placement)
    assert (decision.family.name, decision.free_scu) == ("std", 16_000)


def test_ties_go_to_the_higher_scu_per_core_then_to_the_name():
    # std 8 + 2 = 10 SCU free; fast 8 cores * 1.25 = 10 SCU: the faster family wins.
    state = cluster(pods=[bound("std-b1", "14")])
    decision = decide(state, pod())
    assert isinstance(decision, Placement)
    assert decision.free_scu == 10_000
    assert decision.family.name == "fast"

    twins = parse_catalog(
        """
apiVersion: machine-catalog.io/v1alpha1
kind: MachineCatalog
metadata: {name: twins}
spec:
  baseline: beta
  families:
    - {name: beta, scuPerCore: 1.0, instanceTypes: [b.large]}
    - {name: alpha, scuPerCore: 1.0, instanceTypes: [a.large]}
"""
    )
    state = ClusterState(twins)
    state.replace([node("b", {IT: "b.large"}, "4"), node("a", {IT: "a.large"}, "4")], [])
    assert decide(state, pod()).family.name == "alpha"


def test_pods_pinned_but_not_bound_and_reservations_move_the_choice():
    state = cluster()  # std 24 SCU, fast 10, quick 4.72
    assert decide(state, pod()).family.name == "std"
    state = cluster(pods=[pending("std", "16")])  # std 8 left
    assert decide(state, pod()).family.name == "fast"

    now = [0.0]
    ledger = ReservationLedger(ttl=5.0, clock=lambda: now[0])
    ledger.reserve("fast", 3_000)  # fast 7 SCU left, std 8
    assert decide(state, pod(), ledger=ledger).family.name == "std"
    now[0] = 5.0  # expired: the cache would have seen the pod by now
    assert decide(state, pod(), ledger=ledger).family.name == "fast"


def test_a_burst_of_pods_spreads_over_families_as_reservations_accumulate():
    state = cluster()
    ledger = ReservationLedger(ttl=60.0)
    chosen = []
    for _ in range(12):
        decision = decide(state, pod(), ledger=ledger, pod_scu=2_000)
        assert isinstance(decision, Placement)
        ledger.reserve(decision.family.name, 2_000)
        chosen.append(decision.family.name)
    # std starts with 24 SCU, fast 10: after 7 pods on std (14 SCU) both have 10 left,
    # and from then on they alternate; quick (4.72) is never the best.
    assert chosen[:7] == ["std"] * 7
    assert set(chosen[7:]) == {"std", "fast"}
    assert "quick" not in chosen


def test_node_selector_and_required_terms_restrict_the_candidates():
    state = cluster()
    assert decide(state, pod({"nodeSelector": {ZONE: "c"}})).family.name == "quick"
    # zone b: fast-b1 is cordoned, so only std-b1 remains
    assert decide(state, pod({"nodeSelector": {ZONE: "b"}})).family.name == "std"
    ored = {
        "affinity": {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {
                    "nodeSelectorTerms": [
                        {"matchExpressions": [{"key": ZONE, "operator": "In", "values": ["c"]}]},
                        {"matchExpressions": [{"key": VENDOR, "operator": "Exists"}]},
                    ]
                }
            }
        }
    }
    decision = decide(state, pod(ored))
    assert decision.family.name == "fast"
    assert decision.free_scu == 10_000  # fast-a1 only: fast-b1 is cordoned


def test_a_denial_names_every_family_and_why():
    state = cluster()
    p = pod({"nodeSelector": {ZONE: "c"}}, {FAMILIES_ANNOTATION: "std, fast"})
    decision = decide(state, p)
    assert isinstance(decision, Denied)
    message = decision.message
    reasons = dict(part.split(": ", 1) for part in message.split(": ", 1)[1].split("; "))
    by_family = {f: why for why, names in reasons.items() for f in names.split(", ")}
    assert set(by_family) == {"std", "fast", "old", "quick"}
    assert "no uncordoned node allowed by" in by_family["std"]
    assert "no uncordoned node allowed by" in by_family["fast"]
    assert "not allowed by the pod's machine-catalog.io/families" in by_family["quick"]
    assert by_family["old"] == by_family["quick"]  # excluded by the annotation first


def test_an_empty_cluster_has_no_candidate():
    state = cluster(nodes=[])
    decision = decide(state, pod())
    assert isinstance(decision, Denied)
    assert "no uncordoned node in the cluster: std, fast, quick" in decision.message
    assert "retired (schedulable: false): old" in decision.message


# -- pods fixed to a node ------------------------------------------------------------------


def daemonset_pod(node_name: str) -> dict:
    return pod(
        {
            "affinity": {
                "nodeAffinity": {
                    "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [
                            {
                                "matchFields": [
                                    {
                                        "key": "metadata.name",
                                        "operator": "In",
                                        "values": [node_name],
                                    }
                                ]
                            }
                        ]
                    }
                }
            }
        }
    )


@pytest.mark.parametrize("make", [daemonset_pod, lambda n: pod({"nodeName": n})])
def test_a_pod_fixed_to_a_node_gets_that_nodes_family_even_retired_or_cordoned(make):
    state = cluster()
    decision = decide(state, make("old-a1"))
    assert isinstance(decision, Placement)
    assert (decision.family.name, decision.fixed) == ("old", True)
    assert any("retired" in w for w in decision.warnings)
    decision = decide(state, make("fast-b1"))  # cordoned: DaemonSet pods tolerate it
    assert (decision.family.name, decision.fixed) == ("fast", True)
    decision = decide(state, make("std-a1"))
    assert (decision.family.name, decision.fixed, decision.warnings) == ("std", True, ())


def test_a_pod_fixed_to_an_unknown_node_is_denied_under_reject_and_unchanged_under_allow():
    decision = decide(cluster(), daemonset_pod("unknown-a1"))
    assert isinstance(decision, Denied)
    assert "unknown-a1" in decision.message
    assert "weird.large: matches no family" in decision.message
    assert "spec.unknownNodes: reject" in decision.message
    assert isinstance(decide(cluster(unknown="allow"), daemonset_pod("unknown-a1")), Unchanged)
    # ... but not when the pod itself asked for families: it wanted normalization
    p = daemonset_pod("unknown-a1")
    p["metadata"]["annotations"][FAMILIES_ANNOTATION] = "std"
    assert isinstance(decide(cluster(unknown="allow"), p), Denied)


def test_a_pod_fixed_to_an_ambiguous_or_missing_node_is_denied_with_the_reason():
    for unknown in ("reject", "allow"):
        decision = decide(cluster(unknown=unknown), daemonset_pod("amb-a1"))
        assert isinstance(decision, Denied)
        assert "amb-a1" in decision.message
        assert "ambiguous, matches families std, fast" in decision.message
    decision = decide(cluster(), pod({"nodeName": "ghost-1"}))
    assert isinstance(decision, Denied)
    assert "'ghost-1' is not in the cluster cache" in decision.message


def test_a_selector_that_only_matches_unknown_nodes_is_unchanged_under_allow():
    p = pod({"nodeSelector": {IT: "weird.large"}})
    assert isinstance(decide(cluster(unknown="allow"), p), Unchanged)
    decision = decide(cluster(), p)
    assert isinstance(decision, Denied)
    assert "node unknown-a1: instance type weird.large: matches no family" in decision.message


# -- the pod's annotations -----------------------------------------------------------------


def test_families_annotation_parsing():
    catalog = make_catalog()
    parse = lambda a: requested_families(a, catalog, trusted_family=False)  # noqa: E731
    assert parse({}) == (None, [])
    assert parse({FAMILIES_ANNOTATION: " std ,fast,, std "}) == (frozenset({"std", "fast"}), [])
    allowed, warnings = parse({FAMILIES_ANNOTATION: " , "})
    assert allowed is None and "ignored" in warnings[0]
    with pytest.raises(PlacementError, match=r"does not have: 'nope', 'caf\u00e9'"):
        parse({FAMILIES_ANNOTATION: "std,nope,café"})
    with pytest.raises(PlacementError) as exc:
        parse({FAMILIES_ANNOTATION: ",".join(f"x{i}" for i in range(100))})
    assert "and 95 more" in str(exc.value) and len(str(exc.value)) < 300
    with pytest.raises(PlacementError, match="characters long"):
        parse({FAMILIES_ANNOTATION: "std," * (MAX_FAMILIES_ANNOTATION // 4 + 1)})
    with pytest.raises(PlacementError, match="must be a string"):
        parse({FAMILIES_ANNOTATION: ["std"]})
    big = "x" * 1_000_000
    with pytest.raises(PlacementError) as exc:
        parse({FAMILIES_ANNOTATION: big})
    assert len(str(exc.value)) < 200


def test_a_user_written_family_annotation_is_a_restriction_not_a_pass():
    catalog = make_catalog()
    parse = lambda a: requested_families(a, catalog, trusted_family=False)  # noqa: E731
    assert parse({FAMILY_ANNOTATION: "quick"}) == (frozenset({"quick"}), [])
    assert parse({FAMILY_ANNOTATION: "quick", FAMILIES_ANNOTATION: "std,quick"})[0] == {"quick"}
    assert parse({FAMILY_ANNOTATION: "quick", FAMILIES_ANNOTATION: "std"})[0] == frozenset()
    with pytest.raises(PlacementError, match="retired"):
        parse({FAMILY_ANNOTATION: "old"})
    with pytest.raises(PlacementError, match="does not have"):
        parse({FAMILY_ANNOTATION: "mainframe"})
    with pytest.raises(PlacementError, match="must name one family"):
        parse({FAMILY_ANNOTATION: ""})
    assert requested_families({FAMILY_ANNOTATION: "old"}, catalog, trusted_family=True) == (
        None,
        [],
    )
    # the restriction decides the placement, even against free capacity
    state = cluster()
    assert decide(state, pod(annotations={FAMILY_ANNOTATION: "quick"})).family.name == "quick"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"nodeSelector": {"a": 1}}, "nodeSelector must map strings to strings"),
        ({"affinity": {"nodeAffinity": ["x"]}}, "nodeAffinity must be an object"),
        ({"affinity": "near"}, "spec.affinity must be an object"),
        (
            {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": {}}
                    }
                }
            },
            "nodeSelectorTerms must be a list",
        ),
        (
            {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {"matchExpressions": [{"key": "a", "operator": "Like"}]}
                            ]
                        }
                    }
                }
            },
            r"nodeSelectorTerms\[0\]\.matchExpressions\[0\]\.operator 'Like' is not supported",
        ),
        (
            {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchFields": [
                                        {"key": "spec.x", "operator": "In", "values": ["a"]}
                                    ]
                                }
                            ]
                        }
                    }
                }
            },
            "only metadata.name is a node field",
        ),
        (
            {
                "affinity": {
                    "nodeAffinity": {
                        "requiredDuringSchedulingIgnoredDuringExecution": {
                            "nodeSelectorTerms": [
                                {
                                    "matchExpressions": [
                                        {"key": "a", "operator": "In", "values": [1]}
                                    ]
                                }
                            ]
                        }
                    }
                }
            },
            "values must be a list of strings",
        ),
        ({"nodeName": 7}, "nodeName must be a string"),
    ],
)
def test_malformed_node_constraints_are_refused_with_their_path(spec, message):
    with pytest.raises(PlacementError, match=message):
        pod_constraints({"spec": spec})


@settings(max_examples=150, deadline=None)
@given(
    st.one_of(st.none(), st.lists(term(), min_size=0, max_size=3)),
    st.dictionaries(
        st.sampled_from([ZONE, "kubernetes.io/arch"]),
        st.sampled_from(["z0", "z1", "amd64"]),
        max_size=1,
    ),
)
def test_node_mask_agrees_with_a_direct_evaluation(terms, selector):
    spec: dict[str, Any] = {"nodeSelector": selector}
    if terms is not None:
        spec["affinity"] = {
            "nodeAffinity": {
                "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": terms}
            }
        }
    p = {"spec": spec}
    names = [n["metadata"]["name"] for n in NODES]
    labels = [n["metadata"]["labels"] for n in NODES]
    mask = node_mask(pod_constraints(p), names, labels)
    assert mask.tolist() == [pod_selects(p, n) for n in NODES]


def test_node_mask_skips_nodes_the_cache_does_not_know():
    constraints = pod_constraints({"spec": {"nodeSelector": {ZONE: "a"}}})
    mask = node_mask(constraints, ["x", "y"], [{ZONE: "a"}, None])
    assert mask.tolist() == [True, False]
    fixed = pod_constraints({"spec": {"nodeName": "y"}})
    assert node_mask(fixed, ["x", "y"], [{}, None]).tolist() == [False, False]
    assert node_mask(pod_constraints({"spec": {}}), ["x", "y"], [{}, None]).tolist() == [
        True,
        False,
    ]


# -- the ledger ------------------------------------------------------------------------------------


def test_the_reservation_ledger_expires_and_stays_bounded():
    now = [100.0]
    ledger = ReservationLedger(ttl=2.0, max_entries=3, clock=lambda: now[0])
    ledger.reserve("a", 1000)
    ledger.reserve("a", 500)
    ledger.reserve("b", 0)  # nothing to reserve
    now[0] = 101.0
    ledger.reserve("b", 200)
    assert ledger.totals() == {"a": 1500, "b": 200}
    ledger.reserve("c", 7)  # fourth entry: the oldest is dropped
    assert ledger.totals() == {"a": 500, "b": 200, "c": 7}
    assert len(ledger) == 3
    now[0] = 102.0  # the first two expired
    assert ledger.totals() == {"b": 200, "c": 7}
    now[0] = 200.0
    assert ledger.totals() == {} and len(ledger) == 0


def test_family_capacity_counts_only_allowed_uncordoned_known_nodes():
    state = cluster()
    view = state.all_nodes()
    catalog = view.catalog
    everything = family_capacity(catalog, view, None, fixed=False)
    index = catalog.family_index
    assert everything.free_physical[index["std"]] == 24_000
    assert everything.free_physical[index["fast"]] == 8_000  # fast-b1 cordoned
    assert everything.has_node.tolist() == [True, True, True, True]
    only_b = np.array([name.endswith("b1") for name in view.names])
    cap = family_capacity(catalog, view, only_b, fixed=False)
    assert cap.has_node.tolist() == [True, False, False, False]
    cap = family_capacity(catalog, view, only_b, fixed=True)
    assert cap.has_node.tolist() == [True, True, False, False]
    assert cap.free_physical[index["fast"]] == 0


# -- taints and tolerations ---------------------------------------------------------------


def test_pod_tolerations_are_normalised_and_checked():
    spec = {
        "tolerations": [
            {
                "key": "node.kubernetes.io/not-ready",
                "operator": "Exists",
                "effect": "NoExecute",
                "tolerationSeconds": 300,
            },
            {"key": "dedicated", "value": "ml", "effect": "NoSchedule"},
            {"key": "dedicated", "value": "ml", "effect": "NoSchedule", "tolerationSeconds": 5},
        ]
    }
    assert pod_tolerations({"spec": spec}) == (
        ("dedicated", "Equal", "ml", "NoSchedule"),
        ("node.kubernetes.io/not-ready", "Exists", "", "NoExecute"),
    )
    assert pod_tolerations({"spec": {}}) == ()
    with pytest.raises(PlacementError, match="operator 'Like'"):
        pod_tolerations({"spec": {"tolerations": [{"key": "a", "operator": "Like"}]}})
    with pytest.raises(PlacementError, match="must be a list"):
        pod_tolerations({"spec": {"tolerations": {"key": "a"}}})


@pytest.mark.parametrize(
    ("toleration", "taint", "expected"),
    [
        (("dedicated", "Equal", "ml", "NoSchedule"), ("dedicated", "ml", "NoSchedule"), True),
        (("dedicated", "Equal", "ml", "NoSchedule"), ("dedicated", "web", "NoSchedule"), False),
        (("dedicated", "Equal", "ml", "NoSchedule"), ("dedicated", "ml", "NoExecute"), False),
        (("dedicated", "Equal", "ml", ""), ("dedicated", "ml", "NoExecute"), True),
        (("dedicated", "Exists", "", "NoSchedule"), ("dedicated", "anything", "NoSchedule"), True),
        (("", "Exists", "", ""), ("whatever", "x", "NoExecute"), True),
        (("", "Exists", "", "NoSchedule"), ("whatever", "x", "NoExecute"), False),
        (("other", "Exists", "", ""), ("dedicated", "ml", "NoSchedule"), False),
        (("", "Equal", "", ""), ("dedicated", "", "NoSchedule"), False),
    ],
)
def test_toleration_semantics(toleration, taint, expected):
    assert tolerates([toleration], taint) is expected


def test_toleration_mask_needs_every_taint_tolerated():
    ml = ("dedicated", "ml", "NoSchedule")
    gpu = ("nvidia.com/gpu", "", "NoSchedule")
    taints = [(), (ml,), (ml, gpu), None]
    assert toleration_mask((), taints).tolist() == [True, False, False, False]
    only_ml = (("dedicated", "Equal", "ml", "NoSchedule"),)
    assert toleration_mask(only_ml, taints).tolist() == [True, True, False, False]
    both = (*only_ml, ("nvidia.com/gpu", "Exists", "", ""))
    assert toleration_mask(both, taints).tolist() == [True, True, True, False]
