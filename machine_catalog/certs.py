"""Certificates for the webhook and the scheduler extender, without cert-manager.

Both callers of the server verify its certificate: the API server dials
``https://<service>.<namespace>.svc`` for the webhook and checks it against the webhook's
``caBundle``; kube-scheduler checks the extender against ``tlsConfig.caFile`` (without a CA
it silently skips verification). So a deployment needs a CA that both trust and a serving
certificate for both Service names. This module makes them in pure Python (the
``cryptography`` package; no ``openssl`` binary, so it works the same in CI, on laptops and
in distroless images) and writes a kustomize Component that turns them into the Secret
``machine-catalog-tls`` and the webhook's ``caBundle``.

Choices, and why:

* ECDSA P-256 keys: small, fast handshakes, accepted by Go's TLS stack (API server,
  kube-scheduler) and by Python's ``ssl``.
* A private CA rather than a self-signed serving certificate: the trust anchor (caBundle,
  caFile) can outlive the serving certificate. :func:`write_bundle` reuses a valid CA
  already in ``out_dir``, so re-issuing the serving certificate does not change the
  caBundle and no caller ever sees a certificate it does not trust during a rollout.
* SAN-only identity: the subject has no CN. Go ignores CN for host names since 1.15; every
  name the callers dial is in ``subjectAltName``.
* Key files are written with mode 0600, atomically (temporary file + rename), so a reader
  never sees half a key and no other local user can read it.

:func:`make_ca` and :func:`issue_serving_cert` return PEM bytes and touch no files, so
tests can build a throwaway CA in memory and run real TLS handshakes on loopback.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import os
import re
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

#: Names fixed by the manifests (manifests/base): the Secret the server mounts and the
#: MutatingWebhookConfiguration (and its one webhook) whose caBundle must hold our CA.
TLS_SECRET_NAME = "machine-catalog-tls"
WEBHOOK_CONFIGURATION_NAME = "machine-catalog"
WEBHOOK_NAME = "pods.machine-catalog.io"
#: Every webhook of the configuration (pod creates; pod resizes, never reinvoked): each
#: needs the caBundle.
WEBHOOK_NAMES = (WEBHOOK_NAME, "resize.pods.machine-catalog.io")

CA_CERT_FILE = "ca.crt"
CA_KEY_FILE = "ca.key"
TLS_CERT_FILE = "tls.crt"
TLS_KEY_FILE = "tls.key"
PATCH_FILE = "webhook-cabundle-patch.yaml"
KUSTOMIZATION_FILE = "kustomization.yaml"

#: Backdating of notBefore: a node whose clock runs a little behind must not reject a
#: certificate that was issued "in the future".
_CLOCK_SKEW = dt.timedelta(minutes=5)
#: A reused CA must stay valid at least this long beyond the new serving certificate.
_CA_MARGIN = dt.timedelta(days=1)


class PemPair(NamedTuple):
    """A certificate and its private key, both PEM-encoded."""

    cert_pem: bytes
    key_pem: bytes


@dataclass(frozen=True)
class CertBundle:
    """What :func:`write_bundle` wrote, for the CLI to report and for tests to check."""

    out_dir: Path
    ca_cert: Path
    ca_key: Path
    tls_cert: Path
    tls_key: Path
    patch: Path
    kustomization: Path
    #: The CA certificate (PEM): what the webhook's caBundle holds, base64-encoded.
    ca_pem: bytes
    #: Every DNS name in the serving certificate.
    dns_names: tuple[str, ...]
    #: The serving certificate's notAfter (UTC).
    not_after: dt.datetime
    #: False when a valid CA already in out_dir was kept (caBundle unchanged).
    ca_created: bool


#: What the API server accepts as a Service name and as a namespace name: anything else
#: would put a DNS name no client can ever dial into the certificate.
_DNS_1035_LABEL = re.compile(r"[a-z]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")


def service_dns_names(service: str, namespace: str) -> list[str]:
    """The names a client may dial for a Service, shortest first.

    The API server uses ``<svc>.<ns>.svc``; in-cluster clients may use any of the four
    (the short forms through the resolver's search path).
    """
    if not service or not namespace:
        raise ValueError("service and namespace must not be empty")
    if not _DNS_1035_LABEL.fullmatch(service):
        raise ValueError(
            f"service name {service!r} is not a valid Service name (RFC 1035 label: at most "
            "63 lowercase letters, digits and '-', starting with a letter, ending with a "
            "letter or digit)"
        )
    if not _DNS_1123_LABEL.fullmatch(namespace):
        raise ValueError(
            f"namespace {namespace!r} is not a valid namespace name (RFC 1123 label: at most "
            "63 lowercase letters, digits and '-', starting and ending with a letter or digit)"
        )
    return [
        service,
        f"{service}.{namespace}",
        f"{service}.{namespace}.svc",
        f"{service}.{namespace}.svc.cluster.local",
    ]


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_ca(
    common_name: str = "machine-catalog-ca",
    *,
    days: int = 3650,
    now: dt.datetime | None = None,
) -> PemPair:
    """Create a self-signed CA that can only sign leaf certificates (pathLen 0).

    Ten years by default: the CA is the trust anchor in the webhook's caBundle and the
    scheduler's caFile, and changing it is the one certificate event that needs every
    caller updated, so it should be rare. Serving certificates are short-lived instead.
    """
    if days < 1:
        raise ValueError("days must be at least 1")
    now = now or _now()
    key = _new_key()
    name = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "machine-catalog"),
            x509.NameAttribute(NameOID.COMMON_NAME, common_name),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return PemPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def issue_serving_cert(
    ca_cert_pem: bytes,
    ca_key_pem: bytes,
    dns_names: Sequence[str],
    *,
    ip_addresses: Sequence[str] = (),
    days: int = 365,
    now: dt.datetime | None = None,
) -> PemPair:
    """Issue a TLS server certificate signed by the given CA.

    The identity is in ``subjectAltName`` only (DNS names, and IP addresses for loopback
    tests such as ``127.0.0.1``); the extended key usage is serverAuth only, so the
    certificate cannot be reused as a client certificate. The validity is capped at the
    CA's own notAfter: a leaf that outlives its issuer would fail verification anyway, and
    silently.
    """
    if not dns_names and not ip_addresses:
        raise ValueError("a serving certificate needs at least one DNS name or IP address")
    if days < 1:
        raise ValueError("days must be at least 1")
    now = now or _now()
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    if not isinstance(ca_key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise ValueError("the CA key must be an ECDSA or RSA private key")
    key = _new_key()
    not_after = min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc)
    sans: list[x509.GeneralName] = [x509.DNSName(name) for name in _unique(dns_names)]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in _unique(ip_addresses)]
    cert = (
        x509.CertificateBuilder()
        # No CN on purpose (SAN-only); a non-empty subject keeps older tools happy.
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "machine-catalog")]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _CLOCK_SKEW)
        .not_valid_after(not_after)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    return PemPair(cert.public_bytes(serialization.Encoding.PEM), _key_pem(key))


def _unique(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


def _reusable_ca(out_dir: Path, needed_until: dt.datetime) -> PemPair | None:
    """A CA already in out_dir, if it is a CA, its key matches, and it lives long enough.

    Anything unreadable or unsuitable means "make a new one": this never raises, because the
    caller's fallback (a fresh CA) is always correct, only less convenient.
    """
    cert_path, key_path = out_dir / CA_CERT_FILE, out_dir / CA_KEY_FILE
    try:
        cert_pem, key_pem = cert_path.read_bytes(), key_path.read_bytes()
        cert = x509.load_pem_x509_certificate(cert_pem)
        key = serialization.load_pem_private_key(key_pem, password=None)
        constraints = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
    except (OSError, ValueError, TypeError, x509.ExtensionNotFound):
        return None
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    same_key = cert.public_key().public_bytes(
        serialization.Encoding.DER, public
    ) == key.public_key().public_bytes(serialization.Encoding.DER, public)
    now = _now()
    if (
        not constraints.ca
        or not same_key
        or cert.not_valid_before_utc > now
        or cert.not_valid_after_utc < needed_until + _CA_MARGIN
    ):
        return None
    return PemPair(cert_pem, key_pem)


def _write(path: Path, data: bytes, mode: int) -> None:
    """Write atomically with the final mode set before any byte lands on disk."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cabundle_patch(ca_pem: bytes) -> dict:
    """A strategic-merge patch that sets the webhook's clientConfig.caBundle.

    Strategic merge, keyed on the webhook's name (``webhooks`` merges by ``name``), rather
    than a JSON patch on ``/webhooks/0``: it names the object and the webhook it changes,
    and keeps working if webhooks are ever added or reordered.
    """
    return {
        "apiVersion": "admissionregistration.k8s.io/v1",
        "kind": "MutatingWebhookConfiguration",
        "metadata": {"name": WEBHOOK_CONFIGURATION_NAME},
        "webhooks": [
            {
                "name": name,
                "clientConfig": {"caBundle": base64.b64encode(ca_pem).decode("ascii")},
            }
            for name in WEBHOOK_NAMES
        ],
    }


def component_kustomization(namespace: str) -> dict:
    """The kustomize Component: the TLS Secret from the files, and the caBundle patch.

    A Component (not a Kustomization) because it only makes sense on top of the base:
    ``manifests/overlays/generated-certs`` includes it with ``components: [certs]``. The
    Secret keeps kustomize's content-hash suffix on purpose: new certificates give it a new
    name, kustomize rewrites the references, and both Deployments (server and scheduler)
    roll onto the new key and CA together. ``ca.key`` is deliberately not in the Secret.
    """
    return {
        "apiVersion": "kustomize.config.k8s.io/v1alpha1",
        "kind": "Component",
        "secretGenerator": [
            {
                "name": TLS_SECRET_NAME,
                "namespace": namespace,
                "type": "kubernetes.io/tls",
                "files": [TLS_CERT_FILE, TLS_KEY_FILE, CA_CERT_FILE],
            }
        ],
        "patches": [{"path": PATCH_FILE}],
    }


def write_bundle(
    service: str,
    namespace: str,
    out_dir: Path,
    *,
    extra_services: Sequence[str] = (),
    days: int = 365,
    ca_days: int = 3650,
    reuse_ca: bool = True,
) -> CertBundle:
    """Write a CA, a serving certificate and a kustomize Component into ``out_dir``.

    Files: ``ca.crt``, ``ca.key`` (0600), ``tls.crt``, ``tls.key`` (0600),
    ``webhook-cabundle-patch.yaml`` and ``kustomization.yaml`` (a Component with a
    secretGenerator for ``machine-catalog-tls`` and the patch). The serving certificate
    covers ``<svc>``, ``<svc>.<ns>``, ``<svc>.<ns>.svc`` and ``<svc>.<ns>.svc.cluster.local``
    for ``service`` and every ``extra_services`` entry (the manifests need both
    ``machine-catalog-webhook`` and ``machine-catalog-extender``).

    With ``reuse_ca`` (the default) a valid CA already in ``out_dir`` is kept, so running
    this again to renew the serving certificate leaves the caBundle unchanged: the API
    server and kube-scheduler keep trusting old and new server pods during the rollout.
    ``ca.key`` is needed only for that; store it with the other secrets or delete it.
    """
    names: list[str] = []
    for svc in (service, *extra_services):  # checked before anything is written
        names += service_dns_names(svc, namespace)
    dns_names = tuple(_unique(names))
    out_dir = Path(out_dir)
    out_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    now = _now()
    wanted_until = now + dt.timedelta(days=days)
    ca = _reusable_ca(out_dir, wanted_until) if reuse_ca else None
    ca_created = ca is None
    if ca is None:
        ca = make_ca(days=max(ca_days, days + 1), now=now)
    serving = issue_serving_cert(ca.cert_pem, ca.key_pem, dns_names, days=days, now=now)
    not_after = x509.load_pem_x509_certificate(serving.cert_pem).not_valid_after_utc

    bundle = CertBundle(
        out_dir=out_dir,
        ca_cert=out_dir / CA_CERT_FILE,
        ca_key=out_dir / CA_KEY_FILE,
        tls_cert=out_dir / TLS_CERT_FILE,
        tls_key=out_dir / TLS_KEY_FILE,
        patch=out_dir / PATCH_FILE,
        kustomization=out_dir / KUSTOMIZATION_FILE,
        ca_pem=ca.cert_pem,
        dns_names=dns_names,
        not_after=not_after,
        ca_created=ca_created,
    )
    header = (
        f"# Written by `machine-catalog certs` for {', '.join((service, *extra_services))} "
        f"in namespace {namespace}; serving certificate valid until "
        f"{not_after:%Y-%m-%d}.\n"
    )
    _write(bundle.ca_key, ca.key_pem, 0o600)
    _write(bundle.ca_cert, ca.cert_pem, 0o644)
    _write(bundle.tls_key, serving.key_pem, 0o600)
    _write(bundle.tls_cert, serving.cert_pem, 0o644)
    _write(bundle.patch, _yaml(header, cabundle_patch(ca.cert_pem)), 0o644)
    _write(bundle.kustomization, _yaml(header, component_kustomization(namespace)), 0o644)
    return bundle


def _yaml(header: str, data: dict) -> bytes:
    return (header + yaml.safe_dump(data, sort_keys=False, width=4096)).encode()
