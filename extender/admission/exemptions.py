"""Pods the webhook must neither rewrite nor deny: pure functions, no I/O.

- **Mirror pods** (annotation ``kubernetes.io/config.mirror``): the kubelet creates them
  in the API to show the static pods it runs from its manifest directory. The kubelet runs
  the manifest, not the API object, so a rewrite would only make the object lie about
  what runs; and the API server forbids changing the annotation, so the kubelet is the
  only writer. They are admitted as they are, always.
- **DaemonSet pods on nodes the catalog cannot map** (no family, or several): node agents
  (log shippers, CNI, CSI, monitoring) must run on every node, including one whose
  instance type the infra team has not added to the catalog yet. Such a pod is fixed to
  its node by name, so no family can be chosen and ``unknownNodes: reject`` would deny it,
  and its controller would retry for good. It is admitted unchanged instead, with an
  admission warning naming the node and why, so the catalog gets fixed: its CPU is then
  read as vCPUs of that node. A node the cache has not seen yet is *not* exempt: it is
  usually a node that joined a second ago, the denial is retried, and the retry is
  normalized once the watch delivers the node.

Anyone who may create pods can also write the mirror annotation (with ``spec.nodeName``,
which the API server then requires): that buys what the ``machine-catalog.io/normalize:
disabled`` label gives anyway, on a node they chose, which setting ``nodeName`` gives too.

The DaemonSet test is the pod's controller ``ownerReference`` (``apps/v1`` kind
``DaemonSet``, ``controller: true``). Anyone may write one on a pod they create; it buys
them only what ``unknownNodes: allow`` gives every pod, and only on a node the catalog
cannot map, which the warning and the log make visible.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from extender.state.cluster import ABSENT, NodeView

MIRROR_ANNOTATION = "kubernetes.io/config.mirror"


def is_mirror_pod(annotations: Mapping[str, Any]) -> bool:
    """The kubelet's mirror of a static pod."""
    return MIRROR_ANNOTATION in annotations


def is_daemonset_pod(pod: Mapping[str, Any]) -> bool:
    """The pod's controller is a DaemonSet."""
    metadata = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
    owners = metadata.get("ownerReferences")
    if not isinstance(owners, list):
        return False
    return any(
        isinstance(o, dict)
        and o.get("controller") is True
        and o.get("kind") == "DaemonSet"
        and str(o.get("apiVersion", "")).startswith("apps/")
        for o in owners
    )


def daemonset_exemption(
    pod: Mapping[str, Any], fixed_nodes: frozenset[str] | None, view: NodeView
) -> str | None:
    """The warning to admit a denied DaemonSet pod unchanged with, or None to deny it.

    Exempt only when every node the pod is fixed to is in the cache and maps to no
    family or to several (see the module docstring).
    """
    if not fixed_nodes or not is_daemonset_pod(pod):
        return None
    positions = {name: i for i, name in enumerate(view.names) if name in fixed_nodes}
    reasons = []
    for name in sorted(fixed_nodes):
        position = positions.get(name)
        if position is None or view.family[position] == ABSENT or view.family[position] >= 0:
            return None
        match = view.match(position)
        reasons.append(f"node {name}: {match.describe() if match else 'no family'}")
    # Most important first: warnings are cut at 120 characters.
    return "DaemonSet pod admitted unchanged, CPU in vCPUs: " + "; ".join(reasons[:2])


def left_alone(
    pod: Mapping[str, Any], fixed_nodes: frozenset[str] | None, view: NodeView
) -> str | None:
    """Why the webhook admits ``pod`` unchanged on purpose, or None: a mirror pod, or a
    DaemonSet pod fixed to nodes the catalog cannot map (:func:`daemonset_exemption`).
    ``fixed_nodes``: :attr:`~extender.admission.placement.NodeConstraints.fixed_nodes`.

    The webhook's own rules, for those who look at pods afterwards (``report``): such a pod
    is not "not normalized" by accident.
    """
    metadata = pod.get("metadata") if isinstance(pod.get("metadata"), dict) else {}
    annotations = metadata.get("annotations")
    if isinstance(annotations, dict) and is_mirror_pod(annotations):
        return "mirror pod"
    return daemonset_exemption(pod, fixed_nodes, view)
