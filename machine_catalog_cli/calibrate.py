"""``machine-catalog calibrate``: each family's speed measured from the fleet's own usage.

Input is either files (``--snapshot`` of nodes and pods, ``--pod-metrics`` PodMetricsLists,
repeatable, one per sample) or a live cluster (``--kubeconfig``: ``--samples`` reads of
metrics.k8s.io, ``--interval`` seconds apart, progress on stderr). Both end in the same
pure estimator, :func:`machine_catalog.calibration.calibrate`; its model, the rules that
leave replicas out and the interval are described there and in ``docs/cli.md``.

Output: a table per family (or ``-o json``), the replicas left out and why, and the
workloads whose residuals break the equal-work assumption. ``--write FILE`` writes the
catalog with every *tight* estimate applied (the 95% interval's half-width at most
``--max-halfwidth`` of the estimate, 5% by default), validated before it is written, so
``machine-catalog diff CURRENT FILE`` shows its effect.

A work signal (``--work-metrics FILE``, the saved body of a Prometheus instant query, or
``--prometheus URL --work-query QUERY``, asked live over HTTP) turns each signalled
workload's rows into CPU per unit of work, which stays right when a balancer sends more
work to faster replicas. A bad signal is refused before anything is sampled or written.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from machine_catalog.calibration import (
    Calibration,
    Interval,
    Rules,
    calibrate,
    propose,
    tight,
)
from machine_catalog.catalog import Catalog
from machine_catalog.loading import default_catalog_path, parse_catalog, parse_document
from machine_catalog.validation import CatalogInvalid
from machine_catalog.work_rates import WorkSignalError, parse_vector
from machine_catalog_cli.main import (
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    _err,
    _json,
    _number,
    _out,
    _positive_int,
    _table,
)

if TYPE_CHECKING:
    from machine_catalog_cli.live import Found

DEFAULT_SAMPLES = 5
DEFAULT_INTERVAL = 60.0  # seconds: four metrics-server refreshes (15 s) apart
PROMETHEUS_TIMEOUT = 30.0  # seconds for one instant query


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value < 1:
        raise argparse.ArgumentTypeError(f"must be between 0 and 1 (exclusive), got {text}")
    return value


def _non_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {text}")
    return value


def add_parser(sub: Any, parents: list[argparse.ArgumentParser]) -> None:
    """Register ``calibrate`` on the main parser's subcommands."""
    p = sub.add_parser(
        "calibrate",
        parents=parents,
        help="estimate each family's scuPerCore from observed CPU usage",
        description=(
            "Fit log(usage) = workload effect - log(speed of family) over the workloads "
            "with replicas on two or more families; the baseline's speed is 1.0. With a work "
            "signal, log(usage / work rate) for the workloads it covers."
        ),
    )
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "--snapshot", metavar="FILE", help="v1 List of nodes and pods (kubectl get nodes,pods)"
    )
    source.add_argument(
        "--kubeconfig",
        metavar="PATH",
        help="sample a live cluster; its catalog, unless --catalog is given",
    )
    from machine_catalog_cli import live

    live.add_flags(p, kubeconfig=False)
    p.add_argument(
        "--pod-metrics",
        action="append",
        default=[],
        metavar="FILE",
        help="PodMetricsList (kubectl get --raw /apis/metrics.k8s.io/v1beta1/pods); repeatable",
    )
    p.add_argument("--samples", type=_positive_int, default=DEFAULT_SAMPLES, help="live reads")
    p.add_argument(
        "--interval",
        type=_non_negative,
        default=DEFAULT_INTERVAL,
        metavar="SECONDS",
        help="between live reads",
    )
    defaults = Rules()
    p.add_argument(
        "--warmup",
        type=_non_negative,
        default=defaults.warmup_seconds,
        metavar="SECONDS",
        help="ignore samples from the first SECONDS after a container (re)started",
    )
    p.add_argument(
        "--idle",
        type=_non_negative,
        default=defaults.idle_millis,
        metavar="MILLICORES",
        help="leave out replicas using less on average",
    )
    p.add_argument(
        "--limit-share",
        type=_fraction,
        default=defaults.limit_share,
        metavar="SHARE",
        help="leave out replicas with a sample at or above this share of their CPU limit",
    )
    p.add_argument(
        "--max-halfwidth",
        type=_fraction,
        default=defaults.max_halfwidth,
        metavar="SHARE",
        help="--write applies an estimate whose 95%% interval is at most +-SHARE of it",
    )
    p.add_argument(
        "--write",
        metavar="FILE",
        help="write the proposed catalog here: a MachineCatalog manifest for kubectl apply",
    )
    p.add_argument(
        "--write-patch",
        metavar="FILE",
        help="with --kubeconfig: write a JSON merge patch of the live catalog (kubectl patch "
        "--type merge --patch-file FILE; refused if the catalog changed meanwhile)",
    )
    work = p.add_argument_group(
        "work signal",
        "a per-pod work rate (labels namespace and pod); signalled workloads are fitted as "
        "CPU per unit of work, the others from usage alone",
    )
    signal = work.add_mutually_exclusive_group()
    signal.add_argument(
        "--work-metrics",
        metavar="FILE",
        help="a Prometheus instant-query response (curl URL/api/v1/query --data-urlencode "
        "query=...)",
    )
    signal.add_argument("--prometheus", metavar="URL", help="ask this Prometheus live")
    work.add_argument(
        "--work-query",
        metavar="PROMQL",
        help="with --prometheus, e.g. 'sum by (namespace, pod) (rate(http_requests_total[5m]))'",
    )
    p.add_argument(
        "--show-workloads", type=int, default=10, metavar="N", help="residual rows to print"
    )
    p.set_defaults(handler=cmd_calibrate)


# -- input -------------------------------------------------------------------------------


def _read_catalog(args: argparse.Namespace) -> tuple[Catalog, bytes, str, Found | None]:
    """The catalog, its raw text (``--write`` edits the document, not the model), where it
    came from, and the live object (``--write-patch``): with ``--kubeconfig`` and no
    ``--catalog``, the catalog the cluster serves (:mod:`machine_catalog_cli.live`)."""
    from machine_catalog_cli import live

    if args.catalog is None and args.kubeconfig is not None:
        catalog, found = live.catalog_for(args)
        assert found is not None
        return catalog, found.manifest_text().encode(), found.source, found
    if args.write_patch is not None:
        raise CliError(
            "--write-patch patches the live catalog: give --kubeconfig without --catalog",
            EXIT_USAGE,
        )
    catalog, raw, source = _read_file(args.catalog)
    if args.kubeconfig is not None:
        _err(f"catalog: {source} (--catalog), {catalog.version}")
    return catalog, raw, source, None


def _read_file(path: str | None) -> tuple[Catalog, bytes, str]:
    if path == "-":
        raw, source = sys.stdin.buffer.read(), "<stdin>"
    else:
        source = str(path or default_catalog_path())
        try:
            raw = Path(source).read_bytes()
        except OSError as exc:
            raise CliError(f"{source}: cannot read: {exc.strerror or exc}") from exc
    try:
        return parse_catalog(raw, source), raw, source
    except CatalogInvalid as exc:
        raise CliError("\n".join(f"{source}: {e}" for e in exc.errors)) from exc


def read_pod_metrics(path: str) -> dict[str, Any]:
    """One PodMetricsList file (JSON, or YAML as ``kubectl get podmetrics -o yaml``), read
    and checked by :func:`extender.feeds.kubefiles.read_metrics_list`."""
    from extender.feeds.kubefiles import KubeFileError, read_metrics_list

    try:
        return {"kind": "PodMetricsList", "items": read_metrics_list(path, "PodMetrics")}
    except KubeFileError as exc:
        raise CliError(str(exc)) from exc


def _from_files(args: argparse.Namespace) -> tuple[list[dict], list[dict], list[dict]]:
    from extender.feeds.snapshot import SnapshotError, load_snapshot

    if not args.pod_metrics:
        raise CliError("--snapshot needs at least one --pod-metrics FILE", EXIT_USAGE)
    try:
        nodes, pods = load_snapshot(args.snapshot)
    except SnapshotError as exc:
        raise CliError(str(exc)) from exc
    if not nodes or not pods:
        raise CliError(
            f"{args.snapshot}: needs both Nodes and Pods (got {len(nodes)} nodes, "
            f"{len(pods)} pods); kubectl get nodes,pods -A -o json"
        )
    return nodes, pods, [read_pod_metrics(p) for p in args.pod_metrics]


def _from_cluster(args: argparse.Namespace) -> tuple[list[dict], list[dict], list[dict]]:
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from extender.feeds.usage_sampling import sample
    from extender.feeds.watching import ApiConfigError, load_api_client

    if args.pod_metrics:
        raise CliError("--pod-metrics goes with --snapshot, not --kubeconfig", EXIT_USAGE)
    try:
        api = load_api_client(args.kubeconfig)
    except ApiConfigError as exc:
        raise CliError(str(exc)) from exc
    total = (args.samples - 1) * args.interval
    _err(f"sampling metrics.k8s.io {args.samples} times, {args.interval:g} s apart (~{total:g} s)")
    try:
        with api:
            return sample(api, args.samples, args.interval, progress=_err)
    except ApiException as exc:
        hint = ""
        if exc.status == 404:
            hint = " (is metrics-server, or another metrics.k8s.io provider, installed?)"
        raise CliError(f"API server answered {exc.status} {exc.reason}{hint}") from exc
    except HTTPError as exc:
        raise CliError(f"cannot reach the API server: {exc}") from exc


def _vector(raw: bytes, source: str, not_json: str) -> dict[tuple[str, str], float]:
    """An instant-query response's work rates (``parse_vector``); every fault a CliError."""
    try:
        document = json.loads(raw)
    except ValueError as exc:
        raise CliError(f"{source}: {not_json}: {exc}") from exc
    try:
        return parse_vector(document, source)
    except WorkSignalError as exc:
        raise CliError(str(exc)) from exc


def read_work_metrics(path: str) -> dict[tuple[str, str], float]:
    """``--work-metrics FILE``: a saved instant-query response, checked by ``parse_vector``."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    return _vector(raw, path, "not JSON")


def query_prometheus(url: str, query: str) -> dict[tuple[str, str], float]:
    """One ``GET URL/api/v1/query?query=QUERY``; Prometheus's own error body when it refuses."""
    endpoint = url.rstrip("/") + "/api/v1/query?" + urllib.parse.urlencode({"query": query})
    source = f"Prometheus at {url}"
    try:
        with urllib.request.urlopen(endpoint, timeout=PROMETHEUS_TIMEOUT) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        raw = exc.read()  # 400 and 422 carry {"status": "error", "error": ...}
        if not raw.lstrip().startswith(b"{"):
            raise CliError(f"{source}: HTTP {exc.code} {exc.reason}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise CliError(f"cannot reach {source}: {reason}") from exc
    return _vector(raw, source, "the answer is not JSON")


def _work_signal(args: argparse.Namespace) -> dict[tuple[str, str], float] | None:
    """The work rates the options ask for, or None; every mistake is a CliError."""
    if args.work_query is not None and args.prometheus is None:
        raise CliError("--work-query goes with --prometheus URL", EXIT_USAGE)
    if args.prometheus is not None and not args.work_query:
        raise CliError("--prometheus needs --work-query PROMQL", EXIT_USAGE)
    if args.work_metrics:
        return read_work_metrics(args.work_metrics)
    if args.prometheus:
        return query_prometheus(args.prometheus, args.work_query)
    return None


# -- output ------------------------------------------------------------------------------


def _opt(value: float | None, fmt: str = "{:.3f}") -> str:
    return "-" if value is None else fmt.format(value)


def to_json(result: Calibration, rules: Rules) -> dict[str, Any]:
    return {
        "baseline": result.baseline,
        "families": [
            {
                "name": f.name,
                "scuPerCore": _number(f.scu_per_core),
                "estimate": f.estimate,
                "low": f.low,
                "high": f.high,
                "workloads": f.workloads,
                "pods": f.pods,
                "relativeError": f.relative_error,
                "tight": tight(f, rules),
            }
            for f in result.families
        ],
        "excluded": dict(sorted(result.excluded.items())),
        "singleFamilyWorkloads": result.single_family_workloads,
        "unlinkedWorkloads": result.unlinked_workloads,
        "sigma": result.sigma,
        "degreesOfFreedom": result.dof,
        "workSignalWorkloads": result.work_workloads,
        "evenness": None if result.evenness is None else _interval(result.evenness),
        "workShares": {name: _interval(i) for name, i in result.work_shares.items()},
        "warnings": result.warnings,
        "notes": result.notes,
        "workloads": [
            {
                "workload": w.workload,
                "pods": w.pods,
                "rms": w.rms,
                "byFamily": w.by_family,
                "flagged": w.flagged,
            }
            for w in result.workloads
        ],
    }


def _interval(i: Interval) -> dict[str, float | None]:
    return {"value": i.value, "low": i.low, "high": i.high}


def _render_balance(result: Calibration) -> None:
    """Where the estimates come from (work or usage) and what the balance checks found."""
    if result.work_workloads or result.work_shares:
        usage_only = len(result.workloads) - result.work_workloads
        _out(
            f"fitted from a work signal (CPU per unit of work): {result.work_workloads} "
            f"workloads; from usage alone: {usage_only}"
        )
    if result.work_shares:
        shares = ", ".join(
            f"{name} {i.value:.3f}" + ("" if i.low is None else f" ({i.low:.3f} – {i.high:.3f})")
            for name, i in result.work_shares.items()
        )
        _out(f"work per replica against {result.baseline} (1.0 = round-robin): {shares}")
    for line in result.notes:
        _out(f"note: {line}")
    for line in result.warnings:
        _out(f"warning: {line}")


def _render(result: Calibration, rules: Rules, show: int) -> None:
    rows = [["FAMILY", "SCUPERCORE", "ESTIMATE", "95% INTERVAL", "WORKLOADS", "PODS", "CURRENT"]]
    silent = [f.name for f in result.families if not f.pods and f.name != result.baseline]
    for f in result.families:
        if f.name in silent:
            continue
        if f.name == result.baseline:
            current = "baseline"
        elif f.relative_error is None:
            current = "no evidence"
        else:
            error = f.relative_error
            current = ("±0.0%" if abs(error) < 0.0005 else f"{error:+.1%}") + (
                "" if tight(f, rules) else " (wide)"
            )
        interval = "-" if f.low is None else f"{f.low:.3f} – {f.high:.3f}"
        rows.append(
            [
                f.name,
                str(f.scu_per_core),
                _opt(f.estimate),
                interval,
                str(f.workloads),
                str(f.pods),
                current,
            ]
        )
    for line in _table(rows):
        _out(line)
    if silent:
        _out(f"no usable replica (estimate null): {', '.join(silent)}")
    used = sum(w.pods for w in result.workloads)
    excluded = ", ".join(f"{n} {r}" for r, n in sorted(result.excluded.items())) or "none"
    _out()
    _out(
        f"replicas used: {used} in {len(result.workloads)} workloads on two or more families; "
        f"left out: {excluded}; workloads on one family only: "
        f"{result.single_family_workloads}"
        + (
            f"; not linked to the baseline: {result.unlinked_workloads}"
            if result.unlinked_workloads
            else ""
        )
    )
    if not result.workloads:
        _out(
            "nothing to estimate: no workload has usable replicas on two families, one of "
            "them linked to the baseline (see what was left out above)"
        )
    if result.sigma is not None:
        _out(
            f"residual standard deviation: {result.sigma:.3f} (log usage"
            + (" per unit of work" if result.work_workloads else "")
            + ", ~±"
            f"{result.sigma:.0%} per replica), {result.dof} degrees of freedom"
        )
    _render_balance(result)
    flagged = [w for w in result.workloads if w.flagged]
    if result.workloads and show > 0:
        _out()
        _out(
            f"workloads by residual (flagged: rms above {rules.flag_factor:g} x the pooled "
            f"deviation; {len(flagged)} flagged):"
        )
        wrows = [["WORKLOAD", "PODS", "RMS", "MEAN RESIDUAL PER FAMILY", "FLAG"]]
        for w in result.workloads[:show]:
            per = ", ".join(f"{n} {v:+.2f}" for n, v in w.by_family.items())
            wrows.append([w.workload, str(w.pods), f"{w.rms:.3f}", per, "!" if w.flagged else ""])
        for line in _table(wrows):
            _out(f"  {line}")


def _write(path: str, raw: bytes, source: str, result: Calibration, rules: Rules) -> list[str]:
    data, changed = propose(parse_document(raw, source), result, rules)
    try:
        Catalog.from_data(data, path)  # never write a catalog that `validate` would refuse
    except CatalogInvalid as exc:  # pragma: no cover - propose keeps the document valid
        raise CliError("\n".join(f"{path}: {e}" for e in exc.errors)) from exc
    header = (
        f"# Proposed by machine-catalog calibrate from {source}: estimates applied to "
        f"{', '.join(changed) or 'no family'} (95% interval within +-{rules.max_halfwidth:.0%})."
        "\n"
    ) + "".join(f"# Warning: {line}\n" for line in result.warnings)
    body = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
    try:
        Path(path).write_text(header + body)
    except OSError as exc:
        raise CliError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    return changed


def _write_patch(
    path: str, found: Found, raw: bytes, source: str, result: Calibration, rules: Rules
) -> list[str]:
    from machine_catalog_cli import live

    data, changed = propose(parse_document(raw, source), result, rules)
    Catalog.from_data(data, path)  # never propose what `validate` would refuse
    text = yaml.safe_dump(data, sort_keys=False, allow_unicode=True, width=100)
    patch = live.merge_patch(found, text)
    try:
        Path(path).write_text(json.dumps(patch, indent=2, ensure_ascii=False) + "\n")
    except OSError as exc:
        raise CliError(f"{path}: cannot write: {exc.strerror or exc}") from exc
    return changed


def cmd_calibrate(args: argparse.Namespace) -> int:
    from machine_catalog_cli import live

    if args.kubeconfig is not None and args.pod_metrics:  # before the cluster is read
        raise CliError("--pod-metrics goes with --snapshot, not --kubeconfig", EXIT_USAGE)
    catalog, raw, source, found = _read_catalog(args)
    rules = Rules(
        warmup_seconds=args.warmup,
        idle_millis=args.idle,
        limit_share=args.limit_share,
        max_halfwidth=args.max_halfwidth,
    )
    work = _work_signal(args)  # refused before minutes of sampling, not after
    nodes, pods, metrics = _from_files(args) if args.snapshot else _from_cluster(args)
    if args.kubeconfig is not None:
        live.warn_other_versions(catalog, pods)
    if args.prometheus and not args.snapshot and args.samples > 1 and args.interval > 0:
        work = query_prometheus(args.prometheus, args.work_query)  # the rate at the end
    result = calibrate(catalog, nodes, pods, metrics, rules, work)
    changed = _write(args.write, raw, source, result, rules) if args.write else None
    if args.write_patch:
        assert found is not None
        changed = _write_patch(args.write_patch, found, raw, source, result, rules)
    if args.output == "json":
        for line in result.warnings:
            _err(f"warning: {line}")
        out = to_json(result, rules)
        if args.write:
            out["written"] = {"file": args.write, "applied": changed}
        if args.write_patch:
            out["patch"] = {"file": args.write_patch, "applied": changed}
        _json(out)
        return EXIT_OK
    _render(result, rules, args.show_workloads)
    if args.write:
        _out()
        _out(
            f"wrote {args.write}: "
            + (f"applied {', '.join(changed)}" if changed else "no estimate tight enough to apply")
            + f"; see: machine-catalog diff {source} {args.write}"
        )
    if args.write_patch:
        assert found is not None
        _out()
        _out(
            f"wrote {args.write_patch}: a merge patch of {found.source} "
            + (f"applying {', '.join(changed or [])}" if changed else "changing no factor")
            + f"; apply: {live.patch_command(found, args.write_patch)}"
        )
    return EXIT_OK
