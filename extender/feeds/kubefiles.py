"""Reading files that ``kubectl`` printed: one reader, one set of error messages.

Snapshots (``serve --snapshot``, ``report``/``calibrate --snapshot``) and metrics lists
(``serve --node-metrics``, ``calibrate --pod-metrics``, ``report --node-metrics
--pod-metrics``) are all files an operator made with one ``kubectl`` command, so they are
read the same way:

- JSON first, with orjson: ``kubectl ... -o json`` and ``kubectl get --raw`` print JSON,
  and a 50,000-pod snapshot parses in a fraction of the time PyYAML takes;
- then YAML (``-o yaml``, several ``---`` documents allowed), with libyaml when present.
  PyYAML reads UTF-8, or UTF-16 with a BOM (what Windows PowerShell's ``>`` writes);
- every refusal is one line naming the file and the reason (line and column for a syntax
  error), raised as :class:`KubeFileError`; callers turn it into their own error type.

What a document must look like is the caller's business, except for the metrics lists,
whose shape is checked once here (:func:`metrics_items`) for the three commands that read
them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
import yaml

_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml: ~10x faster on big dumps

#: The ``kubectl get --raw`` path of each metrics list, for the error messages.
METRICS_PATHS = {
    "NodeMetrics": "/apis/metrics.k8s.io/v1beta1/nodes",
    "PodMetrics": "/apis/metrics.k8s.io/v1beta1/pods",
}


class KubeFileError(ValueError):
    """A file that cannot be used; the message (one line) names the file and says why."""


def read_documents(
    path: str | os.PathLike[str], expected: str, *, allow_yaml: bool = True
) -> list[Any]:
    """The documents of a kubectl output file: one for JSON, one or more for YAML.

    ``expected`` completes the message for an empty file ("expected a v1 List of Nodes
    and Pods"). ``allow_yaml=False`` reads JSON only (``report`` reads metrics lists as
    ``kubectl get --raw`` prints them). Raises :class:`KubeFileError`.
    """
    name = str(path)
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise KubeFileError(f"{name}: cannot read: {exc.strerror or exc}") from exc
    try:
        return [orjson.loads(raw)]  # the common case, and the fast one for 50,000 pods
    except orjson.JSONDecodeError as exc:
        if not allow_yaml:
            if not raw.strip():
                raise KubeFileError(f"{name}: the file is empty; expected {expected}") from exc
            raise KubeFileError(f"{name}: not JSON ({exc})") from exc
    try:
        documents = [d for d in yaml.load_all(raw, Loader=_Loader) if d is not None]
    except yaml.reader.ReaderError as exc:
        raise KubeFileError(
            f"{name}: not UTF-8 text ({exc.reason} at byte {exc.position})"
        ) from exc
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise KubeFileError(f"{name}: not valid JSON or YAML{where}: {problem}") from exc
    if not documents:
        raise KubeFileError(f"{name}: the file is empty; expected {expected}")
    return documents


def metrics_items(document: Any, kind: str, where: str) -> list[dict[str, Any]]:
    """The items of a ``NodeMetricsList``/``PodMetricsList`` (``kind`` is the item kind).

    Accepted: the raw API answer (``kubectl get --raw``, items without a ``kind``), a
    ``v1 List`` whose items are all ``kind`` (``kubectl get podmetrics -o yaml``), and a
    bare array of items. A list of some other kind, or an item of another kind (a snapshot
    given as metrics), raises :class:`KubeFileError` prefixed with ``where``. Items that are
    objects of the right kind are returned as they are: whether one is usable is for the
    reader of the item to say (one bad item is skipped there, never the whole list).
    """
    wanted = f"{kind}List"
    hint = f"as 'kubectl get --raw {METRICS_PATHS[kind]}' prints it"
    if isinstance(document, list):
        items = document
    elif isinstance(document, Mapping) and isinstance(document.get("items"), list):
        got = document.get("kind")
        if got not in (None, wanted, "List"):
            raise KubeFileError(f"{where}: a {got}, not a {wanted} (expected a {wanted}, {hint})")
        items = document["items"]
    else:
        got = document.get("kind") if isinstance(document, Mapping) else None
        got = f"a {got}" if got else f"a {type(document).__name__}"
        if isinstance(document, Mapping) and "items" in document:
            got += " whose 'items' is not a list"
        elif isinstance(document, Mapping):
            got += " without 'items'"
        raise KubeFileError(
            f"{where}: not a {wanted} (got {got}; expected an object with 'items', {hint})"
        )
    for i, item in enumerate(items):
        own = item.get("kind", kind) if isinstance(item, Mapping) else type(item).__name__
        if own != kind:
            raise KubeFileError(
                f"{where}: items[{i}] is a {own}, not a {kind} (expected a {wanted})"
            )
    return items


def read_metrics_list(
    path: str | os.PathLike[str], kind: str, *, allow_yaml: bool = True
) -> list[dict[str, Any]]:
    """The items of a metrics list file (``kind``: ``NodeMetrics`` or ``PodMetrics``).

    Read by :func:`read_documents`, checked by :func:`metrics_items`; the file must hold
    one document. Raises :class:`KubeFileError`.
    """
    expected = f"a {kind}List"
    documents = read_documents(path, expected, allow_yaml=allow_yaml)
    if len(documents) != 1:
        raise KubeFileError(f"{path}: {len(documents)} YAML documents; expected one {kind}List")
    return metrics_items(documents[0], kind, str(path))


__all__ = ["KubeFileError", "metrics_items", "read_documents", "read_metrics_list"]
