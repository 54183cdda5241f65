"""TLS and mutual TLS on HTTP and gRPC, where the connections are (the service alone, or its fronts), with
a certificate authority this test makes (docs/auth.md)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from tritonclient.grpc import service_pb2 as pb
from tritonclient.grpc import service_pb2_grpc

from tests.live import Server, free_port, start_service, stop_service
from tests.service.conftest import FashionSample, Zoo


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write(path: Path, key: ec.EllipticCurvePrivateKey, cert: x509.Certificate) -> tuple[Path, Path]:
    cert_path, key_path = path.with_suffix(".crt"), path.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


def make_pki(root: Path) -> Pki:
    """A CA, a certificate for 127.0.0.1 and localhost signed by it, and a client certificate."""
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("convzoo test CA"))
        .issuer_name(_name("convzoo test CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
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
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    ca_path, _ = _write(root / "ca", ca_key, ca)

    def leaf(common: str, usage: x509.ObjectIdentifier, names: list[x509.GeneralName]) -> tuple[Path, Path]:
        key = ec.generate_private_key(ec.SECP256R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(_name(common))
            .issuer_name(ca.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return _write(root / common, key, builder.sign(ca_key, hashes.SHA256()))

    server_cert, server_key = leaf(
        "server",
        ExtendedKeyUsageOID.SERVER_AUTH,
        [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client_cert, client_key = leaf("client", ExtendedKeyUsageOID.CLIENT_AUTH, [])
    return Pki(ca_path, server_cert, server_key, client_cert, client_key)


@dataclass
class Live:
    server: Server
    grpc_url: str
    pki: Pki
    mutual: bool


# (front processes, mutual TLS): TLS alone in one layout, mutual TLS in the other
CASES = [("0", False), ("2", True)]


@pytest.fixture(scope="module", params=CASES, ids=[f"fronts={f}-{'mtls' if m else 'tls'}" for f, m in CASES])
def live(
    request: pytest.FixtureRequest, source_zoo: Zoo, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Live]:
    fronts, mutual = request.param
    root = tmp_path_factory.mktemp("tls")
    pki = make_pki(root)
    grpc_port = free_port()
    env = {
        "CONVZOO_FRONT_PROCESSES": fronts,
        "CONVZOO_GRPC_PORT": str(grpc_port),
        "CONVZOO_TLS_CERT_FILE": str(pki.server_cert),
        "CONVZOO_TLS_KEY_FILE": str(pki.server_key),
    }
    if mutual:
        env["CONVZOO_TLS_CLIENT_CA_FILE"] = str(pki.ca)
    probe = {"verify": _context(pki, client=mutual)}
    server = start_service(
        registry_path=source_zoo.registry_path,
        models_dir=source_zoo.models_dir,
        log_path=root / "server.log",
        env=env,
        probe="/health/live",
        scheme="https",
        probe_options=probe,
    )
    try:
        yield Live(server, f"127.0.0.1:{grpc_port}", pki, mutual)
    finally:
        stop_service(server)


def _context(pki: Pki, *, client: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(pki.ca))
    if client:
        context.load_cert_chain(str(pki.client_cert), str(pki.client_key))
    return context


def test_https_with_the_ca_classifies(live: Live, fashion: FashionSample) -> None:
    with httpx.Client(
        base_url=live.server.url, verify=_context(live.pki, client=live.mutual), timeout=30
    ) as c:
        r = c.post("/classify", content=fashion.png(0), headers={"content-type": "image/png"})
    assert r.status_code == 200, r.text
    assert "https://" in live.server.log()  # the start-up line says so


def test_plain_http_and_an_unknown_ca_fail(live: Live) -> None:
    with pytest.raises(httpx.TransportError):
        httpx.get(live.server.url.replace("https://", "http://") + "/health/live", timeout=5)
    with pytest.raises(httpx.ConnectError):  # the client does not trust an unknown server
        httpx.get(live.server.url + "/health/live", timeout=5, verify=ssl.create_default_context())


def test_mutual_tls_refuses_a_client_without_a_certificate(live: Live) -> None:
    if not live.mutual:
        pytest.skip("TLS without a client CA takes any client")
    with pytest.raises(httpx.TransportError):
        httpx.get(live.server.url + "/health/live", timeout=5, verify=_context(live.pki, client=False))


def _grpc_live(live: Live, *, client_cert: bool) -> grpc.StatusCode:
    pki = live.pki
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki.ca.read_bytes(),
        private_key=pki.client_key.read_bytes() if client_cert else None,
        certificate_chain=pki.client_cert.read_bytes() if client_cert else None,
    )
    with grpc.secure_channel(live.grpc_url, credentials) as channel:
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        try:
            assert stub.ServerLive(pb.ServerLiveRequest(), timeout=10).live
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def test_grpc_over_tls(live: Live) -> None:
    assert _grpc_live(live, client_cert=True) == grpc.StatusCode.OK
    with grpc.insecure_channel(live.grpc_url) as channel:  # plain text to a TLS port
        stub = service_pb2_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.ServerLive(pb.ServerLiveRequest(), timeout=5)
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    if live.mutual:
        assert _grpc_live(live, client_cert=False) == grpc.StatusCode.UNAVAILABLE
