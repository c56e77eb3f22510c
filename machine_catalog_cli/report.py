"""``machine-catalog report``: the state of each family's pool, and what needs a look.

The numbers are the server's: nodes and pods go into the same
:class:`~extender.state.cluster.ClusterState` the extender and the webhook read, and the
per-family totals come from :func:`extender.admission.pools.family_pools` (the counting rules are
written there), so a report never disagrees with a scheduling decision. This module only
gathers the objects (a snapshot file, or a live cluster through the kubernetes client),
adds what the cache does not keep (pending pod counts, usage from metrics, the problems
list) and renders a table or JSON.

Problems listed:

- nodes the catalog does not know, and nodes two families claim, each with the labels
  that decided it (the instance-type labels and the keys the families' selectors read);
- pods in namespaces the webhook normalizes that are not normalized (created before the
  namespace opted in, or while the webhook was bypassed): their CPU is read as physical
  vCPUs of whatever node they landed on;
- pods pinned to a family the catalog retired or no longer has, and not yet bound: no
  node will take them.

Usage, when metrics are given (``kubectl get --raw /apis/metrics.k8s.io/v1beta1/nodes``
and ``.../pods``, or fetched live from the same API): physical CPU in use on a family's
uncordoned nodes, in SCU with the same rounding as capacity.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from machine_catalog.annotations import NORMALIZE_LABEL
from machine_catalog.catalog import Catalog
from machine_catalog.matching import BETA_INSTANCE_TYPE_LABEL, INSTANCE_TYPE_LABEL
from machine_catalog.quantities import QuantityError, physical_to_scu_millis, to_millis
from machine_catalog.resources import DEFAULT_RESIZE_RULE, request_fields
from machine_catalog_cli.main import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    DefaultsFormatter,
    _json,
    _out,
    _table,
    add_resize_accounting,
)

if TYPE_CHECKING:
    from extender.admission.pools import FamilyPool

#: The webhook's namespaceSelector (manifests/base/webhook.yaml): namespaces labelled
#: ``machine-catalog.io/normalize: enabled``, never these two (a test checks they agree).
OPT_IN_VALUE = "enabled"
NEVER_NORMALIZED = ("kube-system", "machine-catalog-system")
#: Items of one problem list shown in the table (all of them with ``-o json``).
SHOWN = 20
#: LIST page size for a live cluster, as the server's watcher uses.
PAGE_SIZE = 500


# -- inputs ---------------------------------------------------------------------------------


@dataclass
class Inputs:
    """Everything a report is computed from; ``None`` for what the source did not give."""

    nodes: list[dict[str, Any]]
    pods: list[dict[str, Any]]
    namespaces: list[dict[str, Any]] | None
    node_metrics: list[dict[str, Any]] | None = None
    pod_metrics: list[dict[str, Any]] | None = None
    source: str = ""


def read_snapshot(path: str) -> Inputs:
    from extender.feeds.snapshot import SnapshotError, load_objects

    try:
        found = load_objects(path, ("Node", "Pod", "Namespace"))
    except SnapshotError as exc:
        raise CliError(str(exc)) from exc
    if not found["Node"]:
        raise CliError(f"{path}: no Node objects in the file")
    return Inputs(
        nodes=found["Node"],
        pods=found["Pod"],
        namespaces=found["Namespace"] or None,
        source=f"snapshot {path}",
    )


def read_metrics(path: str, kind: str) -> list[dict[str, Any]]:
    """The items of a ``NodeMetricsList``/``PodMetricsList`` file, as ``kubectl get --raw``
    prints it (JSON), read and checked by :func:`extender.feeds.kubefiles.read_metrics_list`."""
    from extender.feeds.kubefiles import KubeFileError, read_metrics_list

    try:
        return read_metrics_list(path, kind, allow_yaml=False)
    except KubeFileError as exc:
        raise CliError(str(exc)) from exc


def _metric_items(data: Any, kind: str, where: str) -> list[dict[str, Any]]:
    from extender.feeds.kubefiles import KubeFileError, metrics_items

    try:
        return metrics_items(data, kind, where)
    except KubeFileError as exc:
        raise CliError(str(exc)) from exc


def read_live(kubeconfig: str, with_metrics: bool) -> Inputs:
    """Nodes, pods and namespaces listed from the API server (paginated, raw JSON, as the
    server's watcher lists them), and metrics from ``metrics.k8s.io`` when it is served."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException, OpenApiException
    from urllib3.exceptions import HTTPError

    from extender.feeds.watching import ApiConfigError, load_api_client

    try:
        api_client = load_api_client(kubeconfig)
    except ApiConfigError as exc:
        raise CliError(str(exc)) from exc
    core = client.CoreV1Api(api_client)
    host = api_client.configuration.host
    try:
        nodes = list(_list_all(core.list_node))
        pods = [slim_pod(pod) for pod in _list_all(core.list_pod_for_all_namespaces)]
        namespaces = list(_list_all(core.list_namespace))
        node_metrics = pod_metrics = None
        if with_metrics:
            custom = client.CustomObjectsApi(api_client)
            node_metrics = _live_metrics(custom, "nodes", "NodeMetrics")
            pod_metrics = _live_metrics(custom, "pods", "PodMetrics")
    except ApiException as exc:
        raise CliError(f"{host}: {exc.status} {exc.reason}: {_api_message(exc)}") from exc
    except (HTTPError, OpenApiException, OSError) as exc:
        raise CliError(f"{host}: {type(exc).__name__}: {exc}") from exc
    finally:
        api_client.close()
    return Inputs(nodes, pods, namespaces, node_metrics, pod_metrics, f"cluster {host}")


def _list_all(list_func: Any, **kwargs: Any) -> Iterator[dict[str, Any]]:
    token: str | None = None
    while True:
        response = list_func(
            limit=PAGE_SIZE, _continue=token, _preload_content=False, _request_timeout=60, **kwargs
        )
        try:
            page = orjson.loads(response.data)
        finally:
            response.release_conn()
        yield from page.get("items") or ()
        token = (page.get("metadata") or {}).get("continue")
        if not token:
            return


def slim_pod(pod: Mapping[str, Any]) -> dict[str, Any]:
    """The fields of a Pod the report reads, nothing else.

    A live listing is slimmed page by page: a 50,000-pod cluster is ~700 MB of parsed
    objects whole, and the report needs the pod's identity, labels, annotations and owners,
    its node affinity (the webhook's exemptions), and everything its requests are counted
    from, status of a resize included: :func:`machine_catalog.resources.request_fields`,
    the one projection of the counting rule the server's cache applies to full objects.
    tests/test_report.py checks the live report equals the report of the full objects.
    """
    meta = _meta(pod)
    spec = pod.get("spec") if isinstance(pod.get("spec"), dict) else {}
    out = request_fields(pod)
    if "affinity" in spec:
        out["spec"]["affinity"] = spec["affinity"]
    keep = ("name", "namespace", "uid", "labels", "annotations", "ownerReferences")
    out["metadata"] = {k: meta[k] for k in keep if k in meta}
    return out


def _live_metrics(custom: Any, plural: str, kind: str) -> list[dict[str, Any]] | None:
    """The metrics list, or None when the cluster serves no metrics API (no metrics-server)."""
    from kubernetes.client.exceptions import ApiException

    try:
        response = custom.list_cluster_custom_object(
            "metrics.k8s.io", "v1beta1", plural, _preload_content=False, _request_timeout=60
        )
    except ApiException as exc:
        if exc.status in (404, 503):
            return None
        raise
    try:
        data = orjson.loads(response.data)
    finally:
        response.release_conn()
    return _metric_items(data, kind, f"metrics.k8s.io {plural}")


def _api_message(exc: Any) -> str:
    try:
        return str(orjson.loads(exc.body).get("message") or exc.body)
    except (orjson.JSONDecodeError, AttributeError, TypeError):
        return str(exc.body or "").strip() or "no message"


# -- the report -------------------------------------------------------------------------------


def _meta(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _pod_ref(pod: Mapping[str, Any], **extra: Any) -> dict[str, Any]:
    meta = _meta(pod)
    return {"namespace": meta.get("namespace") or "", "name": meta.get("name") or "", **extra}


def _finished(pod: Mapping[str, Any]) -> bool:
    return (pod.get("status") or {}).get("phase") in ("Succeeded", "Failed")


def deciding_keys(catalog: Catalog) -> frozenset[str]:
    """The label keys a catalog's matching reads: instance types and selector keys."""
    keys = {INSTANCE_TYPE_LABEL, BETA_INSTANCE_TYPE_LABEL}
    for family in catalog.families:
        selector = family.node_selector
        if selector is not None:
            keys.update(selector.match_labels)
            keys.update(r.key for r in selector.match_expressions)
    return frozenset(keys)


def opted_in_namespaces(namespaces: Iterable[Mapping[str, Any]]) -> set[str]:
    """Names of the namespaces whose pods the webhook normalizes."""
    out = set()
    for ns in namespaces:
        meta = _meta(ns)
        labels = meta.get("labels") or {}
        name = meta.get("name")
        if labels.get(NORMALIZE_LABEL) == OPT_IN_VALUE and name not in NEVER_NORMALIZED:
            out.add(name)
    return out


def _cpu_millis(usage: Any) -> int:
    try:
        return to_millis((usage or {}).get("cpu", "0"))
    except QuantityError:
        return 0


def build_report(
    catalog: Catalog, inputs: Inputs, resize_accounting: str = DEFAULT_RESIZE_RULE
) -> dict[str, Any]:
    """The report as JSON-ready data. Pure: nothing here reads a file or the network.

    ``resize_accounting``: how a pod mid-resize counts (``serve``'s flag of the same name).
    """
    # Imported here, not at the top: every `machine-catalog` command builds the parser,
    # which registers this module, and `validate` should not pay for numpy and the server.
    from extender.admission.exemptions import left_alone
    from extender.admission.patching import was_normalized
    from extender.admission.placement import PlacementError, pod_constraints
    from extender.admission.pools import family_pools
    from extender.state.cluster import ClusterState, pod_entry

    state = ClusterState(catalog, resize_accounting)
    state.replace(inputs.nodes, inputs.pods)
    view = state.all_nodes()
    pools = family_pools(view, state.pending_millis())

    node_family: dict[str, int] = {}  # uncordoned, matched nodes -> family index
    for position, name in enumerate(view.names):
        if view.family[position] >= 0 and not view.unschedulable[position]:
            node_family[name] = int(view.family[position])

    pending_pods: Counter[str] = Counter()
    stranded: list[dict[str, Any]] = []
    pod_node: dict[tuple[str, str], str] = {}
    for pod in inputs.pods:
        entry = pod_entry(pod, resize_accounting)
        if entry is None:
            continue
        if entry.node is not None:
            meta = _meta(pod)
            pod_node[(meta.get("namespace") or "", meta.get("name") or "")] = entry.node
            continue
        family = catalog.by_name.get(entry.pending_family or "")
        pending_pods[entry.pending_family or ""] += 1
        if family is None or not family.schedulable:
            why = "retired" if family is not None else "not in the catalog"
            stranded.append(_pod_ref(pod, family=entry.pending_family, why=why))

    families = [_family_json(pool, pending_pods[pool.name]) for pool in pools]
    if inputs.node_metrics is not None:
        usage = _usage_by_family(
            ((_meta(m).get("name") or "", m.get("usage")) for m in inputs.node_metrics),
            node_family,
            len(pools),
        )
        for fam, pool, millis in zip(families, pools, usage, strict=True):
            fam["usageScu"] = _scu(physical_to_scu_millis(millis, catalog.factor(pool.name)))
    if inputs.pod_metrics is not None:
        usage = _usage_by_family(_pod_usage(inputs.pod_metrics, pod_node), node_family, len(pools))
        for fam, pool, millis in zip(families, pools, usage, strict=True):
            fam["podUsageScu"] = _scu(physical_to_scu_millis(millis, catalog.factor(pool.name)))

    keys = deciding_keys(catalog)
    unknown, ambiguous = [], []
    for position in sorted(view.unmatched_labels):
        match = view.match(position)
        labels = view.unmatched_labels[position]
        item = {
            "name": view.names[position],
            "reason": match.describe() if match is not None else "",
            "labels": {k: labels[k] for k in sorted(labels) if k in keys},
        }
        (unknown if match is None or match.status == "unknown" else ambiguous).append(item)

    not_normalized: list[dict[str, Any]] | None = None
    if inputs.namespaces is not None:
        opted_in = opted_in_namespaces(inputs.namespaces)
        not_normalized = []
        for pod in inputs.pods:
            meta = _meta(pod)
            if meta.get("namespace") not in opted_in or _finished(pod):
                continue
            if (meta.get("labels") or {}).get(NORMALIZE_LABEL) == "disabled":
                continue
            if was_normalized(meta.get("annotations") or {}):
                continue
            try:  # the webhook denies a pod whose node rules it cannot read: not exempt
                fixed = pod_constraints(pod).fixed_nodes
            except PlacementError:
                fixed = None
            if left_alone(pod, fixed, view) is None:
                node = (pod.get("spec") or {}).get("nodeName")
                not_normalized.append(_pod_ref(pod, node=node))

    def by_pod(item: Mapping[str, Any]) -> tuple[str, str]:
        return item["namespace"], item["name"]

    unknown.sort(key=lambda item: item["name"])
    ambiguous.sort(key=lambda item: item["name"])
    stranded.sort(key=by_pod)
    if not_normalized is not None:
        not_normalized.sort(key=by_pod)
    return {
        "catalog": catalog.version,
        "source": inputs.source,
        "families": families,
        "unknownNodes": [item["name"] for item in unknown],
        "ambiguousNodes": [item["name"] for item in ambiguous],
        "problems": {
            "unknownNodes": unknown,
            "ambiguousNodes": ambiguous,
            # None: the source held no Namespaces, so opted-in namespaces are not known.
            "notNormalizedPods": not_normalized,
            "strandedPods": stranded,
        },
    }


def _scu(millis: int) -> int | float:
    """SCU millis as a JSON number of SCU: ``18880`` -> ``18.88``, ``4000`` -> ``4``."""
    return millis // 1000 if millis % 1000 == 0 else millis / 1000


def _family_json(pool: FamilyPool, pending_pods: int) -> dict[str, Any]:
    return {
        "name": pool.name,
        "schedulable": pool.schedulable,
        "scuPerCore": pool.scu_per_core,
        "nodes": pool.nodes,
        "cordoned": pool.cordoned,
        "capacityScu": _scu(pool.capacity_scu),
        "requestedScu": _scu(pool.requested_scu),
        "freeScu": _scu(pool.free_scu),
        "largestFreeScu": _scu(pool.largest_free_scu),
        "pendingPods": pending_pods,
        "pendingScu": _scu(pool.pending_scu),
    }


def _pod_usage(
    pod_metrics: Iterable[Mapping[str, Any]], pod_node: Mapping[tuple[str, str], str]
) -> Iterator[tuple[str, Any]]:
    """(node, usage) per container of each pod the snapshot has bound to a node."""
    for metrics in pod_metrics:
        meta = _meta(metrics)
        node = pod_node.get((meta.get("namespace") or "", meta.get("name") or ""))
        if node is None:
            continue
        for container in metrics.get("containers") or ():
            if isinstance(container, dict):
                yield node, container.get("usage")


def _usage_by_family(
    usage: Iterable[tuple[str, Any]], node_family: Mapping[str, int], size: int
) -> list[int]:
    """Physical millicores in use per family index, over uncordoned matched nodes."""
    totals = [0] * size
    for node, value in usage:
        index = node_family.get(node)
        if index is not None:
            totals[index] += _cpu_millis(value)
    return totals


# -- rendering ------------------------------------------------------------------------------


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


def render_text(report: Mapping[str, Any], all_families: bool = False) -> list[str]:
    """The table (families with no node and no pending pod only with ``all_families``),
    then the problems."""
    families = [f for f in report["families"] if all_families or f["nodes"] or f["pendingPods"]]
    hidden = len(report["families"]) - len(families)
    usage = any("usageScu" in f for f in families)
    pod_usage = any("podUsageScu" in f for f in families)
    header = ["FAMILY", "SCU/CORE", "NODES", "CORDONED", "CAPACITY", "REQUESTED", "FREE"]
    header += ["LARGEST FREE", "PENDING PODS"]
    header += ["USAGE"] if usage else []
    header += ["POD USAGE"] if pod_usage else []
    rows = [header]
    for f in families:
        name = f["name"] if f["schedulable"] else f"{f['name']} (retired)"
        row = [name, f["scuPerCore"], f["nodes"], f["cordoned"], f["capacityScu"]]
        row += [f["requestedScu"], f["freeScu"], f["largestFreeScu"], f["pendingPods"]]
        row += [f.get("usageScu")] if usage else []
        row += [f.get("podUsageScu")] if pod_usage else []
        rows.append([_cell(c) for c in row])
    lines = [f"catalog {report['catalog']}, {report['source']}; SCU amounts", ""]
    lines += _table(rows)
    if hidden:
        lines.append(f"({hidden} more families without nodes or pending pods: --all lists them)")
    lines.append("")
    problems = report["problems"]
    sections = [
        ("nodes no family matches", problems["unknownNodes"], _node_line),
        ("nodes several families claim (ambiguous)", problems["ambiguousNodes"], _node_line),
        (
            "pods pinned to a retired or unknown family, not bound",
            problems["strandedPods"],
            lambda p: f"{p['namespace']}/{p['name']}: family {p['family']} ({p['why']})",
        ),
    ]
    if problems["notNormalizedPods"] is not None:
        sections.append(
            (
                "pods in opted-in namespaces that are not normalized",
                problems["notNormalizedPods"],
                lambda p: (
                    f"{p['namespace']}/{p['name']}" + (f" on {p['node']}" if p["node"] else "")
                ),
            )
        )
    found = False
    for title, items, line in sections:
        if not items:
            continue
        found = True
        lines.append(f"{title} ({len(items)}):")
        lines += [f"  {line(item)}" for item in items[:SHOWN]]
        if len(items) > SHOWN:
            lines.append(f"  ... and {len(items) - SHOWN} more (-o json lists all)")
    if not found:
        lines.append("no problems found")
    if problems["notNormalizedPods"] is None:
        lines.append(
            "(normalization not checked: the source holds no Namespaces; "
            "snapshot with kubectl get nodes,pods,namespaces -A -o json)"
        )
    return lines


def _node_line(item: Mapping[str, Any]) -> str:
    labels = ", ".join(f"{k}={v}" for k, v in item["labels"].items()) or "no deciding labels"
    return f"{item['name']}: {item['reason']} [{labels}]"


# -- the command ----------------------------------------------------------------------------


def cmd_report(args: argparse.Namespace) -> int:
    from machine_catalog_cli import live

    catalog, _found = live.catalog_for(args)
    if args.snapshot is not None:
        inputs = read_snapshot(args.snapshot)
    elif args.kubeconfig is not None:
        inputs = read_live(
            args.kubeconfig, with_metrics=args.node_metrics is None or args.pod_metrics is None
        )
    else:  # argparse makes one of them required; kept for callers of cmd_report
        raise CliError("give --snapshot FILE or --kubeconfig PATH", EXIT_USAGE)
    if args.node_metrics is not None:
        inputs.node_metrics = read_metrics(args.node_metrics, "NodeMetrics")
    if args.pod_metrics is not None:
        inputs.pod_metrics = read_metrics(args.pod_metrics, "PodMetrics")
    if args.kubeconfig is not None:
        live.warn_other_versions(catalog, inputs.pods)
    report = build_report(catalog, inputs, args.resize_accounting)
    if args.output == "json":
        _json(report)
    else:
        for line in render_text(report, all_families=args.all):
            _out(line)
    return EXIT_OK


def add_parser(sub: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    """``report``'s flags; ``parents`` are main's common, catalog and output options."""
    p = sub.add_parser(
        "report",
        parents=list(parents),
        help="each family's pool: nodes, SCU capacity/requested/free, pending pods, problems",
        description=(
            "The state of each family's pool, counted by the server's own cache rules, and "
            "the nodes and pods that need a look. From a snapshot file or a live cluster."
        ),
        formatter_class=DefaultsFormatter,
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--snapshot",
        metavar="FILE",
        help="kubectl get nodes,pods,namespaces -A -o json (namespaces: the normalization check)",
    )
    source.add_argument(
        "--kubeconfig",
        metavar="PATH",
        help="list a live cluster; its catalog, unless --catalog is given",
    )
    from machine_catalog_cli import live

    live.add_flags(p, kubeconfig=False)
    add_resize_accounting(p)
    p.add_argument(
        "--node-metrics",
        metavar="FILE",
        help="kubectl get --raw /apis/metrics.k8s.io/v1beta1/nodes (live: fetched if served)",
    )
    p.add_argument(
        "--pod-metrics",
        metavar="FILE",
        help="kubectl get --raw /apis/metrics.k8s.io/v1beta1/pods (live: fetched if served)",
    )
    p.add_argument(
        "--all", action="store_true", help="table: also families with no node and no pending pod"
    )
    p.set_defaults(handler=cmd_report)
