"""The project CA and the server certificates it signs: what a verify-full client checks."""

from __future__ import annotations

import ipaddress
import socket
from datetime import UTC, datetime, timedelta

import pytest
from cryptography import x509
from cryptography.x509 import verification

from balsam_pgserver import tls

NOW = datetime.now(UTC)
NAMES = ["login1.example.org", "login1", "localhost"]
ADDRESSES = [ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("10.1.2.3"),
             ipaddress.ip_address("::1")]


@pytest.fixture(scope="module")
def chain():
    ca_key, ca_cert = tls.make_ca("test", NOW)
    _, server_cert = tls.make_server_cert(ca_key, ca_cert, NAMES, ADDRESSES, NOW)
    return x509.load_pem_x509_certificate(ca_cert), x509.load_pem_x509_certificate(server_cert)


def verify(chain, subject: verification.Subject, roots=None) -> None:
    ca, server = chain
    store = verification.Store(roots or [ca])
    verifier = verification.PolicyBuilder().store(store).time(NOW).build_server_verifier(subject)
    verifier.verify(server, [])


@pytest.mark.parametrize("subject", [
    verification.DNSName("login1.example.org"), verification.DNSName("login1"),
    verification.DNSName("localhost"), verification.IPAddress(ipaddress.ip_address("10.1.2.3")),
    verification.IPAddress(ipaddress.ip_address("127.0.0.1")),
])
def test_the_server_certificate_names_every_name_and_address(chain, subject):
    verify(chain, subject)


def test_another_name_or_another_ca_is_refused(chain):
    with pytest.raises(verification.VerificationError):
        verify(chain, verification.DNSName("impostor.example.org"))
    other_ca = x509.load_pem_x509_certificate(tls.make_ca("other", NOW)[1])
    with pytest.raises(verification.VerificationError):
        verify(chain, verification.DNSName("login1"), roots=[other_ca])


def test_the_ca_outlives_its_server_certificates(chain):
    ca, server = chain
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert server.not_valid_after_utc <= ca.not_valid_after_utc
    assert server.not_valid_after_utc - NOW > timedelta(days=365)


def test_this_hosts_names_and_addresses():
    assert socket.gethostname() in tls.host_names() and "localhost" in tls.host_names()
    addresses = tls.host_addresses()
    assert ipaddress.ip_address("127.0.0.1") in addresses
    assert all(not a.is_link_local for a in addresses)
