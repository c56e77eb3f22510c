"""The scheduler extender v1 wire format (``k8s.io/kube-scheduler/extender/v1``).

The Go structs carry no ``json:`` tags, so the keys are the Go field names (``Pod``,
``NodeNames``, ``FailedNodes``...), nothing is omitted (nil is ``null``), and Go decodes
keys case-insensitively, preferring an exact match. This module is the only place that
knows those spellings: decoding turns a request body into :class:`ExtenderArgs` or raises
:class:`WireError` (the route answers HTTP 400), and the encoders build the response bytes.

Responses always carry explicit lists. kube-scheduler reads a filter result whose
``NodeNames`` and ``Nodes`` are both null as "every node rejected, without a reason", which
would hide a bug as a silent unschedulable pod; an explicit ``[]`` says the same on purpose.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson


class WireError(ValueError):
    """A body that is not an ``ExtenderArgs``: the caller is broken, answer 400."""


@dataclass(frozen=True, slots=True)
class ExtenderArgs:
    """One filter/prioritize request, in whichever mode the scheduler is configured for.

    ``nodes`` is set (the ``Nodes.items`` objects) when ``nodeCacheCapable: false``;
    otherwise ``nodes`` is None and only ``names`` arrived. ``names`` is always set.
    """

    pod: Mapping[str, Any]
    names: Sequence[str]
    nodes: Sequence[Mapping[str, Any]] | None

    @property
    def full_nodes(self) -> bool:
        return self.nodes is not None


def _field(body: Mapping[str, Any], name: str) -> Any:
    """``body[name]`` the way Go's encoding/json finds it: exact key, else case-insensitive."""
    if name in body:
        return body[name]
    lowered = name.lower()
    for key, value in body.items():
        if isinstance(key, str) and key.lower() == lowered:
            return value
    return None


def _all_strings(items: list[Any]) -> bool:
    """Whether every item is a str: ``str.join`` checks each item in C (3.5x faster on
    5,000 names than collecting their types in a set)."""
    try:
        "".join(items)
    except TypeError:
        return False
    return True


def decode_extender_args(body: bytes) -> ExtenderArgs:
    """Parse and shape-check an ``ExtenderArgs`` body; raise :class:`WireError` if it is not one."""
    try:
        data = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise WireError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(data, dict):
        raise WireError(f"ExtenderArgs must be a JSON object, got {type(data).__name__}")

    pod = _field(data, "Pod")
    if not isinstance(pod, dict):
        raise WireError("ExtenderArgs.Pod must be a v1.Pod object")
    for key in ("metadata", "spec"):
        if pod.get(key) is not None and not isinstance(pod[key], dict):
            raise WireError(f"ExtenderArgs.Pod.{key} must be an object")

    node_names = _field(data, "NodeNames")
    node_list = _field(data, "Nodes")
    if node_names is not None and node_list is not None:
        # kube-scheduler sends exactly one of them; with both, the answer's mode is a guess.
        raise WireError("ExtenderArgs has both NodeNames and Nodes; exactly one must be set")

    if node_names is not None:
        if not isinstance(node_names, list) or not _all_strings(node_names):
            raise WireError("ExtenderArgs.NodeNames must be a list of strings")
        return ExtenderArgs(pod=pod, names=node_names, nodes=None)

    if node_list is None:
        raise WireError("ExtenderArgs needs NodeNames (nodeCacheCapable) or Nodes")
    if not isinstance(node_list, dict):
        raise WireError("ExtenderArgs.Nodes must be a v1.NodeList object")
    items = node_list.get("items")
    if items is None:
        items = []  # Go encodes an empty slice of a NodeList as null
    if not isinstance(items, list):
        raise WireError("ExtenderArgs.Nodes.items must be a list")
    names = []
    for i, node in enumerate(items):
        meta = node.get("metadata") if isinstance(node, dict) else None
        name = meta.get("name") if isinstance(meta, dict) else None
        if not isinstance(name, str) or not name:
            raise WireError(f"ExtenderArgs.Nodes.items[{i}] must be a v1.Node with metadata.name")
        names.append(name)
    return ExtenderArgs(pod=pod, names=names, nodes=items)


class ReasonMap(Mapping[str, str]):
    """Node name -> reason, as ``FailedNodes`` and ``FailedAndUnresolvableNodes`` carry it.

    Kept grouped: the reason of ``names[k]`` is ``texts[group[k]]``. A filter that rejects
    thousands of nodes has a handful of distinct reasons, so the JSON is written from the
    names and one escaped fragment per distinct text, never a text or a dict entry per
    node (at 3,333 rejected nodes: 0.15 ms, against 0.23 ms to build the dict and encode
    it once a list of per-node texts exists). The dict is built only for a reader that
    looks the map up.
    """

    __slots__ = ("_dict", "group", "names", "texts")

    def __init__(self, names: Sequence[str], group: np.ndarray, texts: Sequence[str]) -> None:
        if len(names) != len(group):
            raise ValueError(f"{len(names)} names but {len(group)} reason indexes")
        self.names = names
        self.group = group
        self.texts = texts
        self._dict: dict[str, str] | None = None

    def _mapping(self) -> dict[str, str]:
        if self._dict is None:
            texts = map(self.texts.__getitem__, self.group.tolist())
            self._dict = dict(zip(self.names, texts, strict=True))
        return self._dict

    def __getitem__(self, name: str) -> str:
        return self._mapping()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._mapping())

    def __len__(self) -> int:
        return len(self._mapping())

    def to_json(self) -> bytes:
        """The JSON object, names in request order.

        A name repeated in the request (kube-scheduler never sends one twice) appears
        twice with the same reason, which every JSON decoder reads as one entry.
        """
        names = self.names
        if not len(names):
            return b"{}"
        if b"\\" in orjson.dumps(names):  # a name needs escaping: the plain road
            return orjson.dumps(self._mapping())
        # The text from the end of one name to the start of the next: '":"reason","'.
        between = np.array(
            [f'":{orjson.dumps(text).decode()},"' for text in self.texts], dtype=object
        )[self.group].tolist()
        between[-1] = between[-1][:-2] + "}"
        parts: list[str] = [""] * (2 * len(names))
        parts[0::2] = names
        parts[1::2] = between
        return ('{"' + "".join(parts)).encode()


def _reasons_json(reasons: Mapping[str, str]) -> Any:
    return orjson.Fragment(reasons.to_json()) if isinstance(reasons, ReasonMap) else reasons


def encode_filter_result(
    args: ExtenderArgs,
    passing: Sequence[int] | None,
    failed: Mapping[str, str],
    unresolvable: Mapping[str, str],
) -> bytes:
    """An ``ExtenderFilterResult`` answering in the request's mode.

    ``passing`` holds positions into the request's nodes, or None for "all of them" (the
    common case, which then needs no per-node work at all). In full-``Nodes`` mode the
    node objects go back exactly as they came: kube-scheduler uses the returned items as
    its feasible list, so a trimmed copy would lose the fields later plugins read.
    """
    if args.nodes is not None:
        items = args.nodes if passing is None else [args.nodes[i] for i in passing]
        nodes: Any = {"metadata": {}, "items": items}
        names: Any = None
    else:
        nodes = None
        names = args.names if passing is None else [args.names[i] for i in passing]
    return orjson.dumps(
        {
            "Nodes": nodes,
            "NodeNames": names,
            "FailedNodes": _reasons_json(failed),
            "FailedAndUnresolvableNodes": _reasons_json(unresolvable),
            "Error": "",
        }
    )


def encode_filter_error(message: str) -> bytes:
    """A filter result that refuses to answer: the scheduling cycle fails and is retried.

    kube-scheduler treats a non-empty ``Error`` as the extender failing: with
    ``ignorable: true`` the nodes pass unchanged, otherwise the pod gets ``SchedulerError``
    and is retried with backoff. Both are right when the extender cannot judge (its cache
    is not synced). Rejecting every node instead would mark the pod unschedulable and could
    trigger preemption on the strength of data the extender does not have.
    """
    return orjson.dumps(
        {
            "Nodes": None,
            "NodeNames": None,
            "FailedNodes": None,
            "FailedAndUnresolvableNodes": None,
            "Error": message,
        }
    )


def encode_host_priorities(names: Sequence[str], scores: Sequence[int] | np.ndarray) -> bytes:
    """A ``HostPriorityList``: ``[{"Host": name, "Score": n}, ...]`` in request order.

    Built as one string from pieces, never a dict per node: a node name needs no JSON
    escaping (checked in one orjson call over all names), so the text is the names
    interleaved with the text between them, which depends only on the score (0..10) and
    comes from a table. One ``str.join`` and one ``encode`` then copy the lot: measured
    at 5,000 names 140 µs, against 720 µs for splitting orjson's bytes per name and 755 µs
    for ``orjson.dumps`` of a list of dicts (the time goes into per-node Python objects).
    """
    scores = np.asarray(scores, dtype=np.int64).reshape(-1)
    if len(names) != len(scores):
        raise ValueError(f"{len(names)} names but {len(scores)} scores")
    if not len(names):
        return b"[]"
    if scores.min() < 0 or scores.max() > 10:
        raise ValueError("scores must be within 0..10 (MinExtenderPriority..MaxExtenderPriority)")
    if b"\\" in orjson.dumps(names):
        # A name needs escaping (never a valid node name): take the plain, slower road.
        return orjson.dumps(
            [{"Host": n, "Score": s} for n, s in zip(names, scores.tolist(), strict=True)]
        )
    between = _BETWEEN[scores].tolist()
    between[-1] = _LAST[int(scores[-1])]
    parts: list[str] = [""] * (2 * len(names))
    parts[0::2] = names
    parts[1::2] = between
    return ('[{"Host":"' + "".join(parts)).encode()


#: The text after the name of a node with score ``s``, up to the next name: ``_BETWEEN[s]``.
_BETWEEN = np.array([f'","Score":{s}}},{{"Host":"' for s in range(11)], dtype=object)
_LAST = [f'","Score":{s}}}]' for s in range(11)]
