"""Which camera URLs the plate reader opens: upload_url's address rules, applied to streams.

    target = check_stream_url("rtsp://user:pw@cam.lan/live", private_hosts=("cam.lan",))
    target.open_url   # rtsp://user:pw@192.168.1.20:554/live: the address that was checked
    target.shown      # rtsp://cam.lan/live: for logs, status and events (no password)

- Schemes: rtsp, rtsps (cameras), http, https (MJPEG cameras); anything else is refused.
- Every address the host resolves to must be public (upload_url.address_refusal: not
  private, loopback, link-local, ...), unless the operator allowed the host: cameras usually
  live on a LAN, so a camera on 192.168.x.x must be listed in
  MODELPORT_PLATE_CAMERA_PRIVATE_HOSTS (a host name as written in the URL, an address, or a
  network such as 192.168.1.0/24). Refusing by default keeps a URL from turning the reader
  into a probe of its own network (the metadata service at 169.254.169.254, a database port).
- rtsp:// is opened at the checked address (no second DNS answer: DNS rebinding); for
  rtsps/https the host name stays in the URL, since TLS checks it, and the address is
  checked before each (re)connect.
- user:password@ is allowed (cameras take it so), and never shown.
"""

from __future__ import annotations

import ipaddress
import socket
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from services.plate_reader.upload_url import address_refusal

SCHEMES = {"rtsp": 554, "rtsps": 322, "http": 80, "https": 443}
Resolver = Callable[[str, int], list[str]]


class StreamRefused(ValueError):
    """A camera URL this reader will not open; the message says what the operator can do."""


@dataclass(frozen=True)
class StreamTarget:
    open_url: str  # what FFmpeg opens (credentials kept; rtsp: the checked address)
    shown: str  # the URL without credentials, for logs, status and events
    address: str  # the checked address it connects to


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def shown_url(url: str) -> str:
    """The URL without user:password@ (what logs and answers may hold)."""
    try:
        parts = urlsplit(url)
        netloc = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    except ValueError:
        return "(an invalid URL)"


def check_form(url: str) -> tuple[str, str, int]:
    """The URL's scheme, host and port, if its form is allowed; else StreamRefused."""
    try:
        parts = urlsplit(url.strip())
        port = parts.port
    except ValueError as exc:
        raise StreamRefused(f"camera URL {shown_url(url)!r} is not a valid URL ({exc})") from None
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise StreamRefused(
            f"camera URL {shown_url(url)!r}: the scheme must be one of {', '.join(sorted(SCHEMES))}, "
            f"not {scheme or 'none'}"
        )
    host = (parts.hostname or "").lower().rstrip(".")
    if not host:
        raise StreamRefused(f"camera URL {shown_url(url)!r} names no host")
    return scheme, host, port or SCHEMES[scheme]


def _allowed_privately(host: str, address: str, private_hosts: Iterable[str]) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    for entry in (h.strip().lower().rstrip(".") for h in private_hosts):
        if not entry:
            continue
        if entry == host:
            return True
        try:
            if ip in ipaddress.ip_network(entry, strict=False):
                return True
        except ValueError:
            continue  # a host name, not this one
    return False


def check_stream_url(
    url: str, private_hosts: Iterable[str] = (), *, resolve: Resolver = system_resolver
) -> StreamTarget:
    """The camera URL to open, by this module's rules; StreamRefused (with what to do) if not.
    OSError when the host does not resolve (a passing failure: the caller retries)."""
    scheme, host, port = check_form(url)
    private_hosts = tuple(private_hosts)
    addresses = resolve(host, port)
    if not addresses:
        raise OSError(f"{host} does not resolve")
    for address in addresses:
        reason = address_refusal(address)
        if reason and not _allowed_privately(host, address, private_hosts):
            raise StreamRefused(
                f"camera host {host!r} resolves to {address}, a {reason} address: cameras on a "
                f"private network are opened only when the operator lists the host or its network "
                f"in MODELPORT_PLATE_CAMERA_PRIVATE_HOSTS (e.g. {host} or 192.168.1.0/24; now: "
                f"{', '.join(private_hosts) or 'none'})"
            )
    address = addresses[0]
    open_url = url.strip()
    if scheme == "rtsp":  # pinned: FFmpeg connects to the address checked here
        parts = urlsplit(open_url)
        userinfo = parts.netloc.rsplit("@", 1)[0] + "@" if "@" in parts.netloc else ""
        literal = f"[{address}]" if ":" in address else address
        open_url = urlunsplit((parts.scheme, f"{userinfo}{literal}:{port}", parts.path, parts.query, ""))
    return StreamTarget(open_url=open_url, shown=shown_url(url), address=address)
