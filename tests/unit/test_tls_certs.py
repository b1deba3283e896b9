"""The generated NATS certificate is what a TLS client checks, and bad input is a ValueError.

`make_server_tls` output is verified by Python's own TLS stack (a client context trusting only
the generated CA accepts the server certificate for each of its names and refuses others, in a
real in-memory handshake); host names and CA files from users are fuzzed: each is either usable
or a ValueError naming it, never another exception.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autellix.local.tls_certs import DEFAULT_HOSTS, make_server_tls
from autellix.runtime.nats_auth import ENV_NATS_CA_FILE, connect_options, tls_context


def _handshake(material_dir: Path, server_name: str, ca: Path) -> None:
    """A TLS handshake in memory: the server side holds the generated certificate, the client
    side trusts only `ca` and expects `server_name`."""
    server_ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_ctx.load_cert_chain(material_dir / "server-cert.pem", material_dir / "server-key.pem")
    client_ctx = tls_context(ca)
    c_in, c_out, s_in, s_out = (ssl.MemoryBIO() for _ in range(4))
    client = client_ctx.wrap_bio(c_in, c_out, server_hostname=server_name)
    server = server_ctx.wrap_bio(s_in, s_out, server_side=True)
    for _ in range(10):
        done = True
        for side, out, peer_in in ((client, c_out, s_in), (server, s_out, c_in)):
            try:
                side.do_handshake()
            except ssl.SSLWantReadError:
                done = False
            peer_in.write(out.read())
        if done:
            return
    raise AssertionError("handshake did not finish")


@pytest.fixture(scope="module")
def material(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("tls")
    tls = make_server_tls(DEFAULT_HOSTS)
    (d / "ca.pem").write_text(tls.ca_cert)
    (d / "server-cert.pem").write_text(tls.server_cert)
    (d / "server-key.pem").write_text(tls.server_key)
    other = make_server_tls(("nats",))
    (d / "other-ca.pem").write_text(other.ca_cert)
    return d


@pytest.mark.parametrize("name", DEFAULT_HOSTS)
def test_the_certificate_is_trusted_for_each_of_its_names(material: Path, name: str) -> None:
    _handshake(material, name, material / "ca.pem")


def test_another_name_or_another_ca_is_refused(material: Path) -> None:
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(material, "evil.example", material / "ca.pem")
    with pytest.raises(ssl.SSLCertVerificationError):
        _handshake(material, "nats", material / "other-ca.pem")


def test_connect_options_take_the_ca_from_the_environment(material: Path, tmp_path: Path) -> None:
    opts = connect_options(env={ENV_NATS_CA_FILE: str(material / "ca.pem")})
    assert isinstance(opts["tls"], ssl.SSLContext) and opts["tls"].check_hostname
    assert "tls" not in connect_options(env={})
    for bad in (tmp_path / "missing.pem", material / "server-key.pem"):
        with pytest.raises(ValueError, match="unusable NATS CA file"):
            connect_options(env={ENV_NATS_CA_FILE: str(bad)})


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.text(max_size=40), min_size=0, max_size=3))
def test_any_host_list_gives_a_certificate_or_a_value_error(hosts: list[str]) -> None:
    try:
        tls = make_server_tls(hosts)
    except ValueError:
        return
    assert tls.server_cert.startswith("-----BEGIN CERTIFICATE-----")


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.binary(max_size=2000))
def test_any_ca_file_is_usable_or_a_value_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "ca.pem"
    path.write_bytes(content)
    try:
        tls_context(path)
    except ValueError as exc:
        assert str(path) in str(exc)
