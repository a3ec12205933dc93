"""Bare KIS wire helpers for the exchange's own tests (httpx + websockets, no project client).

These speak the protocol exactly as docs/kis-protocol.md describes it, so the server tests exercise the
wire, not a client library.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import httpx
import websockets

QUOTE = "/uapi/domestic-stock/v1/quotations/"


class Kis:
    """One app key's REST calls against a sim."""

    def __init__(self, sim: Any, creds: tuple[str, str]):
        self.sim = sim
        self.key, self.secret = creds
        self.http = httpx.Client(base_url=sim.rest_url, timeout=30.0)
        self.access_token: str | None = None

    def token_response(self) -> httpx.Response:
        return self.http.post(
            "/oauth2/tokenP", json={"grant_type": "client_credentials", "appkey": self.key, "appsecret": self.secret}
        )

    def token(self) -> str:
        r = self.token_response()
        assert r.status_code == 200, r.text
        self.access_token = r.json()["access_token"]
        return self.access_token

    def approval(self) -> str:
        r = self.http.post(
            "/oauth2/Approval", json={"grant_type": "client_credentials", "appkey": self.key, "secretkey": self.secret}
        )
        assert r.status_code == 200, r.text
        return r.json()["approval_key"]

    def headers(self, tr_id: str, tr_cont: str = "", token: str | None = None) -> dict[str, str]:
        tok = token if token is not None else (self.access_token or self.token())
        return {
            "content-type": "application/json; charset=utf-8",
            "authorization": f"Bearer {tok}",
            "appkey": self.key,
            "appsecret": self.secret,
            "tr_id": tr_id,
            "custtype": "P",
            "tr_cont": tr_cont,
        }

    def get(
        self, name: str, tr_id: str, params: dict[str, str], *, tr_cont: str = "", token: str | None = None
    ) -> httpx.Response:
        return self.http.get(QUOTE + name, params=params, headers=self.headers(tr_id, tr_cont, token))

    def ok(self, name: str, tr_id: str, params: dict[str, str], **kw: Any) -> dict[str, Any]:
        r = self.get(name, tr_id, params, **kw)
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["rt_cd"] == "0", body
        return body

    def close(self) -> None:
        self.http.close()


def parse_data_frame(text: str) -> tuple[str, str, list[list[str]]]:
    """(flag, tr_id, records) of ``F|TR|NNN|payload``; the record width is derived, never assumed."""
    flag, tr_id, count, payload = text.split("|", 3)
    n = int(count)
    fields = payload.split("^")
    assert n > 0 and len(fields) % n == 0, (n, len(fields))
    w = len(fields) // n
    return flag, tr_id, [fields[i * w : (i + 1) * w] for i in range(n)]


@dataclass
class Received:
    controls: list[dict[str, Any]] = field(default_factory=list)
    data: list[str] = field(default_factory=list)
    pings: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)

    def records(self, tr_id: str = "H0STCNT0", code: str | None = None) -> list[list[str]]:
        out = []
        for text in self.data:
            if text.startswith("0|" + tr_id + "|"):
                for rec in parse_data_frame(text)[2]:
                    if code is None or rec[0] == code:
                        out.append(rec)
        return out


class WsClient:
    """A raw KIS stream session (websockets), echoing PINGPONG unless told not to."""

    def __init__(self, url: str, approval_key: str, *, path: str = "/tryitout", echo: bool = True):
        self.url = url.rstrip("/") + path
        self.approval_key = approval_key
        self.echo = echo
        self.ws: Any = None
        self.got = Received()
        self.close_code: int | None = None
        self.closed_clean: bool | None = None

    async def __aenter__(self) -> WsClient:
        self.ws = await websockets.connect(self.url, ping_interval=None, max_size=None)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.ws.close()

    async def send(self, tr_id: str, tr_key: str, tr_type: str = "1") -> None:
        await self.ws.send(
            json.dumps(
                {
                    "header": {
                        "approval_key": self.approval_key,
                        "custtype": "P",
                        "tr_type": tr_type,
                        "content-type": "utf-8",
                    },
                    "body": {"input": {"tr_id": tr_id, "tr_key": tr_key}},
                }
            )
        )

    async def recv(self, timeout: float = 5.0) -> str | None:
        """Next frame (echoing PINGPONG), or None on timeout / close."""
        try:
            text = await asyncio.wait_for(self.ws.recv(), timeout)
        except TimeoutError:
            return None
        except websockets.ConnectionClosed as exc:
            self._closed(exc)
            return None
        self._file(text)
        if self.echo and text.startswith("{") and '"PINGPONG"' in text:
            await self.ws.send(text)
        return text

    def _closed(self, exc: websockets.ConnectionClosed) -> None:
        self.closed_clean = isinstance(exc, websockets.ConnectionClosedOK)
        self.close_code = exc.rcvd.code if exc.rcvd is not None else None

    def _file(self, text: str) -> None:
        if text.startswith("{"):
            try:
                msg = json.loads(text)
            except ValueError:
                self.got.other.append(text)
                return
            if msg.get("header", {}).get("tr_id") == "PINGPONG":
                self.got.pings.append(text)
            else:
                self.got.controls.append(msg)
        elif text[:2] in ("0|", "1|"):
            self.got.data.append(text)
        else:
            self.got.other.append(text)

    async def control(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next control (ack) frame; data and pings in between are filed."""
        n = len(self.got.controls)
        deadline = time.monotonic() + timeout
        while len(self.got.controls) == n:
            left = deadline - time.monotonic()
            if left <= 0 or await self.recv(left) is None and len(self.got.controls) == n:
                raise AssertionError(f"no control frame within {timeout}s (closed={self.closed_clean})")
        return self.got.controls[n]

    async def collect(self, seconds: float) -> Received:
        """Read everything for ``seconds`` (or until the server closes)."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            if await self.recv(left) is None and self.closed_clean is not None:
                break
        return self.got

    async def until(self, pred: Any, timeout: float = 5.0) -> bool:
        """Read until ``pred(self.got)`` holds; False on timeout or close."""
        deadline = time.monotonic() + timeout
        while not pred(self.got):
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if await self.recv(left) is None and self.closed_clean is not None:
                return pred(self.got)
        return True


def busy_codes(sim: Any, n: int = 3) -> list[str]:
    """The n most active symbols (they tick several times a second)."""
    rows = sim.admin("listings", params={"order": "activity", "limit": str(n)})["listings"]
    return [r["code"] for r in rows]


def run(coro: Any) -> Any:
    return asyncio.run(coro)
