"""``machine-catalog doctor``'s checks, one row per fault a user can meet after an install.

The checks are pure (machine_catalog/doctoring.py); the reading from a cluster is the CLI's
and runs in e2e/tests/test_doctor.py against the real API server.
"""

from __future__ import annotations

import base64
import datetime as dt
from typing import Any

import pytest

from machine_catalog.certs import issue_serving_cert, make_ca
from machine_catalog.doctoring import (
    Finding,
    Probe,
    check_catalog,
    check_certificates,
    check_deployment,
    check_scheduler,
    check_webhook_called,
    check_webhook_configuration,
    expected_extender_urls,
)
from machine_catalog.loading import load_catalog, parse_catalog

NOW = dt.datetime(2026, 6, 1, tzinfo=dt.UTC)
SVC = "machine-catalog-webhook.machine-catalog-system.svc"
CA = make_ca(now=NOW - dt.timedelta(days=1))
OTHER_CA = make_ca("someone-else", now=NOW - dt.timedelta(days=1))


def webhook(ca_pem: bytes | None = CA.cert_pem, **client: Any) -> dict[str, Any]:
    config = client or {
        "service": {
            "name": "machine-catalog-webhook",
            "namespace": "machine-catalog-system",
            "path": "/webhook/mutate",
            "port": 443,
        }
    }
    if ca_pem is not None:
        config["caBundle"] = base64.b64encode(ca_pem).decode()
    return {"metadata": {"name": "machine-catalog"}, "webhooks": [{"clientConfig": config}]}


def served(days: int = 90, names: tuple[str, ...] = (SVC,), ca=CA) -> bytes:
    return issue_serving_cert(
        ca.cert_pem, ca.key_pem, list(names), days=days, now=NOW - dt.timedelta(days=1)
    ).cert_pem


def only(findings: list[Finding]) -> Finding:
    bad = [f for f in findings if f.status != "ok"]
    assert len(bad) <= 1, [f.line() for f in findings]
    return bad[0] if bad else findings[-1]


def test_a_fault_is_one_line_with_its_fix() -> None:
    line = Finding("tls", "fault", "broken", "do this").line()
    assert line == "FAULT tls: broken -- fix: do this"
    assert "\n" not in line


@pytest.mark.parametrize(
    ("config", "status", "words"),
    [
        (None, "fault", "not found"),
        ({"metadata": {}, "webhooks": []}, "fault", "no webhooks"),
        (webhook(), "ok", f"service {SVC}:443/webhook/mutate"),
    ],
)
def test_webhook_configuration(config, status, words) -> None:
    finding = only(check_webhook_configuration(config))
    assert finding.status == status
    assert words in finding.message


NORMALIZED = {
    "metadata": {"annotations": {"machine-catalog.io/family": "m5"}},
    "spec": {"schedulerName": "machine-catalog"},
}


@pytest.mark.parametrize(
    ("probe", "status", "words"),
    [
        (None, "warn", "no namespace is labelled"),
        (Probe("ns", pod=NORMALIZED), "ok", "normalized (family m5, scheduler machine-catalog)"),
        (Probe("ns", pod={"metadata": {}, "spec": {}}), "fault", "was not called"),
        (
            Probe("ns", error='failed calling webhook "pods.machine-catalog.io": x509'),
            "fault",
            "x509",
        ),
        (
            Probe("ns", error='admission webhook "pods.machine-catalog.io" denied the request'),
            "ok",
            "denied",
        ),
    ],
)
def test_webhook_called(probe, status, words) -> None:
    finding = only(check_webhook_called(probe))
    assert finding.status == status
    assert words in finding.message


SCHEDULER = """
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
profiles: [{schedulerName: %(profile)s}]
extenders:
  - urlPrefix: %(url)s
    filterVerb: filter
    enableHTTPS: true
    tlsConfig: {%(tls)s}
"""
GOOD_URL = "https://machine-catalog-extender.machine-catalog-system.svc:443/scheduler"


def scheduler(profile="machine-catalog", url=GOOD_URL, tls="caFile: /ca.crt") -> dict[str, str]:
    return {"cm": SCHEDULER % {"profile": profile, "url": url, "tls": tls}}


@pytest.mark.parametrize(
    ("configs", "status", "words"),
    [
        (scheduler(), "ok", f"calls {GOOD_URL}"),
        ({}, "fault", "no KubeSchedulerConfiguration with profile machine-catalog"),
        (scheduler(profile="default-scheduler"), "fault", "no KubeSchedulerConfiguration"),
        (scheduler(url="https://elsewhere:443/scheduler"), "fault", "does not call the server"),
        (scheduler(tls="insecure: true"), "fault", "not verified"),
    ],
)
def test_scheduler(configs, status, words) -> None:
    finding = only(
        check_scheduler(configs, expected_extender_urls(webhook(), "machine-catalog-system"))
    )
    assert finding.status == status
    assert words in finding.message


def test_a_url_webhook_expects_the_extender_at_the_same_server() -> None:
    urls = expected_extender_urls(webhook(url="https://10.0.0.5:8443/webhook/mutate"), "ns")
    assert "https://10.0.0.5:8443/scheduler" in urls


@pytest.mark.parametrize(
    ("deployment", "status"),
    [
        (None, "fault"),
        ({"spec": {"replicas": 2}, "status": {}}, "fault"),
        ({"spec": {"replicas": 2}, "status": {"readyReplicas": 1}}, "warn"),
        ({"spec": {"replicas": 2}, "status": {"readyReplicas": 2}}, "ok"),
    ],
)
def test_deployment(deployment, status) -> None:
    assert only(check_deployment("machine-catalog", deployment)).status == status


@pytest.mark.parametrize(
    ("config", "cert", "secret_ca", "status", "words"),
    [
        (webhook(), served(), CA.cert_pem, "ok", "caBundle signed the certificate"),
        (webhook(ca_pem=None), served(), CA.cert_pem, "fault", "has no caBundle"),
        (webhook(ca_pem=b"junk"), served(), CA.cert_pem, "fault", "no PEM certificate"),
        (webhook(OTHER_CA.cert_pem), served(), None, "fault", "did not sign the certificate"),
        (webhook(), served(), OTHER_CA.cert_pem, "fault", "is not the ca.crt"),
        (webhook(), served(days=10), CA.cert_pem, "fault", "expires"),
        (webhook(), served(names=("other.svc",)), CA.cert_pem, "fault", f"does not name {SVC}"),
        (webhook(), None, CA.cert_pem, "warn", "could not read the served certificate"),
    ],
)
def test_certificates(config, cert, secret_ca, status, words) -> None:
    finding = only(check_certificates(config, cert, "Secret x", secret_ca, NOW))
    assert finding.status == status
    assert words in finding.message
    if status == "fault":
        assert finding.fix


def node(name: str, instance_type: str) -> dict[str, Any]:
    return {
        "metadata": {
            "name": name,
            "labels": {"node.kubernetes.io/instance-type": instance_type},
        }
    }


AMBIGUOUS = """
apiVersion: machine-catalog.io/v1alpha1
kind: MachineCatalog
metadata: {name: overlap}
spec:
  baseline: a
  families:
    - {name: a, scuPerCore: 1.0, instanceTypes: [m5.large]}
    - name: b
      scuPerCore: 1.2
      nodeSelector: {matchLabels: {node.kubernetes.io/instance-type: m5.large}}
"""


@pytest.mark.parametrize(
    ("catalog", "nodes", "status", "words"),
    [
        (load_catalog(), [node("n1", "m5.large")], "ok", "1 of 1 nodes matched"),
        (load_catalog(), [node("n1", "m5.large"), node("n2", "t9.huge")], "warn", "1 unknown"),
        (load_catalog(), [node("n2", "t9.huge")], "fault", "no node can take"),
        (parse_catalog(AMBIGUOUS, "x"), [node("n1", "m5.large")], "fault", "1 ambiguous"),
    ],
)
def test_catalog(catalog, nodes, status, words) -> None:
    finding = only(check_catalog(catalog, "file", nodes))
    assert finding.status == status
    assert words in finding.message
    assert catalog.version in finding.message
