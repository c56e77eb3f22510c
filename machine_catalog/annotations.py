"""The names machine-catalog writes on, and reads from, Kubernetes objects.

One place for each name, so the webhook that writes an annotation and the cache, extender
and report that read it can never disagree on its spelling.

Pod annotations written by the webhook:

- ``machine-catalog.io/family``: the family the pod is pinned to. Read back by the cache
  (pending pods per family) and by placement (a user-written value restricts the choice).
- ``machine-catalog.io/scu-per-core``: the factor the CPU values were converted with.
- ``machine-catalog.io/standard-resources``: the CPU values the user wrote, in SCU (JSON).
- ``machine-catalog.io/catalog``: the catalog version (``name@hash``) of the conversion.
- ``machine-catalog.io/family-source``: ``user`` when the pod came with its own
  ``machine-catalog.io/family`` annotation, or with the family label in its nodeSelector
  (the webhook overwrites the annotation with the same name, and its own pin is that same
  nodeSelector entry, so this is the only trace that the family was the user's hard
  restriction and not the webhook's choice: the stranded-pod remedy never moves such a
  pod).

Read from pods, written by users:

- ``machine-catalog.io/families``: comma-separated families the pod may go to.

Labels:

- ``machine-catalog.io/normalize``: on a namespace, ``enabled`` opts it in (the webhook's
  namespaceSelector); on a pod, ``disabled`` opts it out.
- ``machine-catalog.io/family``: on a node, the one schedulable family the catalog maps it
  to, kept by the leader (:mod:`extender.loops.labelling`); absent on unknown, ambiguous
  and retired nodes. The webhook pins pods to it (in ``spec.nodeSelector``) once every
  node of the family has it.
"""

from __future__ import annotations

PREFIX = "machine-catalog.io/"

FAMILY_ANNOTATION = PREFIX + "family"
FAMILIES_ANNOTATION = PREFIX + "families"
SCU_PER_CORE_ANNOTATION = PREFIX + "scu-per-core"
STANDARD_RESOURCES_ANNOTATION = PREFIX + "standard-resources"
CATALOG_ANNOTATION = PREFIX + "catalog"
FAMILY_SOURCE_ANNOTATION = PREFIX + "family-source"
FAMILY_SOURCE_USER = "user"

NORMALIZE_LABEL = PREFIX + "normalize"
FAMILY_LABEL = PREFIX + "family"
