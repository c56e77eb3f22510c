"""Label-selector semantics, shared by catalog ``nodeSelector``s and pod node affinity.

One implementation for both, so a family's match rules and the affinity the webhook builds
from them can never disagree about which nodes they select.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from machine_catalog.model import LabelSelector

_INT64 = re.compile(r"^[+-]?[0-9]+$")


def _int64(value: str | None) -> int | None:
    """``strconv.ParseInt(value, 10, 64)``: stricter than ``int()``, which also takes
    ``"1_000"`` and ``" 5 "``; a label Kubernetes cannot parse must not match here either,
    or a family's rules and the affinity built from them would disagree."""
    if value is None or not _INT64.match(value):
        return None
    number = int(value)
    return number if -(2**63) <= number < 2**63 else None


def requirement_matches(
    labels: Mapping[str, str], key: str, operator: str, values: Iterable[str] = ()
) -> bool:
    """One ``{key, operator, values}`` rule, as ``k8s.io/apimachinery/pkg/labels`` defines it.

    ``Gt``/``Lt`` compare integers; a missing or non-integer label value does not match
    (as in Kubernetes), rather than raising.
    """
    if operator == "In":
        return key in labels and labels[key] in values
    if operator == "NotIn":
        return key not in labels or labels[key] not in values
    if operator == "Exists":
        return key in labels
    if operator == "DoesNotExist":
        return key not in labels
    if operator in ("Gt", "Lt"):
        have, want = _int64(labels.get(key)), _int64(next(iter(values), None))
        if have is None or want is None:
            return False
        return have > want if operator == "Gt" else have < want
    raise ValueError(f"unknown selector operator {operator!r}")


def selector_matches(selector: LabelSelector, labels: Mapping[str, str]) -> bool:
    """All of ``matchLabels`` and every ``matchExpressions`` rule hold for ``labels``."""
    for key, value in selector.match_labels.items():
        if labels.get(key) != value:
            return False
    return all(
        requirement_matches(labels, r.key, r.operator, r.values) for r in selector.match_expressions
    )
