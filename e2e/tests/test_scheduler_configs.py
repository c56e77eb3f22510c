"""The shipped scheduler configurations (the base's ``manifests/base/scheduler-config.yaml``
for ``balanced``, ``manifests/components/scheduler-*`` for the others) on the real control
plane: pods land on their family with no extender call under ``balanced`` and
``binpack``, and a ``loadAware`` catalog behind a configuration without the extender is
reported by the server.

The module's family ``e2e-cfg`` (1.25 SCU per vCPU) is added to the session catalog and
has two 8-vCPU nodes: ``cfg-full`` holds 4 vCPUs of pods bound by name, ``cfg-empty`` none.
``balanced`` (LeastAllocated) sends a pod to cfg-empty, ``binpack`` (MostAllocated) to
cfg-full. Each test runs the session's scheduler with the component's file for its
duration (one kube-scheduler per profile name at a time).
"""

from __future__ import annotations

import pytest
import yaml
from harness import objects
from harness.controlplane import REPO
from harness.kube import bound, eventually, pod_manifest

FAMILY = "machine-catalog.io/family"
FAMILIES = "machine-catalog.io/families"
NODES = ("cfg-full", "cfg-empty")
#: The shipped configuration of each name: the base's, or a component's.
SHIPPED = {
    "base": REPO / "manifests" / "base",
    "scheduler-binpack": REPO / "manifests" / "components" / "scheduler-binpack",
}


def shipped(name: str) -> dict:
    return yaml.safe_load((SHIPPED[name] / "scheduler-config.yaml").read_text())


def catalog_text(original: str, strategy: str) -> str:
    doc = yaml.safe_load(original)
    doc["spec"]["families"].append(
        {"name": "e2e-cfg", "scuPerCore": 1.25, "instanceTypes": ["e2e-cfg.2xlarge"]}
    )
    doc["spec"]["scoring"] = {"strategy": strategy}
    return yaml.safe_dump(doc, sort_keys=False)


def serve_strategy(server, original: str, strategy: str) -> None:
    """The module's catalog with ``strategy``, reloaded unless already served."""
    text = catalog_text(original, strategy)
    if server.catalog.read_text() != text:
        server.replace_catalog(text)


@pytest.fixture(scope="module")
def cfg(plane, api, server, scheduler, catalog):
    original = catalog.read_text()
    serve_strategy(server, original, "balanced")
    objects.create_nodes(
        plane, [objects.node(n, {objects.INSTANCE_TYPE: "e2e-cfg.2xlarge"}) for n in NODES]
    )
    api.create_namespace({"metadata": {"name": "cfg-residents"}})
    api.create_namespaced_pod("cfg-residents", pod_manifest("r", "4", nodeName="cfg-full"))
    for name in NODES:  # the webhook pins e2e-cfg pods by the label once both carry it
        eventually(
            lambda n=name: (api.read_node(n).metadata.labels or {}).get(FAMILY),
            lambda v: v == "e2e-cfg",
            30,
            f"{name} labelled",
        )
    try:
        yield original
    finally:
        server.replace_catalog(original)


def calls(server) -> float:
    """Extender requests this server has answered, both verbs, any status."""
    return sum(
        value
        for (name, labels), value in server.metrics().items()
        if name == "machine_catalog_http_requests_total"
        and dict(labels).get("route", "").startswith("/scheduler/")
    )


@pytest.mark.parametrize(
    ("strategy", "config", "node"),
    [("balanced", "base", "cfg-empty"), ("binpack", "scheduler-binpack", "cfg-full")],
)
def test_pods_land_on_their_family_with_no_extender_call(
    plane, api, server, cfg, namespace, strategy, config, node
):
    # Through the other strategy first: a strategy change starts the call count afresh,
    # so the calls earlier tests' pods made through the session's configuration do not
    # count here.
    serve_strategy(server, cfg, "binpack" if strategy == "balanced" else "balanced")
    serve_strategy(server, cfg, strategy)
    path = plane.scheduler_config(
        server.url + "/scheduler", name=f"cfg-{config}", base=shipped(config)
    )
    with plane.scheduler_running("machine-catalog-scheduler", path):
        before = calls(server)
        pod = api.create_namespaced_pod(
            namespace, pod_manifest("p", "1", annotations={FAMILIES: "e2e-cfg"})
        )
        assert pod.spec.node_selector == {FAMILY: "e2e-cfg"} and pod.spec.affinity is None
        assert bound(api, namespace, "p").spec.node_name == node
        assert calls(server) == before
        assert server.readyz()["scheduling"]["state"] == "in-tree"


def test_a_load_aware_catalog_behind_an_in_tree_configuration_is_reported(
    plane, api, server, cfg, namespace
):
    serve_strategy(server, cfg, "loadAware")
    path = plane.scheduler_config(server.url + "/scheduler", name="cfg-wrong", base=shipped("base"))
    with plane.scheduler_running("machine-catalog-scheduler", path):
        for i in range(22):  # MISSING_AFTER (20) bindings, and a margin
            api.create_namespaced_pod(
                namespace, pod_manifest(f"w{i}", "100m", annotations={FAMILIES: "e2e-cfg"})
            )
        for i in range(22):
            bound(api, namespace, f"w{i}")
        state = eventually(
            lambda: server.readyz()["scheduling"],
            lambda s: s["state"] == "missing",
            20,
            "the missing calls reported",
        )
        assert "prioritize" in state["message"], state
        metrics = server.metrics()
        assert metrics[("machine_catalog_extender_calls_missing", ())] == 1
    # With the session's configuration (the extender on every pod) the calls come again.
    api.create_namespaced_pod(
        namespace, pod_manifest("after", "100m", annotations={FAMILIES: "e2e-cfg"})
    )
    bound(api, namespace, "after")
    assert server.readyz()["scheduling"]["state"] == "ok"
