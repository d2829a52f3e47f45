"""Per-client token buckets (mycolens.serving.ratelimit) on a fake clock, client identity, and the middleware."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from mycolens.serving.errors import route_path
from mycolens.serving.ratelimit import (
    FORWARDED_KEY,
    RateLimiter,
    RateLimitMiddleware,
    TokenBuckets,
    client_key,
    match,
    proxy_networks,
    retry_after,
)
from mycolens.serving.settings import Bucket, RateLimitSettings
from serve.app import load_serve_config

LOOPBACK = proxy_networks(["127.0.0.1", "::1"])


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_burst_then_refuse_then_refill_with_the_wait_to_the_next_token() -> None:
    clock = Clock()
    b = TokenBuckets(rate_per_s=2.0, burst=3, clock=clock)
    assert [b.take("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert b.take("a") == pytest.approx(0.5)  # one token every 0.5 s
    assert b.take("a") == pytest.approx(0.5)  # a refusal takes nothing
    clock.now += 0.25
    assert b.take("a") == pytest.approx(0.25)
    clock.now += 0.25
    assert b.take("a") == 0.0 and b.take("a") == pytest.approx(0.5)
    clock.now += 100  # refills to burst, never above
    assert [b.take("a") for _ in range(4)][-1] > 0 and b.take("a") > 0


def test_clients_have_buckets_of_their_own() -> None:
    clock = Clock()
    b = TokenBuckets(rate_per_s=1.0, burst=1, clock=clock)
    assert b.take("a") == 0.0 and b.take("a") > 0
    assert b.take("b") == 0.0


@pytest.mark.parametrize(("wait", "header"), [(0.001, 1), (0.5, 1), (1.0, 1), (1.01, 2), (9.5, 10), (10.0, 10)])
def test_retry_after_is_whole_seconds_rounded_up_at_least_one(wait: float, header: int) -> None:
    assert retry_after(wait) == header


def test_retry_after_of_a_slow_bucket() -> None:
    b = TokenBuckets(rate_per_s=0.1, burst=1, clock=Clock())
    b.take("a")
    assert retry_after(b.take("a")) == 10


def test_idle_clients_are_forgotten_and_memory_is_capped() -> None:
    clock = Clock()
    b = TokenBuckets(rate_per_s=1.0, burst=2, max_clients=3, clock=clock)
    b.take("a")
    clock.now += 0.5
    b.take("b")
    assert len(b) == 2
    clock.now += 0.9  # a has refilled (full = the same as unknown), b has not yet
    b.take("c")
    assert len(b) == 2 and "a" not in b._buckets and "b" in b._buckets
    for key in "defgh":  # many new clients: only the 3 most recent are kept
        b.take(key)
    assert len(b) == 3 and list(b._buckets) == ["f", "g", "h"]
    # a client forgotten at the cap starts again with a full bucket (the price of bounded memory)
    for _ in range(2):
        b.take("x")
    assert b.take("x") > 0
    for key in "pqr":
        b.take(key)
    assert b.take("x") == 0.0


def test_buckets_refuse_sizes_that_can_never_pass() -> None:
    with pytest.raises(ValueError):
        TokenBuckets(0, 5)
    with pytest.raises(ValueError):
        TokenBuckets(1.0, 0)
    with pytest.raises(ValueError):
        TokenBuckets(1.0, 1, max_clients=0)


def test_bucket_settings_null_or_zero_turn_a_limit_off() -> None:
    assert Bucket.from_config(None, "predict") is None and Bucket.from_config(0, "predict") is None
    assert Bucket.from_config({"rate_per_s": 0, "burst": 5}, "predict") is None
    assert Bucket.from_config({"rate_per_s": 0.5, "burst": 4}, "predict") == Bucket(0.5, 4)
    with pytest.raises(ValueError, match="feedback"):
        Bucket.from_config({"rate_per_s": -1, "burst": 4}, "feedback")
    with pytest.raises(ValueError, match="predict"):
        Bucket.from_config(5, "predict")
    with pytest.raises(ValueError, match="trusted_proxies"):
        proxy_networks(["127.0.0.1", "not-an-ip"])


def test_conf_serve_has_both_limits_on() -> None:
    from mycolens.serving.settings import ServeSettings

    cfg = load_serve_config([])
    limits = ServeSettings.from_config(cfg).rate_limits
    assert limits.predict is not None and limits.feedback is not None
    assert limits.trust_forwarded_for is False and "127.0.0.1" in limits.trusted_proxies
    off = ServeSettings.from_config(load_serve_config(["serve.rate_limits.predict=null"])).rate_limits
    assert off.predict is None and RateLimiter(off).buckets.keys() == {"feedback"}


def scope(client: tuple[str, int] | None, xff: list[str] = (), method: str = "POST", path: str = "/predict") -> dict:
    headers = [(b"x-forwarded-for", v.encode()) for v in xff]
    return {"type": "http", "method": method, "path": path, "headers": headers, "client": client}


def test_client_key_is_the_peer_unless_a_trusted_proxy_forwards_it() -> None:
    # no header: the peer, whatever it is (behind Ray's HAProxy on one machine: 127.0.0.1 for everyone)
    assert client_key(scope(("203.0.113.9", 5000)), False, LOOPBACK) == "203.0.113.9"
    assert client_key(scope(("127.0.0.1", 5000)), True, LOOPBACK) == "127.0.0.1"
    assert client_key(scope(None), False, LOOPBACK) == "unknown"
    # trusted: the last hop (what the proxy in front appended), only when the peer is a trusted proxy
    assert client_key(scope(("127.0.0.1", 1), ["198.51.100.1, 203.0.113.7"]), True, LOOPBACK) == "203.0.113.7"
    assert client_key(scope(("::1", 1), ["1.1.1.1", "203.0.113.7:4711"]), True, LOOPBACK) == "203.0.113.7"
    assert client_key(scope(("10.0.0.5", 1), ["203.0.113.7"]), True, LOOPBACK) == "10.0.0.5"  # not a proxy we trust
    cluster = proxy_networks(["10.0.0.0/8"])
    assert client_key(scope(("10.1.2.3", 1), ["[2001:db8::7]:80"]), True, cluster) == "2001:db8::7"
    # not trusted: a header cannot buy a bucket of its own
    assert client_key(scope(("127.0.0.1", 1), ["203.0.113.7"]), False, LOOPBACK) == FORWARDED_KEY
    # ... also when uvicorn (Ray's HTTP server, FORWARDED_ALLOW_IPS 127.0.0.1) already put the header's hop in client
    assert client_key(scope(("203.0.113.7", 0), ["203.0.113.7"]), False, LOOPBACK) == FORWARDED_KEY
    assert client_key(scope(("198.51.100.4", 0), ["203.0.113.7", "198.51.100.4"]), False, LOOPBACK) == FORWARDED_KEY
    # a remote peer that sends a header naming someone else is still itself
    assert client_key(scope(("203.0.113.9", 1), ["192.0.2.1"]), False, LOOPBACK) == "203.0.113.9"


def test_rules_match_method_and_path() -> None:
    assert match("POST", "/predict").limit == "predict"
    assert match("POST", "/v2/models/mycolens/infer").limit == "predict"
    assert match("POST", "/v2/models/mycolens/versions/3/infer").limit == "predict"
    assert match("POST", "/v2/models/{name}/infer").route == "/v2/models/{name}/infer"
    assert match("POST", "/feedback").limit == "feedback"
    for method, path in [("GET", "/feedback"), ("GET", "/predict"), ("POST", "/predict/x"), ("POST", "/v2/models/m")]:
        assert match(method, path) is None, (method, path)
    assert route_path({"path": "/app/predict", "root_path": "/app"}) == "/predict"
    assert route_path({"path": "/predict", "root_path": ""}) == "/predict"
    assert route_path({"path": "/application", "root_path": "/app"}) == "/application"


def test_real_feedback_route_is_covered() -> None:
    """serve/web.py's POST /feedback is matched by path, so the ingress limits it without web.py knowing."""
    import importlib

    web = importlib.import_module("serve.web")
    posts = [r.path for r in web.router.routes if "POST" in getattr(r, "methods", ())]
    assert "/feedback" in posts and match("POST", "/feedback") is not None


def app_with(settings: RateLimitSettings, clock: Clock) -> FastAPI:
    """A bare app behind the middleware (the ingress's own wiring is tested in test_serve_units)."""
    inner = FastAPI()

    @inner.post("/predict")
    async def predict() -> dict:
        return {"ok": True}

    @inner.post("/feedback")
    async def feedback() -> dict:
        return {"ok": True}

    @inner.get("/feedback")
    async def species() -> dict:
        return {"ok": True}

    limited: list[str] = []
    inner.add_middleware(RateLimitMiddleware, limiter=RateLimiter(settings, clock), on_limited=limited.append)
    inner.state.limited = limited
    return inner


def test_middleware_answers_429_per_limit_and_per_client() -> None:
    clock = Clock()
    settings = RateLimitSettings(Bucket(1.0, 2), Bucket(0.1, 1), 100, False, ("127.0.0.1",))
    app = app_with(settings, clock)
    a, b = TestClient(app, client=("192.0.2.1", 1)), TestClient(app, client=("192.0.2.2", 1))
    assert [a.post("/predict").status_code for _ in range(3)] == [200, 200, 429]
    r = a.post("/predict")
    assert r.status_code == 429 and r.headers["retry-after"] == "1"
    assert r.json()["error"]["code"] == "rate_limited"
    assert b.post("/predict").status_code == 200  # another client
    assert a.post("/feedback").status_code == 200 and a.post("/feedback").status_code == 429  # its own bucket
    assert a.post("/feedback").headers["retry-after"] == "10"
    assert all(a.get("/feedback").status_code == 200 for _ in range(3))  # GET is not limited
    clock.now += 1.0
    assert a.post("/predict").status_code == 200
    assert app.state.limited == ["predict", "predict", "feedback", "feedback"]
    off = RateLimitSettings(None, None, 100, False, ())
    c = TestClient(app_with(off, clock), client=("192.0.2.1", 1))
    assert all(c.post("/predict").status_code == 200 for _ in range(20))


def test_behind_rays_own_haproxy_config_a_client_header_buys_no_fresh_bucket(tmp_path) -> None:
    """Ray 2.60's HAProxy config (rendered by Ray, run by the bundled HAProxy) in front of uvicorn started as Ray starts
    it (ray/serve/_private/http_util.py: default proxy_headers): HAProxy adds no X-Forwarded-For, every client has
    HAProxy's 127.0.0.1, and uvicorn turns a client's own header into scope["client"]; the limiter does not trust it."""
    import socket
    import subprocess
    import threading
    import time

    import httpx
    import uvicorn

    haproxy = pytest.importorskip("ray.serve._private.haproxy")  # Ray's internals: this test pins what they do
    from ray.serve.config import HTTPOptions

    from serve.front import haproxy_binary, loopback_config

    def free() -> int:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return int(s.getsockname()[1])

    app_port, front_port = free(), free()
    cfg = haproxy.HAProxyConfig(
        socket_path=str(tmp_path / "admin.sock"),
        server_state_base=str(tmp_path),
        server_state_file=str(tmp_path / "state"),
        stats_port=free(),
        metrics_port=free(),
        http_options=HTTPOptions(host="127.0.0.1", port=front_port),
    )
    backend = haproxy.BackendConfig(
        name="mycolens",
        path_prefix="/",
        app_name="mycolens",
        servers=[haproxy.ServerConfig("r1", "127.0.0.1", app_port)],
    )
    api = haproxy.HAProxyApi(cfg, {"mycolens": backend}, config_file_path=str(tmp_path / "haproxy.cfg"))
    api._generate_config_file_internal()
    text = (tmp_path / "haproxy.cfg").read_text()
    assert "forwardfor" not in text.lower() and "x-forwarded-for" not in text.lower()
    (tmp_path / "loop.cfg").write_text(loopback_config(text))

    settings = RateLimitSettings(Bucket(0.001, 2), None, 100, False, ("127.0.0.1", "::1"))
    app = app_with(settings, Clock())
    keys: list[str] = []

    @app.get("/-/healthz")  # HAProxy's health check of the ingress (Ray's BackendConfig default path)
    async def healthz() -> dict:
        return {}

    @app.middleware("http")
    async def record(request, call_next):
        keys.append(client_key(request.scope, False, LOOPBACK))
        return await call_next(request)

    server = uvicorn.Server(  # as Ray builds it: no proxy_headers / forwarded_allow_ips given
        uvicorn.Config(app, host="127.0.0.1", port=app_port, lifespan="off", access_log=False, log_config=None)
    )
    threading.Thread(target=server.run, daemon=True).start()
    proc = subprocess.Popen(
        [haproxy_binary(), "-db", "-f", str(tmp_path / "loop.cfg")],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        base = f"http://127.0.0.1:{front_port}"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:  # until HAProxy's health check marks the ingress up
            try:
                if httpx.get(base + "/feedback", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        keys.clear()
        codes = [httpx.post(base + "/predict", timeout=10).status_code for _ in range(3)]
        assert codes == [200, 200, 429] and keys == ["127.0.0.1"] * 3  # everyone is HAProxy
        spoofed = [
            httpx.post(base + "/predict", headers={"X-Forwarded-For": f"203.0.113.{i}"}, timeout=10).status_code
            for i in range(3)
        ]
        assert spoofed == [200, 200, 429] and keys[3:] == [FORWARDED_KEY] * 3
    finally:
        proc.terminate()
        proc.wait(10)
        server.should_exit = True
