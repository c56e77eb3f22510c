"""Certificates and kubeconfigs for a throwaway control plane on loopback.

The CA and serving certificates come from the product's own ``machine_catalog.certs`` (the
same code ``machine-catalog certs`` runs), so the end-to-end suite also exercises it. Client
certificates are a test-only need (the product never authenticates as a client with a
certificate), so they are issued here.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from machine_catalog.certs import issue_serving_cert, make_ca

# A client identity: common name is the user, organizations are its groups.
ADMIN = ("e2e-admin", ("system:masters",))
FRONT_PROXY = ("front-proxy-client", ())


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    path.chmod(0o600)
    return path


def issue_client_cert(
    ca_cert_pem: bytes, ca_key_pem: bytes, user: str, groups: tuple[str, ...]
) -> tuple[bytes, bytes]:
    """A clientAuth certificate: the API server maps CN to the user, O to its groups."""
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    subject = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, g) for g in groups]
    subject.append(x509.NameAttribute(NameOID.COMMON_NAME, user))
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name(subject))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=2))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


@dataclass(frozen=True)
class Pki:
    """Every file the control plane and the tests need, written under one directory."""

    ca: Path
    ca_key: Path
    apiserver_cert: Path
    apiserver_key: Path
    sa_key: Path
    sa_pub: Path
    front_proxy_ca: Path
    front_proxy_cert: Path
    front_proxy_key: Path
    admin_cert: Path
    admin_key: Path
    # The webhook's and extender's serving certificate (127.0.0.1 and localhost).
    server_cert: Path
    server_key: Path
    metrics_cert: Path
    metrics_key: Path


def make_pki(directory: Path, *, metrics_ip: str) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca = make_ca("e2e-cluster-ca")
    front = make_ca("e2e-front-proxy-ca")
    apiserver = issue_serving_cert(
        ca.cert_pem,
        ca.key_pem,
        ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
        ip_addresses=["127.0.0.1"],
    )
    server = issue_serving_cert(ca.cert_pem, ca.key_pem, ["localhost"], ip_addresses=["127.0.0.1"])
    metrics = issue_serving_cert(
        ca.cert_pem, ca.key_pem, ["metrics-server.kube-system.svc"], ip_addresses=[metrics_ip]
    )
    admin = issue_client_cert(ca.cert_pem, ca.key_pem, *ADMIN)
    proxy = issue_client_cert(front.cert_pem, front.key_pem, *FRONT_PROXY)
    sa = ec.generate_private_key(ec.SECP256R1())
    d = directory
    return Pki(
        ca=_write(d / "ca.crt", ca.cert_pem),
        ca_key=_write(d / "ca.key", ca.key_pem),
        apiserver_cert=_write(d / "apiserver.crt", apiserver.cert_pem),
        apiserver_key=_write(d / "apiserver.key", apiserver.key_pem),
        sa_key=_write(
            d / "sa.key",
            sa.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        ),
        sa_pub=_write(
            d / "sa.pub",
            sa.public_key().public_bytes(
                serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
            ),
        ),
        front_proxy_ca=_write(d / "front-proxy-ca.crt", front.cert_pem),
        front_proxy_cert=_write(d / "front-proxy-client.crt", proxy[0]),
        front_proxy_key=_write(d / "front-proxy-client.key", proxy[1]),
        admin_cert=_write(d / "admin.crt", admin[0]),
        admin_key=_write(d / "admin.key", admin[1]),
        server_cert=_write(d / "server.crt", server.cert_pem),
        server_key=_write(d / "server.key", server.key_pem),
        metrics_cert=_write(d / "metrics.crt", metrics.cert_pem),
        metrics_key=_write(d / "metrics.key", metrics.key_pem),
    )


def write_kubeconfig(path: Path, server: str, pki: Pki) -> Path:
    """An admin kubeconfig with file references, as kubectl and every component read it."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [
            {"name": "e2e", "cluster": {"server": server, "certificate-authority": str(pki.ca)}}
        ],
        "users": [
            {
                "name": "admin",
                "user": {
                    "client-certificate": str(pki.admin_cert),
                    "client-key": str(pki.admin_key),
                },
            }
        ],
        "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "admin"}}],
        "current-context": "e2e",
    }
    path.write_text(yaml.safe_dump(config))
    path.chmod(0o600)
    return path
