"""Fetch the photo named by `upload_url` (Plate Recognizer's field), only from hosts the
operator listed in MODELPORT_PLATE_UPLOAD_URL_HOSTS, without letting a caller make the server
reach its own network (SSRF):

    data = await fetch_image("https://cams.example.com/gate.jpg", settings)

Rules, each refusal a 4xx/5xx ApiError whose message says what to fix:
- https only, no user:password@ in the URL, and the host exactly one of the listed ones
  (case-insensitive, no wildcards): 400 `upload_url_refused`;
- the host's DNS answer is resolved here and *every* address must be public: private,
  loopback, link-local, multicast, reserved, unspecified, shared (100.64/10) and any other
  non-global address is refused (400), IPv4-mapped IPv6 judged as its IPv4;
- the connection goes to an address that was checked, never to a second DNS answer (DNS
  rebinding): the transport's network backend connects only to the addresses pinned for the
  host by the check, and TLS still verifies the certificate against the host name (SNI and
  Host come from the URL, only the TCP connect uses the IP);
- redirects: at most MAX_REDIRECTS, each only to https on the same host (re-checked the same
  way); a redirect to any other host is refused (400), not followed;
- size: Content-Length over `max_bytes` is refused before reading, and the body is counted as
  it streams and cut off past `max_bytes`: 413 `image_too_large`;
- time: the whole fetch (DNS, connects, redirects, body) within `time_limit_s`: 504
  `upload_url_timeout`; the other server unreachable, failing TLS or answering non-2xx: 502
  `upload_url_failed`.
No proxy from the environment is used (a proxy would do its own DNS, bypassing the check).
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import ssl
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import httpcore
import httpx

from services.core.api_errors import ApiError

# (host, port) -> the addresses the host resolves to, as text ("93.184.215.14", "2606:2800::1").
Resolver = Callable[[str, int], Awaitable[list[str]]]
MAX_REDIRECTS = 3
TIME_LIMIT_S = 10.0  # the whole fetch: DNS, connect, TLS, redirects and body
PARAM = "upload_url"


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def address_refusal(address: str) -> str | None:
    """Why the server must not connect to `address` (a reason), or None when it is public."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])  # drop an IPv6 zone (fe80::1%eth0)
    except ValueError:
        return "not an IP address"
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    for reason, hit in (
        ("loopback", ip.is_loopback),
        ("link-local", ip.is_link_local),
        ("unspecified", ip.is_unspecified),
        ("multicast", ip.is_multicast),
        ("reserved", ip.is_reserved),
        ("private", ip.is_private),
    ):
        if hit:
            return reason
    return None if ip.is_global else "not globally routable"


def _refused(message: str) -> ApiError:
    return ApiError(400, message, code="upload_url_refused", param=PARAM)


def check_url(url: str | httpx.URL, allowed_hosts: Iterable[str]) -> httpx.URL:
    """The URL, parsed, if its form is allowed (https, a listed host, no credentials)."""
    allowed = {h.strip().lower().rstrip(".") for h in allowed_hosts if h.strip()}
    try:
        parsed = httpx.URL(url) if isinstance(url, str) else url
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise _refused(f"`upload_url` is not a valid URL ({exc})") from None
    if parsed.scheme != "https":
        raise _refused(
            f"`upload_url` must be an https:// URL, not {parsed.scheme or 'schemeless'}:"
            f" {str(parsed)[:200]!r}"
        )
    if parsed.userinfo:
        raise _refused("`upload_url` must not hold a user name or password (user:pass@host)")
    host = parsed.host.lower().rstrip(".")
    if not host or host not in allowed:
        raise _refused(
            f"`upload_url` host {host!r} is not one this server fetches from; the "
            f"operator lists them in MODELPORT_PLATE_UPLOAD_URL_HOSTS (now: "
            f"{', '.join(sorted(allowed)) or 'none'}). Or send the image itself in `upload`"
        )
    return parsed


async def checked_addresses(host: str, port: int, resolve: Resolver) -> list[str]:
    """The host's addresses, if every one of them is public; else a 400 naming the bad one."""
    try:
        addresses = await resolve(host, port)
    except OSError as exc:
        raise _refused(f"`upload_url` host {host!r} does not resolve ({exc})") from None
    if not addresses:
        raise _refused(f"`upload_url` host {host!r} does not resolve")
    for address in addresses:
        reason = address_refusal(address)
        if reason:
            raise _refused(
                f"`upload_url` host {host!r} resolves to {address}, a {reason} address: "
                "this server fetches only from public addresses"
            )
    return addresses


class PinnedBackend(httpcore.AsyncNetworkBackend):
    """httpcore's network backend, but a TCP connect to `host` goes only to the addresses
    pinned for it (checked by `checked_addresses`); a host without pinned addresses is refused."""

    def __init__(self, pinned: dict[str, list[str]]) -> None:
        self.pinned = pinned
        self._inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        addresses = self.pinned.get(host.lower().rstrip("."))
        if not addresses:
            raise httpcore.ConnectError(f"{host} was not checked; refusing to connect")
        failure: Exception | None = None
        for address in addresses:  # the checked addresses, in the resolver's order
            try:
                return await self._inner.connect_tcp(
                    address, port, timeout=timeout, local_address=local_address, socket_options=socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                failure = exc
        assert failure is not None
        raise failure

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[Any] | None = None
    ) -> httpcore.AsyncNetworkStream:
        raise httpcore.ConnectError("unix sockets are not fetched")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)


class PinnedTransport(httpx.AsyncHTTPTransport):
    """httpx's transport over `PinnedBackend`. httpx does not take a network backend, so the
    connection pool is replaced (httpx is pinned to 0.28 in pyproject.toml)."""

    def __init__(self, pinned: dict[str, list[str]], ssl_context: ssl.SSLContext | None = None) -> None:
        super().__init__(trust_env=False, retries=0)
        self._pool = httpcore.AsyncConnectionPool(
            ssl_context=ssl_context or httpx.create_ssl_context(trust_env=False),
            max_connections=4,
            http1=True,
            http2=False,
            network_backend=PinnedBackend(pinned),
        )


async def fetch_image(
    url: Any,
    allowed_hosts: Iterable[str],
    max_bytes: int,
    *,
    resolve: Resolver = system_resolver,
    transport: httpx.AsyncBaseTransport | None = None,
    time_limit_s: float = TIME_LIMIT_S,
) -> bytes:
    """The bytes at `url`, fetched by the rules in this module's docstring.

    `resolve` and `transport` are for tests: by default the system's DNS and a
    `PinnedTransport` that connects only to the addresses checked here."""
    if not isinstance(url, str):
        raise _refused(f"`upload_url` must be a URL as text, not {type(url).__name__}")
    allowed = tuple(allowed_hosts)
    target = check_url(url.strip(), allowed)
    pinned: dict[str, list[str]] = {}
    transport = transport or PinnedTransport(pinned)
    try:
        async with asyncio.timeout(time_limit_s):
            async with httpx.AsyncClient(
                transport=transport, follow_redirects=False, trust_env=False, timeout=time_limit_s
            ) as client:
                first_host = target.host.lower().rstrip(".")
                for hop in range(MAX_REDIRECTS + 1):
                    host = target.host.lower().rstrip(".")
                    port = target.port or 443
                    pinned[host] = await checked_addresses(host, port, resolve)
                    # identity: the bytes counted are the bytes kept (no decompression here)
                    async with client.stream(
                        "GET", target, headers={"Accept-Encoding": "identity"}
                    ) as response:
                        if response.is_redirect and "location" in response.headers:
                            if hop == MAX_REDIRECTS:
                                raise _refused(
                                    f"`upload_url` redirected more than {MAX_REDIRECTS} "
                                    "times: send the image's final URL"
                                )
                            target = _redirect_target(response, first_host, allowed)
                            continue
                        if not response.is_success:
                            raise ApiError(
                                502,
                                f"fetching `upload_url` failed: {host} answered "
                                f"{response.status_code} {response.reason_phrase}",
                                code="upload_url_failed",
                                param=PARAM,
                                type="server_error",
                            )
                        return await _read_capped(response, max_bytes)
    except TimeoutError:
        raise ApiError(
            504,
            f"fetching `upload_url` took over {time_limit_s:g} s: use a faster "
            "server or send the image itself in `upload`",
            code="upload_url_timeout",
            param=PARAM,
            type="server_error",
        ) from None
    except httpx.TimeoutException:
        raise ApiError(
            504,
            f"fetching `upload_url` took over {time_limit_s:g} s",
            code="upload_url_timeout",
            param=PARAM,
            type="server_error",
        ) from None
    except httpx.HTTPError as exc:
        raise ApiError(
            502,
            f"fetching `upload_url` failed: {type(exc).__name__}: {exc}",
            code="upload_url_failed",
            param=PARAM,
            type="server_error",
        ) from None
    raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises


def _redirect_target(response: httpx.Response, first_host: str, allowed: tuple[str, ...]) -> httpx.URL:
    try:
        target = response.url.join(response.headers["location"])
    except (httpx.InvalidURL, ValueError) as exc:
        raise _refused(f"`upload_url` redirected to an invalid URL ({exc})") from None
    host = target.host.lower().rstrip(".")
    if host != first_host:
        raise _refused(
            f"`upload_url` redirected to another host ({host!r}, from {first_host!r}); "
            "redirects are followed only on the same host: send the image's final URL"
        )
    return check_url(target, allowed)  # https, no credentials


async def _read_capped(response: httpx.Response, max_bytes: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > max_bytes:
        raise _too_large(f"is {int(declared):,} bytes", max_bytes)
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):  # asked for identity: no decompression bomb in memory
        raise ApiError(
            502,
            f"the server of `upload_url` sent the image {encoding}-compressed though "
            "asked not to: serve it uncompressed",
            code="upload_url_failed",
            param=PARAM,
            type="server_error",
        )
    body = bytearray()
    async for chunk in response.aiter_bytes():  # as sent (identity): counted as they arrive
        body += chunk
        if len(body) > max_bytes:
            raise _too_large("is larger", max_bytes)
    return bytes(body)


def _too_large(what: str, max_bytes: int) -> ApiError:
    return ApiError(
        413,
        f"the image at `upload_url` {what}; the limit is {max_bytes:,} bytes "
        "(MODELPORT_PLATE_MAX_IMAGE_BYTES)",
        code="image_too_large",
        param=PARAM,
    )
