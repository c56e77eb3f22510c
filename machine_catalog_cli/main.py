"""``machine-catalog``: validate, explain, convert and diff catalogs; make certs; serve; report.

The commands work on files, without a cluster, so infra teams can check a catalog change
in CI before it reaches a ConfigMap. Conventions, shared by every command:

- results go to stdout, problems to stderr; ``-o json`` where a script may want to parse;
- exit codes: 0 ok; 1 invalid input (unreadable or invalid file, bad quantity, unknown
  family; ``diff --exit-code``: there are changes); 2 usage (bad flags; ``diff
  --exit-code``: invalid input, as diff(1) does); 3 ``explain`` of one node that matches no
  family or is ambiguous; 70 internal error; 130 interrupted;
- never a traceback for bad input. An unexpected exception prints one line; the traceback
  only with ``--debug`` or ``MACHINE_CATALOG_DEBUG=1``.

The server and certificate modules are imported inside their handlers: ``validate`` in a
CI job should not pay for (or fail on) gunicorn, Flask or the kubernetes client.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from collections.abc import Callable, Mapping, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Any

from machine_catalog.catalog import Catalog
from machine_catalog.diffing import (
    CatalogDiff,
    FieldChange,
    FleetDiff,
    FleetTotals,
    NodeCapacity,
    assess_labels,
    assess_node,
    diff_catalogs,
    diff_fleet,
    stranded_nodes,
)
from machine_catalog.loading import load_catalog, parse_catalog
from machine_catalog.model import check_label_key, check_label_value, json_schema
from machine_catalog.quantities import (
    QuantityError,
    format_scu,
    parse_quantity,
    physical_to_scu_millis,
    scu_to_physical_millis,
    to_millis,
)
from machine_catalog.resources import DEFAULT_RESIZE_RULE, RESIZE_RULES
from machine_catalog.validation import CatalogInvalid

PROG = "machine-catalog"

EXIT_OK = 0
EXIT_INVALID = 1
EXIT_USAGE = 2
EXIT_NO_MATCH = 3
EXIT_INTERNAL = 70  # EX_SOFTWARE
EXIT_INTERRUPTED = 130

DEBUG_ENV = "MACHINE_CATALOG_DEBUG"


class CliError(Exception):
    """Bad input a user can fix: printed as one line, exits with ``code``."""

    def __init__(self, message: str, code: int = EXIT_INVALID) -> None:
        super().__init__(message)
        self.code = code


# -- output helpers ----------------------------------------------------------------------


def _out(line: str = "") -> None:
    print(line, file=sys.stdout)


def _err(line: str) -> None:
    print(line, file=sys.stderr)


def _json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False) + "\n")


def _number(value: Decimal) -> int | float:
    """A factor for JSON: a number (exact enough for three decimals), not a string."""
    return int(value) if value == value.to_integral_value() else float(value)


def _factor(value: Decimal | None) -> str:
    return "-" if value is None else str(value)


def _scu(millis: int | None) -> str:
    return "-" if millis is None else format_scu(millis)


def _percent(old: int, new: int) -> str:
    if old == new:
        return "±0%"
    if old == 0:
        return "new"
    return f"{(new - old) / old * 100:+.1f}%"


def _table(rows: Sequence[Sequence[str]]) -> list[str]:
    """Left-aligned columns, two spaces apart, like ``kubectl get``."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return [
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in rows
    ]


# -- input helpers -----------------------------------------------------------------------


def add_resize_accounting(p: argparse.ArgumentParser) -> None:
    """``--resize-accounting``: how a pod mid-resize counts, for ``serve`` and ``report``."""
    p.add_argument(
        "--resize-accounting",
        choices=RESIZE_RULES,
        default=DEFAULT_RESIZE_RULE,
        help="count a pod mid-resize as your kube-scheduler does: per-container (1.34 and "
        "releases before kubernetes#140046) or aggregate (1.37); docs/operations.md",
    )


def _load_catalog(path: str | None) -> Catalog:
    """A catalog file (``-`` is stdin), the packaged default when ``path`` is None."""
    if path == "-":
        return parse_catalog(sys.stdin.buffer.read(), "<stdin>")
    return load_catalog(path)


def _catalog_or_fail(path: str | None) -> Catalog:
    try:
        return _load_catalog(path)
    except CatalogInvalid as exc:
        where = exc.source or path or "default catalog"
        raise CliError("\n".join(f"{where}: {e}" for e in exc.errors)) from exc


def _single_node(path: str) -> Mapping[str, Any] | None:
    """The Node when ``path`` holds exactly one Node object (``kubectl get node X -o json``),
    read as every kubectl output file is (:func:`extender.feeds.kubefiles.read_documents`)."""
    from extender.feeds.kubefiles import KubeFileError, read_documents

    try:
        documents = read_documents(path, "a Node")
    except KubeFileError:
        return None
    data = documents[0] if len(documents) == 1 else None
    return data if isinstance(data, Mapping) and data.get("kind") == "Node" else None


def _read_nodes(path: str) -> tuple[list[Mapping[str, Any]], bool]:
    """The Nodes of a snapshot file, and True when the file is one Node, not a list.

    Lists (``kubectl get nodes,pods -A -o json``, NodeList, YAML) are read by the server's
    own snapshot loader, so the CLI and ``serve --snapshot`` accept exactly the same files;
    a single Node, which a cluster snapshot never is, is recognised here.
    """
    from extender.feeds.snapshot import SnapshotError, load_snapshot

    try:
        nodes, _pods = load_snapshot(path)
    except SnapshotError as exc:
        node = _single_node(path)
        if node is None:
            raise CliError(str(exc)) from exc
        return [node], True
    if not nodes:
        raise CliError(f"{path}: no Node objects in the file")
    return nodes, False


def parse_labels(text: str) -> dict[str, str]:
    """``k=v,k2=v2`` into labels, each key and value checked as Kubernetes checks them.

    A value cannot hold ``=`` or ``,`` (label values never do), so both are rejected
    rather than guessed at.
    """
    labels: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            raise CliError(f"--labels {text!r}: empty item; expected key=value,key2=value2")
        key, sep, value = item.partition("=")
        if not sep:
            raise CliError(f"--labels: {item!r} is not key=value")
        if "=" in value:
            raise CliError(f"--labels: {item!r}: a label value cannot contain '='")
        try:
            check_label_key(key)
            check_label_value(value)
        except ValueError as exc:
            raise CliError(f"--labels: {exc}") from exc
        if key in labels:
            raise CliError(f"--labels: key {key!r} given twice")
        labels[key] = value
    return labels


# -- validate ----------------------------------------------------------------------------


def _validate_inputs(args: argparse.Namespace) -> list[tuple[str, Callable[[], Catalog]]]:
    """(name, loader) per catalog to check: the files, then the cluster's (--kubeconfig)."""
    inputs: list[tuple[str, Callable[[], Catalog]]] = [
        (path, lambda path=path: _load_catalog(path)) for path in args.files
    ]
    if args.kubeconfig is not None:
        from machine_catalog_cli import live

        found = live.find_live(args.kubeconfig, args.catalog_resource)
        inputs.append((found.source, found.catalog))
    elif args.catalog_resource is not None:
        raise CliError("--catalog-resource reads a cluster: give --kubeconfig PATH", EXIT_USAGE)
    if not inputs:
        raise CliError("give catalog files, or --kubeconfig PATH for the cluster's", EXIT_USAGE)
    return inputs


def cmd_validate(args: argparse.Namespace) -> int:
    results = []
    code = EXIT_OK
    for path, load in _validate_inputs(args):
        try:
            catalog = load()
        except CatalogInvalid as exc:
            code = EXIT_INVALID
            results.append(
                {"file": path, "ok": False, "errors": [_error_json(e) for e in exc.errors]}
            )
            if args.output != "json":
                for error in exc.errors:
                    _err(f"{path}: {error}")
            continue
        schedulable = sum(1 for f in catalog.families if f.schedulable)
        results.append(
            {
                "file": path,
                "ok": True,
                "catalog": catalog.version,
                "families": len(catalog.families),
                "schedulable": schedulable,
                "baseline": catalog.baseline.name,
            }
        )
        if args.output != "json":
            _out(
                f"{path}: ok — catalog {catalog.version}, {len(catalog.families)} families "
                f"({schedulable} schedulable), baseline {catalog.baseline.name}"
            )
    if args.output == "json":
        _json(results)
    return code


def _error_json(error: Any) -> dict[str, str]:
    return {"path": error.path, "message": error.message}


# -- schema ------------------------------------------------------------------------------


def cmd_schema(args: argparse.Namespace) -> int:
    if args.crd:
        from machine_catalog.crd import crd_yaml

        sys.stdout.write(crd_yaml())
        return EXIT_OK
    _json(json_schema())
    return EXIT_OK


# -- explain -----------------------------------------------------------------------------


def _claims(catalog: Catalog, cap: NodeCapacity) -> list[dict[str, str]]:
    """Why each family claims the node: its instance type is listed, or its selector."""
    claims = []
    for name in cap.families:
        family = catalog.by_name[name]
        by = (
            f"instanceTypes lists {cap.instance_type}"
            if cap.instance_type in family.instance_types
            else "nodeSelector matches"
        )
        claims.append({"family": name, "by": by})
    return claims


def _explain_one(catalog: Catalog, cap: NodeCapacity, output: str) -> int:
    code = EXIT_OK if cap.status == "matched" else EXIT_NO_MATCH
    if output == "json":
        _json({**cap.to_json(), "catalog": catalog.version, "claims": _claims(catalog, cap)})
        return code
    rows: list[tuple[str, str]] = []
    if cap.name:
        rows.append(("node", cap.name))
    rows.append(("instance type", cap.instance_type or "(no instance-type label)"))
    if cap.status == "matched":
        family = catalog.by_name[cap.families[0]]
        desc = f" — {family.description}" if family.description else ""
        rows.append(("family", f"{family.name}{desc}"))
        rows.append(("matched by", _claims(catalog, cap)[0]["by"]))
        rows.append(("scuPerCore", f"{family.scu_per_core} (1 vCPU = {family.scu_per_core} SCU)"))
        rows.append(
            ("schedulable", "yes" if family.schedulable else "no — retired, no new pods go here")
        )
    elif cap.status == "unknown":
        rows.append(("family", "none — matches no family of the catalog"))
        if catalog.unknown_nodes == "allow":
            rows.append(("unknownNodes", "allow — scheduled as baseline (1.0), no SCU pinning"))
        else:
            rows.append(("unknownNodes", "reject — the extender filters it out"))
    else:
        claims = ", ".join(f"{c['family']} ({c['by']})" for c in _claims(catalog, cap))
        rows.append(("family", f"ambiguous — claimed by {claims}"))
        rows.append(("scheduling", "rejected: a node must match exactly one family"))
    if cap.allocatable_millis is not None:
        rows.append(("allocatable", f"{cap.allocatable_millis}m"))
        if cap.scu_millis is not None:
            rows.append(("SCU capacity", format_scu(cap.scu_millis)))
    rows.append(("catalog", catalog.version))
    width = max(len(k) for k, _ in rows) + 2
    for key, value in rows:
        _out(f"{key + ':':<{width}}{value}")
    if cap.status == "unknown":
        _out(
            "hint: list its instance type in a family's instanceTypes, or give a family a "
            "nodeSelector that matches its labels"
        )
    elif cap.status == "ambiguous":
        _out("hint: narrow the nodeSelectors (or instance types) so only one family claims it")
    return code


def _family_cell(cap: NodeCapacity) -> str:
    if cap.status == "unknown":
        return "<unknown>"
    if cap.status == "ambiguous":
        return "<ambiguous: " + ",".join(cap.families) + ">"
    return cap.families[0] + ("" if cap.schedulable else " (retired)")


def _explain_many(catalog: Catalog, caps: list[NodeCapacity], output: str) -> int:
    totals = FleetTotals.of(caps)
    if output == "json":
        _json(
            {
                "catalog": catalog.version,
                "nodes": [{**c.to_json(), "claims": _claims(catalog, c)} for c in caps],
                "summary": _totals_json(totals),
            }
        )
        return EXIT_OK
    rows = [("NODE", "INSTANCE TYPE", "FAMILY", "SCU/CORE", "ALLOCATABLE", "SCU")]
    for c in caps:
        alloc = "-" if c.allocatable_millis is None else f"{c.allocatable_millis}m"
        rows.append(
            (
                c.name,
                c.instance_type or "-",
                _family_cell(c),
                _factor(c.factor),
                alloc,
                _scu(c.scu_millis),
            )
        )
    for line in _table(rows):
        _out(line)
    _out()
    _out(
        f"{totals.nodes} nodes: {totals.matched} matched, {totals.unknown} unknown, "
        f"{totals.ambiguous} ambiguous; {format_scu(totals.schedulable_scu_millis)} schedulable "
        f"of {format_scu(totals.scu_millis)} (catalog {catalog.version})"
    )
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    # Parse the cheap argument before loading anything, so a typo fails fast.
    labels = parse_labels(args.labels) if args.labels is not None else None
    if labels is None and args.node is None and args.kubeconfig is None:
        raise CliError("give --node FILE, --labels K=V,... or --kubeconfig PATH", EXIT_USAGE)
    from machine_catalog_cli import live

    catalog, _found = live.catalog_for(args)
    if labels is not None:
        return _explain_one(catalog, assess_labels(catalog, labels), args.output)
    if args.node is None:  # --kubeconfig alone: every node of the cluster
        caps = [assess_node(catalog, node) for node in live.list_nodes(args.kubeconfig)]
        return _explain_many(catalog, caps, args.output)
    nodes, single = _read_nodes(args.node)
    caps = [assess_node(catalog, node) for node in nodes]
    if single:
        return _explain_one(catalog, caps[0], args.output)
    return _explain_many(catalog, caps, args.output)


# -- convert -----------------------------------------------------------------------------


def cmd_convert(args: argparse.Namespace) -> int:
    catalog = _catalog_or_fail(args.catalog)
    family = catalog.by_name.get(args.family)
    if family is None:
        raise CliError(
            f"unknown family {args.family!r}; families of {catalog.version}: "
            + ", ".join(f.name for f in catalog.families)
        )
    try:
        millis = to_millis(args.quantity)
    except QuantityError as exc:
        raise CliError(f"bad quantity: {exc} (examples: 2, 1.5, 1500m)") from exc
    where = f"on {family.name} ({family.scu_per_core} SCU/core)"
    if args.reverse:
        physical, scu = millis, physical_to_scu_millis(millis, family.factor)
        line = f"{physical}m {where} = {format_scu(scu)}"
    else:
        scu, physical = millis, scu_to_physical_millis(millis, family.factor)
        line = f"{format_scu(scu)} {where} = {physical}m"
    if args.output == "json":
        _json(
            {
                "family": family.name,
                "scuPerCore": _number(family.scu_per_core),
                "scuMillis": scu,
                "physicalMillis": physical,
                "catalog": catalog.version,
            }
        )
    else:
        _out(line)
    if not family.schedulable:
        _err(f"note: family {family.name} is retired (schedulable: false); no new pods go there")
    return EXIT_OK


# -- diff --------------------------------------------------------------------------------


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if value is None or isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _field_line(change: FieldChange) -> str:
    where = f"family {change.family}: " if change.family else ""
    if change.field == "instanceTypes":
        old, new = set(change.old), set(change.new)
        parts = []
        if new - old:
            parts.append("+ " + ", ".join(sorted(new - old)))
        if old - new:
            parts.append("- " + ", ".join(sorted(old - new)))
        return f"{where}instanceTypes {'; '.join(parts)}"
    return f"{where}{change.field}: {_value(change.old)} -> {_value(change.new)}"


def _catalog_diff_lines(d: CatalogDiff) -> list[str]:
    lines = []
    for f in d.added:
        state = "" if f.schedulable else ", retired"
        lines.append(f"+ family {f.name} (scuPerCore {f.scu_per_core}{state})")
    for f in d.removed:
        lines.append(f"- family {f.name} (scuPerCore {f.scu_per_core})")
    for c in d.factors:
        lines.append(f"family {c.family}: scuPerCore {c.old} -> {c.new} ({c.percent:+.1f}%)")
    lines += [_field_line(c) for c in d.fields]
    return lines


def _node_change_rows(fleet: FleetDiff) -> list[tuple[str, ...]]:
    rows: list[tuple[str, ...]] = [("NODE", "FAMILY", "SCU/CORE", "SCU", "CHANGE")]

    def pair(a: str, b: str) -> str:
        return a if a == b else f"{a} -> {b}"

    for ch in fleet.changes:
        a, b = ch.before, ch.after
        if a.scu_millis is not None and b.scu_millis is not None:
            delta = _percent(a.scu_millis, b.scu_millis) if a.scu_millis != b.scu_millis else ""
        elif b.scu_millis is None:
            delta = "loses SCU"
        else:
            delta = "gains SCU"
        if a.schedulable != b.schedulable and b.scu_millis is not None:
            turn = "now schedulable" if b.schedulable else "now retired"
            delta = f"{delta}, {turn}" if delta else turn
        rows.append(
            (
                ch.name,
                pair(_family_cell(a), _family_cell(b)),
                pair(_factor(a.factor), _factor(b.factor)),
                pair(_scu(a.scu_millis), _scu(b.scu_millis)),
                delta,
            )
        )
    return rows


def _totals_json(t: FleetTotals) -> dict[str, int]:
    return {
        "nodes": t.nodes,
        "matched": t.matched,
        "unknown": t.unknown,
        "ambiguous": t.ambiguous,
        "scuMillis": t.scu_millis,
        "schedulableScuMillis": t.schedulable_scu_millis,
    }


def _diff_json(d: CatalogDiff, fleet: FleetDiff | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "old": d.old_version,
        "new": d.new_version,
        "changed": d.changed or bool(fleet and fleet.changes),
        "added": [f.name for f in d.added],
        "removed": [f.name for f in d.removed],
        "factors": [
            {
                "family": c.family,
                "old": _number(c.old),
                "new": _number(c.new),
                "percent": round(c.percent, 2),
            }
            for c in d.factors
        ],
        "fields": [
            {"family": c.family, "field": c.field, "old": c.old, "new": c.new} for c in d.fields
        ],
    }
    if fleet is not None:
        out["nodes"] = [
            {"before": c.before.to_json(), "after": c.after.to_json()} for c in fleet.changes
        ]
        out["fleet"] = {"before": _totals_json(fleet.before), "after": _totals_json(fleet.after)}
    return out


def _diff_inputs(args: argparse.Namespace) -> tuple[Catalog, Catalog, list | None]:
    """OLD and NEW files; or with --kubeconfig and one file, the cluster's catalog and it.
    Nodes: --snapshot, else with --kubeconfig the cluster's."""
    from machine_catalog_cli import live

    if args.new is None:
        if args.kubeconfig is None:
            raise CliError("give OLD and NEW, or --kubeconfig PATH and NEW", EXIT_USAGE)
        old, _found = live.catalog_for(argparse.Namespace(**{**vars(args), "catalog": None}))
        new = _catalog_or_fail(args.old)
    else:
        if args.catalog_resource is not None:
            raise CliError("--catalog-resource replaces OLD: give only NEW", EXIT_USAGE)
        old, new = _catalog_or_fail(args.old), _catalog_or_fail(args.new)
    if args.snapshot:
        return old, new, _read_nodes(args.snapshot)[0]
    if args.kubeconfig is not None:
        return old, new, live.list_nodes(args.kubeconfig)
    return old, new, None


def _pods_per_node(path: str) -> dict[str, int]:
    """Pods bound to each node and not finished, from a snapshot (none in a NodeList)."""
    from extender.feeds.snapshot import SnapshotError, load_snapshot

    try:
        _nodes, pods = load_snapshot(path)
    except SnapshotError:
        return {}
    counts: dict[str, int] = {}
    for pod in pods:
        node = (pod.get("spec") or {}).get("nodeName")
        if node and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed"):
            counts[node] = counts.get(node, 0) + 1
    return counts


def cmd_diff(args: argparse.Namespace) -> int:
    try:
        old, new, nodes = _diff_inputs(args)
    except CliError as exc:
        if args.exit_code:  # 1 means "changes" here, so trouble is 2, as diff(1) does
            exc.code = EXIT_USAGE
        raise
    d = diff_catalogs(old, new)
    fleet = diff_fleet(old, new, nodes) if nodes is not None else None
    changed = d.changed or bool(fleet and fleet.changes)
    stranded = (
        stranded_nodes(fleet, _pods_per_node(args.snapshot)) if fleet and args.snapshot else []
    )
    for s in stranded:
        _err(
            f"warning: node {s.name} leaves family {s.family} and matches none, but runs "
            f"{s.pods} pods: retire the family (schedulable: false) and drain it first"
        )
    if args.output == "json":
        out = _diff_json(d, fleet)
        out["strandedNodes"] = [
            {"node": s.name, "family": s.family, "pods": s.pods} for s in stranded
        ]
        _json(out)
    else:
        _out(f"catalog {d.old_version} -> {d.new_version}")
        lines = _catalog_diff_lines(d)
        for line in lines or ["no changes to families or settings"]:
            _out(f"  {line}")
        if fleet is not None:
            _out()
            if fleet.changes:
                _out(f"nodes: {len(fleet.changes)} of {fleet.after.nodes} change")
                for line in _table(_node_change_rows(fleet)):
                    _out(f"  {line}")
            else:
                _out(f"nodes: none of {fleet.after.nodes} change")
            b, a = fleet.before, fleet.after
            for label, old_v, new_v in (
                ("fleet SCU", b.scu_millis, a.scu_millis),
                ("schedulable SCU", b.schedulable_scu_millis, a.schedulable_scu_millis),
            ):
                _out(
                    f"{label + ':':<17}{format_scu(old_v)} -> {format_scu(new_v)} "
                    f"({_percent(old_v, new_v)})"
                )
            _out(
                f"{'unmatched nodes:':<17}unknown {b.unknown} -> {a.unknown}, "
                f"ambiguous {b.ambiguous} -> {a.ambiguous}"
            )
    return EXIT_INVALID if args.exit_code and changed else EXIT_OK


# -- certs -------------------------------------------------------------------------------


def cmd_certs(args: argparse.Namespace) -> int:
    from machine_catalog.certs import write_bundle

    if args.days < 1:
        raise CliError("--days must be at least 1", EXIT_USAGE)
    try:
        bundle = write_bundle(
            args.service,
            args.namespace,
            Path(args.out),
            extra_services=args.extra_service,
            days=args.days,
        )
    except OSError as exc:
        raise CliError(f"{args.out}: cannot write: {exc.strerror or exc}") from exc
    except ValueError as exc:
        raise CliError(str(exc)) from exc
    ca = "new CA" if bundle.ca_created else "kept the existing CA (caBundle unchanged)"
    _out(
        f"wrote {bundle.out_dir} ({ca}; serving certificate valid until "
        f"{bundle.not_after:%Y-%m-%d}):"
    )
    for path in (
        bundle.ca_cert,
        bundle.ca_key,
        bundle.tls_cert,
        bundle.tls_key,
        bundle.patch,
        bundle.kustomization,
    ):
        _out(f"  {path}")
    _out("DNS names: " + ", ".join(bundle.dns_names))
    _out()
    _out("next:")
    out_dir = bundle.out_dir
    if out_dir.resolve().parts[-3:] == ("overlays", "generated-certs", "certs"):
        _out(f"  kubectl apply -k {out_dir.parent}")
    else:
        _out(
            f"  reference {out_dir} from a kustomization beside manifests/base "
            f"(components: [{out_dir}]),"
        )
        _out("  as manifests/overlays/generated-certs does, and apply it: kubectl apply -k DIR")
    _out("  The Secret's name carries a content hash: both Deployments roll to the new files.")
    _out(f"  {out_dir} holds private keys (ca.key, tls.key): keep it in a secret store, not git.")
    return EXIT_OK


# -- serve -------------------------------------------------------------------------------


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds, got {text}")
    return value


def _bytes(text: str) -> int:
    """``536870912``, ``512Mi``, ``1G``: a byte count in Kubernetes quantity syntax."""
    try:
        value = parse_quantity(text)
    except QuantityError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a size (examples: 1048576, 512Mi)"
        ) from None
    if value <= 0 or value != value.to_integral_value():
        raise argparse.ArgumentTypeError(f"must be a positive whole number of bytes, got {text}")
    return int(value)


def _bind(text: str) -> str:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) or ``unix:PATH``, as gunicorn takes it."""
    if text.startswith("unix:"):
        return text
    _host, sep, port = text.rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT (example: 0.0.0.0:8443)")
    return text


def cmd_serve(args: argparse.Namespace) -> int:
    from extender.server.serve import ServeConfig, ServeError, serve

    try:
        config = ServeConfig(
            catalog=args.catalog,
            catalog_resource=args.catalog_resource,
            snapshot=args.snapshot,
            node_metrics=args.node_metrics,
            kubeconfig=args.kubeconfig,
            in_cluster=args.in_cluster,
            bind=args.bind,
            threads=args.threads,
            certfile=args.certfile,
            keyfile=args.keyfile,
            scheduler_name=args.scheduler_name,
            state_dir=args.state_dir,
            max_body=args.max_body,
            max_cache_age=args.max_cache_age,
            body_timeout=args.body_timeout,
            reload_interval=args.reload_interval,
            log_level=args.log_level,
            access_log=args.access_log,
            recreate_stranded_after=args.recreate_stranded_after,
            recreate_max_per_cycle=args.recreate_max_per_cycle,
            lease_name=args.lease_name,
            lease_namespace=args.lease_namespace,
            family_choice=args.family_choice,
            resize_accounting=args.resize_accounting,
            extender_bind=args.extender_bind,
        )
    except ServeError as exc:  # the server's own checks of a combination
        raise CliError(str(exc), EXIT_USAGE) from exc
    return serve(config)


# -- parser ------------------------------------------------------------------------------


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("machine-catalog")
    except PackageNotFoundError:
        return "unknown"


class DefaultsFormatter(argparse.HelpFormatter):
    """``--help`` shows each option's default, when it has one worth showing.

    argparse's ArgumentDefaultsHelpFormatter also prints ``(default: None)`` and
    ``(default: False)`` for flags and unset options; those say nothing.
    """

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        default = action.default
        if (
            "%(default)" in text
            or default is None
            or default is False
            or default == []
            or default is argparse.SUPPRESS
            or not action.option_strings
        ):
            return text
        return f"{text} (default: %(default)s)" if text else "default: %(default)s"


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help=f"show the traceback of an internal error (also {DEBUG_ENV}=1)",
    )
    output = argparse.ArgumentParser(add_help=False)
    output.add_argument(
        "-o", "--output", choices=("text", "json"), default="text", help="output format"
    )
    catalog = argparse.ArgumentParser(add_help=False)
    catalog.add_argument(
        "--catalog", metavar="FILE", help="catalog file (default: the packaged catalog)"
    )

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Machine-type catalog for Kubernetes: standardized compute units (SCU).",
    )
    # Its own action, not the shared parent's: set_defaults would change the default of the
    # shared action, and the subcommand's parse would then reset `--debug schema` to False.
    parser.add_argument("--debug", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--version", action="version", version=f"{PROG} {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser(
        "validate",
        parents=[common, output],
        help="check catalog files; every error with its path",
        description="Exit 0 and one summary line per file, or exit 1 listing every error.",
    )
    p.add_argument("files", nargs="*", metavar="FILE", help="catalog file (- for stdin)")
    from machine_catalog_cli import live

    live.add_flags(p)
    p.set_defaults(handler=cmd_validate)

    p = sub.add_parser("schema", parents=[common], help="JSON Schema of the catalog file")
    p.add_argument(
        "--crd",
        action="store_true",
        help="print the MachineCatalog CustomResourceDefinition (YAML) instead",
    )
    p.set_defaults(handler=cmd_schema)

    p = sub.add_parser(
        "explain",
        parents=[common, catalog, output],
        help="which family a node belongs to, its factor and SCU capacity",
        description=(
            "One Node: details, exit 3 when it matches no family or several. A NodeList or "
            "v1 List (kubectl get nodes -o json): a table, exit 0."
        ),
    )
    which = p.add_mutually_exclusive_group()
    which.add_argument("--node", metavar="FILE", help="Node, NodeList or v1 List (JSON/YAML)")
    which.add_argument("--labels", metavar="K=V,...", help="node labels, e.g. a=b,c=d")
    live.add_flags(p)  # --kubeconfig alone: every node of the cluster
    p.set_defaults(handler=cmd_explain)

    p = sub.add_parser(
        "convert",
        parents=[common, catalog, output],
        help="SCU -> physical millicores on a family (--reverse: millicores -> SCU)",
    )
    p.add_argument("--family", required=True, metavar="NAME")
    p.add_argument("--reverse", action="store_true", help="QUANTITY is physical CPU; print SCU")
    p.add_argument("quantity", metavar="QUANTITY", help="Kubernetes CPU quantity: 2, 1.5, 1500m")
    p.set_defaults(handler=cmd_convert)

    p = sub.add_parser(
        "diff",
        parents=[common, output],
        help="what changes from OLD to NEW catalog, and for each node of a snapshot",
    )
    p.add_argument("old", metavar="OLD", help="catalog file (with --kubeconfig alone: NEW)")
    p.add_argument("new", metavar="NEW", nargs="?", help="catalog file")
    live.add_flags(p)
    p.add_argument(
        "--snapshot", metavar="FILE", help="v1 List of nodes (kubectl get nodes,pods -A -o json)"
    )
    p.add_argument(
        "--exit-code",
        action="store_true",
        help="exit 1 when anything changed (and 2 on invalid input), like git diff",
    )
    p.set_defaults(handler=cmd_diff)

    p = sub.add_parser(
        "certs",
        parents=[common],
        help="CA + serving certificate for the webhook/extender Services, as a kustomize component",
    )
    p.add_argument("--service", required=True, metavar="NAME")
    p.add_argument("--namespace", required=True, metavar="NS")
    p.add_argument("--out", required=True, metavar="DIR")
    p.add_argument(
        "--extra-service", action="append", default=[], metavar="NAME", help="repeatable"
    )
    p.add_argument("--days", type=int, default=365, help="serving certificate lifetime")
    p.set_defaults(handler=cmd_certs)

    p = sub.add_parser(
        "serve",
        parents=[common, catalog],
        help="run the server under gunicorn",
        formatter_class=DefaultsFormatter,
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument("--snapshot", metavar="FILE", help="static v1 List of Nodes and Pods")
    source.add_argument("--kubeconfig", metavar="PATH", help="watch a cluster")
    source.add_argument("--in-cluster", action="store_true", help="watch the pod's own cluster")
    p.add_argument(
        "--catalog-resource",
        metavar="NAME",
        help="serve the MachineCatalog NAME, watched and hot-reloaded (instead of --catalog; "
        "needs --kubeconfig or --in-cluster); the leader writes its status",
    )
    p.add_argument(
        "--node-metrics",
        metavar="FILE",
        help="node usage for loadAware: a NodeMetricsList (kubectl get --raw "
        "/apis/metrics.k8s.io/v1beta1/nodes), hot-reloaded; default with --kubeconfig or "
        "--in-cluster: poll metrics.k8s.io",
    )
    p.add_argument(
        "--bind",
        type=_bind,
        default="127.0.0.1:8080",
        metavar="HOST:PORT",
        help="address to listen on (unix:PATH for a socket)",
    )
    p.add_argument(
        "--extender-bind",
        metavar="HOST:PORT",
        help="also serve the extender's routes in plain HTTP here, on loopback only, for a "
        "kube-scheduler in the same pod (urlPrefix http://127.0.0.1:PORT/scheduler, "
        "enableHTTPS false)",
    )
    p.add_argument(
        "--threads",
        type=_positive_int,
        default=4,
        help="threads serving requests from the one process that owns the state",
    )
    p.add_argument("--certfile", metavar="FILE", help="TLS certificate (default: plain HTTP)")
    p.add_argument("--keyfile", metavar="FILE", help="TLS private key of --certfile")
    p.add_argument(
        "--scheduler-name",
        metavar="NAME",
        help="schedulerName the webhook gives pods that ask for the default scheduler "
        "(default: leave schedulerName alone)",
    )
    p.add_argument("--state-dir", metavar="DIR", help="persist the last good catalog here")
    p.add_argument(
        "--max-body",
        type=_bytes,
        default=None,
        metavar="BYTES",
        help="largest request body accepted, e.g. 512Mi (default: 512Mi)",
    )
    p.add_argument(
        "--max-cache-age",
        type=_positive_float,
        default=120.0,
        metavar="SECONDS",
        help="/readyz fails when the cluster cache has heard nothing from its source this long",
    )
    p.add_argument(
        "--body-timeout",
        type=_positive_float,
        default=10.0,
        metavar="SECONDS",
        help="longest pause a client may make while sending a request body",
    )
    p.add_argument(
        "--reload-interval",
        type=_positive_float,
        default=1.0,
        metavar="SECONDS",
        help="how often each worker checks the catalog file for a change",
    )
    p.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error", "critical"),
        default="info",
        help="server log level",
    )
    p.add_argument("--access-log", action="store_true", help="log every request")
    p.add_argument(
        "--recreate-stranded-after",
        type=_positive_float,
        default=None,
        metavar="SECONDS",
        help="delete a controller-owned pod pinned to a full family after it waited this long "
        "unscheduled while another allowed family has room, so its controller re-creates it "
        "(off when not given; needs a cluster source and RBAC to delete pods)",
    )
    p.add_argument(
        "--recreate-max-per-cycle",
        type=_positive_int,
        default=5,
        metavar="N",
        help="at most N such deletions per cycle (a cycle runs every SECONDS / 3, 2 to 30 s)",
    )
    p.add_argument(
        "--family-choice",
        choices=("most-free", "spread"),
        default="most-free",
        help="the webhook's pick among families that can hold a pod: the one with the most "
        "free SCU, or at random in proportion to free SCU (for several replicas)",
    )
    add_resize_accounting(p)
    p.add_argument(
        "--lease-name",
        default="machine-catalog",
        metavar="NAME",
        help="the coordination.k8s.io Lease whose holder runs the loops that write to the "
        "cluster (with a cluster source)",
    )
    p.add_argument(
        "--lease-namespace",
        default=None,
        metavar="NAMESPACE",
        help="the Lease's namespace (default: $POD_NAMESPACE, the pod's own, else machine-catalog)",
    )
    p.set_defaults(handler=cmd_serve)

    from machine_catalog_cli import calibrate

    calibrate.add_parser(sub, parents=[common, catalog, output])
    from machine_catalog_cli import report  # its own module; imports main's helpers

    report.add_parser(sub, [common, catalog, output])
    from machine_catalog_cli import doctor

    doctor.add_parser(sub, [common, output])
    return parser


# -- main --------------------------------------------------------------------------------


def _fail(message: str, code: int) -> int:
    for line in message.splitlines() or [""]:
        _err(f"{PROG}: error: {line}")
    return code


def _silence_stdout() -> None:
    """Stop Python's flush at exit from failing again on the closed pipe."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (the console script passes it to exit)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors: argparse printed already
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    debug = args.debug or os.environ.get(DEBUG_ENV, "") not in ("", "0")
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except CliError as exc:
        return _fail(str(exc), exc.code)
    except CatalogInvalid as exc:
        return _fail("\n".join(f"{exc.source}: {e}" for e in exc.errors), EXIT_INVALID)
    except OSError as exc:  # a file or port the environment refused: not a bug
        return _fail(str(exc), EXIT_INVALID)
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # `machine-catalog schema | head`: the reader left; not an error
        _silence_stdout()
        return EXIT_OK
    except Exception as exc:
        if debug:
            traceback.print_exc()
        return _fail(
            f"internal error: {type(exc).__name__}: {exc} "
            f"(run with --debug or {DEBUG_ENV}=1 for the traceback)",
            EXIT_INTERNAL,
        )
