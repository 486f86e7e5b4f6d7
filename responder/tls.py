"""TLS of the receiver: the checks on its files, uvicorn's options, and the CLI's trust.

uvicorn serves TLS (1.2 or later) with `tls_certfile` and `tls_keyfile`; with
`tls_client_ca_file` it also requires every client to present a certificate signed by that CA
(mutual TLS). The files are read once, at start: a renewed certificate takes effect on restart.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any


def check_readable(path: Path) -> Path:
    """`path`, if it is a file this process can read; else a ValueError that says why."""
    try:
        with path.open("rb"):
            pass
    except OSError as exc:
        raise ValueError(f"cannot read {path}: {exc.strerror or exc}") from None
    return path


def check_pair(certfile: Path, keyfile: Path) -> None:
    """Raise a ValueError unless the two files load as a certificate chain and its key."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # An empty password: an encrypted key fails here instead of prompting on a terminal.
        context.load_cert_chain(certfile, keyfile, password="")
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(
            f"tls_certfile {certfile} and tls_keyfile {keyfile} do not load as a PEM "
            f"certificate chain and its unencrypted private key: {exc}"
        ) from None


def check_client_ca(path: Path) -> None:
    """Raise a ValueError unless `path` loads as PEM CA certificates."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        context.load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError) as exc:
        raise ValueError(
            f"tls_client_ca_file {path} does not load as PEM CA certificates: {exc}"
        ) from None


def server_options(
    certfile: Path | None, keyfile: Path | None, client_ca_file: Path | None
) -> dict[str, Any]:
    """Keyword arguments of `uvicorn.Config` for these files; none when TLS is off."""
    if certfile is None or keyfile is None:
        return {}
    options: dict[str, Any] = {"ssl_certfile": str(certfile), "ssl_keyfile": str(keyfile)}
    if client_ca_file is not None:
        options["ssl_ca_certs"] = str(client_ca_file)
        options["ssl_cert_reqs"] = ssl.CERT_REQUIRED
    return options


def client_context(certfile: Path) -> ssl.SSLContext:
    """What the CLI trusts when it calls the API: the system's CAs, and the server's own
    certificate, so a self-signed or privately signed one works on the same machine."""
    context = ssl.create_default_context()
    context.load_verify_locations(cafile=certfile)
    # Trust the server's certificate itself, without the chain up to a root.
    context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
    return context
