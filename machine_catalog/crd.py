"""The ``machinecatalogs.machine-catalog.io`` CustomResourceDefinition, generated from the
pydantic model (as controller-gen generates a CRD from Go types).

One source of truth: the fields, their descriptions, bounds and CEL rules are written once
in :mod:`machine_catalog.model` (spec) and :mod:`machine_catalog.resource` (status), and
:func:`crd` turns their JSON Schema into a *structural* OpenAPI v3 schema, the form the API
server requires:

- every ``$ref`` is inlined (a CRD schema cannot refer to definitions);
- ``X | None`` (JSON Schema ``anyOf [X, null]``) becomes ``X``. When the field's default is
  None, null just means "not given" and the API server prunes it; when the default is
  something else (``hotSpotUsage``: 0.8, null turns the filter off), ``nullable: true``
  keeps the null;
- a number the file format also takes as a quantity string (``scuPerCore``: ``1.18`` or
  ``"1180m"``) is ``type: number``. ``x-kubernetes-int-or-string`` cannot stand in: it
  admits integers and strings, and would refuse ``1.18``;
- ``title`` and ``default`` are dropped: titles are pydantic's echo of the field name, and
  the defaults are applied by the core when it reads the object, so what ``kubectl get``
  shows is what was applied (and a default changed in the model is not frozen into
  every stored object);
- JSON Schema's numeric ``exclusiveMinimum: 0`` becomes OpenAPI's ``minimum: 0,
  exclusiveMinimum: true``; ``additionalProperties: false`` is dropped (a structural schema
  prunes unknown fields, and ``kubectl apply`` refuses them under strict field validation).

``tools/gen_crd.py`` writes ``manifests/base/crd.yaml``; ``make test`` fails when the
committed file is not what this module generates.
"""

from __future__ import annotations

from typing import Any

from machine_catalog.model import CatalogSpec
from machine_catalog.resource import GROUP, LIST_KIND, PLURAL, SINGULAR, VERSION, CatalogStatus

_DROP = ("title", "default", "additionalProperties")

_PRINTER_COLUMNS = [
    {"name": "Baseline", "type": "string", "jsonPath": ".spec.baseline"},
    {
        "name": "Families",
        "type": "integer",
        "jsonPath": ".status.familyCount",
        "description": "Families of the catalog being served",
    },
    {
        "name": "Matched",
        "type": "integer",
        "jsonPath": ".status.matchedNodes",
        "description": "Nodes that exactly one family claims",
    },
    {
        "name": "Unknown",
        "type": "integer",
        "jsonPath": ".status.unknownNodeCount",
        "priority": 1,
        "description": "Nodes no family claims",
    },
    {
        "name": "Ambiguous",
        "type": "integer",
        "jsonPath": ".status.ambiguousNodeCount",
        "priority": 1,
        "description": "Nodes several families claim",
    },
    {
        "name": "Hash",
        "type": "string",
        "jsonPath": ".status.catalogHash",
        "priority": 1,
        "description": "Content hash of the catalog being served",
    },
    {
        "name": "Ready",
        "type": "string",
        "jsonPath": '.status.conditions[?(@.type=="Ready")].status',
    },
    {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
]


def structural(schema: dict[str, Any]) -> dict[str, Any]:
    """A pydantic JSON Schema (with ``$defs``) as a structural OpenAPI v3 schema."""
    defs = schema.get("$defs", {})

    def convert(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        if "$ref" in node:
            target = defs[node["$ref"].rsplit("/", 1)[1]]
            extra = {k: v for k, v in node.items() if k != "$ref"}
            return convert({**target, **extra})
        node = dict(node)
        if "anyOf" in node:
            options = [o for o in node.pop("anyOf") if o.get("type") != "null"]
            if {o.get("type") for o in options} == {"number", "string"}:
                options = [o for o in options if o.get("type") == "number"]  # a Decimal
            if len(options) != 1:
                raise ValueError(f"no structural form for anyOf {options!r}")
            node = {**convert(options[0]), **node}
        out: dict[str, Any] = {}
        for key, value in node.items():
            if key in _DROP:
                continue
            if key == "properties":
                out[key] = {name: convert(prop) for name, prop in value.items()}
            elif key in ("items", "additionalProperties"):
                out[key] = convert(value)
            elif key == "exclusiveMinimum" and not isinstance(value, bool):
                out["minimum"] = value
                out["exclusiveMinimum"] = True
            elif key == "const":
                out["enum"] = [value]
            else:
                out[key] = value
        if node.get("additionalProperties") not in (None, False):
            out["additionalProperties"] = convert(node["additionalProperties"])
        if "description" in out:
            out["description"] = _prose(out["description"])
        first = [k for k in ("description", "type") if k in out]
        return {k: out[k] for k in first + sorted(k for k in out if k not in first)}

    return convert({k: v for k, v in schema.items() if k not in ("$defs", "$schema")})


def _model_schema(model: Any) -> dict[str, Any]:
    raw = model.model_json_schema(by_alias=True)
    _mark_nullable(raw)
    for definition in raw.get("$defs", {}).values():
        _mark_nullable(definition)
    return structural(raw)


def _prose(text: str) -> str:
    """A docstring as ``kubectl explain`` prints it: one paragraph, no reST markup."""
    return " ".join(text.replace("``", "").split())


def _mark_nullable(schema: dict[str, Any]) -> None:
    """``nullable: true`` where null is a value of its own: the default is not null."""
    for prop in (schema.get("properties") or {}).values():
        options = prop.get("anyOf") or ()
        if any(o.get("type") == "null" for o in options) and prop.get("default", None) is not None:
            prop["nullable"] = True


def crd() -> dict[str, Any]:
    """The CustomResourceDefinition object."""
    spec = _model_schema(CatalogSpec)
    status = _model_schema(CatalogStatus)
    spec["description"] = (
        "The machine catalog: families of nodes and how much work one vCPU of each does, "
        "in standardized compute units (SCU). Format: docs/design.md."
    )
    schema = {
        "type": "object",
        "description": (
            "MachineCatalog: the catalog of machine families the machine-catalog scheduler "
            "extender and webhook serve (serve --catalog-resource NAME)."
        ),
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec,
            "status": status,
        },
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{PLURAL}.{GROUP}",
            "labels": {"app.kubernetes.io/part-of": "machine-catalog"},
        },
        "spec": {
            "group": GROUP,
            "scope": "Cluster",
            "names": {
                "kind": "MachineCatalog",
                "listKind": LIST_KIND,
                "plural": PLURAL,
                "singular": SINGULAR,
                "shortNames": ["mcat"],
                "categories": ["machine-catalog"],
            },
            "versions": [
                {
                    "name": VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": _PRINTER_COLUMNS,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


HEADER = (
    "# Code generated by `machine-catalog schema --crd` (tools/gen_crd.py) from\n"
    "# machine_catalog/model.py and machine_catalog/resource.py. DO NOT EDIT: change the\n"
    "# model and run `.venv/bin/python tools/gen_crd.py`; `make test` checks this file.\n"
)


def crd_yaml() -> str:
    """The CRD as the YAML file ``manifests/base/crd.yaml`` holds, header included."""
    import yaml

    return HEADER + yaml.safe_dump(crd(), sort_keys=False, width=100, allow_unicode=True)
