"""A private CA and one server certificate for NATS, made in memory with `cryptography`.

Why a private CA: a deployment's NATS is reached by names only it knows (``nats`` in compose,
``nats.<namespace>.svc`` on Kubernetes), so no public CA can sign for them; the clients trust
the generated ``ca.pem`` instead (``AUTELLIX_NATS_CA_FILE``). The CA's private key is not kept:
nobody can sign a second server with it, and new certificates come from a new generation (every
party then needs the new ``ca.pem``, which `autellix secrets generate --force` writes with them).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # imported when used: only `autellix secrets generate` needs cryptography
    from cryptography import x509

__all__ = ["DEFAULT_HOSTS", "TlsMaterial", "make_server_tls"]

#: compose's service name and this machine: what `autellix secrets generate` signs for by default
DEFAULT_HOSTS = ("nats", "localhost", "127.0.0.1")
_VALID_DAYS = 825  # the longest validity Apple's TLS clients accept for a server certificate


@dataclass(frozen=True)
class TlsMaterial:
    """PEM texts: the CA certificate (for clients) and the server's certificate and key."""

    ca_cert: str
    server_cert: str
    server_key: str


def _san(host: str) -> x509.GeneralName:
    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        if not host or any(c.isspace() for c in host) or "/" in host:
            raise ValueError(f"not a host name or IP address: {host!r}") from None
        return x509.DNSName(host)


def _ca_key_usage() -> x509.KeyUsage:
    """A CA's key signs certificates (and revocation lists), nothing else."""
    from cryptography import x509

    flags = dict.fromkeys(
        ("digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
         "key_agreement", "encipher_only", "decipher_only"),
        False,
    )  # fmt: skip
    return x509.KeyUsage(key_cert_sign=True, crl_sign=True, **flags)


def make_server_tls(hosts: tuple[str, ...] | list[str] = DEFAULT_HOSTS) -> TlsMaterial:
    """A new CA and a server certificate it signed, valid for every name and IP in `hosts`
    (subject alternative names; the first is also the common name)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    if not hosts:
        raise ValueError("a server certificate needs at least one host name")
    sans = [_san(h) for h in hosts]
    now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)  # tolerate clock skew
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "autellix NATS CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_ca_key_usage(), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hosts[0])]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + dt.timedelta(days=_VALID_DAYS))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    return TlsMaterial(
        ca_cert=ca.public_bytes(pem).decode(),
        server_cert=cert.public_bytes(pem).decode(),
        server_key=key.private_bytes(
            pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        ).decode(),
    )
