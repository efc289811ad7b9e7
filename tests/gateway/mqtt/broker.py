"""A real mosquitto on 127.0.0.1 for the tests: password file, ACL, TLS, kill -9 and restart.

Started by the tests themselves (a free port, a tmp dir); in CI a missing ``mosquitto`` is
a failure, elsewhere the tests that need it are skipped.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

SITE, HOST = "lab", "gw1"
BASE = f"aiotmc/{SITE}/{HOST}"

#: The documented ACL (docs/gateway.md): the gateway, a viewer, an operator, an admin.
ACL = f"""\
user gateway
topic write {BASE}/#
topic read {BASE}/$cmd/#
topic write homeassistant/#
topic read homeassistant/status

user carol
topic read {BASE}/+/+
topic read {BASE}/$status
topic read {BASE}/$alerts/#

user alice
topic read {BASE}/+/+
topic read {BASE}/$status
topic read {BASE}/$alerts/#
topic write {BASE}/$cmd/alice/#
topic read {BASE}/$reply/alice/#

user root
topic readwrite {BASE}/#
topic readwrite homeassistant/#
"""

USERS = {"gateway": "gw-secret", "carol": "carol-pw", "alice": "alice-pw", "root": "root-pw"}


def require(binary: str) -> str:
    """The path of ``binary``; skipped when absent, except in CI where it is a failure."""
    path = shutil.which(binary)
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail(f"{binary} is not installed (scripts/test.sh installs it)")
        pytest.skip(f"{binary} is not installed")
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class TlsFiles:
    ca: Path
    cert: Path
    key: Path


class Mosquitto:
    """One mosquitto process; ``kill()`` is SIGKILL, ``start()`` again reuses the ports."""

    def __init__(
        self,
        directory: Path,
        *,
        users: Mapping[str, str] | None = None,
        acl: str | None = None,
        tls: TlsFiles | None = None,
    ) -> None:
        self.binary = require("mosquitto")
        self.directory = directory
        self.port = free_port()
        self.tls_port = free_port() if tls else None
        self.process: subprocess.Popen[bytes] | None = None
        lines = ["per_listener_settings false", "persistence false", "log_type error"]
        lines.append("set_tcp_nodelay true")  # as docs/gateway.md recommends
        lines.append("log_type warning")
        if os.getuid() == 0:  # else mosquitto drops to user "mosquitto" and cannot read files
            lines.append(f"user {getpass.getuser()}")
        if users:
            password_file = directory / "passwd"
            passwd = require("mosquitto_passwd")
            for i, (user, password) in enumerate(users.items()):
                create = ["-c"] if i == 0 else []
                subprocess.run(
                    [passwd, *create, "-b", str(password_file), user, password],
                    check=True,
                    capture_output=True,
                    timeout=30,
                )
            lines += ["allow_anonymous false", f"password_file {password_file}"]
        else:
            lines.append("allow_anonymous true")
        if acl is not None:
            (directory / "acl").write_text(acl)
            lines.append(f"acl_file {directory / 'acl'}")
        lines.append(f"listener {self.port} 127.0.0.1")
        if tls is not None:
            lines += [
                f"listener {self.tls_port} 127.0.0.1",
                f"cafile {tls.ca}",
                f"certfile {tls.cert}",
                f"keyfile {tls.key}",
            ]
        self.config = directory / "mosquitto.conf"
        self.config.write_text("\n".join(lines) + "\n")
        self.log = directory / "mosquitto.log"

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [self.binary, "-c", str(self.config)], stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 10
        ports = [p for p in (self.port, self.tls_port) if p is not None]
        while ports:
            if self.process.poll() is not None:
                raise RuntimeError(f"mosquitto exited: {self.log.read_text()[-2000:]}")
            try:
                with socket.create_connection(("127.0.0.1", ports[0]), timeout=1):
                    ports.pop(0)
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("mosquitto did not listen within 10 s") from None
                time.sleep(0.02)

    def kill(self) -> None:
        """``kill -9``: no clean shutdown, no will of its own, clients see a reset."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)
            self.process = None

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover
                self.kill()
            self.process = None


def make_tls(directory: Path) -> TlsFiles:
    """A throwaway CA (trustme) and a server certificate for 127.0.0.1 and localhost."""
    import trustme

    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = TlsFiles(directory / "ca.pem", directory / "server.pem", directory / "server.key")
    ca.cert_pem.write_to_path(str(files.ca))
    cert.cert_chain_pems[0].write_to_path(str(files.cert))
    cert.private_key_pem.write_to_path(str(files.key))
    return files
