"""The scrape's Accept-Encoding decision, over real HTTP on loopback."""

from __future__ import annotations

import gzip

import aiohttp
import pytest
from aiohttp.test_utils import TestServer

from exporter.app import create_app
from exporter.config import load_settings
from tests.support import ServerFactory


@pytest.fixture
async def exporter(aiohttp_server: ServerFactory) -> TestServer:
    return await aiohttp_server(create_app(load_settings(None)))


async def _scrape(server: TestServer, accept_encoding: str | None) -> tuple[str | None, bytes]:
    """The response's Content-Encoding and its body as sent; no header at all for None (the
    client would otherwise send its own)."""
    headers = {} if accept_encoding is None else {"Accept-Encoding": accept_encoding}
    skip = ["Accept-Encoding"] if accept_encoding is None else []
    async with (
        aiohttp.ClientSession(auto_decompress=False, skip_auto_headers=skip) as session,
        session.get(server.make_url("/metrics"), headers=headers) as response,
    ):
        assert response.status == 200
        assert "Accept-Encoding" in response.headers["Vary"]
        return response.headers.get("Content-Encoding"), await response.read()


@pytest.mark.parametrize(
    ("accept_encoding", "gzipped"),
    [
        ("gzip", True),
        ("GZIP", True),
        ("br, Gzip ;q=0.5", True),
        ("gzip, deflate", True),
        ("gzip;q=0", False),
        ("deflate, GZIP; Q=0.000", False),
        ("identity", False),
        ("x-gzip", True),
        ("X-GZIP;q=0", False),
        (None, False),
    ],
)
async def test_the_scrape_is_gzipped_only_where_the_client_accepts_gzip(
    exporter: TestServer, accept_encoding: str | None, gzipped: bool
) -> None:
    encoding, body = await _scrape(exporter, accept_encoding)
    if gzipped:
        assert encoding == "gzip"
        body = gzip.decompress(body)
    else:
        assert encoding is None
    assert body.startswith(b"# HELP ")
    assert b"\ncloudjob_exporter_build_info{" in body
