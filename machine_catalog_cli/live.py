"""Which catalog a command uses, and reading the one a cluster serves.

The CLI's one module that reads the catalog through the kubernetes client. With
``--kubeconfig`` and no ``--catalog``, every command uses the catalog the cluster serves,
found in this order:

1. the MachineCatalog named by ``--catalog-resource NAME``;
2. else the only MachineCatalog of the cluster (several: the user must name one);
3. else (none, or the CRD not installed) the server's ConfigMap ``machine-catalog`` in
   ``machine-catalog-system``, key ``catalog.yaml`` (manifests/base/kustomization.yaml).

``--catalog FILE`` overrides it; without ``--kubeconfig`` the packaged catalog is the
default, as before. The command says on stderr which catalog it used (what, and
``name@hash``), so a report can never silently describe a catalog the cluster does not
run; :func:`other_versions` tells when the pods were normalized under another one.
"""

from __future__ import annotations

import argparse
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from machine_catalog.annotations import CATALOG_ANNOTATION
from machine_catalog.catalog import Catalog
from machine_catalog.loading import parse_document
from machine_catalog.resource import (
    GROUP,
    PLURAL,
    VERSION,
    catalog_from_resource,
    document_from_resource,
    manifest_from_resource,
)
from machine_catalog.validation import CatalogInvalid
from machine_catalog_cli.main import EXIT_USAGE, CliError, _err

#: The server's ConfigMap (manifests/base/kustomization.yaml; a test checks they agree).
CONFIGMAP_NAMESPACE = "machine-catalog-system"
CONFIGMAP_NAME = "machine-catalog"
CONFIGMAP_KEY = "catalog.yaml"


@dataclass(frozen=True)
class Found:
    """A catalog as found, before validation: what ``validate`` checks and ``calibrate
    --write`` edits."""

    source: str  # machinecatalog/NAME, configmap NS/NAME, or a path
    data: Any  # the catalog document
    obj: Mapping[str, Any] | None = None  # the API object it came from
    text: str | None = None  # the file or ConfigMap text, comments kept

    @property
    def is_resource(self) -> bool:
        return self.obj is not None and self.obj.get("kind") != "ConfigMap"

    def catalog(self) -> Catalog:
        """Validate; raise :class:`CatalogInvalid` with every error."""
        if self.is_resource:
            assert self.obj is not None
            return catalog_from_resource(self.obj)
        return Catalog.from_data(self.data, self.source)

    def manifest_text(self) -> str:
        """The catalog as a file to edit or ``kubectl apply``: the ConfigMap's or file's
        own text, or the resource without the fields the server adds."""
        if self.text is not None:
            return self.text
        assert self.obj is not None
        manifest = manifest_from_resource(self.obj)
        return yaml.safe_dump(manifest, sort_keys=False, allow_unicode=True, width=100)


def add_flags(parser: argparse.ArgumentParser, kubeconfig: bool = True) -> None:
    """``--catalog-resource`` (and ``--kubeconfig`` when the command has none of its own)."""
    if kubeconfig:
        parser.add_argument(
            "--kubeconfig",
            metavar="PATH",
            help="read the catalog the cluster serves (unless --catalog is given)",
        )
    parser.add_argument(
        "--catalog-resource",
        metavar="NAME",
        help="with --kubeconfig: the MachineCatalog to read (default: the only one, else "
        f"the ConfigMap {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME})",
    )


def _api_error(exc: Any) -> str:
    body = getattr(exc, "body", None)
    try:
        import json

        return json.loads(body).get("message") or str(exc.reason)
    except (TypeError, ValueError, AttributeError):
        return str(getattr(exc, "reason", exc))


def find_live(kubeconfig: str, resource: str | None = None) -> Found:
    """The catalog the cluster serves, by the order in the module docstring."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from extender.feeds.watching import ApiConfigError, load_api_client

    try:
        api = load_api_client(kubeconfig)
    except ApiConfigError as exc:
        raise CliError(str(exc)) from exc
    host = api.configuration.host
    custom = client.CustomObjectsApi(api)
    try:
        with api:
            if resource is not None:
                try:
                    obj = custom.get_cluster_custom_object(GROUP, VERSION, PLURAL, resource)
                except ApiException as exc:
                    raise CliError(
                        f"{host}: machinecatalog/{resource}: {exc.status} {_api_error(exc)}"
                    ) from exc
                return Found(f"machinecatalog/{resource}", document_from_resource(obj), obj)
            why = _only_resource(custom, host)
            if isinstance(why, Found):
                return why
            try:
                cm = client.CoreV1Api(api).read_namespaced_config_map(
                    CONFIGMAP_NAME, CONFIGMAP_NAMESPACE, _request_timeout=60
                )
            except ApiException as exc:
                raise CliError(
                    f"{host}: no catalog found: {why}, and configmap "
                    f"{CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME}: {exc.status} {_api_error(exc)}; "
                    "name one with --catalog-resource NAME, or give --catalog FILE"
                ) from exc
    except (HTTPError, OSError) as exc:
        raise CliError(f"{host}: {type(exc).__name__}: {exc}") from exc
    source = f"configmap {CONFIGMAP_NAMESPACE}/{CONFIGMAP_NAME}"
    text = (cm.data or {}).get(CONFIGMAP_KEY)
    if text is None:
        raise CliError(f"{host}: {source} has no key {CONFIGMAP_KEY}")
    obj = {"kind": "ConfigMap", "metadata": {"resourceVersion": cm.metadata.resource_version}}
    return Found(source, parse_document(text, source), obj, text)


def list_nodes(kubeconfig: str) -> list[dict[str, Any]]:
    """The cluster's Nodes, listed as ``report`` lists them (pages of raw JSON)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException
    from urllib3.exceptions import HTTPError

    from extender.feeds.watching import ApiConfigError, load_api_client
    from machine_catalog_cli.report import _list_all

    try:
        api = load_api_client(kubeconfig)
    except ApiConfigError as exc:
        raise CliError(str(exc)) from exc
    host = api.configuration.host
    try:
        with api:
            nodes = list(_list_all(client.CoreV1Api(api).list_node))
    except ApiException as exc:
        raise CliError(f"{host}: nodes: {exc.status} {_api_error(exc)}") from exc
    except (HTTPError, OSError) as exc:
        raise CliError(f"{host}: {type(exc).__name__}: {exc}") from exc
    if not nodes:
        raise CliError(f"{host}: the cluster has no nodes")
    return nodes


def _only_resource(custom: Any, host: str) -> Found | str:
    """The cluster's only MachineCatalog, or why there is none to take."""
    from kubernetes.client.exceptions import ApiException

    try:
        listing = custom.list_cluster_custom_object(GROUP, VERSION, PLURAL, _request_timeout=60)
    except ApiException as exc:
        if exc.status in (403, 404):  # no CRD, or no right to read it: try the ConfigMap
            return f"machinecatalogs: {exc.status} {_api_error(exc)}"
        raise CliError(f"{host}: machinecatalogs: {exc.status} {_api_error(exc)}") from exc
    items = listing.get("items") or []
    if len(items) > 1:
        names = ", ".join(sorted(i["metadata"]["name"] for i in items))
        raise CliError(
            f"{host}: {len(items)} MachineCatalogs ({names}): name the one the server "
            "serves with --catalog-resource NAME",
            EXIT_USAGE,
        )
    if items:
        obj = items[0]
        obj.setdefault("apiVersion", f"{GROUP}/{VERSION}")
        obj.setdefault("kind", "MachineCatalog")
        name = obj["metadata"]["name"]
        return Found(f"machinecatalog/{name}", document_from_resource(obj), obj)
    return "no MachineCatalog"


def catalog_for(args: argparse.Namespace) -> tuple[Catalog, Found | None]:
    """The validated catalog a command uses: ``--catalog FILE``, else with ``--kubeconfig``
    the one the cluster serves (announced on stderr), else the packaged one. An invalid
    catalog is a :class:`CliError` listing every error."""
    from machine_catalog_cli.main import _catalog_or_fail

    kubeconfig = getattr(args, "kubeconfig", None)
    resource = getattr(args, "catalog_resource", None)
    if resource is not None and kubeconfig is None:
        raise CliError("--catalog-resource reads a cluster: give --kubeconfig PATH", EXIT_USAGE)
    if args.catalog is not None or kubeconfig is None:
        catalog = _catalog_or_fail(args.catalog)
        if kubeconfig is not None:
            _err(f"catalog: {args.catalog} (--catalog), {catalog.version}")
        return catalog, None
    found = find_live(kubeconfig, resource)
    try:
        catalog = found.catalog()
    except CatalogInvalid as exc:
        lines = [f"{found.source}: {e}" for e in exc.errors]
        lines.append(
            f"{found.source} is refused; the server keeps serving its last good catalog"
            + _served_hash(found)
            + " (give --catalog FILE to use another)"
        )
        raise CliError("\n".join(lines)) from exc
    announce(found, catalog)
    return catalog, found


def _served_hash(found: Found) -> str:
    status = (found.obj or {}).get("status") or {}
    return f" (status.catalogHash {status['catalogHash']})" if status.get("catalogHash") else ""


def announce(found: Found, catalog: Catalog) -> None:
    """One stderr line: which catalog the cluster serves, from where, ``name@hash``."""
    _err(f"catalog: {found.source} (the cluster's), {catalog.version}")
    served = ((found.obj or {}).get("status") or {}).get("catalogHash")
    if found.is_resource and served and served != catalog.hash:
        _err(
            f"note: the server reports serving hash {served} (status.catalogHash), not "
            f"{catalog.hash} of this spec: see kubectl describe {found.source}"
        )


def other_versions(catalog: Catalog, pods: Iterable[Mapping[str, Any]]) -> Counter[str]:
    """Catalog versions (``name@hash``) recorded on pods that are not ``catalog``'s, with
    how many pods carry each; finished pods are left out."""
    seen: Counter[str] = Counter()
    for pod in pods:
        if ((pod.get("status") or {}).get("phase")) in ("Succeeded", "Failed"):
            continue
        version = ((pod.get("metadata") or {}).get("annotations") or {}).get(CATALOG_ANNOTATION)
        if version and version != catalog.version:
            seen[version] += 1
    return seen


def warn_other_versions(catalog: Catalog, pods: Iterable[Mapping[str, Any]]) -> None:
    """Say on stderr when pods were normalized under another catalog than the one read."""
    seen = other_versions(catalog, pods)
    if not seen:
        return
    shown = ", ".join(f"{n} under {v}" for v, n in seen.most_common(3))
    more = f" and {len(seen) - 3} more versions" if len(seen) > 3 else ""
    _err(
        f"note: pods carry another catalog than {catalog.version} in {CATALOG_ANNOTATION}: "
        f"{shown}{more}. Their CPU was converted with that version's factors: the catalog "
        "changed since they were created, or the server serves another catalog than this one."
    )


def merge_patch(found: Found, text: str) -> dict[str, Any]:
    """A JSON merge patch that makes the live catalog ``text`` (a whole catalog file).

    ``metadata.resourceVersion`` makes it conditional: the API server refuses it (409
    Conflict) when the catalog changed since it was read, instead of overwriting that
    change. Lists are replaced whole in a merge patch, so ``spec`` is sent entire.
    """
    if found.obj is None:
        raise CliError(
            "--write-patch patches the live catalog: give --kubeconfig without --catalog",
            EXIT_USAGE,
        )
    version = {"resourceVersion": (found.obj.get("metadata") or {}).get("resourceVersion")}
    if not found.is_resource:
        return {"metadata": version, "data": {CONFIGMAP_KEY: text}}
    return {"metadata": version, "spec": yaml.safe_load(text)["spec"]}


def patch_command(found: Found, path: str) -> str:
    """The kubectl command that applies :func:`merge_patch` written to ``path``."""
    if found.is_resource:
        return f"kubectl patch {found.source} --type merge --patch-file {path}"
    return (
        f"kubectl patch configmap {CONFIGMAP_NAME} -n {CONFIGMAP_NAMESPACE} --type merge "
        f"--patch-file {path}"
    )


__all__ = [
    "CONFIGMAP_KEY",
    "CONFIGMAP_NAME",
    "CONFIGMAP_NAMESPACE",
    "Found",
    "add_flags",
    "catalog_for",
    "find_live",
    "list_nodes",
    "merge_patch",
    "other_versions",
    "warn_other_versions",
]
