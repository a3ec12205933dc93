"""python-kis 2.1.6 against ``observer-sim`` with only its base URLs changed (docs/compat-python-kis.md).

The local exchange's claim, checked end to end: a widely used third-party KIS client obtains a token, a quote
and live ticks from the local exchange. Nothing in pykis is patched except the eight module-level
names that hold its four base URLs; every value pykis reports is compared with the sim's ground
truth (``/__sim__/truth/...``), not with constants.
"""

from __future__ import annotations

import importlib
import logging
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from decimal import Decimal
from typing import Any

import pytest
from support import open_clock_midday

pytest.importorskip("pykis", reason="python-kis is a [test] extra: pip install -e '.[test]'")

#: Every place pykis 2.1.6 keeps a base URL: __env__ defines them; kis.py and client/websocket.py copy
#: them at import time (``from pykis.__env__ import ...``) and read the copies on every call.
URL_NAMES: dict[str, tuple[str, ...]] = {
    "pykis.__env__": ("REAL_DOMAIN", "VIRTUAL_DOMAIN", "WEBSOCKET_REAL_DOMAIN", "WEBSOCKET_VIRTUAL_DOMAIN"),
    "pykis.kis": ("REAL_DOMAIN", "VIRTUAL_DOMAIN"),
    "pykis.client.websocket": ("WEBSOCKET_REAL_DOMAIN", "WEBSOCKET_VIRTUAL_DOMAIN"),
}
SIM_ARGS = ("--clock", "open", "--speed", "5", "--listings", "20", *open_clock_midday())
ACCOUNT = "50000000-01"
HTS_ID = "observer-compat"


# --- harness ------------------------------------------------------------------------------------
def point_pykis_at(monkeypatch: pytest.MonkeyPatch, rest_url: str, ws_url: str) -> list[str]:
    """Set pykis's base URLs (and nothing else); returns the patched names."""
    env = importlib.import_module("pykis.__env__")
    shipped = {getattr(env, n) for n in URL_NAMES["pykis.__env__"]}
    rest, ws = rest_url.rstrip("/"), ws_url.rstrip("/")  # pykis appends "/tryitout" to the WS base
    patched = []
    for modname, names in URL_NAMES.items():
        mod = importlib.import_module(modname)
        for name in names:
            monkeypatch.setattr(mod, name, ws if name.startswith("WEBSOCKET_") else rest)
            patched.append(f"{modname}.{name}")
    leftovers = [
        f"{modname}.{attr}"
        for modname, mod in list(sys.modules.items())
        if mod is not None and (modname == "pykis" or modname.startswith("pykis."))
        for attr, value in vars(mod).items()
        if isinstance(value, str) and value in shipped
    ]
    assert not leftovers, f"pykis still holds a KIS base URL in {leftovers}: the URL patch list is incomplete"
    return patched


class PykisLog(logging.Handler):
    """pykis logs (does not raise) WebSocket parse/ack problems; keep them for assertion messages."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += f" [{type(record.exc_info[1]).__name__}: {record.exc_info[1]}]"
        self.lines.append(f"{record.levelname} {text}")

    def problems(self) -> list[str]:
        return [ln for ln in self.lines if not ln.startswith("INFO")]


@contextmanager
def pykis_client(
    sim: Any, monkeypatch: pytest.MonkeyPatch, home: Any, creds: tuple[str, str]
) -> Iterator[tuple[Any, PykisLog]]:
    """(PyKis in real mode on the sim, its log); always stops its WebSocket thread and HTTP sessions after."""
    from pykis import PyKis

    monkeypatch.setenv("HOME", str(home))  # pykis's workspace is ~/.pykis: never the real home
    point_pykis_at(monkeypatch, sim.rest_url, sim.ws_url)
    log = PykisLog()
    logging.getLogger("pykis").addHandler(log)
    appkey, secret = creds
    kis = PyKis(id=HTS_ID, account=ACCOUNT, appkey=appkey, secretkey=secret, keep_token=False)
    failed = False
    try:
        yield kis, log
    except BaseException:
        failed = True
        raise
    finally:
        ws = kis.websocket
        thread = ws.thread
        ws.reconnect = False  # pykis leaves its reconnect loop only with this off (disconnect() alone redials)
        if thread is not None and thread.is_alive() and ws.websocket is not None:
            # websocket-client 1.9.2 hangs the run_forever() thread in epoll for ever in most runs when
            # WebSocketApp.close() comes from another thread (pykis's disconnect() does that; reproduced
            # against a `websockets` server too). So the server ends the session first (sim fault ws_drop);
            # pykis's thread sees the close itself, and disconnect() then only ends its reconnect loop.
            sim.admin("faults", json={"kind": "ws_drop", "appkey": appkey})
            wait_for(lambda: ws.websocket is None, timeout=5)
        ws.disconnect()
        if thread is not None:
            thread.join(timeout=5)
        kis.close()
        logging.getLogger("pykis").removeHandler(log)
        if not failed:
            assert thread is None or not thread.is_alive(), "pykis's WebSocket thread did not stop"
            assert not (home / ".pykis").exists(), "pykis wrote to ~/.pykis although keep_token=False"


def busiest_code(sim: Any) -> dict[str, Any]:
    """The most active tradable listing (ground truth), so ticks arrive within seconds."""
    rows = sim.admin("listings", params={"order": "activity"})["listings"]
    for li in rows:
        if li["group"] == "ST" and not li["halted"] and not li["code"].startswith("Q"):
            return li
    raise AssertionError(f"sim has no tradable ST listing: {rows}")


def sim_now(sim: Any) -> datetime:
    return datetime.fromisoformat(sim.admin("clock")["now"])


def states_between(sim: Any, code: str, t0: datetime, t1: datetime) -> list[dict[str, Any]]:
    """Every market state of ``code`` from sim instant t0 to t1: the quote at t0, then each tick up to t1."""
    q0 = sim.admin("truth/quote", params={"code": code, "at": t0.isoformat()})
    states = [
        {
            "acml_vol": q0["acml_vol"],
            "price": q0["price"],
            "acml_value": q0["acml_value"],
            "high": q0["high"],
            "low": q0["low"],
            "open": q0["open"],
        }
    ]
    assert t0.date() == t1.date(), "the quote straddled sim midnight; rerun"
    ticks = sim.admin(
        "truth/ticks",
        params={
            "code": code,
            "day": t0.strftime("%Y%m%d"),
            "from": t0.strftime("%H%M%S"),
            "to": t1.strftime("%H%M%S"),
            "records": "1",
        },
    )
    idx = {name: i for i, name in enumerate(ticks["fields"])}
    for t in ticks["ticks"]:
        rec = t["record"]
        states.append(
            {
                "acml_vol": t["acml_vol"],
                "price": t["price"],
                "acml_value": t["acml_value"],
                "high": int(rec[idx["STCK_HGPR"]]),
                "low": int(rec[idx["STCK_LWPR"]]),
                "open": int(rec[idx["STCK_OPRC"]]),
            }
        )
    return states


def wait_for(predicate: Any, timeout: float, step: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return predicate()


# --- tests --------------------------------------------------------------------------------------
@pytest.mark.timeout(60)
def test_pykis_gets_token_and_quote(
    sim_factory: Any, make_creds: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    sim = sim_factory(*SIM_ARGS)
    li = busiest_code(sim)
    code = li["code"]
    with pykis_client(sim, monkeypatch, tmp_path, make_creds(0)) as (kis, log):
        stock = kis.stock(code)  # tokenP, inquire-price (market probe), search-info
        assert stock.symbol == code, (
            f"pykis took symbol {stock.symbol!r} for {code!r} from search-info output.shtn_pdno: KIS answers the "
            f"bare short code there (pdno carries '00000A{code}'), and pykis reuses it as FID_INPUT_ISCD, as the "
            f"H0STCNT0 tr_key and to match tick field 0 (sim: local_exchange/rest_outputs.py search_info)"
        )
        assert stock.market == "KRX"
        assert not log.problems(), log.problems()

        t0 = sim_now(sim)
        quote = stock.quote()  # inquire-price
        t1 = sim_now(sim)
        stats = sim.admin("stats")

    # the token: one issuance for the whole session (pykis re-issues if expiry < wall clock + 10 min)
    assert stats["tokens_issued_total"] == 1, stats
    assert stats["token_refused_total"] == 0, stats
    assert stats["requests_total"] == 3, f"pykis: inquire-price (market probe), search-info, inquire-price; {stats}"

    # exact: identity, name, previous close, limits
    truth = sim.admin("truth/quote", params={"code": code, "at": t0.isoformat()})
    assert quote.symbol == code
    assert quote.name == li["name"]  # search-info prdt_abrv_name, served from pykis's cache
    assert quote.prev_price == Decimal(truth["prev_close"])  # pykis: stck_prpr - prdy_vrss
    assert quote.base_price == Decimal(truth["prev_close"])  # stck_sdpr
    assert quote.high_limit == Decimal(truth["upper_limit"])
    assert quote.low_limit == Decimal(truth["lower_limit"])
    assert quote.halt is False

    # the moving part: the quote is one market state between t0 and t1 (identified by cumulative volume)
    states = states_between(sim, code, t0, t1)
    match = [s for s in states if s["acml_vol"] == quote.volume]
    assert match, (
        f"pykis quote volume {quote.volume} price {quote.price} is no market state of {code} "
        f"between {t0} and {t1}: {states}"
    )
    s = match[-1]
    assert quote.price == Decimal(s["price"])
    assert quote.amount == Decimal(s["acml_value"])
    if quote.volume:
        assert (quote.open, quote.high, quote.low) == (Decimal(s["open"]), Decimal(s["high"]), Decimal(s["low"]))
    assert quote.change == quote.price - Decimal(truth["prev_close"])


@pytest.mark.timeout(60)
def test_pykis_streams_live_ticks(
    sim_factory: Any, make_creds: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    # PINGPONG every 0.5 s with a 2 s grace: pykis's (re-serialised) echo must keep the session alive
    sim = sim_factory(*SIM_ARGS, "--ping-interval", "0.5", "--ping-grace", "2")
    li = busiest_code(sim)
    code = li["code"]
    appkey, secret = make_creds(1)
    received: list[Any] = []
    lock = threading.Lock()

    def on_price(sender: Any, e: Any) -> None:
        with lock:
            received.append(e.response)

    with pykis_client(sim, monkeypatch, tmp_path, (appkey, secret)) as (kis, log):
        unsubscribed = threading.Event()
        kis.websocket.unsubscribed_event += lambda sender, e: unsubscribed.set()

        stock = kis.stock(code)
        assert stock.symbol == code, (
            f"search-info output.shtn_pdno gave {stock.symbol!r}: pykis subscribes H0STCNT0 with that tr_key and "
            f"drops ticks whose field 0 differs, so it must be the bare code {code!r}"
        )
        ticket = stock.on("price", on_price)
        got_ticks = wait_for(lambda: len(received) >= 5, timeout=10)
        assert got_ticks, (
            f"pykis received {len(received)} ticks in 10 s; sim stats {sim.admin('stats')}; "
            f"pykis log: {log.problems() or log.lines}"
        )
        # keep reading across several PINGPONGs (0.5 s apart, 2 s grace)
        time.sleep(3)
        mid = sim.admin("stats", params={"appkey": appkey})["for_appkey"]
        assert mid["ws_pingpong_sent_total"] >= 4, mid
        assert mid["ws_dropped_total"] == 0, f"sim dropped pykis's session: PINGPONG echo not accepted? {mid}"
        assert mid["ws_sessions_active"] == 1, mid

        ticket.unsubscribe()  # pykis: a fresh /oauth2/Approval, then tr_type "2"
        assert unsubscribed.wait(5), f"no OPSP0001 ack for the unsubscribe; pykis log: {log.lines}"
        with lock:
            got = list(received)
        stats = sim.admin("stats", params={"appkey": appkey})
        # pykis logs, never raises, what it cannot parse or does not expect (frames, acks, control data)
        assert not log.problems(), log.problems()

    # every tick pykis delivered is, in order and without gaps, what the sim sent this app key
    sent = [
        e for e in sim.admin("truth/sent", params={"appkey": appkey, "code": code})["entries"] if e["status"] == "sent"
    ]
    assert len(got) >= 5
    assert len(sent) >= len(got)
    expected = [(e["acml_vol"], Decimal(e["price"]), e["day"] + e["time"]) for e in sent[: len(got)]]
    actual = [(r.volume, r.price, r.time.strftime("%Y%m%d%H%M%S")) for r in got]
    assert actual == expected
    q = sim.admin("truth/quote", params={"code": code})
    for r in got:
        assert r.symbol == code and r.market == "KRX"
        assert r.prev_price == Decimal(q["prev_close"])  # STCK_PRPR - PRDY_VRSS
        assert r.time.utcoffset().total_seconds() == 9 * 3600

    for_key = stats["for_appkey"]
    assert stats["tokens_issued_total"] == 1, stats
    assert for_key["approval_keys_issued_total"] == 2, "pykis fetches an approval key per subscribe/unsubscribe"
    assert for_key["ws_sessions_total"] == 1, for_key
    assert for_key["ws_sessions_refused_total"] == 0, for_key
