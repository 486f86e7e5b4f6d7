"""TLS of the receiver, with certificates made here: settings checks, `responder serve` on
HTTPS (and the CLI calling it), mutual TLS, and a real Alertmanager delivering over HTTPS."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
import yaml
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from responder.cli.server import print_banner
from responder.exceptions import ConfigError
from responder.runtime.service import Service
from responder.settings import Settings, load_settings
from tests import servers
from tests.helpers import ROOT, fixture_body, free_port, make_settings, wait_for

TOKEN = "tls-test-token"
JSON = {"content-type": "application/json"}


@dataclass(frozen=True)
class Pki:
    """A CA, a server certificate for 127.0.0.1 and localhost, and a client certificate."""

    ca: Path
    cert: Path
    key: Path
    client_cert: Path
    client_key: Path
    other_key: Path  # a valid key that belongs to no certificate here

    def trust(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.ca))

    def client(self) -> ssl.SSLContext:
        context = self.trust()
        context.load_cert_chain(self.client_cert, self.client_key)
        return context


def _key(path: Path) -> ec.EllipticCurvePrivateKey:
    key = ec.generate_private_key(ec.SECP256R1())
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return key


def _issue(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
    sans: list[x509.GeneralName] | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
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
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(*certs: x509.Certificate) -> bytes:
    return b"".join(c.public_bytes(serialization.Encoding.PEM) for c in certs)


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    base = tmp_path_factory.mktemp("pki")
    ca_key = _key(base / "ca.key")
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Responder test CA")])
    ca = _issue("Responder test CA", ca_key, ca_name, ca_key, ca=True)
    (base / "ca.pem").write_bytes(_pem(ca))
    server_key = _key(base / "server.key")
    server = _issue(
        "responder",
        server_key,
        ca_name,
        ca_key,
        usage=ExtendedKeyUsageOID.SERVER_AUTH,
        sans=[x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")],
    )
    (base / "server.pem").write_bytes(_pem(server, ca))  # the chain, as operators deploy it
    client_key = _key(base / "client.key")
    client = _issue(
        "alertmanager", client_key, ca_name, ca_key, usage=ExtendedKeyUsageOID.CLIENT_AUTH
    )
    (base / "client.pem").write_bytes(_pem(client))
    _key(base / "other.key")
    return Pki(
        base / "ca.pem",
        base / "server.pem",
        base / "server.key",
        base / "client.pem",
        base / "client.key",
        base / "other.key",
    )


# --- settings -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"tls_certfile": "cert"}, "tls_certfile and tls_keyfile must be set together"),
        ({"tls_keyfile": "key"}, "tls_certfile and tls_keyfile must be set together"),
        (
            {"tls_certfile": "missing", "tls_keyfile": "key"},
            "field tls_certfile value '{missing}': cannot read",
        ),
        (
            {"tls_certfile": "cert", "tls_keyfile": "directory"},
            "field tls_keyfile value '{directory}': cannot read",
        ),
        ({"tls_certfile": "cert", "tls_keyfile": "other_key"}, "do not load as a PEM"),
        ({"tls_certfile": "key", "tls_keyfile": "key"}, "do not load as a PEM"),
        ({"tls_client_ca_file": "ca"}, "tls_client_ca_file (mutual TLS) needs tls_certfile"),
        (
            {"tls_certfile": "cert", "tls_keyfile": "key", "tls_client_ca_file": "key"},
            "does not load as PEM CA certificates",
        ),
        (
            {"tls_client_ca_file": "missing"},
            "field tls_client_ca_file value '{missing}': cannot read",
        ),
    ],
)
def test_tls_settings_name_what_is_wrong(
    pki: Pki, tmp_path: Path, files: dict[str, str], expected: str
) -> None:
    paths = {
        "cert": pki.cert,
        "key": pki.key,
        "ca": pki.ca,
        "other_key": pki.other_key,
        "missing": tmp_path / "nowhere.pem",
        "directory": tmp_path,
    }
    config = tmp_path / "responder.yaml"
    config.write_text(f"data_dir: {tmp_path / 'data'}\n")
    with pytest.raises(ConfigError) as info:
        load_settings(config, **{field: paths[name] for field, name in files.items()})
    assert expected.format(**paths) in str(info.value)


def test_tls_settings_come_from_the_environment(
    pki: Pki, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RESPONDER_TLS_CERTFILE", str(pki.cert))
    monkeypatch.setenv("RESPONDER_TLS_KEYFILE", str(pki.key))
    monkeypatch.setenv("RESPONDER_TLS_CLIENT_CA_FILE", str(pki.ca))
    config = tmp_path / "responder.yaml"
    config.write_text("port: 9555\n")
    settings = load_settings(config)
    assert settings.tls_enabled
    assert settings.tls_client_ca_file == pki.ca
    assert settings.webhook_url == "https://127.0.0.1:9555/webhook/alertmanager"


def _banner_yaml(settings: Settings, capsys: pytest.CaptureFixture[str]) -> dict[str, Any]:
    service = SimpleNamespace(book=SimpleNamespace(rules=[]), dispatcher=None)
    print_banner(settings, service)
    out = capsys.readouterr().out
    snippet = out.split("Paste into alertmanager.yml:")[1].split("Press Ctrl-C")[0]
    [receiver] = yaml.safe_load(snippet)["receivers"]
    [webhook] = receiver["webhook_configs"]
    return dict(webhook)


def test_the_banner_gives_an_https_webhook_config(
    pki: Pki, tmp_path: Path, rules_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    plain = make_settings(tmp_path, rules_dir, port=9556, bearer_token=TOKEN)
    webhook = _banner_yaml(plain, capsys)
    assert webhook["url"] == "http://127.0.0.1:9556/webhook/alertmanager"
    assert webhook["http_config"] == {"authorization": {"credentials": "<your bearer token>"}}

    secure = make_settings(
        tmp_path,
        rules_dir,
        port=9556,
        bearer_token=TOKEN,
        tls_certfile=pki.cert,
        tls_keyfile=pki.key,
    )
    webhook = _banner_yaml(secure, capsys)
    assert webhook["url"] == "https://127.0.0.1:9556/webhook/alertmanager"
    assert set(webhook["http_config"]) == {"authorization", "tls_config"}
    assert set(webhook["http_config"]["tls_config"]) == {"ca_file"}

    mutual = make_settings(
        tmp_path,
        rules_dir,
        basic_username="am",
        basic_password="pw",
        tls_certfile=pki.cert,
        tls_keyfile=pki.key,
        tls_client_ca_file=pki.ca,
    )
    webhook = _banner_yaml(mutual, capsys)
    assert webhook["http_config"]["basic_auth"]["username"] == "am"
    assert set(webhook["http_config"]["tls_config"]) == {"ca_file", "cert_file", "key_file"}


# --- a real `responder serve` ---------------------------------------------------------


def _responder(args: list[str], env: dict[str, str], **kwargs: Any) -> Any:
    return subprocess.run(
        [sys.executable, "-m", "responder", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        **kwargs,
    )


def test_serve_over_https_refuses_plain_http_and_the_cli_follows(
    pki: Pki, tmp_path: Path, rules_dir: Path
) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "RESPONDER_"))}
    env.update(
        RESPONDER_PORT=str(port),
        RESPONDER_DATA_DIR=str(tmp_path / "data"),
        RESPONDER_RULES_DIR=str(rules_dir),
        RESPONDER_SERVICES_FILE=str(tmp_path / "services.yaml"),
        RESPONDER_BEARER_TOKEN=TOKEN,
        RESPONDER_TLS_CERTFILE=str(pki.cert),
        RESPONDER_TLS_KEYFILE=str(pki.key),
    )
    log = tmp_path / "serve.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "responder", "serve"],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    https, http = f"https://127.0.0.1:{port}", f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(f"{https}/healthz", verify=pki.trust(), timeout=2).is_success:
                    break
            except httpx.TransportError:
                pass
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)

        assert httpx.get(f"{https}/healthz", verify=pki.trust()).json() == {"status": "ok"}
        with pytest.raises(httpx.TransportError):
            httpx.get(f"{http}/healthz", timeout=5)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"{https}/healthz", verify=ssl.create_default_context(), timeout=5)

        response = httpx.post(
            f"{https}/webhook/alertmanager",
            content=fixture_body("firing_single_servicedown"),
            headers={**JSON, "authorization": f"Bearer {TOKEN}"},
            verify=pki.trust(),
        )
        assert response.status_code == 200, response.text

        # The CLI reads the same settings, calls https:// and trusts the server's certificate.
        deadline = time.monotonic() + 30
        while "restart-crashed-service" not in (shown := _responder(["decisions"], env)).stdout:
            assert time.monotonic() < deadline, shown.stdout + shown.stderr
            time.sleep(0.2)
        assert shown.returncode == 0, shown.stderr
    finally:
        servers.stop(process)


# --- in-process: mutual TLS, and a real Alertmanager ----------------------------------


@pytest.fixture
async def https_server(
    pki: Pki, tmp_path: Path, rules_dir: Path, request: pytest.FixtureRequest
) -> AsyncIterator[tuple[str, Service]]:
    """`_http_server` (what `serve` and `up` run) on a free port, with TLS; mutual TLS when
    the test is parametrized with `mutual=True`."""
    mutual = getattr(request, "param", False)
    settings = make_settings(
        tmp_path,
        rules_dir,
        port=free_port(),
        bearer_token=TOKEN,
        tls_certfile=pki.cert,
        tls_keyfile=pki.key,
        tls_client_ca_file=pki.ca if mutual else None,
    )
    service = Service(settings, prefect_api_url=None)
    server, task = await servers.serve_in_process(settings, service)
    yield settings.base_url, service
    server.should_exit = True
    await task


@pytest.mark.parametrize("https_server", [True], indirect=True, ids=["mutual"])
async def test_mutual_tls_requires_a_client_certificate(
    pki: Pki, https_server: tuple[str, Service]
) -> None:
    base, _ = https_server
    async with httpx.AsyncClient(verify=pki.client()) as http:
        assert (await http.get(f"{base}/healthz")).status_code == 200
    async with httpx.AsyncClient(verify=pki.trust()) as http:
        # TLS 1.3 reports the missing certificate after the handshake, on the first read.
        with pytest.raises(httpx.TransportError):
            await http.get(f"{base}/healthz")


@pytest.fixture
def alertmanager_over_https(
    pki: Pki, https_server: tuple[str, Service], tmp_path: Path, request: pytest.FixtureRequest
) -> Iterator[str]:
    base, _ = https_server
    client_files = (
        f"\n            cert_file: {pki.client_cert}\n            key_file: {pki.client_key}"
        if getattr(request, "param", False)
        else ""
    )
    config = f"""
route:
  receiver: responder
  group_by: [alertname]
  group_wait: 1s
  group_interval: 2s
  repeat_interval: 1h
receivers:
  - name: responder
    webhook_configs:
      - url: {base}/webhook/alertmanager
        send_resolved: true
        http_config:
          authorization:
            credentials: {TOKEN}
          tls_config:
            ca_file: {pki.ca}{client_files}
"""
    with servers.alertmanager(tmp_path, free_port(), config) as url:
        yield url


@pytest.mark.alertmanager
@pytest.mark.parametrize(
    ("https_server", "alertmanager_over_https"),
    [(False, False), (True, True)],
    indirect=True,
    ids=["tls", "mutual-tls"],
)
async def test_a_real_alertmanager_delivers_over_https(
    https_server: tuple[str, Service], alertmanager_over_https: str
) -> None:
    _, service = https_server
    alert = {
        "labels": {
            "alertname": "ServiceDown",
            "severity": "critical",
            "instance": "host-9",
            "service": "checkout",
        },
        "annotations": {"summary": "service down"},
        "startsAt": dt.datetime.now(dt.UTC).isoformat(),
    }
    async with httpx.AsyncClient() as http:
        response = await http.post(f"{alertmanager_over_https}/api/v2/alerts", json=[alert])
        assert response.status_code == 200, response.text

    async def decided() -> list[dict[str, Any]]:
        return await service.store.decisions.recent(limit=10)

    [decision] = await wait_for(decided, timeout=30)
    assert decision["rule"] == "restart-crashed-service"
    assert decision["verdict"] == "admitted"
    assert decision["labels"]["instance"] == "host-9"
