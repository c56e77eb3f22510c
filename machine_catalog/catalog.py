"""A validated catalog, ready for the hot path: lookups built once, content-hashed.

:class:`Catalog` is immutable. A reload builds a new one and swaps a reference, so a
request that took the catalog at its start computes its whole answer from one version.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from fractions import Fraction
from functools import cached_property
from typing import Any

import orjson

from machine_catalog.matching import NodeMatch, match_families
from machine_catalog.model import Family, MachineCatalogDocument, Scoring
from machine_catalog.validation import CatalogInvalid, validate_document

#: ``spec.scoring`` keys added after the first release of the format: at their default they
#: are left out of the content hash, so a catalog that does not use them keeps the version
#: (``name@hash``) it had, the one recorded on its pods.
_LATER_SCORING_KEYS = (
    "hotSpotUsage",
    "requestWeight",
    "sampleIntervalSeconds",
    "maxSampleAgeSeconds",
)


def _hash_form(document: MachineCatalogDocument) -> dict[str, Any]:
    data = document.model_dump(mode="json", by_alias=True)
    defaults = Scoring().model_dump(mode="json", by_alias=True)
    scoring = data["spec"]["scoring"]
    for key in _LATER_SCORING_KEYS:
        if scoring.get(key) == defaults[key]:
            del scoring[key]
    return data


class Catalog:
    """The families of one catalog version, with O(1) lookups by name and instance type."""

    def __init__(self, document: MachineCatalogDocument, source: str = "") -> None:
        self.document = document
        self.source = source
        self.families: tuple[Family, ...] = document.spec.families
        self.by_name: dict[str, Family] = {f.name: f for f in self.families}
        self.by_instance_type: dict[str, Family] = {
            t: f for f in self.families for t in f.instance_types
        }
        canonical = orjson.dumps(_hash_form(document), option=orjson.OPT_SORT_KEYS)
        #: Content hash of the validated catalog; comments and key order do not change it.
        self.hash: str = hashlib.sha256(canonical).hexdigest()[:16]

    @classmethod
    def from_data(cls, data: Any, source: str = "") -> Catalog:
        """Validate parsed YAML/JSON; raise :class:`CatalogInvalid` with every error."""
        document, errors = validate_document(data)
        if document is None:
            raise CatalogInvalid(errors, source)
        return cls(document, source)

    @property
    def name(self) -> str:
        return self.document.metadata.name

    @property
    def version(self) -> str:
        """``name@hash``: what the webhook records on a pod and ``/readyz`` reports."""
        return f"{self.name}@{self.hash}"

    @property
    def baseline(self) -> Family:
        return self.by_name[self.document.spec.baseline]

    @property
    def unknown_nodes(self) -> str:
        return self.document.spec.unknown_nodes

    @property
    def strategy(self) -> str:
        return self.document.spec.scoring.strategy

    @property
    def scoring(self) -> Scoring:
        """``spec.scoring``: the strategy and the load-aware settings."""
        return self.document.spec.scoring

    @cached_property
    def family_index(self) -> dict[str, int]:
        """Family name -> position; the cluster cache stores families as these integers."""
        return {f.name: i for i, f in enumerate(self.families)}

    def factor(self, family: str) -> Fraction:
        return self.by_name[family].factor

    def match(self, labels: Mapping[str, str]) -> NodeMatch:
        """Which families claim a node with these labels (one, none, or several)."""
        return match_families(self.families, self.by_instance_type, labels)

    def __repr__(self) -> str:
        return f"<Catalog {self.version} families={len(self.families)}>"
