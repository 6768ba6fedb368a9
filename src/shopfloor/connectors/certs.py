"""OPC UA application instance certificates (self-signed, OPC 10000-6 §6.2.2 profile).

An OPC UA application proves its identity on a secure channel with an *application
instance certificate* whose subjectAltName carries the application URI; the client's
``application_uri`` must equal it, and the server must trust the certificate (copy the
``.der`` file into the server's trusted-certificates folder).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from dataclasses import dataclass
from pathlib import Path

from asyncua.crypto import cert_gen
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from cryptography.x509.oid import ExtendedKeyUsageOID

from shopfloor.errors import ConfigError

__all__ = ["CertificateFiles", "create_certificate"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


@dataclass(frozen=True, slots=True)
class CertificateFiles:
    """Where :func:`create_certificate` wrote the pair."""

    certificate: Path
    """The certificate, DER encoded (what OPC UA servers and clients exchange)."""
    certificate_pem: Path
    """The same certificate, PEM encoded (for tools that want PEM)."""
    private_key: Path
    """The RSA private key, PEM (PKCS#8, not encrypted: protect the file)."""


def create_certificate(
    name: str,
    uri: str,
    out_dir: Path | str,
    *,
    hostnames: list[str] | None = None,
    days: int = 365 * 2,
    overwrite: bool = False,
) -> CertificateFiles:
    """Create a self-signed application instance certificate and its private key.

    Writes ``NAME.der``, ``NAME.pem`` and ``NAME.key.pem`` into ``out_dir``. The
    subjectAltName holds ``uri`` (the application URI), the host names (default: this
    machine's host name and ``localhost``) and 127.0.0.1. The certificate may be used by
    clients and servers alike. Raises :class:`~shopfloor.errors.ConfigError` on a bad name
    or URI, or when the files exist and ``overwrite`` is false.
    """
    if not _NAME.match(name):
        raise ConfigError(f"certificate name {name!r}: use letters, digits, '.', '_' or '-'")
    if ":" not in uri:
        raise ConfigError(f"application URI {uri!r} is not a URI (e.g. urn:acme:shopfloor:edge-1)")
    if days <= 0:
        raise ConfigError(f"days must be positive, got {days}")
    out = Path(out_dir)
    files = CertificateFiles(
        certificate=out / f"{name}.der",
        certificate_pem=out / f"{name}.pem",
        private_key=out / f"{name}.key.pem",
    )
    existing = [p for p in (files.certificate, files.private_key) if p.exists()]
    if existing and not overwrite:
        raise ConfigError(f"{existing[0]} exists; pass overwrite=True (--force) to replace it")
    hosts = hostnames if hostnames is not None else [socket.gethostname(), "localhost"]
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(uri)]
    sans += [x509.DNSName(h) for h in dict.fromkeys(hosts)]
    sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    key = cert_gen.generate_private_key()
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        name,
        {},
        sans,
        extended=[ExtendedKeyUsageOID.CLIENT_AUTH, ExtendedKeyUsageOID.SERVER_AUTH],
        days=days,
    )
    out.mkdir(parents=True, exist_ok=True)
    files.private_key.write_bytes(cert_gen.dump_private_key_as_pem(key))
    files.private_key.chmod(0o600)
    files.certificate.write_bytes(cert.public_bytes(Encoding.DER))
    files.certificate_pem.write_bytes(cert.public_bytes(Encoding.PEM))
    return files
