"""TLS for the embedded cluster: a certificate authority per project, made at ``balsam init``,
and a server certificate it signs at every start, naming this host's names and addresses.

The CA key and the server key stay in ``balsamdb/`` (0600); the CA certificate is published as
``server-ca.pem`` (control zone), against which every client verifies the server
(``sslmode=verify-full``), so a password is never sent to a server the project did not start.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import socket
import struct
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from balsam.zones import CA_CERT, write_new

CA_KEY = "ca.key"
SERVER_KEY = "server.key"
SERVER_CERT = "server.crt"
#: Validity: the CA outlives any server certificate it signs (a new one at every start).
CA_YEARS = 30
SERVER_YEARS = 10

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def make_ca(label: str, now: datetime) -> tuple[bytes, bytes]:
    """A new CA: ``(key PEM, certificate PEM)``. Pure apart from the randomness."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"balsam project CA {label}")
    cert = (x509.CertificateBuilder()
            .subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(now + timedelta(days=365 * CA_YEARS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False,
                                         key_encipherment=False, data_encipherment=False,
                                         key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()),
                           critical=False)
            .sign(key, hashes.SHA256()))
    return _pem_key(key), cert.public_bytes(serialization.Encoding.PEM)


def make_server_cert(ca_key_pem: bytes, ca_cert_pem: bytes, names: Iterable[str],
                     addresses: Iterable[IPAddress], now: datetime) -> tuple[bytes, bytes]:
    """A server key and certificate signed by the CA, valid for ``names`` and ``addresses``."""
    ca_key = serialization.load_pem_private_key(ca_key_pem, password=None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    ca_cert = x509.load_pem_x509_certificate(ca_cert_pem)
    key = ec.generate_private_key(ec.SECP256R1())
    dns = list(dict.fromkeys(names))
    alt: list[x509.GeneralName] = [x509.DNSName(n) for n in dns]
    alt += [x509.IPAddress(a) for a in dict.fromkeys(addresses)]
    cert = (x509.CertificateBuilder()
            .subject_name(_name(dns[0] if dns else "localhost"))
            .issuer_name(ca_cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - timedelta(hours=1))
            .not_valid_after(min(now + timedelta(days=365 * SERVER_YEARS),
                                 ca_cert.not_valid_after_utc))
            .add_extension(x509.SubjectAlternativeName(alt), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    return _pem_key(key), cert.public_bytes(serialization.Encoding.PEM)


# --- this host ---------------------------------------------------------------------------------


def host_names() -> list[str]:
    """The names clients may use for this host: its name, its fully qualified name, localhost."""
    names = [socket.gethostname(), socket.getfqdn(), "localhost"]
    return [n for n in dict.fromkeys(names) if n]


def host_addresses() -> list[IPAddress]:
    """Loopback, the addresses this host's names resolve to and its interfaces' addresses."""
    found: list[IPAddress] = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1")]
    for name in host_names()[:2]:
        with contextlib.suppress(OSError):
            for *_, sockaddr in socket.getaddrinfo(name, None):
                found.append(ipaddress.ip_address(str(sockaddr[0]).split("%")[0]))
    found += _interface_addresses()
    return list(dict.fromkeys(found))


def _interface_addresses() -> list[IPAddress]:
    """IPv4 addresses of the interfaces (SIOCGIFADDR) and IPv6 ones (``/proc/net/if_inet6``)."""
    found: list[IPAddress] = []
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for _, name in socket.if_nameindex():
            request = struct.pack("256s", name.encode()[:15])
            with contextlib.suppress(OSError):
                reply = fcntl.ioctl(s.fileno(), 0x8915, request)  # SIOCGIFADDR
                found.append(ipaddress.IPv4Address(reply[20:24]))
    with contextlib.suppress(OSError):
        for line in Path("/proc/net/if_inet6").read_text().splitlines():
            address = ipaddress.IPv6Address(bytes.fromhex(line.split()[0]))
            if not address.is_link_local:  # needs a scope id to be of use
                found.append(address)
    return found


# --- files -------------------------------------------------------------------------------------


def create_ca(db_dir: Path, label: str) -> bytes:
    """Make the project CA in ``db_dir``; return its certificate (to publish)."""
    key, cert = make_ca(label, datetime.now(UTC))
    write_new(db_dir / CA_KEY, key, 0o600)
    write_new(db_dir / CA_CERT, cert, 0o600)
    return cert


def issue_server_cert(db_dir: Path) -> None:
    """Give the server a new key and a certificate for this host, signed by the project CA
    (``server.key`` and ``server.crt`` in the data directory, named relative to it)."""
    key, cert = make_server_cert((db_dir / CA_KEY).read_bytes(), (db_dir / CA_CERT).read_bytes(),
                                 host_names(), host_addresses(), datetime.now(UTC))
    write_new(db_dir / SERVER_KEY, key, 0o600)
    write_new(db_dir / SERVER_CERT, cert, 0o600)
