"""Fixtures shared by the ops tests."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest


@pytest.fixture
def webhook(monkeypatch) -> Iterator[list[dict]]:
    """A real HTTP server on loopback receiving the alerts; yields the JSON bodies POSTed."""
    hits: list[dict] = []

    class H(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802
            n = int(self.headers.get("Content-Length") or 0)
            hits.append(json.loads(self.rfile.read(n) or b"{}"))
            self.send_response(200)
            self.end_headers()

        def log_message(self, *a):  # noqa: ANN002
            pass

    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    th = threading.Thread(target=srv.serve_forever, daemon=True)
    th.start()
    for k in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("OBSERVER_ALERT_WEBHOOK", f"http://127.0.0.1:{srv.server_address[1]}/hook")
    monkeypatch.delenv("OBSERVER_ALERT_TELEGRAM_CHAT_ID", raising=False)
    try:
        yield hits
    finally:
        srv.shutdown()
        srv.server_close()
        th.join(5)
