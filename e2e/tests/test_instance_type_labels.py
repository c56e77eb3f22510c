"""The deprecated ``beta.kubernetes.io/instance-type`` label, through the real API server.

The API server warns on every pod whose node affinity names the beta label (``... is
deprecated since v1.17; use "node.kubernetes.io/instance-type" instead``), and kubectl
prints that warning. The webhook's pin names it only while the cluster has a node that
only the beta label makes the family's and the family is not yet labelled; once the leader
has put ``machine-catalog.io/family`` on every node of the family (beta-only ones
included), the pin is that one label in the pod's nodeSelector and no pod draws the
warning. Either way such a
node must still get the family's pods.

The family is gcp-n1 (0.8 SCU per vCPU), with nodes made for this test only.
"""

from __future__ import annotations

import json

import pytest
from harness import objects
from harness.kube import eventually, pod_manifest

# Also run on the oldest supported Kubernetes (make e2e-oldest).
pytestmark = pytest.mark.every_version

FAMILIES = "machine-catalog.io/families"
BETA = "beta.kubernetes.io/instance-type"
DEPRECATED = f"{BETA} is deprecated since v1.17"
TYPE = "n1-standard-4"
FAMILY_LABEL = "machine-catalog.io/family"


def test_a_normalized_pod_draws_no_deprecation_warning_and_a_beta_only_node_still_gets_pods(
    plane, api, server, scheduler, kubelet, namespace
):
    def create(name: str, *flags: str) -> tuple[str, dict | None]:
        """kubectl's warnings and the created pod (None if the create was refused)."""
        body = pod_manifest(name, "1", annotations={FAMILIES: "gcp-n1"})
        out = plane.kubectl(
            "create",
            "-n",
            namespace,
            "-f",
            "-",
            "-o",
            "json",
            *flags,
            input=json.dumps(body),
            check=False,
        )
        return out.stderr, json.loads(out.stdout) if out.returncode == 0 else None

    def rules(pod: dict | None) -> str:
        """The pod's node rules (affinity and nodeSelector) as text, to look for a label."""
        spec = pod["spec"] if pod else {}
        return json.dumps([spec.get("affinity"), spec.get("nodeSelector")])

    def label_pinned(pod: dict | None) -> bool:
        return bool(pod) and pod["spec"].get("nodeSelector", {}).get(FAMILY_LABEL) == "gcp-n1"

    # A cloud node carries both labels: the GA term selects it, the beta term is not needed.
    both = {objects.INSTANCE_TYPE: TYPE, BETA: TYPE}
    objects.create_nodes(plane, [objects.node("n1-ga", both, "4")])
    eventually(
        lambda: create("probe", "--dry-run=server")[1],
        bool,
        30,
        "the webhook's cache to know the gcp-n1 node",
    )
    warnings, pod = create("plain")
    assert "deprecated" not in warnings, warnings
    assert BETA not in rules(pod)
    assert objects.INSTANCE_TYPE in rules(pod) or label_pinned(pod)
    placed = eventually(
        lambda: api.read_namespaced_pod("plain", namespace).spec.node_name,
        bool,
        60,
        "plain bound",
    )
    assert placed == "n1-ga"

    # A node labelled the old way only (no GA label), and the GA node cordoned. Once the
    # leader has labelled it with its family, the pin is the family label's nodeSelector: no beta
    # term, no warning, and the pod lands on the beta-only node.
    objects.create_nodes(plane, [objects.node("n1-beta", {BETA: TYPE}, "4")])
    api.patch_node("n1-ga", {"spec": {"unschedulable": True}})
    eventually(
        lambda: api.read_node("n1-beta").metadata.labels.get(FAMILY_LABEL),
        lambda family: family == "gcp-n1",
        30,
        "the leader to label the beta-only node",
    )
    eventually(
        lambda: create("probe", "--dry-run=server")[1],
        lambda p: label_pinned(p) and BETA not in rules(p),
        30,
        "the webhook to pin gcp-n1 by its label",
    )
    warnings, pod = create("legacy")
    assert "deprecated" not in warnings, warnings
    placed = eventually(
        lambda: api.read_namespaced_pod("legacy", namespace).spec.node_name,
        bool,
        60,
        "legacy bound",
    )
    assert placed == "n1-beta"
