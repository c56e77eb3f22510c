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
from functools import cached_property
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

#: Size limits. The API server estimates the cost of the catalog's CEL rules (see
#: :mod:`machine_catalog.crd`) from these bounds and refuses the CustomResourceDefinition
#: when the worst case is too dear, so every list and string a rule walks has one. The
#: rule "an instance type in one family" costs families² x instance types² (the API server
#: of Kubernetes 1.37 refused 64 x 64 as 1.8 times its budget, accepted 48 x 60), which
#: leaves room above the packaged catalog (26 families, at most 32 instance types each).
MAX_FAMILIES = 48
MAX_INSTANCE_TYPES = 60
MAX_SELECTOR_RULES = 16
MAX_DESCRIPTION = 1024
#: Label keys: a 253-character DNS prefix, ``/``, a 63-character name.
MAX_LABEL_KEY = 317
MAX_LABEL_VALUE = 63

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

#: ``x-kubernetes-validations`` (CEL) rules ride on the fields and models they check, as
#: ``json_schema_extra``: the CustomResourceDefinition (:mod:`machine_catalog.crd`) carries
#: them to the API server, which refuses a bad object at ``kubectl apply``. Each repeats a
#: Python check of this module or of :mod:`machine_catalog.validation` that stays the
#: authority (``serve`` and ``validate`` run it); the rule is written beside it so both
#: change together. The JSON Schema of ``machine-catalog schema`` carries them too: JSON
#: Schema tools ignore keywords they do not know.
_CEL = "x-kubernetes-validations"


def _cel(rule: str, message: str = "", message_expression: str = "", **extra: str) -> dict:
    out: dict[str, str] = {"rule": rule}
    if message:
        out["message"] = message
    if message_expression:
        out["messageExpression"] = message_expression
    return {**out, **extra}


class LabelSelectorRequirement(_Model):
    """One rule of a label selector: ``key operator values``, as in node affinity."""

    model_config = ConfigDict(
        json_schema_extra={
            _CEL: [
                _cel(
                    "self.operator in ['In', 'NotIn'] ? has(self.values) && size(self.values) > 0"
                    " : self.operator in ['Exists', 'DoesNotExist'] ? !has(self.values) || "
                    "size(self.values) == 0 : has(self.values) && size(self.values) == 1",
                    message_expression="'operator ' + self.operator + (self.operator in "
                    "['In', 'NotIn'] ? ' needs at least one value' : self.operator in "
                    "['Exists', 'DoesNotExist'] ? ' takes no values' : "
                    "' needs exactly one integer value')",
                )
            ]
        }
    )

    key: str = Field(
        max_length=MAX_LABEL_KEY,
        description="Node label key, e.g. feature.node.kubernetes.io/cpu-model.family.",
    )
    operator: SelectorOperator = Field(
        description="In, NotIn (values), Exists, DoesNotExist (no values), Gt, Lt (one integer)."
    )
    values: tuple[Annotated[str, Field(max_length=MAX_LABEL_VALUE)], ...] = Field(
        default=(),
        max_length=MAX_INSTANCE_TYPES,
        description="Label values the operator compares with.",
    )

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

    model_config = ConfigDict(
        json_schema_extra={
            _CEL: [
                _cel(
                    "(has(self.matchLabels) && size(self.matchLabels) > 0) || "
                    "(has(self.matchExpressions) && size(self.matchExpressions) > 0)",
                    "an empty nodeSelector would match every node; give at least one rule",
                )
            ]
        }
    )

    match_labels: dict[str, str] = Field(
        default_factory=dict,
        description="Labels a node must carry, each with exactly this value.",
        json_schema_extra={"maxProperties": MAX_SELECTOR_RULES},
    )
    match_expressions: tuple[LabelSelectorRequirement, ...] = Field(
        default=(),
        max_length=MAX_SELECTOR_RULES,
        description="Rules a node's labels must all satisfy.",
    )

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
    """Nodes of one CPU generation, and how much work one of their vCPUs does."""

    model_config = ConfigDict(
        json_schema_extra={
            _CEL: [
                _cel(
                    "(has(self.instanceTypes) && size(self.instanceTypes) > 0) || "
                    "has(self.nodeSelector)",
                    message_expression=f"'family ' + self.name + ': {NO_MATCH_RULES}'",
                )
            ]
        }
    )

    name: str = Field(
        min_length=1,
        max_length=63,
        description=(
            "Family name, unique in the catalog; written on pods "
            "(machine-catalog.io/family) and in their node affinity, so a label value."
        ),
    )
    description: str = Field(
        default="",
        max_length=MAX_DESCRIPTION,
        description="Free text for people: the CPU model, clock, where the factor comes from.",
    )
    scu_per_core: ScuPerCore = Field(
        description=(
            "Work of one vCPU of this family, in vCPUs of the baseline family (SCU): 1.18 "
            "means 18% more than a baseline vCPU. The baseline has 1.0. Above 0, at most "
            f"{MAX_SCU_PER_CORE}, at most {MAX_SCU_DECIMALS} decimal places. A number; a "
            'catalog file also takes a quantity string ("1180m").'
        ),
        json_schema_extra={
            _CEL: [
                _cel(
                    f"self > 0.0 && self <= {MAX_SCU_PER_CORE}.0",
                    f"must be above 0 and at most {MAX_SCU_PER_CORE}: the work of one vCPU of "
                    "this family in baseline vCPUs (1.18 = 18% more than the baseline)",
                )
            ]
        },
    )
    generation: int | None = Field(
        default=None, description="CPU generation, for people and sorting; not used to schedule."
    )
    schedulable: bool = Field(
        default=True,
        description=(
            "false retires the family: no new pod is placed on its nodes, running pods stay. "
            "Default true."
        ),
    )
    instance_types: tuple[Annotated[str, Field(max_length=MAX_LABEL_VALUE)], ...] = Field(
        default=(),
        max_length=MAX_INSTANCE_TYPES,
        description=(
            "Values of the node label node.kubernetes.io/instance-type (or the beta label) "
            "that belong to this family. An instance type belongs to one family."
        ),
        json_schema_extra={"x-kubernetes-list-type": "set"},
    )
    node_selector: LabelSelector | None = Field(
        default=None,
        description=(
            "Nodes whose labels match belong to this family too (e.g. Node Feature "
            "Discovery CPU labels for bare metal). A node two families claim is ambiguous."
        ),
    )

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

    @cached_property
    def factor(self) -> Fraction:
        """``scuPerCore`` as an exact fraction, for arithmetic without float drift. Cached:
        the webhook reads every family's factor on every admission, and building a
        Fraction from a Decimal is most of the cost of reading it."""
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

    model_config = ConfigDict(
        json_schema_extra={
            _CEL: [
                _cel(
                    f"(has(self.maxSampleAgeSeconds) ? self.maxSampleAgeSeconds : "
                    f"{DEFAULT_MAX_SAMPLE_AGE_SECONDS}) >= (has(self.sampleIntervalSeconds) ? "
                    f"self.sampleIntervalSeconds : {DEFAULT_SAMPLE_INTERVAL_SECONDS})",
                    "maxSampleAgeSeconds must be at least sampleIntervalSeconds, or every "
                    "sample is stale before the next one comes",
                )
            ]
        }
    )

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
            "is above this fraction of its allocatable SCU is rejected by the filter (as "
            "unresolvable: preemption cannot lower usage). Only nodes with a fresh sample "
            "are judged. "
            "null turns the filter off. Default 0.8."
        ),
        json_schema_extra={"exclusiveMinimum": 0, "maximum": 1},
    )
    request_weight: Annotated[Decimal, BeforeValidator(_to_decimal)] = Field(
        default=DEFAULT_REQUEST_WEIGHT,
        description=(
            "loadAware only: weight w of free requested SCU against free used SCU in the "
            "score, in [0, 0.5]. Small, so usage ranks and requests break near-ties. "
            "Default 0.2."
        ),
        json_schema_extra={"minimum": 0, "maximum": 0.5},
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


#: A CEL test that instance type ``t`` is listed by exactly one family of ``self``.
_ONE_OWNER = "self.families.exists_one(g, has(g.instanceTypes) && t in g.instanceTypes)"


class CatalogSpec(_Model):
    """The families of the fleet and how pods are scored across them."""

    # The cross-family rules of machine_catalog.validation that CEL can state. Every
    # message says what to change. A messageExpression may only quote fields reached by a
    # path (self.baseline): the API server cannot bound the size of a string built from a
    # filter() or join() result, and refuses the CRD for it, so the rules about several
    # families say which kind of mistake it is, and `machine-catalog validate` names it.
    model_config = ConfigDict(
        json_schema_extra={
            _CEL: [
                _cel(
                    "self.families.all(f, self.families.exists_one(g, g.name == f.name))",
                    "family names must be unique: two families have the same name; rename or "
                    "merge them (machine-catalog validate names them)",
                    fieldPath=".families",
                ),
                _cel(
                    "self.families.all(f, !has(f.instanceTypes) || "
                    f"f.instanceTypes.all(t, {_ONE_OWNER}))",
                    "an instance type is listed by more than one family; an instance type "
                    "belongs to one family: remove it from all but one (machine-catalog "
                    "validate names it)",
                    fieldPath=".families",
                ),
                _cel(
                    "self.families.exists(f, f.name == self.baseline)",
                    message_expression=(
                        "'baseline ' + self.baseline + ' is not a family: name one of the "
                        "families, or add a family called ' + self.baseline"
                    ),
                    fieldPath=".baseline",
                ),
                _cel(
                    "self.families.all(f, f.name != self.baseline || f.scuPerCore == 1.0)",
                    message_expression=(
                        "'baseline family ' + self.baseline + ' must have scuPerCore 1.0 (1 "
                        "SCU is one vCPU of the baseline): set it to 1.0 and rescale the "
                        "others, or name another family as the baseline'"
                    ),
                    fieldPath=".families",
                ),
            ]
        }
    )

    baseline: str = Field(
        max_length=63,
        description=(
            "Name of the family whose vCPU is 1 SCU; it must have scuPerCore 1.0. Pods ask "
            "for CPU in SCU, the webhook converts it to each family's vCPUs."
        ),
    )
    unknown_nodes: Literal["reject", "allow"] = Field(
        default="reject",
        description=(
            "A node no family matches: reject keeps normalized pods off it (the extender "
            "filters it out); allow schedules them there as if it were the baseline. "
            "Default reject."
        ),
    )
    scoring: Scoring = Field(
        default_factory=Scoring,
        description="How the scheduler extender ranks and filters nodes (docs/scoring.md).",
    )
    families: tuple[Family, ...] = Field(
        min_length=1,
        max_length=MAX_FAMILIES,
        description=(
            "Machine families. A node belongs to the family that lists its instance type or "
            "whose nodeSelector matches it; exactly one, or it is unknown or ambiguous."
        ),
    )


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
    "MAX_FAMILIES",
    "MAX_INSTANCE_TYPES",
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
