"""Feeding the cluster cache from a file instead of an API server.

The file is what an operator already has or can get in one command:
``kubectl get nodes,pods -A -o json`` (or ``-o yaml``) prints a ``v1 List`` whose items
carry their own ``kind``. The raw API answers (``NodeList``/``PodList``, whose items carry
no ``kind``) and a bare JSON/YAML array of objects are accepted too, so a capture made with
``curl`` or a hand-written test list works without editing. Items of other kinds (a
``kubectl get all`` dump) are skipped, not refused: the cache only needs nodes and pods.
The file is parsed (JSON, else YAML) by :func:`extender.feeds.kubefiles.read_documents`, as the
metrics list files are.

A snapshot is static: it is read once and swapped in with one :meth:`ClusterState.replace`,
so the cache is synced from the first request and never changes afterwards.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

import orjson

from extender.feeds.kubefiles import KubeFileError, read_documents
from extender.state.cluster import ClusterState, compact_node, compact_pod

log = logging.getLogger(__name__)

#: List kinds whose items carry no ``kind`` of their own (the API server omits it).
_ITEM_KIND_OF_LIST = {"NodeList": "Node", "PodList": "Pod", "NamespaceList": "Namespace"}
_WANTED = ("Node", "Pod")


class SnapshotError(ValueError):
    """The snapshot file cannot be used; the message says which file and why."""


def _items(document: Any, path: str) -> tuple[list[Any], str | None]:
    """(items, kind implied for items that carry none) of one document."""
    if isinstance(document, list):
        return document, None
    if isinstance(document, Mapping) and isinstance(document.get("items"), list):
        return document["items"], _ITEM_KIND_OF_LIST.get(document.get("kind"))
    if isinstance(document, Mapping) and "items" in document:
        got = "an object whose 'items' is not a list"
    elif isinstance(document, Mapping) and str(document.get("kind", "")).endswith("List"):
        got = f"a {document['kind']} without 'items'"
    elif isinstance(document, Mapping) and document.get("kind"):
        got = f"a single {document['kind']} object"
    elif isinstance(document, Mapping):
        got = "an object without 'items'"
    else:
        got = f"a {type(document).__name__}"
    raise SnapshotError(
        f"{path}: not a list of Kubernetes objects (got {got}); expected a v1 List as "
        "'kubectl get nodes,pods -A -o json' prints it"
    )


def load_snapshot(path: str | os.PathLike[str]) -> tuple[list[dict], list[dict]]:
    """(nodes, pods) of a snapshot file; raise :class:`SnapshotError` on a file we cannot use."""
    found = load_objects(path, _WANTED)
    return found["Node"], found["Pod"]


def load_objects(
    path: str | os.PathLike[str], kinds: tuple[str, ...] = _WANTED
) -> dict[str, list[dict]]:
    """The items of each of ``kinds`` in a snapshot file (``machine-catalog report`` also
    reads Namespaces); other kinds are skipped. Raises :class:`SnapshotError`."""
    name = str(path)
    try:
        documents = read_documents(path, "a v1 List of Nodes and Pods")
    except KubeFileError as exc:
        raise SnapshotError(str(exc)) from exc
    found: dict[str, list[dict]] = {kind: [] for kind in kinds}
    skipped: dict[str, int] = {}
    for document in documents:
        items, implied = _items(document, name)
        for i, item in enumerate(items):
            if not isinstance(item, dict):
                raise SnapshotError(
                    f"{name}: items[{i}] is a {type(item).__name__}, not a Kubernetes object"
                )
            kind = item.get("kind") or implied
            wanted = found.get(kind) if isinstance(kind, str) else None
            if wanted is not None:
                wanted.append(item)
            else:
                skipped[str(kind)] = skipped.get(str(kind), 0) + 1
    if skipped:
        log.debug("snapshot %s: ignored items that are not %s: %s", name, kinds, skipped)
    return found


def feed_snapshot(state: ClusterState, path: str | os.PathLike[str]) -> tuple[int, int]:
    """Load ``path`` into ``state`` with one atomic replace; returns (nodes, pods) counts.

    The cache is built from compact copies made after the parsed file is gone. Parsing a
    50,000-pod file takes ~700 MB of Python objects; if the cache kept pieces of them (a
    node's labels, a pod's uid and node name), those pieces would stay scattered over the
    allocator's arenas and keep them mapped after the rest is freed: the worker stayed at
    730 MB RSS for ~25 MB of live objects. So each object is cut down to what the cache
    reads (``compact_node``, ``compact_pod`` of :mod:`extender.state.cluster`),
    serialised, the document dropped, and the cache built from a fresh parse of the small
    copy (13 MB for 50,000 pods): measured 730 -> 164 MB for the same worker.
    """
    nodes, pods = load_snapshot(path)
    counts = len(nodes), len(pods)
    compact = orjson.dumps(
        [
            [compact_node(node) for node in nodes],
            [compact_pod(pod, state.resize_rule) for pod in pods],
        ]
    )
    del nodes, pods  # the last references to the document: freed here, by refcount
    nodes, pods = orjson.loads(compact)
    del compact
    state.replace(nodes, pods)
    state.source = f"snapshot {path}"
    held = state.counts()
    log.info(
        "cluster cache loaded from snapshot %s: %d nodes, %d pods in the file; the cache "
        "accounts for %d pods (/readyz cache.pods): those bound and not finished, or pinned "
        "to a family and pending. The other %d (finished, pending and not pinned, or listed "
        "twice) request nothing on any node",
        path,
        held["nodes"],
        counts[1],
        held["pods"],
        counts[1] - held["pods"],
    )
    return counts
