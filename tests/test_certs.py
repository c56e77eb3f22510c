"""machine_catalog.certs: the CA, the serving certificate and the kustomize Component.

The callers that matter are Go TLS clients (kube-apiserver for the webhook, kube-scheduler
for the extender). These tests check what they check: the chain verifies against the CA
for the exact host names they dial (cryptography's X.509 verifier, which follows the
CA/Browser-style rules Go also enforces, and a real TLS handshake through Python's ``ssl``
on loopback), the certificate is a serverAuth leaf, and the files land with safe modes.
"""

from __future__ import annotations

import base64
import datetime as dt
import shutil
import socket
import ssl
import stat
import subprocess
import threading
from pathlib import Path

import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError
from support.tracked import committed_text, copy_tracked

from machine_catalog.certs import (
    CertBundle,
    issue_serving_cert,
    make_ca,
    service_dns_names,
    write_bundle,
)

REPO = Path(__file__).resolve().parent.parent
NAMESPACE = "machine-catalog-system"
WEBHOOK = "machine-catalog-webhook"
EXTENDER = "machine-catalog-extender"


@pytest.fixture(scope="module")
def ca():
    return make_ca()


@pytest.fixture(scope="module")
def serving(ca):
    names = service_dns_names(WEBHOOK, NAMESPACE) + service_dns_names(EXTENDER, NAMESPACE)
    return issue_serving_cert(ca.cert_pem, ca.key_pem, names, ip_addresses=["127.0.0.1"])


def _verify(ca_pem: bytes, leaf_pem: bytes, name: str) -> None:
    verifier = (
        PolicyBuilder()
        .store(Store([x509.load_pem_x509_certificate(ca_pem)]))
        .build_server_verifier(x509.DNSName(name))
    )
    verifier.verify(x509.load_pem_x509_certificate(leaf_pem), [])


def _sans(cert_pem: bytes) -> tuple[list[str], list[str]]:
    cert = x509.load_pem_x509_certificate(cert_pem)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return san.get_values_for_type(x509.DNSName), [
        str(ip) for ip in san.get_values_for_type(x509.IPAddress)
    ]


# --------------------------------------------------------------------------- in memory


def test_service_dns_names():
    assert service_dns_names("svc", "ns") == [
        "svc",
        "svc.ns",
        "svc.ns.svc",
        "svc.ns.svc.cluster.local",
    ]
    with pytest.raises(ValueError):
        service_dns_names("", "ns")


@pytest.mark.parametrize(
    "name",
    [
        f"{WEBHOOK}.{NAMESPACE}.svc",  # what the API server dials
        f"{EXTENDER}.{NAMESPACE}.svc",  # the scheduler's urlPrefix host
        f"{EXTENDER}.{NAMESPACE}.svc.cluster.local",
        f"{WEBHOOK}.{NAMESPACE}",
    ],
)
def test_serving_cert_verifies_against_the_ca(ca, serving, name):
    _verify(ca.cert_pem, serving.cert_pem, name)


def test_serving_cert_does_not_verify_for_other_names_or_cas(ca, serving):
    with pytest.raises(VerificationError):
        _verify(ca.cert_pem, serving.cert_pem, f"other.{NAMESPACE}.svc")
    with pytest.raises(VerificationError):
        _verify(make_ca().cert_pem, serving.cert_pem, f"{WEBHOOK}.{NAMESPACE}.svc")


def test_serving_cert_is_a_san_only_server_auth_leaf(ca, serving):
    cert = x509.load_pem_x509_certificate(serving.cert_pem)
    dns, ips = _sans(serving.cert_pem)
    assert set(dns) == set(
        service_dns_names(WEBHOOK, NAMESPACE) + service_dns_names(EXTENDER, NAMESPACE)
    )
    assert ips == ["127.0.0.1"]
    assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME) == []
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and not usage.value.key_cert_sign
    public = cert.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"
    assert cert.issuer == x509.load_pem_x509_certificate(ca.cert_pem).subject


def test_key_matches_certificate(serving):
    key = serialization.load_pem_private_key(serving.key_pem, password=None)
    cert = x509.load_pem_x509_certificate(serving.cert_pem)
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    assert key.public_key().public_bytes(
        serialization.Encoding.DER, spki
    ) == cert.public_key().public_bytes(serialization.Encoding.DER, spki)


def test_ca_is_a_leaf_only_ca(ca):
    cert = x509.load_pem_x509_certificate(ca.cert_pem)
    constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints)
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    assert cert.extensions.get_extension_for_class(x509.KeyUsage).value.key_cert_sign
    assert cert.not_valid_after_utc - cert.not_valid_before_utc > dt.timedelta(days=3000)


def test_validity_is_backdated_and_capped_by_the_ca():
    now = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)
    short_ca = make_ca(days=10, now=now)
    leaf = issue_serving_cert(short_ca.cert_pem, short_ca.key_pem, ["a.b.svc"], days=365, now=now)
    cert = x509.load_pem_x509_certificate(leaf.cert_pem)
    ca_cert = x509.load_pem_x509_certificate(short_ca.cert_pem)
    assert cert.not_valid_before_utc < now  # tolerate clock skew
    assert cert.not_valid_after_utc == ca_cert.not_valid_after_utc


@pytest.mark.parametrize(
    ("service", "namespace", "wrong"),
    [
        ("My_Service", "ns", "service name 'My_Service'"),
        ("Webhook", "ns", "service name 'Webhook'"),
        ("1webhook", "ns", "service name '1webhook'"),  # a Service name starts with a letter
        ("webhook-", "ns", "service name 'webhook-'"),
        ("a" * 64, "ns", "service name"),
        ("webhook", "Team_A", "namespace 'Team_A'"),
        ("webhook", "ns.sub", "namespace 'ns.sub'"),
    ],
)
def test_names_the_api_server_would_refuse_are_refused(service, namespace, wrong):
    with pytest.raises(ValueError, match=wrong):
        service_dns_names(service, namespace)


def test_certs_with_an_invalid_service_name_is_one_line_and_writes_nothing(tmp_path, capsys):
    from machine_catalog_cli.main import main

    out = tmp_path / "certs"
    code = main(["certs", "--service", "My_Service", "--namespace", "ns", "--out", str(out)])
    stdout, stderr = capsys.readouterr()
    assert code == 1 and stdout == ""
    assert stderr.startswith("machine-catalog: error: service name 'My_Service' is not a valid")
    assert len(stderr.splitlines()) == 1
    assert not out.exists()
    code = main(
        [
            "certs",
            "--service",
            "ok",
            "--extra-service",
            "Bad",
            "--namespace",
            "ns",
            "--out",
            str(out),
        ]
    )
    assert code == 1 and not out.exists()
    assert service_dns_names("w-1", "0-team")[2] == "w-1.0-team.svc"  # digits may lead a namespace


def test_issue_rejects_empty_names(ca):
    with pytest.raises(ValueError):
        issue_serving_cert(ca.cert_pem, ca.key_pem, [])


def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext, server_name: str):
    """A TLS handshake and one round trip over a loopback TCP connection."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    errors: list[BaseException] = []

    def serve() -> None:
        try:
            conn, _ = listener.accept()
            with server_ctx.wrap_socket(conn, server_side=True) as tls:
                tls.sendall(tls.recv(5).upper())
        except (OSError, ssl.SSLError) as exc:  # client-side failures surface here too
            errors.append(exc)

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=5) as raw,
            client_ctx.wrap_socket(raw, server_hostname=server_name) as tls,
        ):
            tls.sendall(b"hello")
            reply, version = tls.recv(5), tls.version()
    finally:
        thread.join(timeout=5)
        listener.close()
    assert not errors, errors  # the client succeeded, so the server side must have too
    return reply, version


def _contexts(tmp_path: Path, ca_pem: bytes, leaf) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    (tmp_path / "tls.crt").write_bytes(leaf.cert_pem)
    (tmp_path / "tls.key").write_bytes(leaf.key_pem)
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    client_ctx = ssl.create_default_context(cadata=ca_pem.decode())
    return server_ctx, client_ctx


def test_tls_handshake_on_loopback(tmp_path, ca, serving):
    server_ctx, client_ctx = _contexts(tmp_path, ca.cert_pem, serving)
    reply, version = _handshake(server_ctx, client_ctx, f"{EXTENDER}.{NAMESPACE}.svc")
    assert reply == b"HELLO"
    assert version in ("TLSv1.2", "TLSv1.3")


def test_tls_handshake_by_ip_address(tmp_path, ca, serving):
    server_ctx, client_ctx = _contexts(tmp_path, ca.cert_pem, serving)
    assert _handshake(server_ctx, client_ctx, "127.0.0.1")[0] == b"HELLO"


def test_tls_handshake_fails_for_an_untrusted_ca(tmp_path, serving):
    server_ctx, client_ctx = _contexts(tmp_path, make_ca().cert_pem, serving)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server_ctx, client_ctx, f"{WEBHOOK}.{NAMESPACE}.svc")


def test_tls_handshake_fails_for_a_wrong_host_name(tmp_path, ca, serving):
    server_ctx, client_ctx = _contexts(tmp_path, ca.cert_pem, serving)
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(server_ctx, client_ctx, "machine-catalog-webhook.default.svc")


# --------------------------------------------------------------------------- on disk


@pytest.fixture
def bundle(tmp_path) -> CertBundle:
    return write_bundle(WEBHOOK, NAMESPACE, tmp_path / "certs", extra_services=[EXTENDER])


def test_bundle_files_and_modes(bundle):
    expected = {
        "ca.crt": 0o644,
        "ca.key": 0o600,
        "tls.crt": 0o644,
        "tls.key": 0o600,
        "webhook-cabundle-patch.yaml": 0o644,
        "kustomization.yaml": 0o644,
    }
    found = {p.name: stat.S_IMODE(p.stat().st_mode) for p in bundle.out_dir.iterdir()}
    assert found == expected  # no temporary files left behind
    assert stat.S_IMODE(bundle.out_dir.stat().st_mode) == 0o700
    for path in (bundle.ca_cert, bundle.ca_key, bundle.tls_cert, bundle.tls_key):
        assert path.parent == bundle.out_dir and path.is_file()
    assert bundle.ca_cert.read_bytes() == bundle.ca_pem
    assert bundle.ca_created


def test_bundle_chain_and_names(bundle):
    assert bundle.dns_names == tuple(
        service_dns_names(WEBHOOK, NAMESPACE) + service_dns_names(EXTENDER, NAMESPACE)
    )
    dns, ips = _sans(bundle.tls_cert.read_bytes())
    assert tuple(dns) == bundle.dns_names and ips == []
    for name in bundle.dns_names:
        _verify(bundle.ca_pem, bundle.tls_cert.read_bytes(), name)
    cert = x509.load_pem_x509_certificate(bundle.tls_cert.read_bytes())
    assert cert.not_valid_after_utc == bundle.not_after
    remaining = bundle.not_after - dt.datetime.now(dt.UTC)
    assert dt.timedelta(days=364) < remaining <= dt.timedelta(days=365)


def test_bundle_patch_names_the_webhook_and_carries_the_ca(bundle):
    patch = yaml.safe_load(bundle.patch.read_text())
    assert patch["apiVersion"] == "admissionregistration.k8s.io/v1"
    assert patch["kind"] == "MutatingWebhookConfiguration"
    assert patch["metadata"] == {"name": "machine-catalog"}
    # Every webhook of manifests/base/webhook.yaml (pod creates, pod resizes) by name.
    manifest = yaml.safe_load((REPO / "manifests" / "base" / "webhook.yaml").read_text())
    names = [hook["name"] for hook in manifest["webhooks"]]
    assert [hook["name"] for hook in patch["webhooks"]] == names
    for hook in patch["webhooks"]:
        assert base64.b64decode(hook["clientConfig"]["caBundle"], validate=True) == bundle.ca_pem


def test_bundle_kustomization_is_a_component_generating_the_tls_secret(bundle):
    component = yaml.safe_load(bundle.kustomization.read_text())
    assert component["apiVersion"] == "kustomize.config.k8s.io/v1alpha1"
    assert component["kind"] == "Component"
    (secret,) = component["secretGenerator"]
    assert secret["name"] == "machine-catalog-tls"
    assert secret["namespace"] == NAMESPACE
    assert secret["type"] == "kubernetes.io/tls"
    assert secret["files"] == ["tls.crt", "tls.key", "ca.crt"]  # never ca.key
    assert component["patches"] == [{"path": "webhook-cabundle-patch.yaml"}]
    for name in secret["files"]:
        assert (bundle.out_dir / name).is_file()


def test_rerun_keeps_the_ca_so_the_cabundle_does_not_change(bundle):
    old_leaf = bundle.tls_cert.read_bytes()
    again = write_bundle(WEBHOOK, NAMESPACE, bundle.out_dir, extra_services=[EXTENDER])
    assert not again.ca_created
    assert again.ca_pem == bundle.ca_pem
    assert again.tls_cert.read_bytes() != old_leaf  # a fresh serving certificate
    _verify(bundle.ca_pem, again.tls_cert.read_bytes(), f"{WEBHOOK}.{NAMESPACE}.svc")


def test_rerun_without_reuse_makes_a_new_ca(bundle):
    again = write_bundle(WEBHOOK, NAMESPACE, bundle.out_dir, reuse_ca=False)
    assert again.ca_created and again.ca_pem != bundle.ca_pem
    assert again.dns_names == tuple(service_dns_names(WEBHOOK, NAMESPACE))


def test_a_ca_that_would_expire_first_is_replaced(tmp_path):
    out = tmp_path / "certs"
    out.mkdir()
    short = make_ca(days=30)
    (out / "ca.crt").write_bytes(short.cert_pem)
    (out / "ca.key").write_bytes(short.key_pem)
    bundle = write_bundle(WEBHOOK, NAMESPACE, out, days=90)
    assert bundle.ca_created and bundle.ca_pem != short.cert_pem


def test_a_ca_whose_key_does_not_match_is_replaced(tmp_path):
    out = tmp_path / "certs"
    out.mkdir()
    (out / "ca.crt").write_bytes(make_ca().cert_pem)
    (out / "ca.key").write_bytes(make_ca().key_pem)
    assert write_bundle(WEBHOOK, NAMESPACE, out).ca_created


def test_existing_key_files_are_tightened(tmp_path):
    out = tmp_path / "certs"
    out.mkdir()
    (out / "tls.key").write_text("old")
    (out / "tls.key").chmod(0o644)
    bundle = write_bundle(WEBHOOK, NAMESPACE, out)
    assert stat.S_IMODE(bundle.tls_key.stat().st_mode) == 0o600


@pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs kubectl kustomize")
def test_the_generated_certs_overlay_says_to_run_certs_first(tmp_path):
    # The overlay as the repository ships it: tracked files only, and the placeholder as
    # committed (following docs/operations.md in this checkout rewrites it on disk).
    tree = copy_tracked(REPO / "manifests", tmp_path / "manifests")
    placeholder = Path("overlays", "generated-certs", "certs", "kustomization.yaml")
    (tree / placeholder).write_text(committed_text(REPO / "manifests" / placeholder))
    overlay = tree / "overlays" / "generated-certs"
    kubectl = shutil.which("kubectl")
    before = subprocess.run(
        [kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=120
    )
    assert before.returncode != 0
    assert "run-machine-catalog-certs-first" in before.stderr
    # Once the command has run, the placeholder is replaced and it renders.
    write_bundle(
        WEBHOOK,
        NAMESPACE,
        tree / "overlays" / "generated-certs" / "certs",
        extra_services=[EXTENDER],
    )
    after = subprocess.run(
        [kubectl, "kustomize", str(tree / "overlays" / "generated-certs")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert after.returncode == 0, after.stderr
    assert "kind: Secret" in after.stdout
