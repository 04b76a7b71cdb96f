"""TLS material for a deployed federation: a private CA and a server certificate signed by it.

The SuperLink presents ``server.crt``; every SuperNode (and ``flwr run``) trusts only ``ca.crt``,
so a node without that CA certificate cannot talk to the server. The certificate names the
hosts and IPs the SuperLink is reached by (subject alternative names): TLS clients check them.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from fedrobust.errors import FedrobustError


@dataclass(frozen=True)
class CertificateFiles:
    """Where ``write_certificates`` put each file."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path

    def all(self) -> list[Path]:
        return [self.ca_cert, self.ca_key, self.server_cert, self.server_key]


def certificate_files(folder: Path) -> CertificateFiles:
    folder = Path(folder)
    return CertificateFiles(folder / "ca.crt", folder / "ca.key", folder / "server.crt", folder / "server.key")


def _subject_names(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        host = host.strip()
        if not host:
            continue
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            if any(c in host for c in " /:@"):
                raise FedrobustError(f"--host {host!r} is neither an IP address nor a host name; "
                                     f"pass e.g. --host 127.0.0.1 --host server.hospital.org") from None
            names.append(x509.DNSName(host))
    if not names:
        raise FedrobustError("no host given for the server certificate; pass --host NAME_OR_IP (repeatable)")
    return names


def _write_private(path: Path, data: bytes) -> None:
    """Private keys are readable by their owner only, from the first byte on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def write_certificates(folder: Path, hosts: list[str], days: int = 365, force: bool = False) -> CertificateFiles:
    """Create ``ca.crt``/``ca.key`` and ``server.crt``/``server.key`` (valid for ``hosts``) in ``folder``.

    Refuses to overwrite existing files unless ``force``: replacing a CA locks out every node
    that trusts the old one. Files are written to a temporary name first, so a failure leaves
    no half-set of certificates behind.
    """
    if days < 1:
        raise FedrobustError(f"--days must be >= 1, got {days}")
    names = _subject_names(hosts)
    files = certificate_files(folder)
    existing = [p for p in files.all() if p.exists()]
    if existing and not force:
        raise FedrobustError(f"{existing[0]} already exists; pass --force to replace the certificates "
                             f"(every node must then get the new ca.crt)")
    folder.mkdir(parents=True, exist_ok=True)

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP384R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedrobust"),
                         x509.NameAttribute(NameOID.COMMON_NAME, "fedrobust federation CA")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    server_key = ec.generate_private_key(ec.SECP384R1())
    first = names[0].value
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "fedrobust"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, str(first))]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA384())
    )
    contents = {
        files.ca_cert: (ca_cert.public_bytes(serialization.Encoding.PEM), False),
        files.ca_key: (_pem_key(ca_key), True),
        files.server_cert: (server_cert.public_bytes(serialization.Encoding.PEM), False),
        files.server_key: (_pem_key(server_key), True),
    }
    staged = []
    try:
        for path, (data, private) in contents.items():
            tmp = path.with_name(f".{path.name}.tmp")
            tmp.unlink(missing_ok=True)
            if private:
                _write_private(tmp, data)
            else:
                tmp.write_bytes(data)
            staged.append((tmp, path))
        for tmp, path in staged:
            tmp.replace(path)
    finally:
        for tmp, _ in staged:
            tmp.unlink(missing_ok=True)
    return files


def certificate_hosts(cert: Path) -> list[str]:
    """The host names and IPs a certificate is valid for (to explain a name mismatch)."""
    parsed = x509.load_pem_x509_certificate(Path(cert).read_bytes())
    san = parsed.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    return [str(v) for v in san.get_values_for_type(x509.DNSName)] + [
        str(v) for v in san.get_values_for_type(x509.IPAddress)]


def check_certificate(path: Path, flag: str) -> None:
    """Refuse, in one line, a ``flag`` file that is missing or holds no PEM certificate, before Flower
    meets it (Flower's SuperNode dies of an ``ssl.SSLError`` traceback in a thread and hangs)."""
    path = Path(path)
    if not path.is_file():
        raise FedrobustError(f"{flag} {path} is missing; copy the federation's ca.crt from the server")
    try:
        x509.load_pem_x509_certificate(path.read_bytes())
    except ValueError:
        raise FedrobustError(f"{flag} {path} is not a PEM certificate; pass the ca.crt that "
                             f"`fedrobust deploy certs` wrote on the server") from None
