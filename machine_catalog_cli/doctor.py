"""``machine-catalog doctor --kubeconfig``: after an install, does it work?

This module is the I/O edge: it reads what the checks need from the cluster (the webhook
configuration, a server-side dry-run pod, the scheduler's configuration, the TLS Secret and
the served certificate, the catalog and the nodes) and prints the findings of
:mod:`machine_catalog.doctoring`, one line each, a fault with its fix. Exit 1 on any fault.

Nothing is written: the probe pod is created with ``dryRun=All``, which runs admission
(our webhook included) and persists nothing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import ssl
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from machine_catalog.annotations import NORMALIZE_LABEL
from machine_catalog.doctoring import (
    NAMESPACE,
    WEBHOOK_CONFIGURATION,
    Finding,
    Probe,
    check_catalog,
    check_certificates,
    check_deployment,
    check_scheduler,
    check_webhook_called,
    check_webhook_configuration,
    expected_extender_urls,
    faults,
)
from machine_catalog.loading import load_catalog, parse_catalog
from machine_catalog_cli.main import EXIT_INVALID, EXIT_OK, CliError, _json, _out

PROBE_POD = "machine-catalog-doctor-probe"
CATALOG_CONFIGMAP = "machine-catalog"
TLS_SECRET = "machine-catalog-tls"


def _read(call: Any, *args: Any, **kwargs: Any) -> dict[str, Any] | None:
    """A GET as raw JSON (no client models), or None on 404."""
    from kubernetes.client.exceptions import ApiException

    try:
        return json.loads(call(*args, _preload_content=False, **kwargs).data)
    except ApiException as exc:
        if exc.status == 404:
            return None
        raise


def _message(exc: Any) -> str:
    try:
        return str(json.loads(exc.body)["message"])
    except (TypeError, ValueError, KeyError):
        return f"{exc.status} {exc.reason}"


def _probe(core: Any, namespace: str | None) -> Probe | None:
    from kubernetes.client.exceptions import ApiException

    if namespace is None:
        listed = _read(core.list_namespace, label_selector=f"{NORMALIZE_LABEL}=enabled") or {}
        names = [
            n["metadata"]["name"]
            for n in listed.get("items", [])
            if n["metadata"]["name"] not in ("kube-system", NAMESPACE)
        ]
        if not names:
            return None
        namespace = sorted(names)[0]
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": PROBE_POD, "labels": {"app.kubernetes.io/name": PROBE_POD}},
        "spec": {
            "containers": [
                {
                    "name": "probe",
                    "image": "registry.k8s.io/pause:3.10",
                    "resources": {"requests": {"cpu": "100m", "memory": "16Mi"}},
                }
            ]
        },
    }
    try:
        resp = core.create_namespaced_pod(namespace, pod, dry_run="All", _preload_content=False)
    except ApiException as exc:
        return Probe(namespace, error=_message(exc))
    return Probe(namespace, pod=json.loads(resp.data))


def _scheduler_configs(core: Any, path: str | None) -> dict[str, str]:
    if path is not None:
        return {path: Path(path).read_text()}
    listed = _read(core.list_namespaced_config_map, NAMESPACE) or {}
    return {
        f"ConfigMap {NAMESPACE}/{cm['metadata']['name']} {key}": value
        for cm in listed.get("items", [])
        for key, value in (cm.get("data") or {}).items()
        if "KubeSchedulerConfiguration" in value
    }


def _served_certificate(webhook: dict[str, Any] | None) -> tuple[bytes | None, str]:
    """The certificate the server presents, when the webhook names a URL we can dial."""
    hook = ((webhook or {}).get("webhooks") or [{}])[0]
    url = (hook.get("clientConfig") or {}).get("url")
    if not url:
        return None, ""
    parts = urlsplit(url)
    address = (parts.hostname or "", parts.port or 443)
    try:
        return ssl.get_server_certificate(address, timeout=5).encode(), f"{parts.netloc}"
    except OSError as exc:
        return None, f"{parts.netloc}: {exc}"


def _tls_secret_name(server: dict[str, Any] | None) -> str:
    """The Secret the server pods mount (the generated-certs overlay hashes its name)."""
    for volume in ((server or {}).get("spec", {}).get("template", {}).get("spec", {})).get(
        "volumes", []
    ):
        if volume.get("name") == "tls" and "secret" in volume:
            return str(volume["secret"]["secretName"])
    return TLS_SECRET


def _b64(data: dict[str, Any] | None, key: str) -> bytes | None:
    import base64

    value = ((data or {}).get("data") or {}).get(key)
    return base64.b64decode(value) if value else None


def _catalog(core: Any, path: str | None) -> tuple[Any, str] | Finding:
    if path is not None:
        return load_catalog(path), path
    cm = _read(core.read_namespaced_config_map, CATALOG_CONFIGMAP, NAMESPACE)
    text = ((cm or {}).get("data") or {}).get("catalog.yaml")
    if text is None:
        return Finding(
            "catalog",
            "fault",
            f"no ConfigMap {NAMESPACE}/{CATALOG_CONFIGMAP} with catalog.yaml",
            "install the chart or manifests, or give --catalog FILE",
        )
    where = f"ConfigMap {NAMESPACE}/{CATALOG_CONFIGMAP}"
    return parse_catalog(text, where), where


def diagnose(args: argparse.Namespace) -> list[Finding]:
    from kubernetes import client

    from extender.feeds.watching import ApiConfigError, load_api_client

    try:
        api_client = load_api_client(args.kubeconfig)
    except ApiConfigError as exc:
        raise CliError(str(exc)) from exc
    core = client.CoreV1Api(api_client)
    apps = client.AppsV1Api(api_client)
    admission = client.AdmissionregistrationV1Api(api_client)
    findings: list[Finding] = []
    try:
        webhook = _read(admission.read_mutating_webhook_configuration, WEBHOOK_CONFIGURATION)
        findings += check_webhook_configuration(webhook)
        findings += check_webhook_called(_probe(core, args.namespace))

        in_cluster = bool(
            ((webhook or {}).get("webhooks") or [{}])[0].get("clientConfig", {}).get("service")
        )
        server = _read(apps.read_namespaced_deployment, "machine-catalog", NAMESPACE)
        if in_cluster or server is not None:
            findings += check_deployment("machine-catalog", server)
        catalog = _catalog(core, args.catalog)
        strategy = None if isinstance(catalog, Finding) else catalog[0].strategy
        findings += check_scheduler(
            _scheduler_configs(core, args.scheduler_config),
            expected_extender_urls(webhook, NAMESPACE),
            strategy=strategy,
        )
        if args.scheduler_config is None:
            findings += check_deployment(
                "machine-catalog-scheduler",
                _read(apps.read_namespaced_deployment, "machine-catalog-scheduler", NAMESPACE),
            )

        secret = _read(core.read_namespaced_secret, _tls_secret_name(server), NAMESPACE)
        served, served_from = _served_certificate(webhook)
        if served is None and not served_from and secret is not None:
            served = _b64(secret, "tls.crt")
            served_from = f"Secret {NAMESPACE}/{secret['metadata']['name']}"
        findings += check_certificates(
            webhook, served, served_from, _b64(secret, "ca.crt"), dt.datetime.now(dt.UTC)
        )

        if isinstance(catalog, Finding):
            findings.append(catalog)
        else:
            nodes = (_read(core.list_node) or {}).get("items", [])
            findings += check_catalog(catalog[0], catalog[1], nodes)
    finally:
        api_client.close()
    return findings


def cmd_doctor(args: argparse.Namespace) -> int:
    findings = diagnose(args)
    if args.output == "json":
        _json([f.__dict__ for f in findings])
    else:
        for finding in findings:
            _out(finding.line())
        bad = faults(findings)
        _out(f"{len(bad)} fault(s)" if bad else "no faults")
    return EXIT_INVALID if faults(findings) else EXIT_OK


def add_parser(sub: Any, parents: Sequence[argparse.ArgumentParser]) -> None:
    """``doctor``'s flags; ``parents`` are main's common and output options."""
    p = sub.add_parser(
        "doctor",
        parents=list(parents),
        help="check an install: webhook called, scheduler calls the extender, TLS, catalog",
        description=(
            "Checks an install from outside: one line per check, a fault with its fix; "
            "exit 1 on any fault. Writes nothing (the probe pod is a server-side dry run)."
        ),
    )
    p.add_argument("--kubeconfig", metavar="PATH", required=True, help="the cluster")
    p.add_argument(
        "--catalog",
        metavar="FILE",
        help=f"the catalog to compare with the nodes (default: ConfigMap "
        f"{NAMESPACE}/{CATALOG_CONFIGMAP})",
    )
    p.add_argument(
        "--scheduler-config",
        metavar="FILE",
        help="KubeSchedulerConfiguration of a scheduler that runs outside the cluster "
        f"(default: the ConfigMaps in {NAMESPACE})",
    )
    p.add_argument(
        "--namespace",
        metavar="NS",
        help=f"opted-in namespace for the dry-run pod (default: the first labelled "
        f"{NORMALIZE_LABEL}=enabled)",
    )
    p.set_defaults(handler=cmd_doctor)
