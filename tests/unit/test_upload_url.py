"""`upload_url` fetching (services/plate_reader/upload_url.py): each refusal, with a fake DNS
resolver and a fake HTTP transport (httpx.MockTransport) instead of the network."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from services.core.api_errors import ApiError
from services.core.env_settings import read_env
from services.plate_reader.settings import Settings
from services.plate_reader.upload_url import PinnedTransport, address_refusal, fetch_image

HOST = "cams.example.com"
URL = f"https://{HOST}/gate.jpg"
PUBLIC = "93.184.215.14"
PHOTO = b"\xff\xd8 a jpeg " * 10
LIMIT = 1000


def fake_resolver(*addresses: str):  # returns a Resolver
    asked: list[tuple[str, int]] = []

    async def resolve(host: str, port: int) -> list[str]:
        asked.append((host, port))
        return list(addresses)

    resolve.asked = asked
    return resolve


def fake_transport(handler) -> httpx.MockTransport:
    return httpx.MockTransport(handler)


def serves_photo(request: httpx.Request) -> httpx.Response:
    return httpx.Response(200, content=PHOTO, headers={"content-type": "image/jpeg"})


def fetch(
    url: object = URL,
    *,
    hosts: tuple[str, ...] = (HOST,),
    resolve=None,
    handler=serves_photo,
    time_limit_s: float = 5.0,
) -> bytes:
    return asyncio.run(
        fetch_image(
            url,
            hosts,
            LIMIT,
            resolve=resolve or fake_resolver(PUBLIC),
            transport=fake_transport(handler),
            time_limit_s=time_limit_s,
        )
    )


def refused(status: int, code: str, **kwargs) -> ApiError:
    with pytest.raises(ApiError) as caught:
        fetch(**kwargs)
    error = caught.value
    assert (error.status, error.code, error.param) == (status, code, "upload_url"), error.message
    return error


def test_a_listed_https_host_on_a_public_address_is_fetched() -> None:
    resolver = fake_resolver(PUBLIC, "2606:2800:21f:cb07:6820:80da:af6b:8b2c")
    assert fetch(resolve=resolver) == PHOTO
    assert resolver.asked == [(HOST, 443)]


def test_the_setting_is_read_comma_separated() -> None:
    values = read_env(
        Settings, "MODELPORT_PLATE_", {"MODELPORT_PLATE_UPLOAD_URL_HOSTS": "a.example, b.example,"}
    )
    assert values["upload_url_hosts"] == ("a.example", "b.example")
    assert Settings.upload_url_hosts == ()  # off by default


def test_http_is_refused() -> None:
    error = refused(400, "upload_url_refused", url=f"http://{HOST}/gate.jpg")
    assert "https" in error.message


def test_an_unlisted_host_is_refused_and_the_message_names_the_setting() -> None:
    error = refused(400, "upload_url_refused", url="https://evil.example.net/gate.jpg")
    assert "MODELPORT_PLATE_UPLOAD_URL_HOSTS" in error.message and "evil.example.net" in error.message


def test_a_listed_name_as_a_suffix_or_in_the_user_part_is_not_the_host() -> None:
    refused(400, "upload_url_refused", url=f"https://{HOST}.evil.net/gate.jpg")
    refused(400, "upload_url_refused", url=f"https://{HOST}@evil.net/gate.jpg")
    refused(400, "upload_url_refused", url=f"https://user:pw@{HOST}/gate.jpg")  # no credentials


def test_not_text_or_not_a_url_is_refused() -> None:
    refused(400, "upload_url_refused", url=["https://x"])
    refused(400, "upload_url_refused", url="https://[::1/")


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.9",
        "192.168.1.1",
        "169.254.169.254",
        "::1",
        "fe80::1",
        "fd00::1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "100.64.0.1",
        "::ffff:127.0.0.1",
    ],
)
def test_a_host_resolving_to_a_non_public_address_is_refused(address: str) -> None:
    error = refused(400, "upload_url_refused", resolve=fake_resolver(address))
    assert address in error.message


def test_every_resolved_address_is_checked_not_only_the_first() -> None:
    error = refused(400, "upload_url_refused", resolve=fake_resolver(PUBLIC, "127.0.0.1"))
    assert "127.0.0.1" in error.message and "loopback" in error.message


def test_a_host_that_does_not_resolve_is_refused() -> None:
    async def fails(host: str, port: int) -> list[str]:
        raise OSError("Name or service not known")

    refused(400, "upload_url_refused", resolve=fails)


def test_address_reasons() -> None:
    assert address_refusal("8.8.8.8") is None
    assert address_refusal("127.0.0.1") == "loopback"
    assert address_refusal("169.254.169.254") == "link-local"
    assert address_refusal("fe80::1%eth0") == "link-local"


def test_a_body_over_the_limit_is_refused_by_its_content_length() -> None:
    error = refused(413, "image_too_large", handler=lambda r: httpx.Response(200, content=b"x" * (LIMIT + 1)))
    assert f"{LIMIT:,}" in error.message


def test_a_streamed_body_without_content_length_is_cut_off_at_the_limit() -> None:
    sent: list[int] = []

    async def endless() -> AsyncIterator[bytes]:
        for _ in range(10_000):  # 10 MB if it were all read
            sent.append(1)
            yield b"x" * 1000

    refused(413, "image_too_large", handler=lambda r: httpx.Response(200, content=endless()))
    assert len(sent) <= 3  # stopped just past the limit, not read to the end


def test_a_redirect_to_another_host_is_refused_even_a_listed_one() -> None:
    def redirects(request: httpx.Request) -> httpx.Response:
        return httpx.Response(302, headers={"location": "https://other.example.com/gate.jpg"})

    error = refused(400, "upload_url_refused", handler=redirects, hosts=(HOST, "other.example.com"))
    assert "other.example.com" in error.message and "redirect" in error.message


def test_a_redirect_on_the_same_host_is_followed_and_rechecked() -> None:
    def redirects(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/gate.jpg":
            return httpx.Response(301, headers={"location": "/photos/gate.jpg"})
        return serves_photo(request)

    resolver = fake_resolver(PUBLIC)
    assert fetch(handler=redirects, resolve=resolver) == PHOTO
    assert resolver.asked == [(HOST, 443), (HOST, 443)]  # each hop resolved and checked


def test_a_redirect_to_http_is_refused() -> None:
    refused(
        400,
        "upload_url_refused",
        handler=lambda r: httpx.Response(302, headers={"location": f"http://{HOST}/gate.jpg"}),
    )


def test_endless_redirects_are_refused() -> None:
    error = refused(
        400, "upload_url_refused", handler=lambda r: httpx.Response(302, headers={"location": f"{r.url}x"})
    )
    assert "redirected more than" in error.message


def test_an_upstream_error_is_a_502_and_a_slow_upstream_a_504() -> None:
    error = refused(502, "upload_url_failed", handler=lambda r: httpx.Response(404))
    assert "404" in error.message

    async def slow(request: httpx.Request) -> httpx.Response:
        await asyncio.sleep(5)
        return serves_photo(request)

    refused(504, "upload_url_timeout", handler=slow, time_limit_s=0.2)


def test_the_pinned_transport_connects_to_the_checked_address_and_keeps_the_host_name() -> None:
    """DNS rebinding: the connection goes to the address the check pinned, whatever the name
    would resolve to now (here: not at all), and the Host header is still the name."""

    async def scenario() -> tuple[bytes, str]:
        seen: list[bytes] = []

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            seen.append(await reader.readuntil(b"\r\n\r\n"))
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(handle, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        async with (
            server,
            httpx.AsyncClient(transport=PinnedTransport({"pinned.invalid": ["127.0.0.1"]})) as client,
        ):
            response = await client.get(f"http://pinned.invalid:{port}/gate.jpg")
            with pytest.raises(httpx.ConnectError, match="not checked"):
                await client.get(f"http://unpinned.invalid:{port}/")
        return response.content, seen[0].decode()

    content, request = asyncio.run(scenario())
    assert content == b"ok"
    assert "host: pinned.invalid:" in request.lower()


def test_a_compressed_body_is_refused_not_inflated() -> None:
    refused(
        502,
        "upload_url_failed",
        handler=lambda r: httpx.Response(200, content=b"\x1f\x8b...", headers={"content-encoding": "gzip"}),
    )
