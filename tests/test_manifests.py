"""The deployment manifests, rendered exactly as ``kubectl apply -k`` would render them.

What this guards against is a deployment that applies cleanly and then does not work: a
misspelt field the API server silently drops, a Service that selects no pod, a probe or
extender URL pointing at a route the server does not have, a file the server is told to
read that nothing mounts, RBAC that misses a verb, a scheduler config key kube-scheduler
does not know.

Rendering uses ``kubectl kustomize`` (installed here and in CI). If kubectl is missing,
:func:`fallback_render` loads the files listed in each kustomization.yaml itself and applies
the subset of kustomize semantics these manifests use (resources, components, config map
and secret generators with per-generator namespace, labels, strategic-merge/JSON patches).
It does not add kustomize's content-hash name suffixes; everything else matches, which
``test_fallback_renderer_matches_kubectl`` checks whenever kubectl is available.
"""

from __future__ import annotations

import base64
import copy
import inspect
import json
import re
import shutil
import subprocess
from pathlib import Path, PurePosixPath
from types import SimpleNamespace
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from cryptography import x509
from kubernetes import client as k8s

from machine_catalog.certs import write_bundle

REPO = Path(__file__).resolve().parents[1]
MANIFESTS = REPO / "manifests"
BASE = MANIFESTS / "base"
CERT_MANAGER = MANIFESTS / "overlays" / "cert-manager"
GENERATED_CERTS = MANIFESTS / "overlays" / "generated-certs"

NAMESPACE = "machine-catalog-system"
# The server's HTTP routes: the contract in docs/design.md ("HTTP interface").
ROUTE_FILTER = "/scheduler/filter"
ROUTE_PRIORITIZE = "/scheduler/prioritize"
ROUTE_MUTATE = "/webhook/mutate"
ROUTE_HEALTHZ = "/healthz"
ROUTE_READYZ = "/readyz"

SERVER_IMAGE = "ghcr.io/machine-catalog/machine-catalog:0.1.0"
SCHEDULER_IMAGE = "registry.k8s.io/kube-scheduler:v1.34.1"
SCHEDULER_NAME = "machine-catalog"
TLS_SECRET = "machine-catalog-tls"

CLUSTER_SCOPED = {
    "Namespace",
    "ClusterRole",
    "ClusterRoleBinding",
    "MutatingWebhookConfiguration",
    "ValidatingWebhookConfiguration",
    "CustomResourceDefinition",
    "MachineCatalog",
    "PriorityClass",
}


# --------------------------------------------------------------------------- rendering


def render(path: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        return fallback_render(path)
    proc = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, f"kubectl kustomize {path} failed:\n{proc.stderr}"
    return [doc for doc in yaml.safe_load_all(proc.stdout) if doc]


_KUSTOMIZATION_KEYS = {
    "apiVersion",
    "kind",
    "resources",
    "components",
    "configMapGenerator",
    "secretGenerator",
    "labels",
    "patches",
}


def fallback_render(root: Path, accumulated: list[dict] | None = None) -> list[dict]:
    """Render a kustomization without kubectl (see the module docstring for the subset).

    Order follows kustomize: resources, then components, then generators, then
    transformers (patches, labels). A key outside the supported subset is an error, so the
    fallback can never silently diverge from what kubectl would do.
    """
    spec = yaml.safe_load((root / "kustomization.yaml").read_text())
    unsupported = set(spec) - _KUSTOMIZATION_KEYS
    assert not unsupported, f"{root}: fallback renderer does not support {sorted(unsupported)}"
    objects = list(accumulated or []) if spec.get("kind") == "Component" else []
    for resource in spec.get("resources", []):
        path = root / resource
        if path.is_dir():
            objects += fallback_render(path)
        else:
            objects += [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
    for component in spec.get("components", []):
        objects = fallback_render(root / component, objects)
    for kind, key in (("ConfigMap", "configMapGenerator"), ("Secret", "secretGenerator")):
        for generator in spec.get(key, []):
            objects = _generate(root, kind, generator, objects)
    for patch in spec.get("patches", []):
        objects = _patch(root, patch, objects)
    for entry in spec.get("labels", []):
        assert not entry.get("includeSelectors"), "fallback: includeSelectors unsupported"
        for obj in objects:
            obj.setdefault("metadata", {}).setdefault("labels", {}).update(entry["pairs"])
            template = obj.get("spec", {}).get("template")
            if entry.get("includeTemplates") and isinstance(template, dict):
                template.setdefault("metadata", {}).setdefault("labels", {}).update(entry["pairs"])
    return objects


def _generate(root: Path, kind: str, generator: dict, objects: list[dict]) -> list[dict]:
    known = {"name", "namespace", "files", "literals", "type", "options", "behavior"}
    assert not set(generator) - known, f"fallback: unsupported generator keys in {generator}"
    data: dict[str, str] = {}
    for entry in generator.get("files", []):
        key, _, rel = entry.partition("=") if "=" in entry else (Path(entry).name, "", entry)
        raw = (root / rel).read_bytes()
        data[key] = base64.b64encode(raw).decode() if kind == "Secret" else raw.decode()
    for literal in generator.get("literals", []):
        key, _, value = literal.partition("=")
        data[key] = base64.b64encode(value.encode()).decode() if kind == "Secret" else value
    metadata: dict[str, Any] = {"name": generator["name"]}
    if generator.get("namespace"):
        metadata["namespace"] = generator["namespace"]
    obj: dict[str, Any] = {"apiVersion": "v1", "kind": kind, "metadata": metadata, "data": data}
    if generator.get("type"):
        obj["type"] = generator["type"]
    if generator.get("behavior", "create") == "replace":
        objects = [o for o in objects if not (o["kind"] == kind and _same_name(o, metadata))]
    return [*objects, obj]


def _same_name(obj: dict, metadata: dict) -> bool:
    meta = obj.get("metadata", {})
    return meta.get("name") == metadata.get("name") and meta.get("namespace") == metadata.get(
        "namespace"
    )


def _patch(root: Path, entry: dict, objects: list[dict]) -> list[dict]:
    text = (root / entry["path"]).read_text() if "path" in entry else entry["patch"]
    body = yaml.safe_load(text)
    target = entry.get("target")
    if target is None:
        assert isinstance(body, dict), "fallback: a JSON6902 patch needs a target"
        target = {"kind": body["kind"], "name": body["metadata"]["name"]}
    out = []
    for obj in objects:
        if _matches_target(obj, target):
            if isinstance(body, list):
                import jsonpatch

                obj = jsonpatch.apply_patch(obj, body)
            else:
                obj = _strategic_merge(obj, body)
        out.append(obj)
    return out


def _matches_target(obj: dict, target: dict) -> bool:
    group, _, version = obj["apiVersion"].rpartition("/")
    meta = obj.get("metadata", {})
    checks = {
        "group": group,
        "version": version,
        "kind": obj["kind"],
        "name": meta.get("name"),
        "namespace": meta.get("namespace"),
    }
    return all(checks[key] == value for key, value in target.items() if key in checks)


def _strategic_merge(base: Any, patch: Any) -> Any:
    """Dicts merge recursively; lists of named objects merge by ``name``; others replace."""
    if isinstance(base, dict) and isinstance(patch, dict):
        merged = copy.deepcopy(base)
        for key, value in patch.items():
            merged[key] = _strategic_merge(base[key], value) if key in base else value
        return merged
    if (
        isinstance(base, list)
        and isinstance(patch, list)
        and all(isinstance(item, dict) and "name" in item for item in [*base, *patch])
    ):
        merged_list = copy.deepcopy(base)
        for item in patch:
            for index, existing in enumerate(merged_list):
                if existing["name"] == item["name"]:
                    merged_list[index] = _strategic_merge(existing, item)
                    break
            else:
                merged_list.append(item)
        return merged_list
    return copy.deepcopy(patch)


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def base() -> list[dict]:
    return render(MANIFESTS)


@pytest.fixture(scope="module")
def cert_manager() -> list[dict]:
    return render(CERT_MANAGER)


#: The scheduler components whose configuration calls the extender.
EXTENDER_COMPONENTS = ("scheduler-extender", "scheduler-load-aware")


def extender_hosts() -> set[str]:
    """The host names the scheduler components' configurations dial the extender at."""
    hosts = set()
    for name in EXTENDER_COMPONENTS:
        config = MANIFESTS / "components" / name / "scheduler-config.yaml"
        (extender,) = yaml.safe_load(config.read_text())["extenders"]
        hosts.add(urlsplit(extender["urlPrefix"]).hostname)
    return hosts


def _with_component(tmp_path_factory: pytest.TempPathFactory, component: str) -> list[dict]:
    """The base with one scheduler component, as the operations guide tells an operator to
    add it (an overlay listing the component)."""
    tree = tmp_path_factory.mktemp("manifests") / "manifests"
    shutil.copytree(MANIFESTS, tree, ignore=shutil.ignore_patterns("certs"))
    overlay = tree / "overlays" / "with-component"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "apiVersion": "kustomize.config.k8s.io/v1beta1",
                "kind": "Kustomization",
                "resources": ["../../base"],
                "components": [f"../../components/{component}"],
            }
        )
    )
    return render(overlay)


@pytest.fixture(scope="module", params=EXTENDER_COMPONENTS)
def with_extender(request, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """The base with a component whose kube-scheduler calls the extender."""
    return _with_component(tmp_path_factory, request.param)


@pytest.fixture(scope="module", params=("base", "scheduler-binpack", *EXTENDER_COMPONENTS))
def every_configuration(request, tmp_path_factory: pytest.TempPathFactory) -> list[dict]:
    """The base, and the base with each scheduler component."""
    if request.param == "base":
        return render(MANIFESTS)
    return _with_component(tmp_path_factory, request.param)


@pytest.fixture(scope="module")
def generated_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A copy of manifests/ with certificates written where the docs tell operators to."""
    tree = tmp_path_factory.mktemp("manifests") / "manifests"
    shutil.copytree(MANIFESTS, tree, ignore=shutil.ignore_patterns("certs"))
    write_bundle(
        "machine-catalog-webhook",
        NAMESPACE,
        tree / "overlays" / "generated-certs" / "certs",
        extra_services=["machine-catalog-extender"],
    )
    return tree


@pytest.fixture(scope="module")
def generated(generated_tree: Path) -> list[dict]:
    return render(generated_tree / "overlays" / "generated-certs")


def find(objects: list[dict], kind: str, name: str, namespace: str | None = None) -> dict:
    hits = [
        o
        for o in objects
        if o["kind"] == kind
        and _unhashed(o["metadata"]["name"]) == name
        and (namespace is None or o["metadata"].get("namespace") == namespace)
    ]
    assert len(hits) == 1, f"expected exactly one {kind} {name}, found {len(hits)}"
    return hits[0]


def _unhashed(name: str) -> str:
    """Strip kustomize's content-hash suffix (``-`` + 10 characters) from generated names."""
    for generated in ("machine-catalog-scheduler-config", TLS_SECRET):
        if re.fullmatch(re.escape(generated) + r"(-[a-z0-9]{10})?", name):
            return generated
    return name


def server(objects: list[dict]) -> dict:
    return find(objects, "Deployment", "machine-catalog", NAMESPACE)


def scheduler(objects: list[dict]) -> dict:
    return find(objects, "Deployment", "machine-catalog-scheduler", NAMESPACE)


def container(deployment: dict) -> dict:
    containers = deployment["spec"]["template"]["spec"]["containers"]
    assert len(containers) == 1
    return containers[0]


def flags(args: list[str]) -> dict[str, str | None]:
    """``--name value`` and ``--name=value`` pairs; boolean flags map to None."""
    out: dict[str, str | None] = {}
    index = 0
    while index < len(args):
        arg = args[index]
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            if eq:
                out[name] = value
            elif index + 1 < len(args) and not args[index + 1].startswith("--"):
                out[name] = args[index + 1]
                index += 1
            else:
                out[name] = None
        index += 1
    return out


def scheduler_config(objects: list[dict]) -> dict:
    configmap = find(objects, "ConfigMap", "machine-catalog-scheduler-config", NAMESPACE)
    return yaml.safe_load(configmap["data"]["config.yaml"])


# --------------------------------------------------------------------------- schema


def _deserialize(obj: dict, model: str) -> Any:
    """Deserialize through the official client's models (public API, old or new client)."""
    api = k8s.ApiClient()
    text = json.dumps(obj)
    if "response_text" in inspect.signature(api.deserialize).parameters:
        return api.deserialize(text, model, "application/json")
    return api.deserialize(SimpleNamespace(data=text), model)


def _model_name(obj: dict) -> str | None:
    version = obj["apiVersion"].rpartition("/")[2]
    name = version[:1].upper() + version[1:] + obj["kind"]
    return name if hasattr(k8s, name) else None


def _differences(given: Any, kept: Any, path: str = "") -> list[str]:
    """Paths where the model's re-serialization differs from the input (dropped keys)."""
    if isinstance(given, dict):
        if not isinstance(kept, dict):
            return [f"{path or '/'}: became {kept!r}"]
        problems = []
        for key, value in given.items():
            if key not in kept:
                problems.append(f"{path}/{key}: unknown field (dropped by the model)")
            else:
                problems += _differences(value, kept[key], f"{path}/{key}")
        return problems
    if isinstance(given, list):
        if not isinstance(kept, list) or len(kept) != len(given):
            return [f"{path}: list changed"]
        return [
            p
            for i, (a, b) in enumerate(zip(given, kept, strict=True))
            for p in _differences(a, b, f"{path}/{i}")
        ]
    return [] if given == kept else [f"{path}: {given!r} became {kept!r}"]


@pytest.mark.parametrize("overlay", ["base", "cert_manager", "generated"])
def test_every_builtin_object_is_valid_for_the_official_models(overlay, request):
    objects = request.getfixturevalue(overlay)
    checked = 0
    for obj in objects:
        model = _model_name(obj)
        if model is None:
            continue
        label = f"{obj['kind']}/{obj['metadata']['name']}"
        try:
            parsed = _deserialize(obj, model)
        except Exception as exc:  # the models raise several types on bad values
            pytest.fail(f"{label}: {exc}")
        kept = k8s.ApiClient().sanitize_for_serialization(parsed)
        problems = _differences(obj, kept)
        assert not problems, f"{label}:\n  " + "\n  ".join(problems)
        checked += 1
    assert checked >= 18


def test_model_check_catches_a_misspelt_field(base):
    deployment = copy.deepcopy(server(base))
    security = deployment["spec"]["template"]["spec"]["containers"][0]["securityContext"]
    security["readOnlyRootFileSystem"] = security.pop("readOnlyRootFilesystem")
    kept = k8s.ApiClient().sanitize_for_serialization(_deserialize(deployment, "V1Deployment"))
    assert _differences(deployment, kept) == [
        "/spec/template/spec/containers/0/securityContext/readOnlyRootFileSystem: "
        "unknown field (dropped by the model)"
    ]


def test_only_expected_kinds_have_no_client_model(base, cert_manager):
    without_model = {o["kind"] for o in base + cert_manager if _model_name(o) is None}
    assert without_model == {"Issuer", "Certificate", "MachineCatalog"}


def test_the_shipped_machinecatalog_is_the_one_the_server_serves_and_is_valid(base):
    from machine_catalog.resource import catalog_from_resource

    (obj,) = [o for o in base if o["kind"] == "MachineCatalog"]
    catalog = catalog_from_resource(obj)  # raises CatalogInvalid with every error
    args = flags(container(server(base))["args"])
    assert args["--catalog-resource"] == obj["metadata"]["name"] == catalog.name
    # The ConfigMap made from the same file carries the same catalog (the way back).
    configmap = find(base, "ConfigMap", "machine-catalog", NAMESPACE)
    from machine_catalog.loading import parse_catalog

    assert parse_catalog(configmap["data"]["catalog.yaml"]).hash == catalog.hash


# cert-manager v1 fields used or plausibly used (cert-manager.io/v1 Certificate/Issuer).
_CERT_MANAGER_FIELDS: dict[str, Any] = {
    "Certificate": {
        "secretName": None,
        "secretTemplate": None,
        "commonName": None,
        "dnsNames": None,
        "ipAddresses": None,
        "uris": None,
        "emailAddresses": None,
        "duration": None,
        "renewBefore": None,
        "renewBeforePercentage": None,
        "usages": None,
        "isCA": None,
        "subject": None,
        "revisionHistoryLimit": None,
        "privateKey": {"algorithm": None, "size": None, "encoding": None, "rotationPolicy": None},
        "issuerRef": {"name": None, "kind": None, "group": None},
    },
    "Issuer": {
        "selfSigned": {"crlDistributionPoints": None},
        "ca": {
            "secretName": None,
            "crlDistributionPoints": None,
            "ocspServers": None,
            "issuingCertificateURLs": None,
        },
    },
}


def _unknown_keys(value: Any, allowed: Any, path: str) -> list[str]:
    """Keys of ``value`` missing from the ``allowed`` tree (None: any value is fine)."""
    if allowed is None:
        return []
    if isinstance(allowed, list):
        if not isinstance(value, list):
            return [f"{path}: expected a list"]
        return [
            problem
            for index, item in enumerate(value)
            for problem in _unknown_keys(item, allowed[0], f"{path}/{index}")
        ]
    if not isinstance(value, dict):
        return [f"{path}: expected an object"]
    problems = []
    for key, sub in value.items():
        if key in allowed:
            problems += _unknown_keys(sub, allowed[key], f"{path}/{key}")
        else:
            problems.append(f"{path}/{key}")
    return problems


def test_cert_manager_objects_use_known_fields(cert_manager):
    for obj in cert_manager:
        if obj["apiVersion"] != "cert-manager.io/v1":
            continue
        assert obj["metadata"]["namespace"] == NAMESPACE
        problems = _unknown_keys(obj["spec"], _CERT_MANAGER_FIELDS[obj["kind"]], "spec")
        assert not problems, f"{obj['kind']}/{obj['metadata']['name']}: unknown {problems}"


# kubescheduler.config.k8s.io/v1 (wire-protocol.md §3; component-base for the two shared
# structs). None = a leaf (or free-form) value; [dict] = a list of such objects.
_PLUGIN_SET = {"enabled": [{"name": None, "weight": None}], "disabled": [{"name": None}]}
_KSC_FIELDS: dict[str, Any] = {
    "apiVersion": None,
    "kind": None,
    "parallelism": None,
    "percentageOfNodesToScore": None,
    "podInitialBackoffSeconds": None,
    "podMaxBackoffSeconds": None,
    "delayCacheUntilActive": None,
    "leaderElection": {
        "leaderElect": None,
        "leaseDuration": None,
        "renewDeadline": None,
        "retryPeriod": None,
        "resourceLock": None,
        "resourceName": None,
        "resourceNamespace": None,
    },
    "clientConnection": {
        "kubeconfig": None,
        "acceptContentTypes": None,
        "contentType": None,
        "qps": None,
        "burst": None,
    },
    "profiles": [
        {
            "schedulerName": None,
            "percentageOfNodesToScore": None,
            "plugins": {
                point: _PLUGIN_SET
                for point in (
                    "preEnqueue",
                    "queueSort",
                    "preFilter",
                    "filter",
                    "postFilter",
                    "preScore",
                    "score",
                    "reserve",
                    "permit",
                    "preBind",
                    "bind",
                    "postBind",
                    "multiPoint",
                )
            },
            "pluginConfig": [{"name": None, "args": None}],
        }
    ],
    "extenders": [
        {
            "urlPrefix": None,
            "filterVerb": None,
            "preemptVerb": None,
            "prioritizeVerb": None,
            "weight": None,
            "bindVerb": None,
            "enableHTTPS": None,
            "tlsConfig": {
                "insecure": None,
                "serverName": None,
                "certFile": None,
                "keyFile": None,
                "caFile": None,
                "certData": None,
                "keyData": None,
                "caData": None,
            },
            "httpTimeout": None,
            "nodeCacheCapable": None,
            "managedResources": [{"name": None, "ignoredByScheduler": None}],
            "ignorable": None,
        }
    ],
}


def test_scheduler_configuration_keys_are_all_known(every_configuration):
    config = scheduler_config(every_configuration)
    assert config["apiVersion"] == "kubescheduler.config.k8s.io/v1"
    assert config["kind"] == "KubeSchedulerConfiguration"
    problems = _unknown_keys(config, _KSC_FIELDS, "")
    assert not problems, f"unknown KubeSchedulerConfiguration fields: {problems}"


def test_allow_list_catches_a_typo():
    config = {"extenders": [{"urlPrefix": "x", "tlsConfig": {"caFlie": "/x"}}], "profile": []}
    assert _unknown_keys(config, _KSC_FIELDS, "") == ["/extenders/0/tlsConfig/caFlie", "/profile"]


# --------------------------------------------------------------------------- scheduler config


def test_scheduler_configuration_values(every_configuration):
    config = scheduler_config(every_configuration)
    election = config["leaderElection"]
    assert election["leaderElect"] is True
    assert election["resourceName"] == "machine-catalog-scheduler"  # not kube-scheduler's lease
    assert election["resourceNamespace"] == NAMESPACE
    assert [p["schedulerName"] for p in config["profiles"]] == [SCHEDULER_NAME]


def test_the_base_scheduler_answers_the_base_catalogs_strategy_without_the_extender(base):
    """The base catalog's strategy is balanced; the base's kube-scheduler ranks by
    NodeResourcesFit LeastAllocated on cpu and calls no extender (no round trip per pod)."""
    catalog = yaml.safe_load((MANIFESTS / "base" / "catalog.yaml").read_text())
    assert catalog["spec"]["scoring"]["strategy"] == "balanced"
    config = scheduler_config(base)
    assert not config.get("extenders")
    (profile,) = config["profiles"]
    assert profile["plugins"]["score"]["enabled"] == [{"name": "NodeResourcesFit", "weight": 5}]
    (fit,) = profile["pluginConfig"]
    assert fit["args"]["scoringStrategy"]["type"] == "LeastAllocated"


def test_extender_configuration_values(with_extender):
    (extender,) = scheduler_config(with_extender)["extenders"]
    assert extender["filterVerb"] == "filter"
    assert extender["prioritizeVerb"] == "prioritize"
    assert isinstance(extender["weight"], int) and extender["weight"] > 0
    assert extender["enableHTTPS"] is True
    assert not extender.get("tlsConfig", {}).get("insecure", False)
    assert extender["tlsConfig"]["caFile"]  # without a CA, enableHTTPS skips verification
    assert extender["nodeCacheCapable"] is True
    assert extender["ignorable"] is False
    timeout = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s)", extender["httpTimeout"])
    assert timeout, extender["httpTimeout"]
    seconds = float(timeout[1]) / (1000 if timeout[2] == "ms" else 1)
    assert 0 < seconds < 5  # below kube-scheduler's 5s default: a hung extender stalls the queue
    assert not extender.get("managedResources")  # every pod of this scheduler goes through it
    assert not extender.get("bindVerb") and not extender.get("preemptVerb")


def _url_path(prefix: str, verb: str) -> str:
    """kube-scheduler's URL: ``strings.TrimRight(urlPrefix, "/") + "/" + verb``."""
    return urlsplit(prefix.rstrip("/") + "/" + verb).path


def test_extender_urls_are_real_routes_on_the_extender_service(with_extender):
    base = with_extender
    (extender,) = scheduler_config(base)["extenders"]
    url = urlsplit(extender["urlPrefix"])
    assert url.scheme == "https"
    assert _url_path(extender["urlPrefix"], extender["filterVerb"]) == ROUTE_FILTER
    assert _url_path(extender["urlPrefix"], extender["prioritizeVerb"]) == ROUTE_PRIORITIZE
    service_name, namespace, *rest = url.hostname.split(".")
    assert rest in (["svc"], ["svc", "cluster", "local"])
    service = find(base, "Service", service_name, namespace)
    assert (url.port or 443) in [p["port"] for p in service["spec"]["ports"]]
    _assert_service_reaches_server(base, service, url.port or 443)


def _assert_service_reaches_server(objects: list[dict], service: dict, port: int) -> None:
    deployment = server(objects)
    pod_labels = deployment["spec"]["template"]["metadata"]["labels"]
    selector = service["spec"]["selector"]
    assert selector and selector.items() <= pod_labels.items(), "Service selects no server pod"
    (service_port,) = [p for p in service["spec"]["ports"] if p["port"] == port]
    target = service_port.get("targetPort", port)
    ports = container(deployment)["ports"]
    (container_port,) = [p for p in ports if target in (p["containerPort"], p.get("name"))]
    bind = flags(container(deployment)["args"])["--bind"]
    assert int(bind.rpartition(":")[2]) == container_port["containerPort"] == 8443
    assert service_port.get("protocol", "TCP") == container_port.get("protocol", "TCP")


def test_scheduler_ca_file_is_mounted_from_the_tls_secret(with_extender):
    (extender,) = scheduler_config(with_extender)["extenders"]
    volume, key = _volume_source_for(scheduler(with_extender), extender["tlsConfig"]["caFile"])
    assert volume["secret"]["secretName"] == TLS_SECRET
    assert key == "ca.crt"
    # The scheduler gets the CA only, never the server's private key.
    assert [item["key"] for item in volume["secret"]["items"]] == ["ca.crt"]


def test_scheduler_deployment(base):
    deployment = scheduler(base)
    pod = deployment["spec"]["template"]["spec"]
    c = container(deployment)
    assert c["image"] == SCHEDULER_IMAGE
    config_flag = flags(c["command"][1:] + c.get("args", []))["--config"]
    assert c["command"][0] == "kube-scheduler"
    volume, key = _volume_source_for(deployment, config_flag)
    configmap = find(base, "ConfigMap", _unhashed(volume["configMap"]["name"]), NAMESPACE)
    assert configmap["metadata"]["name"] == volume["configMap"]["name"]
    assert key in configmap["data"]
    assert pod.get("schedulerName", "default-scheduler") == "default-scheduler"
    assert pod["serviceAccountName"] == "machine-catalog-scheduler"
    assert deployment["spec"]["replicas"] >= 2
    _assert_hardened(deployment)


def test_scheduler_rbac(base):
    subject = {
        "kind": "ServiceAccount",
        "name": "machine-catalog-scheduler",
        "namespace": NAMESPACE,
    }
    cluster_roles = {
        b["roleRef"]["name"]
        for b in base
        if b["kind"] == "ClusterRoleBinding" and subject in b["subjects"]
    }
    assert cluster_roles == {"system:kube-scheduler", "system:volume-scheduler"}
    reader = [
        b
        for b in base
        if b["kind"] == "RoleBinding"
        and b["metadata"]["namespace"] == "kube-system"
        and subject in b["subjects"]
    ]
    assert [b["roleRef"]["name"] for b in reader] == ["extension-apiserver-authentication-reader"]
    lease = scheduler_config(base)["leaderElection"]
    binding = [
        b
        for b in base
        if b["kind"] == "RoleBinding"
        and b["metadata"]["namespace"] == lease["resourceNamespace"]
        and subject in b["subjects"]
    ]
    assert len(binding) == 1
    role = find(base, "Role", binding[0]["roleRef"]["name"], lease["resourceNamespace"])
    granted = set()
    for rule in role["rules"]:
        if "coordination.k8s.io" in rule["apiGroups"] and "leases" in rule["resources"]:
            names = rule.get("resourceNames") or [lease["resourceName"]]
            if lease["resourceName"] in names:
                granted |= set(rule["verbs"])
    assert {"get", "update", "create"} <= granted


# --------------------------------------------------------------------------- server


def _volume_source_for(deployment: dict, path: str) -> tuple[dict, str]:
    """The volume that provides ``path`` in the pod, and the key inside it.

    Fails if nothing mounts the file's directory, if the mount uses subPath, or if the
    volume does not project that file.
    """
    pod = deployment["spec"]["template"]["spec"]
    mounts = [m for c in pod["containers"] for m in c.get("volumeMounts", [])]
    target = PurePosixPath(path)
    best = None
    for mount in mounts:
        root = PurePosixPath(mount["mountPath"])
        if target.is_relative_to(root) and (
            best is None or len(root.parts) > len(PurePosixPath(best["mountPath"]).parts)
        ):
            best = mount
    assert best is not None, f"{path} is not under any volumeMount"
    assert not best.get("subPath") and not best.get("subPathExpr"), f"{path}: subPath mount"
    volume = next(v for v in pod["volumes"] if v["name"] == best["name"])
    relative = str(target.relative_to(best["mountPath"]))
    source = volume.get("configMap") or volume.get("secret")
    if source is not None and source.get("items"):
        by_path = {item["path"]: item["key"] for item in source["items"]}
        assert relative in by_path, f"{path}: volume {volume['name']} does not project it"
        return volume, by_path[relative]
    return volume, relative


def deployment_comments() -> list[str]:
    """The comment lines of the Deployment manifest (the way back is written there)."""
    text = (MANIFESTS / "base" / "deployment.yaml").read_text()
    return [line.strip() for line in text.splitlines() if line.strip().startswith("#")]


def test_server_args_name_mounted_files(base):
    deployment = server(base)
    c = container(deployment)
    args = flags(c["args"])
    assert c["command"] == ["machine-catalog"]
    assert c["args"][0] == "serve"
    assert "--in-cluster" in args
    assert (
        args["--scheduler-name"]
        == SCHEDULER_NAME
        == scheduler_config(base)["profiles"][0]["schedulerName"]
    )

    # The server reads the MachineCatalog resource; the ConfigMap of the same file stays
    # mounted for the way back (--catalog at this path), as a directory so the kubelet's
    # ..data symlink swap reaches the server.
    assert "--catalog" not in args and args["--catalog-resource"]
    way_back = "/etc/machine-catalog/catalog.yaml"
    volume, key = _volume_source_for(deployment, way_back)
    configmap = find(base, "ConfigMap", volume["configMap"]["name"], NAMESPACE)
    assert key in configmap["data"]
    assert way_back in " ".join(deployment_comments())

    for flag in ("--certfile", "--keyfile"):
        volume, key = _volume_source_for(deployment, args[flag])
        assert volume["secret"]["secretName"] == TLS_SECRET
        assert key in {"tls.crt", "tls.key"}
    assert _volume_source_for(deployment, args["--certfile"])[1] == "tls.crt"
    assert _volume_source_for(deployment, args["--keyfile"])[1] == "tls.key"

    volume, _ = _volume_source_for(deployment, args["--state-dir"])
    assert "emptyDir" in volume  # the only writable place (readOnlyRootFilesystem)


def test_catalog_configmap_is_a_hot_reloadable_directory_mount(base):
    configmap = find(base, "ConfigMap", "machine-catalog", NAMESPACE)
    # No hash suffix: edits update this ConfigMap in place and the server hot-reloads.
    assert configmap["metadata"]["name"] == "machine-catalog"
    pod = server(base)["spec"]["template"]["spec"]
    volumes = [v for v in pod["volumes"] if v.get("configMap", {}).get("name") == "machine-catalog"]
    assert len(volumes) == 1
    mounts = [m for m in container(server(base))["volumeMounts"] if m["name"] == volumes[0]["name"]]
    assert mounts and all("subPath" not in m and "subPathExpr" not in m for m in mounts)


def test_catalog_is_a_valid_machine_catalog(base):
    text = find(base, "ConfigMap", "machine-catalog", NAMESPACE)["data"]["catalog.yaml"]
    document = yaml.safe_load(text)
    assert document["apiVersion"] == "machine-catalog.io/v1alpha1"
    assert document["kind"] == "MachineCatalog"
    families = {f["name"]: f for f in document["spec"]["families"]}
    assert float(families[document["spec"]["baseline"]]["scuPerCore"]) == 1.0
    try:
        from machine_catalog.loading import parse_catalog
    except ImportError:  # pragma: no cover - the loader is developed alongside
        pytest.skip("machine_catalog.loading.parse_catalog not available")
    parse_catalog(text, "manifests/base/catalog.yaml")  # raises on any validation error


def test_server_deployment_shape(base):
    deployment = server(base)
    spec = deployment["spec"]
    pod = spec["template"]["spec"]
    c = container(deployment)
    assert c["image"] == SERVER_IMAGE
    assert spec["replicas"] == 2
    assert spec["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    assert pod["serviceAccountName"] == "machine-catalog"
    assert pod["terminationGracePeriodSeconds"] > 0
    for probe, path in (("readinessProbe", ROUTE_READYZ), ("livenessProbe", ROUTE_HEALTHZ)):
        get = c[probe]["httpGet"]
        assert get["path"] == path
        assert get["scheme"] == "HTTPS"
        assert get["port"] in ("https", 8443)
    for section in ("requests", "limits"):
        assert {"cpu", "memory"} <= set(c["resources"][section])
    spread = pod.get("topologySpreadConstraints", [])
    anti = pod.get("affinity", {}).get("podAntiAffinity")
    assert anti or any(
        t["topologyKey"] == "kubernetes.io/hostname" and t["whenUnsatisfiable"] == "DoNotSchedule"
        for t in spread
    ), "replicas must be spread across nodes"
    for constraint in spread:
        selector = constraint["labelSelector"]["matchLabels"]
        assert selector.items() <= spec["template"]["metadata"]["labels"].items()
    tls = next(v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == TLS_SECRET)
    assert tls["secret"].get("defaultMode", 0o644) & 0o007 == 0  # key not world-readable
    _assert_hardened(deployment)


def _assert_hardened(deployment: dict) -> None:
    pod = deployment["spec"]["template"]["spec"]
    pod_security = pod.get("securityContext", {})
    assert pod_security.get("runAsNonRoot") is True
    assert pod_security.get("seccompProfile", {}).get("type") == "RuntimeDefault"
    for c in pod["containers"]:
        security = c["securityContext"]
        assert security["allowPrivilegeEscalation"] is False
        assert security["readOnlyRootFilesystem"] is True
        assert security["capabilities"]["drop"] == ["ALL"]
        assert not security["capabilities"].get("add")
        assert security.get("runAsNonRoot", pod_security.get("runAsNonRoot")) is True
        assert c.get("imagePullPolicy") != "Always" or not c["image"].endswith(":latest")
    mounts = {m["mountPath"]: m for c in pod["containers"] for m in c.get("volumeMounts", [])}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]["name"]]
    assert not pod.get("hostNetwork") and not pod.get("hostPID")


def test_services_route_443_to_the_server_port(base):
    for name in ("machine-catalog-extender", "machine-catalog-webhook"):
        service = find(base, "Service", name, NAMESPACE)
        (port,) = service["spec"]["ports"]
        assert port["port"] == 443 and port["name"] == "https"
        _assert_service_reaches_server(base, service, 443)


def test_pod_disruption_budget_keeps_one_server(base):
    pdb = find(base, "PodDisruptionBudget", "machine-catalog", NAMESPACE)
    assert pdb["spec"]["minAvailable"] == 1
    labels = server(base)["spec"]["template"]["metadata"]["labels"]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert server(base)["spec"]["replicas"] > pdb["spec"]["minAvailable"]


def test_server_rbac_reads_nodes_pods_node_metrics_catalogs_and_writes_little(base):
    """Writes: delete pods and create events (the stranded-pod remedy), the catalog's
    status (the leader's report); nothing else."""
    deployment = server(base)
    account = deployment["spec"]["template"]["spec"]["serviceAccountName"]
    find(base, "ServiceAccount", account, NAMESPACE)
    subject = {"kind": "ServiceAccount", "name": account, "namespace": NAMESPACE}
    bindings = [
        b
        for b in base
        if b["kind"] in ("ClusterRoleBinding", "RoleBinding") and subject in b["subjects"]
    ]
    assert sorted(b["kind"] for b in bindings) == ["ClusterRoleBinding", "RoleBinding"]
    (cluster_binding,) = [b for b in bindings if b["kind"] == "ClusterRoleBinding"]
    role = find(base, "ClusterRole", cluster_binding["roleRef"]["name"])
    granted: dict[str, set[str]] = {}
    for rule in role["rules"]:
        (group,) = rule["apiGroups"]
        assert group in ("", "metrics.k8s.io", "machine-catalog.io"), group
        assert not rule.get("resourceNames")
        for resource in rule["resources"]:
            granted.setdefault(f"{group}/{resource}", set()).update(rule["verbs"])
    # delete pods and create events: the stranded-pod remedy (--recreate-stranded-after).
    assert granted == {
        "/nodes": {"get", "list", "watch", "patch"},  # patch: the family label only
        "/pods": {"get", "list", "watch", "delete"},
        "/events": {"create"},
        "metrics.k8s.io/nodes": {"list"},  # loadAware's poll; no watch exists for it
        "machine-catalog.io/machinecatalogs": {"get", "list", "watch"},
        "machine-catalog.io/machinecatalogs/status": {"update", "patch"},
    }
    # The replicas' election: Leases in their own namespace only, never delete.
    (local,) = [b for b in bindings if b["kind"] == "RoleBinding"]
    assert local["metadata"]["namespace"] == NAMESPACE
    lease_role = find(base, "Role", local["roleRef"]["name"], NAMESPACE)
    assert lease_role["rules"] == [
        {
            "apiGroups": ["coordination.k8s.io"],
            "resources": ["leases"],
            "verbs": ["get", "create", "update"],
        }
    ]
    args = flags(container(deployment)["args"])
    # Fast enough to fix a burst split across replicas; an autoscaled fleet raises it.
    assert 10 <= float(args["--recreate-stranded-after"]) <= 60
    assert args["--family-choice"] == "spread"


# --------------------------------------------------------------------------- webhook


def webhooks(objects: list[dict]) -> list[dict]:
    return find(objects, "MutatingWebhookConfiguration", "machine-catalog")["webhooks"]


def webhook(objects: list[dict]) -> dict:
    """The pod-create webhook (the first)."""
    return webhooks(objects)[0]


POD_CREATES = {
    "operations": ["CREATE"],
    "apiGroups": [""],
    "apiVersions": ["v1"],
    "resources": ["pods"],
    "scope": "Namespaced",
}
POD_RESIZES = {
    "operations": ["UPDATE"],
    "apiGroups": [""],
    "apiVersions": ["v1"],
    "resources": ["pods/resize"],
    "scope": "Namespaced",
}


def test_webhook_configuration(base):
    creates, resizes = webhooks(base)
    for hook in (creates, resizes):
        assert hook["admissionReviewVersions"] == ["v1"]
        assert hook["sideEffects"] == "None"
        assert hook["failurePolicy"] == "Fail"
        assert hook["matchPolicy"] == "Equivalent"
        assert 1 <= hook["timeoutSeconds"] <= 10
        assert "caBundle" not in hook["clientConfig"]  # set by the certificate overlays
    assert creates["name"] == "pods.machine-catalog.io"
    assert creates["rules"] == [POD_CREATES]
    # A second look after later webhooks is how sidecars and lost pins are handled.
    assert creates["reinvocationPolicy"] == "IfNeeded"
    assert resizes["name"] == "resize.pods.machine-catalog.io"
    assert resizes["rules"] == [POD_RESIZES]
    # A reinvoked resize would convert our own physical values a second time.
    assert resizes["reinvocationPolicy"] == "Never"
    # Same server, same pods: only the rules and the reinvocation policy differ.
    differs = {"name", "rules", "reinvocationPolicy"}
    assert {k: v for k, v in creates.items() if k not in differs} == {
        k: v for k, v in resizes.items() if k not in differs
    }


def test_webhook_service_path_is_the_mutate_route(base):
    service_ref = webhook(base)["clientConfig"]["service"]
    assert service_ref["path"] == ROUTE_MUTATE
    assert service_ref["name"] == "machine-catalog-webhook"
    service = find(base, "Service", service_ref["name"], service_ref["namespace"])
    _assert_service_reaches_server(base, service, service_ref.get("port", 443))


def test_webhook_selectors(base):
    hook = webhook(base)
    namespaces = hook["namespaceSelector"]
    assert namespaces["matchLabels"] == {"machine-catalog.io/normalize": "enabled"}
    (excluded,) = [
        e for e in namespaces["matchExpressions"] if e["key"] == "kubernetes.io/metadata.name"
    ]
    assert excluded["operator"] == "NotIn"
    assert {"kube-system", NAMESPACE} <= set(excluded["values"])
    assert hook["objectSelector"] == {
        "matchExpressions": [
            {"key": "machine-catalog.io/normalize", "operator": "NotIn", "values": ["disabled"]}
        ]
    }
    # The server's own namespace must not opt in.
    labels = find(base, "Namespace", NAMESPACE)["metadata"].get("labels", {})
    assert labels.get("machine-catalog.io/normalize") != "enabled"


# --------------------------------------------------------------------------- layout


def test_every_namespaced_object_sits_in_the_system_namespace(base):
    for obj in base:
        namespace = obj["metadata"].get("namespace")
        if obj["kind"] in CLUSTER_SCOPED:
            assert namespace is None, obj["metadata"]["name"]
        elif obj["metadata"]["name"].endswith("extension-apiserver-authentication-reader"):
            assert namespace == "kube-system"
        else:
            assert namespace == NAMESPACE, f"{obj['kind']}/{obj['metadata']['name']}"


def test_every_reference_resolves(generated):
    """Every ConfigMap/Secret/ServiceAccount a pod names exists in the rendered output."""
    names = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in generated}
    for deployment in (o for o in generated if o["kind"] == "Deployment"):
        namespace = deployment["metadata"]["namespace"]
        pod = deployment["spec"]["template"]["spec"]
        assert ("ServiceAccount", namespace, pod["serviceAccountName"]) in names
        for volume in pod["volumes"]:
            if "configMap" in volume:
                assert ("ConfigMap", namespace, volume["configMap"]["name"]) in names
            if "secret" in volume:
                assert ("Secret", namespace, volume["secret"]["secretName"]) in names


def test_overlays_keep_every_base_object(base, cert_manager, generated):
    def keys(objects: list[dict]) -> set[tuple[str, str]]:
        return {(o["kind"], _unhashed(o["metadata"]["name"])) for o in objects}

    assert keys(base) <= keys(cert_manager)
    assert keys(base) <= keys(generated)
    assert keys(cert_manager) - keys(base) == {
        ("Issuer", "machine-catalog-selfsigned"),
        ("Certificate", "machine-catalog-ca"),
        ("Issuer", "machine-catalog-ca"),
        ("Certificate", "machine-catalog-serving"),
    }
    assert keys(generated) - keys(base) == {("Secret", TLS_SECRET)}


# --------------------------------------------------------------------------- certificates


def test_cert_manager_overlay_chain(cert_manager):
    objects = {(o["kind"], o["metadata"]["name"]): o for o in cert_manager}
    configuration = find(cert_manager, "MutatingWebhookConfiguration", "machine-catalog")
    inject = configuration["metadata"]["annotations"]["cert-manager.io/inject-ca-from"]
    namespace, _, name = inject.partition("/")
    assert namespace == NAMESPACE
    serving = objects[("Certificate", name)]["spec"]
    assert serving["secretName"] == TLS_SECRET
    for service in ("machine-catalog-webhook", "machine-catalog-extender"):
        assert f"{service}.{NAMESPACE}.svc" in serving["dnsNames"]
        assert f"{service}.{NAMESPACE}.svc.cluster.local" in serving["dnsNames"]
    assert "server auth" in serving["usages"]
    ca_issuer = objects[("Issuer", serving["issuerRef"]["name"])]["spec"]
    ca_cert = next(
        o["spec"]
        for o in cert_manager
        if o["kind"] == "Certificate" and o["spec"]["secretName"] == ca_issuer["ca"]["secretName"]
    )
    assert ca_cert["isCA"] is True
    root = objects[("Issuer", ca_cert["issuerRef"]["name"])]["spec"]
    assert "selfSigned" in root
    # The extender's DNS name in the scheduler components' configurations is covered.
    assert extender_hosts() <= set(serving["dnsNames"])


def test_generated_certs_overlay(generated, generated_tree):
    certs = generated_tree / "overlays" / "generated-certs" / "certs"
    ca_pem = (certs / "ca.crt").read_bytes()
    (secret,) = [o for o in generated if o["kind"] == "Secret"]
    assert _unhashed(secret["metadata"]["name"]) == TLS_SECRET
    assert secret["metadata"]["namespace"] == NAMESPACE
    assert secret["type"] == "kubernetes.io/tls"
    assert set(secret["data"]) == {"tls.crt", "tls.key", "ca.crt"}  # never ca.key
    assert base64.b64decode(secret["data"]["ca.crt"]) == ca_pem
    for hook in webhooks(generated):
        assert base64.b64decode(hook["clientConfig"]["caBundle"]) == ca_pem
        # the patch merged, not replaced
        assert hook["clientConfig"]["service"]["path"] == ROUTE_MUTATE
    # Both Deployments follow the (hash-suffixed) Secret name.
    for deployment in (server(generated), scheduler(generated)):
        names = {
            v["secret"]["secretName"]
            for v in deployment["spec"]["template"]["spec"]["volumes"]
            if "secret" in v
        }
        assert names == {secret["metadata"]["name"]}
    # The serving certificate covers the names both callers dial.
    cert = x509.load_pem_x509_certificate(base64.b64decode(secret["data"]["tls.crt"]))
    sans = set(
        cert.extensions.get_extension_for_class(
            x509.SubjectAlternativeName
        ).value.get_values_for_type(x509.DNSName)
    )
    assert extender_hosts() <= sans
    service = hook["clientConfig"]["service"]
    assert f"{service['name']}.{service['namespace']}.svc" in sans


# --------------------------------------------------------------------------- fallback


def _whole_floats(value: Any) -> Any:
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, dict):
        return {k: _whole_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_whole_floats(v) for v in value]
    return value


def _canonical(objects: list[dict]) -> list[str]:
    objects = copy.deepcopy(objects)
    for obj in objects:
        if obj["kind"] == "Secret":  # kustomize wraps base64 at 70 columns; Go's decoder skips \n
            obj["data"] = {k: "".join(v.split()) for k, v in obj["data"].items()}
    # kustomize writes YAML's 1.0 as 1 (Go's JSON numbers): compare numbers as numbers.
    text = [json.dumps(_whole_floats(o), sort_keys=True) for o in objects]
    for generated in ("machine-catalog-scheduler-config", TLS_SECRET):
        text = [re.sub(re.escape(generated) + r"-[a-z0-9]{10}\b", generated, t) for t in text]
    return sorted(text)


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl to compare against")
def test_fallback_renderer_matches_kubectl(base, cert_manager, generated, generated_tree):
    assert _canonical(fallback_render(MANIFESTS)) == _canonical(base)
    assert _canonical(fallback_render(CERT_MANAGER)) == _canonical(cert_manager)
    overlay = generated_tree / "overlays" / "generated-certs"
    assert _canonical(fallback_render(overlay)) == _canonical(generated)
