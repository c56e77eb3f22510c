"""``machine-catalog doctor`` against the session's install, then with two faults made.

The session's install is the server (``serve --kubeconfig``, webhook configuration with its
URL and caBundle), the project's KubeSchedulerConfiguration (a file, as for a scheduler run
outside the cluster: ``--scheduler-config``) and the e2e catalog. Every check is green but
one: the harness plants ``twin-ambiguous``, a node two families claim (other tests need
it), and the doctor names exactly that node. Then the webhook configuration is removed,
and a wrong CA put in its caBundle: each fault is one line with its fix. Both are restored
in a ``finally``, and the test waits until the API server calls the webhook again.
"""

from __future__ import annotations

import base64
import subprocess
import sys
import time

import pytest
from harness.controlplane import ControlPlane

from machine_catalog.certs import make_ca

WEBHOOK = "machine-catalog"


@pytest.fixture
def doctor(plane: ControlPlane, server, scheduler, catalog, namespace):
    """Run the doctor on the session's install; (exit code, printed lines)."""
    config = plane.workdir / "machine-catalog-scheduler-config.yaml"
    assert config.exists()

    def run() -> tuple[int, list[str]]:
        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "machine_catalog_cli",
                "doctor",
                "--kubeconfig",
                str(plane.kubeconfig),
                "--scheduler-config",
                str(config),
                "--catalog",
                str(catalog),
                "--namespace",
                namespace,
            ],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert not result.stderr, result.stderr
        return result.returncode, result.stdout.splitlines()

    return run


def faults(lines: list[str]) -> list[str]:
    return [line for line in lines if line.startswith("FAULT")]


def wait_normalized(api, namespace: str, want: bool = True, timeout: float = 30) -> None:
    """Until a dry-run pod comes back normalized (``want``) or not (failed or unchanged):
    the API server picks up a changed webhook configuration from a watch, a moment later."""
    from kubernetes.client.rest import ApiException

    probe = {
        "metadata": {"name": "doctor-restored"},
        "spec": {"containers": [{"name": "c", "image": "registry.k8s.io/pause:3.10"}]},
    }
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            pod = api.create_namespaced_pod(namespace, probe, dry_run="All")
            normalized = "machine-catalog.io/family" in (pod.metadata.annotations or {})
        except ApiException:
            normalized = False
        if normalized == want:
            return
        time.sleep(0.3)
    raise AssertionError(f"the webhook change did not take effect (normalized: {not want})")


def test_the_session_install_is_green_but_for_the_planted_ambiguous_node(doctor) -> None:
    code, lines = doctor()
    assert code == 1, lines
    ok = [line for line in lines if line.startswith("ok")]
    for check in ("webhook:", "webhook call:", "scheduler:", "pairing:", "extender:", "tls:"):
        assert any(line.startswith(f"ok    {check}") for line in ok), (check, lines)
    assert any("came back normalized" in line for line in ok), lines
    assert any("caBundle signed the certificate served at 127.0.0.1:" in line for line in ok)
    (fault,) = faults(lines)
    assert fault.startswith("FAULT catalog:"), fault
    assert "twin-ambiguous" in fault and "-- fix: " in fault
    assert lines[-1] == "1 fault(s)"


def test_a_removed_webhook_configuration_is_named_with_its_fix(doctor, plane, api, namespace):
    from kubernetes import client

    admission = client.AdmissionregistrationV1Api(plane.api_client())
    saved = admission.read_mutating_webhook_configuration(WEBHOOK)
    saved.metadata.resource_version = None
    saved.metadata.uid = None
    admission.delete_mutating_webhook_configuration(WEBHOOK)
    try:
        wait_normalized(api, namespace, want=False)
        code, lines = doctor()
    finally:
        admission.create_mutating_webhook_configuration(saved)
        wait_normalized(api, namespace)
    assert code == 1
    found = faults(lines)
    assert any(
        f.startswith("FAULT webhook: MutatingWebhookConfiguration machine-catalog not found")
        and "-- fix: re-install it: helm upgrade --install" in f
        for f in found
    ), lines
    assert any(f.startswith("FAULT webhook call:") and "-- fix: " in f for f in found), lines


def test_a_wrong_ca_bundle_is_named_with_its_fix(doctor, plane, api, namespace) -> None:
    from kubernetes import client

    admission = client.AdmissionregistrationV1Api(plane.api_client())
    original = admission.read_mutating_webhook_configuration(WEBHOOK).webhooks[0].client_config
    wrong = base64.b64encode(make_ca("not-the-servers-ca").cert_pem).decode()

    def patch(bundle: str) -> None:
        admission.patch_mutating_webhook_configuration(
            WEBHOOK,
            [{"op": "replace", "path": "/webhooks/0/clientConfig/caBundle", "value": bundle}],
        )

    patch(wrong)
    try:
        wait_normalized(api, namespace, want=False)
        code, lines = doctor()
    finally:
        patch(original.ca_bundle)
        wait_normalized(api, namespace)
    assert code == 1
    found = faults(lines)
    tls = [f for f in found if f.startswith("FAULT tls:")]
    assert len(tls) == 1, lines
    assert "CN=not-the-servers-ca" in tls[0] and "did not sign the certificate" in tls[0]
    assert "-- fix: put the CA that signed it" in tls[0]
    assert any(f.startswith("FAULT webhook call:") and "x509" in f for f in found), lines
