"""Per-client rate limits of the ingress: token buckets (pure, with an injectable clock) and the ASGI middleware.

Each limit (`serve.rate_limits` in conf/serve) keeps one token bucket per client: `burst` tokens, refilled at
`rate_per_s`; a request takes one, and a request that finds none is answered 429 with `Retry-After` (whole
seconds until a token is back, at least 1) and the contract's error body (`{"error": "<message>"}` under /v2), before
the request body is read. The buckets live in one ingress replica: N replicas allow N times the rate.

Client identity (`client_key`): the ASGI peer address (`scope["client"]`), or X-Forwarded-For's last hop when
`trust_forwarded_for` is on and the peer is one of `trusted_proxies`. What the peer is behind Ray 2.60:
- Ray Serve runs the ingress's HTTP server (the Python proxy actor, or the replica's own port that HAProxy calls)
  with uvicorn's defaults (ray/serve/_private/http_util.py start_asgi_http_server): proxy_headers on and
  FORWARDED_ALLOW_IPS "127.0.0.1,::1", so when the TCP peer is loopback uvicorn has already replaced
  `scope["client"]` with the right-most non-loopback X-Forwarded-For entry, if the request has one.
- Ray's HAProxy (ray/serve/_private/haproxy_templates.py) has no `option forwardfor` and sets no X-Forwarded-For:
  it passes the client's own header through and connects to the replica from its own address (127.0.0.1 on one
  machine, with `http-reuse always`). So behind it every client has HAProxy's address, and any X-Forwarded-For
  the app sees was written by the client or by a proxy in front of HAProxy.
Hence the header can be trusted only when a proxy you run in front of Ray appends the client's address to it;
`trust_forwarded_for` is off by default. While it is off, a request whose client address came out of its own
X-Forwarded-For (uvicorn's rewrite above) is counted under one shared key, FORWARDED_KEY, so a client cannot get
fresh buckets by writing a new header each time.
"""

from __future__ import annotations

import ipaddress
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from mycolens.serving.errors import error_response_for, route_path
from mycolens.serving.metrics import ROUTE_KEY
from mycolens.serving.settings import Bucket, RateLimitSettings

FORWARDED_KEY = "forwarded-untrusted"  # every request whose address came from an untrusted X-Forwarded-For
UNKNOWN_KEY = "unknown"  # no peer address at all (some test transports)
IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class TokenBuckets:
    """One token bucket per client key, all of one size; bounded memory.

    A bucket that has refilled to `burst` is the same as no bucket, so buckets idle that long are forgotten; at
    most `max_clients` are kept (the least recently used goes first: that client starts again with a full bucket).
    Thread-safe; `clock` (monotonic seconds) is injectable for tests.
    """

    def __init__(
        self, rate_per_s: float, burst: int, max_clients: int = 10000, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if rate_per_s <= 0 or burst < 1:
            raise ValueError(f"a token bucket needs rate_per_s > 0 and burst >= 1, got {rate_per_s}, {burst}")
        if max_clients < 1:
            raise ValueError(f"max_clients must be >= 1, got {max_clients}")
        self.rate, self.burst, self.max_clients, self.clock = float(rate_per_s), int(burst), int(max_clients), clock
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at), oldest first
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._buckets)

    def _full_at(self, tokens: float, at: float) -> float:
        return at + (self.burst - tokens) / self.rate

    def take(self, key: str) -> float:
        """Take a token for `key`: 0.0 if the request may go, else the seconds until a token is back (> 0)."""
        with self._lock:
            now = self.clock()
            tokens, at = self._buckets.pop(key, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + max(0.0, now - at) * self.rate)
            wait = 0.0 if tokens >= 1.0 else (1.0 - tokens) / self.rate
            if not wait:
                tokens -= 1.0
            self._buckets[key] = (tokens, now)  # most recently used last
            self._evict(now)
            return wait

    def _evict(self, now: float) -> None:
        while self._buckets:  # idle: the oldest-used buckets that are full again
            tokens, at = next(iter(self._buckets.values()))
            if self._full_at(tokens, at) > now:
                break
            self._buckets.popitem(last=False)
        while len(self._buckets) > self.max_clients:
            self._buckets.popitem(last=False)


def retry_after(wait_s: float) -> int:
    """The Retry-After header's whole seconds for a wait: rounded up, at least 1."""
    return max(1, math.ceil(wait_s))


def proxy_networks(proxies: Iterable[str]) -> tuple[IpNetwork, ...]:
    """Networks of the trusted proxies (an address is a /32 or /128); ValueError names a bad entry."""
    out = []
    for p in proxies:
        try:
            out.append(ipaddress.ip_network(str(p).strip(), strict=False))
        except ValueError:
            raise ValueError(f"serve.rate_limits.trusted_proxies: {p!r} is not an IP address or network") from None
    return tuple(out)


def _ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host.strip().strip("[]"))
    except ValueError:
        return None


def _in(host: str, networks: tuple[IpNetwork, ...]) -> bool:
    ip = _ip(host)
    return ip is not None and any(ip in n for n in networks)


def forwarded_hops(headers: Iterable[tuple[bytes, bytes]]) -> list[str]:
    """The X-Forwarded-For entries of an ASGI header list, in order (every header line, comma-separated values)."""
    hops: list[str] = []
    for name, value in headers:
        if name.lower() == b"x-forwarded-for":
            hops += [h.strip() for h in value.decode("latin-1").split(",") if h.strip()]
    return hops


def _host_of(hop: str) -> str:
    """The address of an X-Forwarded-For entry, without a port ("1.2.3.4:5678", "[::1]:80")."""
    if hop.startswith("["):
        return hop[1 : hop.find("]")] if "]" in hop else hop
    if hop.count(":") == 1:
        return hop.split(":", 1)[0]
    return hop


def client_key(scope: Mapping[str, Any], trust_forwarded_for: bool, trusted: tuple[IpNetwork, ...]) -> str:
    """Who is asking (module docstring): the peer, X-Forwarded-For's last hop behind a trusted proxy, or
    FORWARDED_KEY for an address that came from an X-Forwarded-For the settings do not trust."""
    client = scope.get("client")
    peer = str(client[0]) if client else ""
    hops = [_host_of(h) for h in forwarded_hops(scope.get("headers") or ())]
    if not hops:
        return peer or UNKNOWN_KEY
    if trust_forwarded_for:
        return hops[-1] if _in(peer, trusted) else (peer or UNKNOWN_KEY)
    if peer in hops or _in(peer, trusted):  # the address is the header's word, or the proxy's: not the client's
        return FORWARDED_KEY
    return peer or UNKNOWN_KEY


@dataclass(frozen=True)
class Rule:
    """Requests that a limit covers: `method` and a path (a full match of `pattern`); `route` labels metrics."""

    limit: str
    method: str
    pattern: re.Pattern[str]
    route: str


RULES = (
    Rule("predict", "POST", re.compile(r"/predict"), "/predict"),
    Rule("predict", "POST", re.compile(r"/v2/models/[^/]+/infer"), "/v2/models/{name}/infer"),
    Rule(
        "predict",
        "POST",
        re.compile(r"/v2/models/[^/]+/versions/[^/]+/infer"),
        "/v2/models/{name}/versions/{version}/infer",
    ),
    Rule("feedback", "POST", re.compile(r"/feedback"), "/feedback"),
)


def match(method: str, path: str, rules: Iterable[Rule] = RULES) -> Rule | None:
    """The rule covering a request, if any."""
    return next((r for r in rules if r.method == method and r.pattern.fullmatch(path)), None)


class RateLimiter:
    """The limits of `settings` (buckets per limit name) and who a request is from."""

    def __init__(self, settings: RateLimitSettings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.trusted = proxy_networks(settings.trusted_proxies)
        sizes: dict[str, Bucket | None] = {"predict": settings.predict, "feedback": settings.feedback}
        self.buckets = {
            name: TokenBuckets(size.rate_per_s, size.burst, settings.max_clients, clock)
            for name, size in sizes.items()
            if size is not None
        }

    def check(self, scope: Mapping[str, Any]) -> tuple[Rule, float] | None:
        """(rule, seconds to wait) when the request is over its limit; None when it may go (a token was taken)."""
        rule = match(str(scope.get("method", "")), route_path(scope))
        buckets = self.buckets.get(rule.limit) if rule else None
        if rule is None or buckets is None:
            return None
        wait = buckets.take(client_key(scope, self.settings.trust_forwarded_for, self.trusted))
        return (rule, wait) if wait > 0 else None


class RateLimitMiddleware:
    """Pure ASGI middleware: 429 with Retry-After for a request over its limit, counted in `on_limited(limit)`."""

    def __init__(
        self,
        app: Callable[..., Awaitable[Any]],
        limiter: RateLimiter,
        on_limited: Callable[[str], Any] = lambda _: None,
    ) -> None:
        self.app, self.limiter, self.on_limited = app, limiter, on_limited

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        over = self.limiter.check(scope) if scope["type"] == "http" else None
        if over is None:
            await self.app(scope, receive, send)
            return
        rule, wait = over
        seconds = retry_after(wait)
        scope[ROUTE_KEY] = rule.route
        self.on_limited(rule.limit)
        message = f"too many requests to {rule.route} from this client: retry in {seconds} s"
        response = error_response_for(
            route_path(scope), 429, "rate_limited", message, headers={"Retry-After": str(seconds)}
        )
        await response(scope, receive, send)
