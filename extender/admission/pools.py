"""The state of each family's pool, from the cluster cache: one set of counting rules.

``machine-catalog report`` prints it and ``/metrics`` exports it, both from a
:class:`~extender.state.cluster.NodeView` of the same :class:`~extender.state.cluster.ClusterState`
the scheduling path reads, so a pod counts in a report exactly as it counts when the
webhook chooses a family and the extender filters nodes:

- a node belongs to the family the catalog matches it to; unknown and ambiguous nodes
  belong to none;
- a cordoned node (``spec.unschedulable``) counts in ``nodes`` and in ``cordoned``, and in
  nothing else: it offers no capacity, and the pods still on it are not in ``requested``;
- ``requested`` is what bound, non-terminal pods request (the cache's
  :func:`~extender.state.cluster.pod_entry`); finished pods count nowhere;
- ``free`` is :func:`~extender.admission.placement.family_capacity`'s, the number the webhook ranks
  families by: the sum over uncordoned nodes of ``max(allocatable - requested, 0)``
  (an overcommitted node frees nothing for the others), in SCU;
- ``largest free`` is the most SCU free on one uncordoned node: the biggest pod the family
  can take now, whatever its total (fragmentation shows as ``free`` well above it);
- ``pending`` is what pods pinned to the family and not yet bound request.

Physical millicores become SCU per family, rounding down
(:func:`~machine_catalog.quantities.physical_to_scu_millis`): ``scu = floor(millis x
scuPerCore)``, the rule the extender uses for a node's capacity.

Everything is O(nodes) with ``np.bincount``; nothing iterates over pods.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from extender.admission.placement import family_capacity
from extender.state.cluster import NodeView
from machine_catalog.quantities import physical_to_scu_millis


@dataclass(frozen=True, slots=True)
class FamilyPool:
    """One family's pool; SCU amounts in millis of SCU."""

    name: str
    schedulable: bool  # False: retired in the catalog
    scu_per_core: str
    nodes: int
    cordoned: int
    capacity_scu: int
    requested_scu: int
    free_scu: int
    largest_free_scu: int
    pending_scu: int


def family_pools(view: NodeView, pending_physical: Mapping[str, int]) -> list[FamilyPool]:
    """Every family of the view's catalog (in catalog order), with its pool's totals.

    ``view`` is normally :meth:`ClusterState.all_nodes`; ``pending_physical`` is
    :meth:`ClusterState.pending_millis` (physical millicores of pinned, unbound pods).
    """
    catalog = view.catalog
    n = len(catalog.families)
    family = np.asarray(view.family)
    known = family >= 0
    cordoned = known & view.unschedulable
    uncordoned = known & ~view.unschedulable
    nodes = np.bincount(family[known], minlength=n)[:n]
    cordoned_nodes = np.bincount(family[cordoned], minlength=n)[:n]
    allocatable = np.bincount(
        family[uncordoned], weights=view.allocatable[uncordoned], minlength=n
    )[:n]
    requested = np.bincount(family[uncordoned], weights=view.requested[uncordoned], minlength=n)[:n]
    free = family_capacity(catalog, view, None, fixed=False).free_physical
    # The conversion is monotonic in the millicores, so the node with the most free
    # physical CPU is the node with the most free SCU: convert the maximum only.
    largest = np.zeros(n, dtype=np.int64)
    node_free = np.clip(view.allocatable - view.requested, 0, None)
    np.maximum.at(largest, family[uncordoned].astype(np.int64), node_free[uncordoned])
    pools = []
    for i, fam in enumerate(catalog.families):
        factor = fam.factor
        pools.append(
            FamilyPool(
                name=fam.name,
                schedulable=fam.schedulable,
                scu_per_core=str(fam.scu_per_core),
                nodes=int(nodes[i]),
                cordoned=int(cordoned_nodes[i]),
                capacity_scu=physical_to_scu_millis(int(allocatable[i]), factor),
                requested_scu=physical_to_scu_millis(int(requested[i]), factor),
                free_scu=physical_to_scu_millis(int(free[i]), factor),
                largest_free_scu=physical_to_scu_millis(int(largest[i]), factor),
                pending_scu=physical_to_scu_millis(pending_physical.get(fam.name, 0), factor),
            )
        )
    return pools
