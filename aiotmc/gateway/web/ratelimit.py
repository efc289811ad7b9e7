"""Login rate limiting per client address, in bounded memory.

A fixed window per address: at most ``attempts`` logins (right or wrong) per ``window``
seconds. IPv6 clients are counted per /64 (one host usually owns a whole /64). At most
``max_clients`` addresses are remembered; the least recently seen is forgotten first, so
a flood of addresses costs memory in proportion to ``max_clients``, never more.
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict
from collections.abc import Callable

__all__ = ["LoginLimiter"]


def client_key(address: str | None) -> str:
    """The bucket of ``address``: itself for IPv4, its /64 for IPv6, as-is otherwise."""
    if not address:
        return "?"
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class LoginLimiter:
    """``allow(address)`` counts an attempt and says whether it may proceed."""

    def __init__(
        self,
        *,
        attempts: int,
        window: float,
        max_clients: int = 4096,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.attempts = attempts
        self.window = window
        self.max_clients = max_clients
        self._clock = clock
        self._buckets: OrderedDict[str, tuple[float, int]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._buckets)

    def allow(self, address: str | None) -> bool:
        """Count one attempt from ``address``; False once its window's budget is spent."""
        key = client_key(address)
        now = self._clock()
        start, count = self._buckets.pop(key, (now, 0))
        if now - start >= self.window:
            start, count = now, 0
        count += 1
        self._buckets[key] = (start, count)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)
        return count <= self.attempts

    def retry_after(self, address: str | None) -> float:
        """Seconds until ``address`` may try again (0 when it may now)."""
        bucket = self._buckets.get(client_key(address))
        if bucket is None or bucket[1] < self.attempts:
            return 0.0
        return max(0.0, bucket[0] + self.window - self._clock())
