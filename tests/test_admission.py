"""``POST /webhook/mutate`` through the real app: AdmissionReview in, AdmissionReview out.

Every returned patch is applied with ``jsonpatch`` to the pod that was sent, and the result
is checked for what matters: CPU, memory, annotations, and the nodes the pinned pod can
still go to (the real-world node fixture plus one synthetic node per family).
"""

from __future__ import annotations

import base64
import copy
import json
import logging
import math
from fractions import Fraction
from typing import Any

import jsonpatch
import pytest
from prometheus_client import REGISTRY
from support.nodes import NODES, family_of, node
from support.oracles import expected_physical, pod_selects, qos_class
from support.webhook import CATALOG, FIXTURE_REVIEW, SCHEDULER, Webhook, make_review

from extender.admission import webhook as admission
from extender.admission.patching import (
    CATALOG_ANNOTATION,
    FAMILY_ANNOTATION,
    SCU_PER_CORE_ANNOTATION,
    STANDARD_RESOURCES_ANNOTATION,
)
from extender.admission.placement import FAMILIES_ANNOTATION
from machine_catalog.catalog import Catalog
from machine_catalog.matching import INSTANCE_TYPE_LABEL as IT
from machine_catalog.quantities import to_millis


def fixture_pod() -> dict:
    return copy.deepcopy(FIXTURE_REVIEW["request"]["object"])


def patched_pod(review: dict, response: dict) -> dict:
    ops = json.loads(base64.b64decode(response["patch"], validate=True))
    return jsonpatch.JsonPatch(ops).apply(copy.deepcopy(review["request"]["object"]))


def admissions(decision: str) -> float:
    return (
        REGISTRY.get_sample_value("machine_catalog_admissions_total", {"decision": decision}) or 0.0
    )


def most_free_families(nodes: list[dict]) -> set[str]:
    """Families with the most free SCU on an empty cluster, from the node objects."""
    free: dict[str, Fraction] = {}
    for n in nodes:
        family = family_of(n)
        if family is None or not CATALOG.by_name[family].schedulable:
            continue
        physical = to_millis(n["status"]["allocatable"]["cpu"])
        free[family] = free.get(family, Fraction(0)) + physical * CATALOG.factor(family)
    best = max(math.floor(v) for v in free.values())
    return {f for f, v in free.items() if math.floor(v) == best}


@pytest.fixture
def webhook() -> Webhook:
    return Webhook()


# -- the real fixture ----------------------------------------------------------------------


def test_the_real_replicaset_review_is_normalized_pinned_and_annotated(webhook):
    review = make_review()
    before = admissions("mutated")
    response = webhook.review(review)
    assert response["allowed"] is True
    assert admissions("mutated") == before + 1
    original = review["request"]["object"]
    pod = patched_pod(review, response)

    annotations = pod["metadata"]["annotations"]
    family = CATALOG.by_name[annotations[FAMILY_ANNOTATION]]
    assert family.name in most_free_families(NODES)
    assert annotations[SCU_PER_CORE_ANNOTATION] == str(family.scu_per_core)
    assert annotations[CATALOG_ANNOTATION] == CATALOG.version
    assert annotations["prometheus.io/scrape"] == "true"  # existing annotations kept
    standard = json.loads(annotations[STANDARD_RESOURCES_ANNOTATION])

    for section in ("containers", "initContainers"):
        for before_c, after_c in zip(original["spec"][section], pod["spec"][section], strict=True):
            for kind in ("requests", "limits"):
                b = before_c["resources"][kind]
                a = after_c["resources"][kind]
                assert a["memory"] == b["memory"]
                assert to_millis(a["cpu"]) == expected_physical(b["cpu"], family.scu_per_core)
                recorded = standard[section][before_c["name"]][kind]["cpu"]
                assert to_millis(recorded) == to_millis(b["cpu"])
    # the sidecar (restartPolicy: Always) is rewritten like any container
    assert pod["spec"]["initContainers"][0]["restartPolicy"] == "Always"

    # pinned: exactly the family's nodes among those the pod allowed
    selected = {n["metadata"]["name"] for n in NODES if pod_selects(pod, n)}
    expected = {
        n["metadata"]["name"]
        for n in NODES
        if pod_selects(original, n) and family_of(n) == family.name
    }
    assert selected == expected and selected
    assert (
        pod["spec"]["affinity"]["podAntiAffinity"]
        == original["spec"]["affinity"]["podAntiAffinity"]
    )
    assert pod["spec"]["topologySpreadConstraints"] == original["spec"]["topologySpreadConstraints"]
    assert pod["spec"]["schedulerName"] == SCHEDULER
    # generateName-only pod: no name invented, nothing keyed on it
    assert "name" not in pod["metadata"] and pod["metadata"]["generateName"]


def test_reinvocation_and_readmission_of_the_patched_pod_change_nothing(webhook):
    review = make_review()
    first = webhook.review(review)
    pod = patched_pod(review, first)
    again = webhook.review(make_review(pod))
    assert again == {"uid": again["uid"], "allowed": True}
    assert len(webhook.admitter.ledger) == 1  # the second call reserved nothing


def test_pods_with_only_generate_name_are_admitted_independently(webhook):
    reviews = [make_review(fixture_pod()) for _ in range(3)]
    responses = [webhook.review(r) for r in reviews]
    assert all("patch" in r for r in responses)
    assert [r["uid"] for r in responses] == [r["request"]["uid"] for r in reviews]
    assert len(webhook.admitter.ledger) == 3


def test_guaranteed_pod_stays_guaranteed_through_the_webhook(webhook):
    pod = fixture_pod()
    for c in pod["spec"]["containers"] + pod["spec"]["initContainers"]:
        c["resources"]["requests"] = dict(c["resources"]["limits"])
    assert qos_class(pod) == "Guaranteed"
    review = make_review(pod)
    assert qos_class(patched_pod(review, webhook.review(review))) == "Guaranteed"


# -- what is left alone --------------------------------------------------------------------


def test_a_pod_labelled_normalize_disabled_is_allowed_unchanged(webhook):
    pod = fixture_pod()
    pod["metadata"]["labels"]["machine-catalog.io/normalize"] = "disabled"
    before = admissions("skipped")
    response = webhook.review(make_review(pod))
    assert response["allowed"] is True and "patch" not in response
    assert admissions("skipped") == before + 1
    assert len(webhook.admitter.ledger) == 0


@pytest.mark.parametrize(
    "request_fields",
    [
        {"operation": "UPDATE"},
        {"operation": "DELETE", "object": None},
        {"operation": "CONNECT"},
        {"kind": {"group": "apps", "version": "v1", "kind": "Deployment"}},
        {"kind": {"group": "", "version": "v1", "kind": "Binding"}, "subResource": "binding"},
        {"subResource": "ephemeralcontainers"},
    ],
)
def test_other_kinds_and_operations_are_allowed_unchanged(webhook, request_fields):
    response = webhook.review(make_review(**request_fields))
    assert response["allowed"] is True
    assert "patch" not in response


# -- choosing, restricting, denying -------------------------------------------------------


def test_a_node_selector_pins_the_pod_to_the_family_of_the_nodes_it_selects(webhook):
    pod = fixture_pod()
    pod["spec"]["nodeSelector"] = {"kubernetes.io/arch": "arm64"}  # only the Graviton node
    review = make_review(pod)
    patched = patched_pod(review, webhook.review(review))
    assert patched["metadata"]["annotations"][FAMILY_ANNOTATION] == "aws-m7g"
    assert patched["spec"]["nodeSelector"] == {"kubernetes.io/arch": "arm64"}
    assert {n["metadata"]["name"] for n in NODES if pod_selects(patched, n)} == {
        "ip-10-0-7-201.ec2.internal"
    }


def test_a_daemonset_pod_gets_its_nodes_family_and_keeps_its_scheduler(webhook):
    pod = fixture_pod()
    target = "ip-10-0-1-23.ec2.internal"  # m6i
    pod["spec"]["affinity"]["nodeAffinity"] = {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": [target]}]}
            ]
        }
    }
    review = make_review(pod)
    patched = patched_pod(review, webhook.review(review))
    assert patched["metadata"]["annotations"][FAMILY_ANNOTATION] == "aws-m6i"
    assert patched["spec"]["schedulerName"] == "default-scheduler"
    assert {n["metadata"]["name"] for n in NODES if pod_selects(patched, n)} == {target}
    # a DaemonSet pod for a node the catalog does not know: denied under unknownNodes: reject
    pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ][0]["matchFields"][0]["values"] = ["unknown-1"]
    response = webhook.review(make_review(pod))
    assert response["allowed"] is False and response["status"]["code"] == 403
    assert "unknown-1" in response["status"]["message"]


def test_a_denial_says_why_for_every_family(webhook):
    pod = fixture_pod()
    pod["metadata"]["annotations"][FAMILIES_ANNOTATION] = "aws-m4, tencent-s4"  # both retired
    before = admissions("denied")
    response = webhook.review(make_review(pod))
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    message = response["status"]["message"]
    assert "retired (schedulable: false): aws-m4, tencent-s4" in message
    for family in CATALOG.families:
        assert family.name in message
    assert admissions("denied") == before + 1


def test_a_user_written_family_annotation_is_a_restriction_not_a_pass(webhook):
    for name, allowed in (("aws-m4", False), ("nope", False), ("tencent-s5", True)):
        pod = fixture_pod()
        pod["metadata"]["annotations"][FAMILY_ANNOTATION] = name
        review = make_review(pod)
        response = webhook.review(review)
        assert response["allowed"] is allowed, response
        if allowed:
            patched = patched_pod(review, response)
            assert patched["metadata"]["annotations"][FAMILY_ANNOTATION] == name
            assert patched["metadata"]["annotations"][SCU_PER_CORE_ANNOTATION] == "1"
        else:
            assert name in response["status"]["message"]


def test_hostile_annotation_values_are_denied_clearly_or_ignored(webhook):
    cases = {
        "bad standard-resources": {
            FAMILY_ANNOTATION: "gcp-n2",
            SCU_PER_CORE_ANNOTATION: "1",
            STANDARD_RESOURCES_ANNOTATION: "{not json",
            CATALOG_ANNOTATION: "x@y",
        },
        "1 MB of families": {FAMILIES_ANNOTATION: "aws-m5," * 150_000},
        "unicode": {FAMILIES_ANNOTATION: "aws-m5,ファミリー"},
        "empty": {FAMILIES_ANNOTATION: ""},
    }
    results = {}
    for name, extra in cases.items():
        pod = fixture_pod()
        pod["metadata"]["annotations"].update(extra)
        review = make_review(pod)
        results[name] = (review, webhook.review(review))

    # forged-but-broken "already normalized" annotations: not trusted, normalized for gcp-n2
    review, response = results["bad standard-resources"]
    patched = patched_pod(review, response)
    assert patched["metadata"]["annotations"][FAMILY_ANNOTATION] == "gcp-n2"
    assert patched["metadata"]["annotations"][SCU_PER_CORE_ANNOTATION] == "1.05"
    json.loads(patched["metadata"]["annotations"][STANDARD_RESOURCES_ANNOTATION])

    _, response = results["1 MB of families"]
    assert response["allowed"] is False and len(response["status"]["message"]) < 300
    _, response = results["unicode"]
    assert response["allowed"] is False and "ファミリー" in response["status"]["message"]
    _, response = results["empty"]
    assert response["allowed"] is True and "patch" in response
    assert any("ignored" in w for w in response["warnings"])


def test_a_cpu_value_that_is_not_a_quantity_is_denied_naming_the_container(webhook):
    pod = fixture_pod()
    pod["spec"]["initContainers"][0]["resources"]["limits"]["cpu"] = "lots"
    response = webhook.review(make_review(pod))
    assert response["allowed"] is False
    assert response["status"]["code"] == 403
    assert "initContainer istio-proxy: resources.limits.cpu" in response["status"]["message"]


def test_a_pod_that_cannot_fit_now_is_admitted_with_a_warning(webhook):
    pod = fixture_pod()
    pod["spec"]["containers"][0]["resources"]["requests"]["cpu"] = "900"
    pod["spec"]["containers"][0]["resources"]["limits"]["cpu"] = "900"
    response = webhook.review(make_review(pod))
    assert response["allowed"] is True
    assert any("may stay Pending" in w for w in response["warnings"])


# -- dry run, scheduler name --------------------------------------------------------------


def test_dry_run_gives_the_same_answer_and_takes_no_reservation(webhook):
    dry = webhook.review(make_review(dryRun=True))
    assert len(webhook.admitter.ledger) == 0
    real = webhook.review(make_review(dryRun=False))
    assert len(webhook.admitter.ledger) == 1
    assert base64.b64decode(dry["patch"]) == base64.b64decode(real["patch"])
    assert webhook.admitter.ledger.totals() == {
        patched_pod(make_review(), real)["metadata"]["annotations"][FAMILY_ANNOTATION]: 1600
    }  # the pod's effective request: 1500m app + 100m sidecar, in SCU


@pytest.mark.parametrize(
    ("configured", "asked", "expected"),
    [
        (SCHEDULER, "default-scheduler", SCHEDULER),
        (SCHEDULER, None, SCHEDULER),
        (SCHEDULER, "volcano", "volcano"),
        (None, "default-scheduler", "default-scheduler"),
        (None, None, None),
    ],
)
def test_scheduler_name_rewrite(configured, asked, expected):
    webhook = Webhook(scheduler_name=configured)
    pod = fixture_pod()
    if asked is None:
        del pod["spec"]["schedulerName"]
    else:
        pod["spec"]["schedulerName"] = asked
    review = make_review(pod)
    assert patched_pod(review, webhook.review(review))["spec"].get("schedulerName") == expected


# -- failures ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b"",
        b"[]",
        b'"review"',
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"},
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": []},
        {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "request": {"operation": "CREATE"},
        },
        {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": {"uid": ""}},
        {
            "apiVersion": "admission.k8s.io/v1beta1",
            "kind": "AdmissionReview",
            "request": {"uid": "u"},
        },
        "pod object not an object",
    ],
)
def test_a_malformed_review_is_a_400_with_a_json_error(webhook, body):
    if body == "pod object not an object":
        body = make_review()
        body["request"]["object"] = "a pod"
    reply = webhook.post(body)
    assert reply.status_code == 400
    assert reply.content_type == "application/json"
    error = reply.get_json()["error"]
    assert error and "Traceback" not in error


def test_an_internal_error_is_a_well_formed_denial_with_code_500(webhook, monkeypatch, caplog):
    def explode(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("secret detail /etc/x")

    monkeypatch.setattr(admission, "choose_family", explode)
    before = admissions("error")
    with caplog.at_level(logging.ERROR, logger="extender.admission.webhook"):
        response = webhook.review(make_review())
    assert response["allowed"] is False
    assert response["status"] == {"code": 500, "message": "internal error: RuntimeError"}
    assert admissions("error") == before + 1
    assert any(r.exc_info for r in caplog.records)  # the traceback is in our log only
    assert len(webhook.admitter.ledger) == 0


def test_a_cache_that_is_not_synced_denies_with_503():
    webhook = Webhook(synced=False)
    response = webhook.review(make_review())
    assert response["allowed"] is False
    assert response["status"]["code"] == 503


def test_the_catalog_of_one_admission_is_the_one_the_cache_matched_with(webhook):
    # After a hot reload the cache re-matches nodes; the admission reads view.catalog, so
    # the family index, the factor and the recorded version come from one catalog.
    smaller = Catalog.from_data(
        {
            "apiVersion": "machine-catalog.io/v1alpha1",
            "kind": "MachineCatalog",
            "metadata": {"name": "smaller"},
            "spec": {
                "baseline": "base",
                "families": [
                    {"name": "base", "scuPerCore": 1, "instanceTypes": ["S5.2XLARGE16"]},
                    {"name": "new-m6i", "scuPerCore": "1.2", "instanceTypes": ["m6i.2xlarge"]},
                ],
            },
        }
    )
    webhook.review(make_review())  # warm the per-generation caches on the old catalog
    webhook.cluster.set_catalog(smaller)
    review = make_review()
    patched = patched_pod(review, webhook.review(review))
    annotations = patched["metadata"]["annotations"]
    assert annotations[CATALOG_ANNOTATION] == smaller.version
    # 7910m * 1.2 = 9.49 SCU on the m6i node beats 7.9 SCU on the S5 node
    assert annotations[FAMILY_ANNOTATION] == "new-m6i"
    assert annotations[SCU_PER_CORE_ANNOTATION] == "1.2"
    app = patched["spec"]["containers"][0]["resources"]["requests"]["cpu"]
    assert to_millis(app) == 1250  # ceil(1500 / 1.2)


def test_the_cached_fleet_follows_node_and_pod_events(webhook):
    """Labels and masks are cached per node generation, totals per generation: every kind
    of cache change must still reach the next admission."""
    zone = "topology.kubernetes.io/zone"
    pod = fixture_pod()
    pod["spec"]["nodeSelector"] = {zone: "zq"}

    def family() -> str | None:
        response = webhook.review(make_review(copy.deepcopy(pod), dryRun=True))
        if not response["allowed"]:
            return None
        return patched_pod(make_review(copy.deepcopy(pod)), response)["metadata"]["annotations"][
            FAMILY_ANNOTATION
        ]

    assert family() is None  # no node in zone zq yet (the mask is now cached)
    webhook.cluster.apply("Node", "ADDED", node("m5-zq", {IT: "m5.large", zone: "zq"}, "2"))
    assert family() == "aws-m5"
    webhook.cluster.apply("Node", "ADDED", node("c5-zq", {IT: "c5.large", zone: "zq"}, "4"))
    assert family() == "aws-c5"  # 4.4 SCU free beats 2
    busy = {
        "metadata": {"uid": "busy-1", "namespace": "x", "name": "busy"},
        "spec": {
            "nodeName": "c5-zq",
            "containers": [{"name": "c", "resources": {"requests": {"cpu": "3"}}}],
        },
        "status": {"phase": "Running"},
    }
    webhook.cluster.apply("Pod", "ADDED", busy)  # a pod event: totals change, labels do not
    assert family() == "aws-m5"  # c5 has 1.1 SCU left
    relabelled = node("c5-zq", {IT: "c5.large", zone: "elsewhere"}, "4")
    webhook.cluster.apply("Pod", "DELETED", busy)
    webhook.cluster.apply("Node", "MODIFIED", relabelled)  # a label change moves it out
    assert family() == "aws-m5"
    webhook.cluster.apply("Node", "DELETED", node("m5-zq", {}, "2"))
    assert family() is None


def test_node_heartbeats_do_not_invalidate_the_label_caches(webhook):
    """The masks are kept per node generation, which node status updates do not bump: on a
    5,000-node cluster a node status update arrives every few tens of milliseconds."""
    cluster = webhook.cluster
    target = copy.deepcopy(NODES[0])
    generations = cluster.generation, cluster.node_generation
    target["status"]["conditions"] = [{"type": "Ready", "status": "True"}]
    target["status"]["allocatable"]["cpu"] = "7"
    cluster.apply("Node", "MODIFIED", target)
    assert cluster.generation == generations[0] + 1
    assert cluster.node_generation == generations[1]
    # ... and yet the new allocatable reaches the next admission (arrays are per generation)
    assert (
        webhook.admitter.fleet.snapshot().view.allocatable.sum()
        == sum(to_millis(n["status"]["allocatable"]["cpu"]) for n in NODES[1:]) + 7000
    )
    target = copy.deepcopy(target)  # a watch event is a new object
    target["metadata"]["labels"]["new"] = "label"
    cluster.apply("Node", "MODIFIED", target)
    assert cluster.node_generation == generations[1] + 1
    cluster.apply("Node", "DELETED", target)
    assert cluster.node_generation == generations[1] + 2
    cluster.apply("Node", "DELETED", target)  # unknown by now: nothing changed
    assert cluster.node_generation == generations[1] + 2


def test_a_tainted_pool_only_takes_pods_that_tolerate_its_taints():
    """A dedicated pool (tainted NoSchedule) with the most free SCU must not attract pods
    that cannot run there: pinned to its family they would stay Pending for ever."""
    dedicated = [
        node(
            f"ml-{i}",
            {IT: "m7a.16xlarge"},
            "64",
            taints=[{"key": "dedicated", "value": "ml", "effect": "NoSchedule"}],
        )
        for i in range(3)
    ]
    soft = node(
        "soft-1", {IT: "c5.large"}, "2", taints=[{"key": "spot", "effect": "PreferNoSchedule"}]
    )
    cordon_taint = node(
        "cordon-taint-1",
        {IT: "c6i.large"},
        "2",
        taints=[{"key": "node.kubernetes.io/unschedulable", "effect": "NoSchedule"}],
    )
    webhook = Webhook(nodes=[*NODES, *dedicated, soft, cordon_taint])

    def family(tolerations: list[dict] | None) -> str:
        pod = fixture_pod()
        if tolerations is not None:
            pod["spec"]["tolerations"] = pod["spec"]["tolerations"] + tolerations
        review = make_review(pod, dryRun=True)
        return patched_pod(review, webhook.review(review))["metadata"]["annotations"][
            FAMILY_ANNOTATION
        ]

    assert family(None) != "aws-m7a"  # the fixture pod tolerates only not-ready/unreachable
    assert family(None) in most_free_families(NODES)
    exact = {"key": "dedicated", "operator": "Equal", "value": "ml", "effect": "NoSchedule"}
    assert family([exact]) == "aws-m7a"
    assert family([{"operator": "Exists"}]) == "aws-m7a"
    assert family([{**exact, "value": "web"}]) != "aws-m7a"
    # a pod that selects only the dedicated pool and does not tolerate it: denied, saying so
    pod = fixture_pod()
    pod["spec"]["nodeSelector"] = {IT: "m7a.16xlarge"}
    response = webhook.review(make_review(pod))
    assert response["allowed"] is False
    assert "nodeSelector/affinity/tolerations" in response["status"]["message"]
    # PreferNoSchedule does not block; the cordon taint is left to spec.unschedulable
    for name, fam in (("soft-1", "aws-c5"), ("cordon-taint-1", "aws-c6i")):
        pod = fixture_pod()
        pod["spec"]["nodeSelector"] = {"kubernetes.io/hostname": name}
        review = make_review(pod, dryRun=True)
        patched = patched_pod(review, webhook.review(review))
        assert patched["metadata"]["annotations"][FAMILY_ANNOTATION] == fam
    # a DaemonSet pod fixed to a tainted node is placed there: its controller checked
    pod = fixture_pod()
    pod["spec"]["affinity"]["nodeAffinity"] = {
        "requiredDuringSchedulingIgnoredDuringExecution": {
            "nodeSelectorTerms": [
                {"matchFields": [{"key": "metadata.name", "operator": "In", "values": ["ml-0"]}]}
            ]
        }
    }
    review = make_review(pod, dryRun=True)
    assert (
        patched_pod(review, webhook.review(review))["metadata"]["annotations"][FAMILY_ANNOTATION]
        == "aws-m7a"
    )


BETA_IT = "beta.kubernetes.io/instance-type"


def test_the_pin_names_the_deprecated_beta_label_only_while_a_node_needs_it():
    """The API server warns on every pod that names ``beta.kubernetes.io/instance-type``
    (deprecated since v1.17). The pin carries the beta term only while the cache holds a
    node of the pod's family that only that label makes the family's; another family's
    beta-only node does not count. A pin written either way is recognized on reinvocation."""
    ga = node("m6i-ga", {IT: "m6i.2xlarge"})
    beta = node("m6i-beta", {BETA_IT: "m6i.2xlarge"})
    webhook = Webhook(nodes=[ga, node("m5-beta", {BETA_IT: "m5.2xlarge"})])

    def admit(pod: dict) -> tuple[dict, dict]:
        review = make_review(pod)
        response = webhook.review(review)
        assert response["allowed"] is True, response
        return response, (patched_pod(review, response) if "patch" in response else pod)

    def on_m6i() -> dict:
        pod = fixture_pod()
        pod["metadata"]["annotations"][FAMILIES_ANNOTATION] = "aws-m6i"
        return pod

    response, without = admit(on_m6i())
    assert BETA_IT.encode() not in base64.b64decode(response["patch"])
    assert pod_selects(without, ga) and not pod_selects(without, beta)
    assert "patch" not in admit(without)[0]  # reinvoked: still pinned, nothing to change

    webhook.cluster.apply("Node", "ADDED", beta)
    response, with_beta = admit(on_m6i())
    assert BETA_IT.encode() in base64.b64decode(response["patch"])
    assert pod_selects(with_beta, ga) and pod_selects(with_beta, beta)
    assert "patch" not in admit(without)[0]  # a pin without the beta term is still a pin
    # A later webhook replaced the affinity: the pin put back is the current one.
    dropped = copy.deepcopy(without)
    del dropped["spec"]["affinity"]["nodeAffinity"]
    assert pod_selects(admit(dropped)[1], beta)

    webhook.cluster.apply("Node", "DELETED", beta)
    assert "patch" not in admit(with_beta)[0]  # a pin with the beta term is still a pin
    response, _ = admit(on_m6i())
    assert BETA_IT.encode() not in base64.b64decode(response["patch"])
