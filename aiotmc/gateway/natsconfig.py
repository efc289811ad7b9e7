"""How the gateway's NATS parts (JetStream sink, collector) name their server.

Config fields, validated with :class:`~aiotmc.gateway.fields.Fields`:

* ``url``: ``nats://host[:port]``, or an array of them (nodes of one cluster);
* ``user`` and ``password_file`` (relative to the config's directory), or ``token_env``
  (the name of an environment variable holding a token): credentials never in the file;
* ``tls_ca``: a CA file; TLS to the server, verified.
"""

from __future__ import annotations

import os
import re
import ssl
from pathlib import Path
from typing import Final

from .._exceptions import ConfigError
from ..transports.nats.connection import NatsServer
from .fields import Fields

__all__ = ["nats_servers", "subject_token"]

_URL: Final = re.compile(r"nats://(\[[0-9A-Fa-f:.]+\]|[^\s/:@\[\]]+)(?::([0-9]{1,5}))?/?")
_UNSAFE: Final = re.compile(r"[^A-Za-z0-9_-]")


def nats_servers(fields: Fields, config_dir: Path | None) -> list[NatsServer]:
    """The servers a section names (first one first), with its login and TLS."""
    raw = fields.raw("url", "nats://127.0.0.1:4222")
    urls = [raw] if isinstance(raw, str) else raw
    if not isinstance(urls, list) or not urls or not all(isinstance(u, str) for u in urls):
        raise ConfigError("must be a nats:// URL or an array of them", key=fields.at("url"))
    base = config_dir or Path.cwd()
    password = None
    if fields.has("password_file"):
        path = base / fields.string("password_file")
        try:
            password = path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read {path}: {exc}", key=fields.at("password_file")
            ) from None
    token = None
    if fields.has("token_env"):
        variable = fields.string("token_env")
        token = os.environ.get(variable)
        if token is None:
            raise ConfigError(
                f"environment variable {variable} is not set", key=fields.at("token_env")
            )
    tls = None
    if fields.has("tls_ca"):
        path = base / fields.string("tls_ca")
        try:
            tls = ssl.create_default_context(cafile=str(path))
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load CA file {path}: {exc}", key=fields.at("tls_ca")
            ) from None
    user = fields.string("user", None)
    servers = []
    for index, url in enumerate(urls):
        match = _URL.fullmatch(url.strip())
        if match is None:
            raise ConfigError(f"{url!r} is not nats://host[:port]", key=(*fields.at("url"), index))
        host = match.group(1).strip("[]")
        port = int(match.group(2) or 4222)
        if not 0 < port < 65536:
            raise ConfigError(f"port {port} out of range", key=(*fields.at("url"), index))
        servers.append(NatsServer(host, port, user=user, password=password, token=token, tls=tls))
    return servers


def subject_token(name: str) -> str:
    """``name`` as one NATS subject token (``.``, ``*``, ``>`` and spaces become ``_``)."""
    return _UNSAFE.sub("_", name) or "_"
