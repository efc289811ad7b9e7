"""The dashboard as a gateway component: uvicorn inside the gateway's asyncio loop.

:class:`WebComponent` binds its socket itself (so ``port = 0`` works and the bound
address is known: :attr:`WebComponent.url`), starts uvicorn on it without uvicorn's
signal handlers or logging setup (the gateway owns both), feeds the live state from the
hub, and on cancellation closes the live streams and shuts uvicorn down within a bound.
asyncio only: uvicorn runs on asyncio.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Iterable
from typing import Any

import anyio
import uvicorn

from aiotmc._exceptions import GatewayError
from aiotmc.gateway.model import Hub
from aiotmc.gateway.web.app import WebApp
from aiotmc.gateway.web.settings import User, WebSettings

__all__ = ["WebComponent"]

log = logging.getLogger("aiotmc.gateway.web")


class WebComponent:
    """``[web]``: login, live values, alerts, control, ``/metrics`` and ``/healthz``."""

    name = "web"

    def __init__(
        self,
        settings: WebSettings,
        users: Iterable[User],
        *,
        metrics_source: object | None = None,
        shutdown_timeout: float = 5.0,
    ) -> None:
        self.settings = settings
        self.users = tuple(users)
        self.metrics_source = metrics_source
        self.shutdown_timeout = shutdown_timeout
        #: The running app (set by :meth:`run`), for tests and the integrator.
        self.app: WebApp | None = None
        #: ``(address, port)`` actually bound, once started.
        self.bound: tuple[str, int] | None = None

    @property
    def url(self) -> str:
        """``http://address:port/`` of the running dashboard."""
        if self.bound is None:
            raise RuntimeError("the web component is not running")
        address, port = self.bound
        return f"http://[{address}]:{port}/" if ":" in address else f"http://{address}:{port}/"

    def _listen(self) -> socket.socket:
        settings = self.settings
        family = socket.AF_INET6 if ":" in settings.bind else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((settings.bind, settings.port))
        except OSError as exc:
            sock.close()
            raise GatewayError(
                f"web: cannot listen on {settings.bind} port {settings.port}: {exc.strerror}"
            ) from exc
        sock.setblocking(False)
        return sock

    def _uvicorn(self, app: Any) -> uvicorn.Server:
        proxies = list(self.settings.trusted_proxies)
        config = uvicorn.Config(
            app,
            lifespan="off",
            log_config=None,  # the gateway configures logging
            access_log=False,
            proxy_headers=bool(proxies),
            forwarded_allow_ips=proxies or None,
            server_header=False,
            ws="websockets-sansio",
            ws_max_size=64 * 1024,  # the browser sends nothing big
            limit_concurrency=256,
            timeout_keep_alive=5,
            timeout_graceful_shutdown=max(1, int(self.shutdown_timeout)),
        )
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        return server

    def _announce(self) -> None:
        settings = self.settings
        hosts = ", ".join(settings.allowed_hosts)
        if settings.loopback:
            log.info(
                "web dashboard on %s (loopback only; set [web] bind to serve a network); "
                "allowed Host names: %s",
                self.url,
                hosts,
            )
        else:
            log.warning(
                "web dashboard on %s, reachable from the network (bind = %r); allowed Host "
                "names: %s. Plain HTTP: put a TLS reverse proxy in front of it.",
                self.url,
                settings.bind,
                hosts,
            )
        if not self.users:
            log.warning("web: no [[users]] configured: nobody can log in")

    async def run(self, hub: Hub, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        """Serve until cancelled; ``task_status.started()`` once the socket listens."""
        web = WebApp(hub, self.settings, self.users, metrics_source=self.metrics_source)
        sock = self._listen()
        server = self._uvicorn(web.asgi)
        async with anyio.create_task_group() as tg:
            try:
                await tg.start(web.feed)
                await server.startup(sockets=[sock])
                address, port = sock.getsockname()[:2]
                self.bound = (address, port)
                self.app = web
                self._announce()
                task_status.started()
                await anyio.sleep_forever()
            finally:
                with anyio.CancelScope(shield=True), anyio.move_on_after(self.shutdown_timeout):
                    await web.close_clients()
                    server.should_exit = True
                    if server.started:
                        await server.shutdown(sockets=[sock])
                sock.close()
                self.bound = None
                tg.cancel_scope.cancel()
                log.info("web dashboard stopped")
