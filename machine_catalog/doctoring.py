"""The checks of ``machine-catalog doctor``: is an install working, and if not, what to do.

Each check takes facts already read from the cluster (``machine_catalog_cli/doctor.py`` does
the reading) and returns findings; nothing here does I/O, so every fault a user can meet
is a table row in tests/test_doctor.py. A finding is one line: what was seen, and for a
fault the command or edit that fixes it, because the person reading it is mid-install and
wants the next step, not a diagnosis to work out.

What "works" means, one check per link of the chain a pod goes through:

    webhook     the MutatingWebhookConfiguration exists and the API server calls it
                (a server-side dry-run pod in an opted-in namespace comes back normalized)
    scheduler   a KubeSchedulerConfiguration has the machine-catalog profile, and its
                extender points at the server's URL over verified HTTPS
    pairing     the configuration answers the catalog's scoring strategy (the extender's
                prioritize for loadAware; NodeResourcesFit's matching scoring without it)
    tls         the webhook's caBundle signed the certificate the server serves, which
                names the host the callers dial and is not near expiry
    catalog     the catalog claims the nodes: none ambiguous, some matched
"""

from __future__ import annotations

import base64
import datetime as dt
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import urlsplit

import yaml
from cryptography import x509
from cryptography.exceptions import InvalidSignature

from machine_catalog.annotations import FAMILY_ANNOTATION
from machine_catalog.catalog import Catalog

Status = Literal["ok", "warn", "fault"]

PROFILE = "machine-catalog"
WEBHOOK_CONFIGURATION = "machine-catalog"
NAMESPACE = "machine-catalog-system"
EXTENDER_SERVICE = "machine-catalog-extender"
#: A certificate this close to expiry is a fault: renewal has evidently not happened.
EXPIRY_MARGIN = dt.timedelta(days=30)
INSTALL = (
    "helm upgrade --install machine-catalog charts/machine-catalog "
    "(or kubectl apply -k manifests/overlays/...)"
)


@dataclass(frozen=True)
class Finding:
    check: str
    status: Status
    message: str
    fix: str = ""

    def line(self) -> str:
        """The one line printed for this finding."""
        label = {"ok": "ok   ", "warn": "warn ", "fault": "FAULT"}[self.status]
        fix = f" -- fix: {self.fix}" if self.fix else ""
        return f"{label} {self.check}: {self.message}{fix}"


def faults(findings: Iterable[Finding]) -> list[Finding]:
    return [f for f in findings if f.status == "fault"]


# -- webhook ----------------------------------------------------------------------------


def webhook_target(config: Mapping[str, Any]) -> tuple[str, str] | None:
    """(description, host the API server dials) of the configuration's first webhook."""
    hooks = config.get("webhooks") or []
    if not hooks:
        return None
    client = hooks[0].get("clientConfig") or {}
    if client.get("url"):
        return client["url"], urlsplit(client["url"]).hostname or ""
    service = client.get("service") or {}
    host = f"{service.get('name')}.{service.get('namespace')}.svc"
    path = service.get("path", "")
    return f"service {host}:{service.get('port', 443)}{path}", host


def check_webhook_configuration(config: Mapping[str, Any] | None) -> list[Finding]:
    if config is None:
        return [
            Finding(
                "webhook",
                "fault",
                f"MutatingWebhookConfiguration {WEBHOOK_CONFIGURATION} not found: "
                "the API server never calls the server, so pods keep vCPU requests",
                f"re-install it: {INSTALL}",
            )
        ]
    target = webhook_target(config)
    if target is None:
        return [
            Finding(
                "webhook",
                "fault",
                f"MutatingWebhookConfiguration {WEBHOOK_CONFIGURATION} has no webhooks",
                f"re-install it: {INSTALL}",
            )
        ]
    return [Finding("webhook", "ok", f"{WEBHOOK_CONFIGURATION} calls {target[0]}")]


@dataclass(frozen=True)
class Probe:
    """A server-side dry-run pod create: the pod that came back, or the API's error."""

    namespace: str
    pod: Mapping[str, Any] | None = None
    error: str = ""


def check_webhook_called(probe: Probe | None, scheduler_name: str = PROFILE) -> list[Finding]:
    if probe is None:
        return [
            Finding(
                "webhook call",
                "warn",
                "no namespace is labelled machine-catalog.io/normalize=enabled, so nothing "
                "is normalized yet and the call was not tried",
                "kubectl label namespace NAME machine-catalog.io/normalize=enabled",
            )
        ]
    if probe.error:
        if "denied the request" in probe.error and "machine-catalog" in probe.error:
            return [
                Finding(
                    "webhook call",
                    "ok",
                    f"dry-run pod in {probe.namespace} reached the webhook, which denied it: "
                    f"{probe.error}",
                )
            ]
        return [
            Finding(
                "webhook call",
                "fault",
                f"dry-run pod in {probe.namespace} failed: {probe.error}",
                "see the tls and webhook lines; the server pods must be Ready and reachable "
                "from the API server on their port (docs/operations.md, Networking)",
            )
        ]
    pod = probe.pod or {}
    family = (pod.get("metadata", {}).get("annotations") or {}).get(FAMILY_ANNOTATION)
    if family is None:
        return [
            Finding(
                "webhook call",
                "fault",
                f"dry-run pod in {probe.namespace} came back without {FAMILY_ANNOTATION}: "
                "the webhook was not called for it",
                f"check the namespace's labels against the namespaceSelector of "
                f"{WEBHOOK_CONFIGURATION} (kubectl get mutatingwebhookconfiguration "
                f"{WEBHOOK_CONFIGURATION} -o yaml)",
            )
        ]
    scheduler = pod.get("spec", {}).get("schedulerName")
    return [
        Finding(
            "webhook call",
            "ok",
            f"dry-run pod in {probe.namespace} came back normalized "
            f"(family {family}, scheduler {scheduler})",
        )
    ]


# -- scheduler --------------------------------------------------------------------------


def expected_extender_urls(webhook: Mapping[str, Any] | None, namespace: str) -> set[str]:
    """The urlPrefixes that reach the server the webhook calls."""
    urls = {f"https://{EXTENDER_SERVICE}.{namespace}.svc:443/scheduler"}
    urls |= {u.replace(".svc:443", ".svc") for u in urls}
    client = ((webhook or {}).get("webhooks") or [{}])[0].get("clientConfig") or {}
    if client.get("url"):
        parts = urlsplit(client["url"])
        urls.add(f"{parts.scheme}://{parts.netloc}/scheduler")
    return urls


def check_scheduler(
    configs: Mapping[str, str],
    expected: set[str],
    profile: str = PROFILE,
    strategy: str | None = None,
) -> list[Finding]:
    """``configs``: where each candidate KubeSchedulerConfiguration text was read -> text;
    ``strategy``: the catalog's ``spec.scoring.strategy`` (None: not known, not compared).
    A configuration without extenders is what the base (``balanced``) and
    ``manifests/components/scheduler-binpack`` ship; it is right only for the strategy its
    in-tree scoring answers."""
    for where, text in configs.items():
        try:
            config = yaml.safe_load(text) or {}
        except yaml.YAMLError:
            continue
        if not isinstance(config, dict) or config.get("kind") != "KubeSchedulerConfiguration":
            continue
        names = [p.get("schedulerName") for p in config.get("profiles") or []]
        if profile not in names:
            continue
        findings = [Finding("scheduler", "ok", f"{where} has profile {profile}")]
        extenders = config.get("extenders") or []
        ours = [e for e in extenders if str(e.get("urlPrefix", "")).rstrip("/") in expected]
        if not extenders and strategy is not None:
            return findings + check_pairing(where, config, strategy, None)
        if not ours:
            got = ", ".join(str(e.get("urlPrefix")) for e in extenders) or "no extenders"
            findings.append(
                Finding(
                    "extender",
                    "fault",
                    f"{where}: the profile does not call the server ({got}; "
                    f"expected {sorted(expected)[0]})",
                    "set extenders[0].urlPrefix to that URL and restart the scheduler",
                )
            )
            return findings
        ext = ours[0]
        if strategy is not None:
            findings += check_pairing(where, config, strategy, ext)
        problems = []
        if ext.get("filterVerb") != "filter":
            problems.append("filterVerb is not filter")
        if not ext.get("enableHTTPS"):
            problems.append("enableHTTPS is off")
        tls = ext.get("tlsConfig") or {}
        if tls.get("insecure") or not (tls.get("caFile") or tls.get("caData")):
            problems.append("the server's certificate is not verified (no caFile/caData)")
        if problems:
            findings.append(
                Finding(
                    "extender",
                    "fault",
                    f"{where}: {'; '.join(problems)}",
                    "use the extenders block of "
                    "manifests/components/scheduler-extender/scheduler-config.yaml",
                )
            )
        else:
            findings.append(
                Finding("extender", "ok", f"{profile} calls {ext['urlPrefix']} (filter, HTTPS)")
            )
        return findings
    return [
        Finding(
            "scheduler",
            "fault",
            f"no KubeSchedulerConfiguration with profile {profile} in "
            f"{', '.join(configs) or 'the cluster'}: pods the webhook sized wait Pending",
            f"install the scheduler ({INSTALL}) or give --scheduler-config FILE "
            "if it runs outside the cluster",
        )
    ]


#: The in-tree scoring that answers a request-based strategy without the extender.
IN_TREE = {"balanced": "LeastAllocated", "binpack": "MostAllocated"}
#: The shipped configuration for each strategy (the base is the base catalog's, balanced).
CONFIGURATION = {
    "balanced": "manifests/base/scheduler-config.yaml (the base)",
    "binpack": "manifests/components/scheduler-binpack",
    "loadAware": "manifests/components/scheduler-load-aware",
}
REQUEST_SCORERS = ("NodeResourcesFit", "NodeResourcesBalancedAllocation")


def _profile(config: Mapping[str, Any], name: str = PROFILE) -> Mapping[str, Any]:
    return next((p for p in config.get("profiles") or [] if p.get("schedulerName") == name), {})


def score_plugins(profile: Mapping[str, Any]) -> tuple[set[str], dict[str, int]]:
    """The score plugins the profile disables (``*``: all defaults) and the weights it sets."""
    score = ((profile.get("plugins") or {}).get("score")) or {}
    disabled = {str(p.get("name")) for p in score.get("disabled") or []}
    weights = {str(p.get("name")): int(p.get("weight") or 1) for p in score.get("enabled") or []}
    return disabled, weights


def fit_scoring(profile: Mapping[str, Any]) -> tuple[str, set[str]]:
    """NodeResourcesFit's scoring type and resources (kube-scheduler's defaults:
    LeastAllocated on cpu and memory)."""
    for entry in profile.get("pluginConfig") or []:
        if entry.get("name") == "NodeResourcesFit":
            scoring = ((entry.get("args") or {}).get("scoringStrategy")) or {}
            resources = {str(r.get("name")) for r in scoring.get("resources") or []}
            return str(scoring.get("type") or "LeastAllocated"), resources or {"cpu", "memory"}
    return "LeastAllocated", {"cpu", "memory"}


def check_pairing(
    where: str, config: Mapping[str, Any], strategy: str, extender: Mapping[str, Any] | None
) -> list[Finding]:
    """Does the scheduler configuration do what the catalog's strategy asks?

    - ``loadAware`` needs the extender's ``filter`` (hot spots) and ``prioritize`` (usage);
      the in-tree request scorers should be off in the profile, or a usage lead of a point
      or two loses to them (the scheduler-load-aware component);
    - ``balanced`` / ``binpack`` are answered by NodeResourcesFit on cpu with
      LeastAllocated / MostAllocated once pods are pinned to a family. Without the extender
      that scoring must match the strategy; with it, it is right but each pod pays a round
      trip the in-tree plugin answers.
    """
    fix = f"use {CONFIGURATION.get(strategy, CONFIGURATION['loadAware'])}"
    profile = _profile(config)
    disabled, _weights = score_plugins(profile)
    off = "*" in disabled
    if strategy == "loadAware":
        if extender is None or not extender.get("prioritizeVerb"):
            return [
                Finding(
                    "pairing",
                    "fault",
                    f"{where}: the catalog's strategy is loadAware, but kube-scheduler does "
                    "not call the extender's prioritize: pods are ranked by requests, not usage",
                    fix,
                )
            ]
        left = [n for n in REQUEST_SCORERS if not off and n not in disabled]
        if left:
            return [
                Finding(
                    "pairing",
                    "warn",
                    f"{where}: loadAware with the in-tree request scorers on ({', '.join(left)}):"
                    " they outvote a usage lead of a point or two (docs/scoring.md)",
                    fix,
                )
            ]
        return [Finding("pairing", "ok", "loadAware: extender prioritize, in-tree scorers off")]
    wanted = IN_TREE.get(strategy)
    if wanted is None:
        return []
    kind, resources = fit_scoring(profile)
    in_tree = not off and "NodeResourcesFit" not in disabled and "cpu" in resources
    if extender is not None and extender.get("prioritizeVerb"):
        return [
            Finding(
                "pairing",
                "ok",
                f"{strategy}: scored by the extender (one round trip per pod; "
                f"{CONFIGURATION[strategy]} answers it in-tree)",
            )
        ]
    if in_tree and kind == wanted:
        return [Finding("pairing", "ok", f"{strategy}: NodeResourcesFit {kind} on cpu, in-tree")]
    got = f"NodeResourcesFit {kind}" if in_tree else "no NodeResourcesFit scoring on cpu"
    return [
        Finding(
            "pairing",
            "fault",
            f"{where}: the catalog's strategy is {strategy} but the scheduler ranks by {got} "
            f"(want {wanted}) and calls no extender prioritize",
            fix,
        )
    ]


def check_deployment(name: str, deployment: Mapping[str, Any] | None) -> list[Finding]:
    """A Deployment of the install, when the install runs in the cluster."""
    if deployment is None:
        return [
            Finding(
                "pods",
                "fault",
                f"Deployment {NAMESPACE}/{name} not found",
                f"re-install it: {INSTALL}",
            )
        ]
    status = deployment.get("status") or {}
    want = (deployment.get("spec") or {}).get("replicas", 1)
    ready = status.get("readyReplicas", 0)
    if not ready:
        return [
            Finding(
                "pods",
                "fault",
                f"Deployment {NAMESPACE}/{name}: 0 of {want} replicas ready",
                f"kubectl -n {NAMESPACE} describe pods -l app.kubernetes.io/name=machine-catalog",
            )
        ]
    status_word: Status = "ok" if ready >= want else "warn"
    return [Finding("pods", status_word, f"Deployment {name}: {ready} of {want} replicas ready")]


# -- certificates -----------------------------------------------------------------------


def _certs(pem: bytes) -> list[x509.Certificate]:
    try:
        return x509.load_pem_x509_certificates(pem)
    except ValueError:
        return []


def _subject(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string() or "(empty subject)"


def _names(cert: x509.Certificate) -> list[str]:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n) for n in san.get_values_for_type(x509.DNSName)] + [
        str(ip) for ip in san.get_values_for_type(x509.IPAddress)
    ]


def _signed_by(cert: x509.Certificate, cas: Sequence[x509.Certificate]) -> bool:
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
            return True
        except (ValueError, TypeError, InvalidSignature):
            continue
    return False


def check_certificates(
    webhook: Mapping[str, Any] | None,
    served_pem: bytes | None,
    served_from: str,
    secret_ca_pem: bytes | None,
    now: dt.datetime,
) -> list[Finding]:
    """The caBundle against the certificate the server serves (read at ``served_from``)."""
    if webhook is None or not webhook.get("webhooks"):
        return []
    hook = webhook["webhooks"][0]
    annotations = (webhook.get("metadata") or {}).get("annotations") or {}
    bundle_b64 = (hook.get("clientConfig") or {}).get("caBundle") or ""
    if not bundle_b64:
        fix = (
            "cert-manager's cainjector has not injected it: check cert-manager is running "
            "and the Certificate machine-catalog-serving is Ready"
            if "cert-manager.io/inject-ca-from" in annotations
            else f"set it to the CA of the Secret {NAMESPACE}/machine-catalog-tls: {INSTALL}"
        )
        return [Finding("tls", "fault", f"{WEBHOOK_CONFIGURATION} has no caBundle", fix)]
    cas = _certs(base64.b64decode(bundle_b64))
    if not cas:
        return [
            Finding(
                "tls",
                "fault",
                f"{WEBHOOK_CONFIGURATION}'s caBundle holds no PEM certificate",
                f"set it to the CA of the Secret {NAMESPACE}/machine-catalog-tls: {INSTALL}",
            )
        ]
    findings: list[Finding] = []
    for ca in cas:
        left = ca.not_valid_after_utc - now
        if left < EXPIRY_MARGIN:
            findings.append(
                Finding(
                    "tls",
                    "fault",
                    f"the CA {_subject(ca)} in caBundle expires {ca.not_valid_after_utc:%Y-%m-%d}"
                    f" ({left.days} days)",
                    "rotate the CA: docs/operations.md, Certificates",
                )
            )
    secret_cas = {c.tbs_certificate_bytes for c in _certs(secret_ca_pem or b"")}
    if secret_ca_pem is not None and not secret_cas & {c.tbs_certificate_bytes for c in cas}:
        findings.append(
            Finding(
                "tls",
                "fault",
                f"caBundle of {WEBHOOK_CONFIGURATION} is not the ca.crt of "
                f"{NAMESPACE}/machine-catalog-tls, which the scheduler trusts",
                f"put that ca.crt into the caBundle: {INSTALL}",
            )
        )
    served = _certs(served_pem or b"")
    if not served:
        findings.append(
            Finding(
                "tls",
                "warn",
                f"could not read the served certificate ({served_from}); caBundle not compared",
            )
        )
        return findings
    leaf = served[0]
    if not _signed_by(leaf, cas):
        findings.append(
            Finding(
                "tls",
                "fault",
                f"caBundle of {WEBHOOK_CONFIGURATION} (CA {', '.join(map(_subject, cas))}) did "
                f"not sign the certificate served at {served_from} (issuer "
                f"{leaf.issuer.rfc4514_string()}): the API server's calls fail x509",
                f"put the CA that signed it (ca.crt of {NAMESPACE}/machine-catalog-tls) into "
                f"the caBundle: {INSTALL}",
            )
        )
    left = leaf.not_valid_after_utc - now
    if left < EXPIRY_MARGIN:
        findings.append(
            Finding(
                "tls",
                "fault",
                f"the certificate served at {served_from} expires "
                f"{leaf.not_valid_after_utc:%Y-%m-%d} ({left.days} days)",
                "renew it (cert-manager renews 30 days ahead; with generated certificates: "
                "helm upgrade --set certificates.generate.rotate=true)",
            )
        )
    target = webhook_target(webhook)
    host = target[1] if target else ""
    if host and host not in _names(leaf):
        findings.append(
            Finding(
                "tls",
                "fault",
                f"the served certificate does not name {host} (it names "
                f"{', '.join(_names(leaf)) or 'nothing'})",
                "re-issue it for the Service names: machine-catalog certs --service "
                "machine-catalog-webhook --extra-service machine-catalog-extender",
            )
        )
    if not faults(findings):
        findings.append(
            Finding(
                "tls",
                "ok",
                f"caBundle signed the certificate served at {served_from}, valid until "
                f"{leaf.not_valid_after_utc:%Y-%m-%d} ({left.days} days)",
            )
        )
    return findings


# -- catalog ----------------------------------------------------------------------------


def check_catalog(
    catalog: Catalog, source: str, nodes: Sequence[Mapping[str, Any]]
) -> list[Finding]:
    """How the catalog claims the nodes: every node matched, none ambiguous."""
    statuses: Counter[str] = Counter()
    families: Counter[str] = Counter()
    ambiguous: list[str] = []
    unknown: list[str] = []
    for node in nodes:
        meta = node.get("metadata") or {}
        match = catalog.match(meta.get("labels") or {})
        statuses[match.status] += 1
        if match.family is not None:
            families[match.family.name] += 1
        elif match.status == "ambiguous":
            ambiguous.append(f"{meta.get('name')} ({match.describe()})")
        else:
            unknown.append(str(meta.get("name")))
    name = f"catalog {catalog.version} ({source})"
    summary = (
        f"{name}: {statuses['matched']} of {len(nodes)} nodes matched "
        f"({', '.join(f'{f} {n}' for f, n in sorted(families.items())) or 'none'}), "
        f"{statuses['unknown']} unknown, {statuses['ambiguous']} ambiguous"
    )
    findings: list[Finding] = []
    if ambiguous:
        findings.append(
            Finding(
                "catalog",
                "fault",
                f"{summary}; ambiguous nodes take no normalized pods: {', '.join(ambiguous[:3])}",
                "make the families' instanceTypes/nodeSelectors disjoint "
                "(machine-catalog explain --kubeconfig shows each node's claims)",
            )
        )
    elif nodes and not families:
        findings.append(
            Finding(
                "catalog",
                "fault",
                f"{summary}: no node can take a normalized pod",
                "add your nodes' instance types to the catalog's families "
                "(machine-catalog explain --kubeconfig lists the unmatched nodes)",
            )
        )
    elif unknown:
        findings.append(
            Finding(
                "catalog",
                "warn",
                f"{summary}; unknown nodes take no normalized pods: {', '.join(unknown[:3])}",
                "add their instance types to a family if they should",
            )
        )
    else:
        findings.append(Finding("catalog", "ok", summary))
    return findings
