"""Node -> family matching, and the same rules as Kubernetes node-affinity terms.

A node matches a family when its instance-type label is one the family lists, or when the
family's ``nodeSelector`` selects it. Matching never picks silently: a node that two
families claim is *ambiguous*, and the caller must treat it as such.

:func:`family_selector_terms` expresses a family's rules as ``nodeSelectorTerms`` for the
webhook's pinning affinity; it is kept next to :func:`match_families` so both change
together (the tests check they select the same nodes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from machine_catalog.annotations import FAMILY_LABEL
from machine_catalog.model import Family
from machine_catalog.selectors import selector_matches

INSTANCE_TYPE_LABEL = "node.kubernetes.io/instance-type"
BETA_INSTANCE_TYPE_LABEL = "beta.kubernetes.io/instance-type"

MatchStatus = Literal["matched", "unknown", "ambiguous"]


def instance_type_of(labels: Mapping[str, str]) -> str | None:
    """The node's instance type: the GA label, else the deprecated beta one.

    The cloud-controller-manager sets both; bare metal and kind set neither.
    """
    if INSTANCE_TYPE_LABEL in labels:
        return labels[INSTANCE_TYPE_LABEL]
    return labels.get(BETA_INSTANCE_TYPE_LABEL)


@dataclass(frozen=True, slots=True)
class NodeMatch:
    """What the catalog says about one node: exactly one family, none, or several."""

    instance_type: str | None
    families: tuple[Family, ...]

    @property
    def status(self) -> MatchStatus:
        if not self.families:
            return "unknown"
        return "matched" if len(self.families) == 1 else "ambiguous"

    @property
    def family(self) -> Family | None:
        """The family, only when the match is unambiguous."""
        return self.families[0] if len(self.families) == 1 else None

    def describe(self) -> str:
        """One line a person can act on, for CLI output and rejection reasons."""
        it = (
            f"instance type {self.instance_type}"
            if self.instance_type
            else "no instance-type label"
        )
        if self.status == "matched":
            return f"{it}: family {self.families[0].name}"
        if self.status == "unknown":
            return f"{it}: matches no family of the catalog"
        names = ", ".join(f.name for f in self.families)
        return f"{it}: ambiguous, matches families {names}"


def match_families(
    families: Sequence[Family],
    by_instance_type: Mapping[str, Family],
    labels: Mapping[str, str],
) -> NodeMatch:
    """Every family that claims a node with these labels, in catalog order."""
    instance_type = instance_type_of(labels)
    matched: list[Family] = []
    by_type = by_instance_type.get(instance_type) if instance_type else None
    for family in families:
        if family is by_type or (
            family.node_selector is not None and selector_matches(family.node_selector, labels)
        ):
            matched.append(family)
    return NodeMatch(instance_type=instance_type, families=tuple(matched))


def _requirement(key: str, operator: str, values: Sequence[str] = ()) -> dict[str, Any]:
    req: dict[str, Any] = {"key": key, "operator": operator}
    if values:
        req["values"] = list(values)
    return req


def family_label_term(family: Family) -> list[dict[str, Any]]:
    """The one term that selects the family's nodes once they carry the family label: the
    pin written before it moved to ``spec.nodeSelector``, still recognized on pods admitted
    then (:mod:`extender.admission.reinvocation`)."""
    return [_requirement(FAMILY_LABEL, "In", [family.name])]


def family_selector_terms(family: Family, *, beta: bool = True) -> list[list[dict[str, Any]]]:
    """The family's match rules as ORed ``nodeSelectorTerms`` (each a list of ANDed rules).

    Instance types give ``GA In types``, and with ``beta`` a second term, because matching
    falls back to the deprecated beta label: ``GA DoesNotExist AND beta In types``. The
    API server warns about every object that names the beta label (``beta.kubernetes.io/
    instance-type is deprecated since v1.17``), so the webhook asks for the second term
    only when the cluster has a node of the family that only it selects (see
    ``ClusterState.beta_label_only``); the default gives the full rules, which select
    exactly the nodes :func:`match_families` assigns. A nodeSelector gives one term:
    ``matchLabels`` become ``In [value]`` rules.

    These rules are the webhook's pin only while some node of the family lacks the family
    label; once every node carries it, the pin is the label in the pod's nodeSelector
    (:mod:`extender.admission.patching`).
    """
    terms: list[list[dict[str, Any]]] = []
    if family.instance_types:
        types = sorted(family.instance_types)
        terms.append([_requirement(INSTANCE_TYPE_LABEL, "In", types)])
        if beta:
            terms.append(
                [
                    _requirement(INSTANCE_TYPE_LABEL, "DoesNotExist"),
                    _requirement(BETA_INSTANCE_TYPE_LABEL, "In", types),
                ]
            )
    if family.node_selector is not None:
        sel = family.node_selector
        term = [_requirement(k, "In", [v]) for k, v in sorted(sel.match_labels.items())]
        term += [_requirement(r.key, r.operator, r.values) for r in sel.match_expressions]
        terms.append(term)
    return terms


def selected_by_beta_only(family: Family, labels: Mapping[str, str]) -> bool:
    """The node is the family's through the beta instance-type label alone: only the
    ``beta`` term of :func:`family_selector_terms` selects it (no GA label, the beta
    one names a type of the family)."""
    return (
        INSTANCE_TYPE_LABEL not in labels
        and labels.get(BETA_INSTANCE_TYPE_LABEL) in family.instance_types
    )
