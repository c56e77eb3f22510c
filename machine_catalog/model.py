"""The catalog file format (``machine-catalog.io/v1alpha1``, kind ``MachineCatalog``).

The pydantic models here check *shape*: every field, its type and range, and that no
unknown key slips through (``extra="forbid"``: a typo such as ``scuPerCor`` must be an
error, not a silently ignored field that leaves a family at a default). Rules that span
several fields or families (unique names, the baseline, instance types owned by one
family) live in :mod:`machine_catalog.validation`, which reports all of them at once.
"""

from __future__ import annotations

import re
from decimal import Decimal
from fractions import Fraction
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator
from pydantic.alias_generators import to_camel

API_VERSION = "machine-catalog.io/v1alpha1"
KIND = "MachineCatalog"

#: Upper bound of ``scuPerCore``: no vCPU is sixteen times a baseline vCPU; a larger value
#: is a unit mistake (millicores typed as cores) that would starve every pod on the family.
MAX_SCU_PER_CORE = Decimal(16)
#: Precision of ``scuPerCore``: far finer than any benchmark, coarse enough to stay sane.
MAX_SCU_DECIMALS = 6

_LABEL_NAME = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)$")
_DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_INTEGER = re.compile(r"^-?[0-9]+$")

#: Also checked by :mod:`machine_catalog.validation` on the raw mapping: pydantic skips
#: this model-level rule when a field of the same family already failed.
NO_MATCH_RULES = "a family needs instanceTypes or a nodeSelector, or no node matches it"


def check_label_key(key: str) -> str:
    """Kubernetes qualified-name rules for label keys: ``[prefix/]name``."""
    prefix, slash, name = key.rpartition("/")
    if slash and (not prefix or len(prefix) > 253 or not _DNS_SUBDOMAIN.match(prefix)):
        raise ValueError(f"label key {key!r}: prefix must be a DNS subdomain")
    if not name or len(name) > 63 or not _LABEL_NAME.match(name):
        raise ValueError(
            f"label key {key!r}: name must be 1-63 alphanumeric characters, '-', '_' or '.', "
            "starting and ending with an alphanumeric character"
        )
    return key


def check_label_value(value: str) -> str:
    if len(value) > 63 or not _LABEL_VALUE.match(value):
        raise ValueError(
            f"label value {value!r} must be at most 63 alphanumeric characters, '-', '_' or '.', "
            "starting and ending with an alphanumeric character"
        )
    return value


def _to_decimal(value: Any) -> Any:
    """Accept a number or a Kubernetes quantity string (``1.18``, ``"1180m"``).

    Floats go through ``repr`` so ``1.18`` becomes exactly ``Decimal("1.18")``, not the
    binary approximation: the arithmetic downstream is exact and must start exact.
    """
    if isinstance(value, bool):
        raise ValueError("must be a number, not a boolean")
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, int):
        return Decimal(value)
    if isinstance(value, str):
        from machine_catalog.quantities import parse_quantity

        return parse_quantity(value)
    return value


class _Model(BaseModel):
    """Catalog objects are camelCase on the wire, snake_case in Python, and immutable."""

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        alias_generator=to_camel,
        populate_by_name=True,
        str_strip_whitespace=False,
    )


SelectorOperator = Literal["In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"]


class LabelSelectorRequirement(_Model):
    key: str
    operator: SelectorOperator
    values: tuple[str, ...] = ()

    @field_validator("key")
    @classmethod
    def _key(cls, key: str) -> str:
        return check_label_key(key)

    @model_validator(mode="after")
    def _values_fit_operator(self) -> LabelSelectorRequirement:
        op, values = self.operator, self.values
        if op in ("In", "NotIn") and not values:
            raise ValueError(f"operator {op} needs at least one value")
        if op in ("Exists", "DoesNotExist") and values:
            raise ValueError(f"operator {op} takes no values")
        if op in ("Gt", "Lt") and (len(values) != 1 or not _INTEGER.match(values[0])):
            raise ValueError(f"operator {op} needs exactly one integer value")
        if op in ("In", "NotIn"):  # Gt/Lt take an integer (node affinity), "-1" included
            for value in values:
                check_label_value(value)
        return self


class LabelSelector(_Model):
    """``metav1.LabelSelector``: all of ``matchLabels`` and ``matchExpressions`` must hold."""

    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: tuple[LabelSelectorRequirement, ...] = ()

    @field_validator("match_labels")
    @classmethod
    def _labels(cls, labels: dict[str, str]) -> dict[str, str]:
        for key, value in labels.items():
            check_label_key(key)
            check_label_value(value)
        return labels

    @model_validator(mode="after")
    def _not_empty(self) -> LabelSelector:
        # An empty selector matches every node; as a family's nodeSelector that would claim
        # the whole fleet, which is never what an infra team means.
        if not self.match_labels and not self.match_expressions:
            raise ValueError("an empty nodeSelector would match every node; give at least one rule")
        return self


ScuPerCore = Annotated[Decimal, BeforeValidator(_to_decimal)]


class Family(_Model):
    name: str = Field(min_length=1, max_length=63)
    description: str = ""
    scu_per_core: ScuPerCore
    generation: int | None = None
    schedulable: bool = True
    instance_types: tuple[str, ...] = ()
    node_selector: LabelSelector | None = None

    @field_validator("name")
    @classmethod
    def _name(cls, name: str) -> str:
        # Family names end up in pod annotations and affinity terms: keep them label-safe.
        check_label_value(name)
        return name

    @field_validator("scu_per_core")
    @classmethod
    def _range(cls, value: Decimal) -> Decimal:
        if not value.is_finite() or value <= 0 or value > MAX_SCU_PER_CORE:
            raise ValueError(f"must be in (0, {MAX_SCU_PER_CORE}], got {value}")
        # One spelling per value (1.18 == "1180m" == 1.180), so the content hash and every
        # printed factor do not depend on how the infra team typed it; never exponent form
        # ("1E+1"), which reads badly and is ambiguous in quantity syntax (E = exa).
        value = value.normalize()
        if value.as_tuple().exponent < -MAX_SCU_DECIMALS:
            # Benchmarks do not resolve a millionth of a vCPU; such a value is a typo, and
            # 1e-400 would turn 2 SCU into an astronomically large CPU request.
            raise ValueError(f"at most {MAX_SCU_DECIMALS} decimal places, got {value}")
        return value.quantize(Decimal(1)) if value.as_tuple().exponent > 0 else value

    @field_validator("instance_types")
    @classmethod
    def _instance_types(cls, types: tuple[str, ...]) -> tuple[str, ...]:
        for value in types:
            check_label_value(value)
        return types

    @model_validator(mode="after")
    def _matches_something(self) -> Family:
        if not self.instance_types and self.node_selector is None:
            raise ValueError(NO_MATCH_RULES)
        return self

    @property
    def factor(self) -> Fraction:
        """``scuPerCore`` as an exact fraction, for arithmetic without float drift."""
        return Fraction(self.scu_per_core)


#: Defaults of ``spec.scoring`` (stated once: the model, the schema and docs/scoring.md).
DEFAULT_HOT_SPOT_USAGE = Decimal("0.8")
DEFAULT_REQUEST_WEIGHT = Decimal("0.2")
DEFAULT_SAMPLE_INTERVAL_SECONDS = 30
DEFAULT_MAX_SAMPLE_AGE_SECONDS = 180


def _fraction_field(value: Decimal, low_open: bool, high: Decimal) -> Decimal:
    if not value.is_finite() or value < 0 or (low_open and value == 0) or value > high:
        bound = "(0" if low_open else "[0"
        raise ValueError(f"must be in {bound}, {high}], got {value}")
    value = value.normalize()
    if value.as_tuple().exponent < -4:
        raise ValueError(f"at most 4 decimal places, got {value}")
    return value.quantize(Decimal(1)) if value.as_tuple().exponent > 0 else value


class Scoring(_Model):
    """How ``/scheduler/prioritize`` ranks nodes and what ``/scheduler/filter`` adds to it.

    Formulas and the behaviour without metrics: ``docs/scoring.md``.
    """

    strategy: Literal["balanced", "binpack", "loadAware"] = Field(
        default="balanced",
        description=(
            "balanced: floor(10 * (allocatable - requested - pod) / allocatable), spread "
            "requests. binpack: 10 - balanced, fill nodes. loadAware: floor(10 * ((1 - w) * "
            "(capacity - load - pod) + w * (capacity - requested - pod)) / capacity) in SCU, "
            "where load is the node's measured CPU usage (metrics.k8s.io) plus the requests "
            "of pods bound since its last sample, and w is requestWeight; a node without a "
            "fresh sample counts its requests as its load."
        ),
    )
    hot_spot_usage: Annotated[Decimal, BeforeValidator(_to_decimal)] | None = Field(
        default=DEFAULT_HOT_SPOT_USAGE,
        description=(
            "loadAware only: a node whose load (usage plus pods bound since its last sample) "
            "is above this fraction of its allocatable SCU is rejected by the filter as a "
            "resolvable FailedNodes entry. Only nodes with a fresh sample are judged. "
            "null turns the filter off. Default 0.8."
        ),
    )
    request_weight: Annotated[Decimal, BeforeValidator(_to_decimal)] = Field(
        default=DEFAULT_REQUEST_WEIGHT,
        description=(
            "loadAware only: weight w of free requested SCU against free used SCU in the "
            "score, in [0, 0.5]. Small, so usage ranks and requests break near-ties. "
            "Default 0.2."
        ),
    )
    sample_interval_seconds: int = Field(
        default=DEFAULT_SAMPLE_INTERVAL_SECONDS,
        ge=1,
        le=3600,
        description=(
            "loadAware only: seconds between two polls of metrics.k8s.io NodeMetrics "
            "(serve --kubeconfig / --in-cluster). Default 30."
        ),
    )
    max_sample_age_seconds: int = Field(
        default=DEFAULT_MAX_SAMPLE_AGE_SECONDS,
        ge=1,
        le=86400,
        description=(
            "loadAware only: a node whose last usage sample is older than this (or that has "
            "none) is scored on its requests and never rejected as a hot spot. Default 180."
        ),
    )

    @field_validator("hot_spot_usage")
    @classmethod
    def _hot_spot(cls, value: Decimal | None) -> Decimal | None:
        return None if value is None else _fraction_field(value, True, Decimal(1))

    @field_validator("request_weight")
    @classmethod
    def _weight(cls, value: Decimal) -> Decimal:
        return _fraction_field(value, False, Decimal("0.5"))

    @model_validator(mode="after")
    def _age_covers_interval(self) -> Scoring:
        if self.max_sample_age_seconds < self.sample_interval_seconds:
            raise ValueError(
                f"maxSampleAgeSeconds ({self.max_sample_age_seconds}) must be at least "
                f"sampleIntervalSeconds ({self.sample_interval_seconds}), or every sample "
                "is stale before the next one comes"
            )
        return self


class CatalogSpec(_Model):
    baseline: str
    unknown_nodes: Literal["reject", "allow"] = "reject"
    scoring: Scoring = Field(default_factory=Scoring)
    families: tuple[Family, ...] = Field(min_length=1)


class Metadata(_Model):
    name: str = Field(min_length=1)
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class MachineCatalogDocument(_Model):
    """One catalog file, exactly as written by an infra team."""

    api_version: Literal["machine-catalog.io/v1alpha1"]
    kind: Literal["MachineCatalog"]
    metadata: Metadata
    spec: CatalogSpec


def json_schema() -> dict[str, Any]:
    """The JSON Schema of the catalog file, for editors and CI (``machine-catalog schema``)."""
    schema = MachineCatalogDocument.model_json_schema(by_alias=True)
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "MachineCatalog"
    return schema


__all__ = [
    "API_VERSION",
    "KIND",
    "MAX_SCU_PER_CORE",
    "CatalogSpec",
    "Family",
    "LabelSelector",
    "LabelSelectorRequirement",
    "MachineCatalogDocument",
    "Metadata",
    "Scoring",
    "json_schema",
]
