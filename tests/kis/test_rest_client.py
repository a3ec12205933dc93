"""The REST client against the local exchange over real HTTP: typed results equal the exchange's
ground truth, paging is complete, and each error class is decided on the body's code with the
documented retries (and no more requests than that)."""

from __future__ import annotations

import asyncio
import logging
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from observer_resources.calendar import KST
from observer_resources.kis.config import KisConfig
from observer_resources.kis.errors import (
    BadCredentialsError,
    KisApiError,
    NoDataError,
    PaperUnsupportedError,
    RateLimitedError,
    TokenExpiredError,
    TransientError,
)
from observer_resources.kis.rest import KisRestClient
from observer_resources.shared.rate_limit import SharedRateLimiter
from observer_resources.shared.token_store import SqliteTokenStore
from observer_resources.shared.tokens import SharedTokenProvider

FROZEN = datetime(2026, 3, 10, 11, 0, 0, tzinfo=KST)  # the exchange's clock for this module (speed 0)


class SimTime:
    """The exchange's (frozen) clock, mirrored for the token provider's expiry arithmetic."""

    def __init__(self, sim, at: datetime):
        self.sim = sim
        self.at = at
        self.set(at)

    def set(self, at: datetime) -> None:
        self.at = at
        self.sim.admin("clock", {"at": at.isoformat(), "speed": 0})

    def __call__(self) -> datetime:
        return self.at


@pytest.fixture(scope="module")
def clock(sim):
    return SimTime(sim, FROZEN)


@pytest.fixture(scope="module")
def busy_codes(sim, clock) -> list[str]:
    return [li["code"] for li in sim.admin("listings", params={"order": "activity", "limit": "40"})["listings"]]


_creds_index = iter(range(1000, 2000))


class Env:
    """One fresh app key on the module's exchange, with the real shared token provider and limiter."""

    def __init__(
        self,
        sim,
        clock: SimTime,
        make_creds,
        tmp: Path,
        *,
        rest_url: str | None = None,
        secret_for_rest: str | None = None,
        secret_for_tokens: str | None = None,
    ):
        self.sim = sim
        self.app_key, self.secret = make_creds(next(_creds_index))
        self.token_config = KisConfig(self.app_key, secret_for_tokens or self.secret, "real", sim.rest_url, sim.ws_url)
        self.config = KisConfig(
            self.app_key, secret_for_rest or self.secret, "real", rest_url or sim.rest_url, sim.ws_url
        )
        self.tokens = SharedTokenProvider(
            self.token_config,
            SqliteTokenStore(tmp / f"tokens-{self.app_key[-6:]}.db"),
            clock=clock,
            too_soon_wait=timedelta(0),
            transient_delays=(0.05,),
        )
        self.limiter = SharedRateLimiter(self.config.key_id, 18.0, tmp / f"rl-{self.app_key[-6:]}.db")

    def client(self, **kw) -> KisRestClient:
        return KisRestClient(self.config, self.tokens, self.limiter, **kw)

    def sim_stats(self) -> dict:
        return self.sim.admin("stats", params={"appkey": self.app_key})["for_appkey"]

    def fault(self, kind: str, **params) -> dict:
        return self.sim.admin("faults", {"kind": kind, "appkey": self.app_key, **params})


@pytest.fixture
def env(sim, clock, make_creds, tmp_path) -> Env:
    return Env(sim, clock, make_creds, tmp_path)


def run(coro):
    return asyncio.run(coro)


async def _call(env: Env, method: str, *args, client_kw: dict | None = None, **kw):
    async with env.client(**(client_kw or {})) as c:
        result = await getattr(c, method)(*args, **kw)
        return result, c.stats


def truth_quote(sim, code: str) -> dict:
    return sim.admin("truth/quote", params={"code": code})


def truth_ticks(sim, code: str, *, day: date | None = None, frm: str = "000000", to: str = "235959") -> list[dict]:
    params = {"code": code, "from": frm, "to": to, "records": "0"}
    if day is not None:
        params["day"] = day.strftime("%Y%m%d")
    return sim.admin("truth/ticks", params=params)["ticks"]


# --- typed results vs. ground truth ---------------------------------------------------------------------


def test_inquire_price_equals_truth(sim, env, busy_codes):
    code = busy_codes[0]
    q, stats = run(_call(env, "inquire_price", code))
    t = truth_quote(sim, code)
    assert q.code == code
    assert (q.price, q.open, q.high, q.low) == (t["price"], t["open"], t["high"], t["low"])
    assert (q.acml_vol, q.acml_value) == (t["acml_vol"], t["acml_value"])
    assert (q.upper_limit, q.lower_limit, q.base_price) == (t["upper_limit"], t["lower_limit"], t["prev_close"])
    assert q.change == t["price"] - t["prev_close"]
    assert q.change_rate == round((t["price"] - t["prev_close"]) / t["prev_close"] * 100, 2)
    assert q.vwap == round(t["acml_value"] / t["acml_vol"], 2)
    assert isinstance(q.price, int) and isinstance(q.change_rate, float) and isinstance(q.halted, bool)
    assert q.w52_high >= q.high and q.w52_low <= q.low and q.w52_high_date <= FROZEN.date()
    assert q.raw["stck_prpr"] == str(t["price"])
    assert stats.requests == 1 and env.sim_stats()["requests_total"] == 1


def test_multi_price_keeps_request_order_and_best_bid_ask(sim, env, busy_codes):
    codes = busy_codes[:30][::-1]  # not the exchange's order
    rows, stats = run(_call(env, "multi_price", codes))
    assert [r.code for r in rows] == codes
    for r in rows:
        t = truth_quote(sim, r.code)
        assert (r.price, r.acml_vol, r.acml_value) == (t["price"], t["acml_vol"], t["acml_value"])
        assert (r.ask1, r.bid1) == (t["ask1"] or None, t["bid1"] or None)
        assert (r.ask_size1, r.bid_size1) == (t["ask_size1"], t["bid_size1"])
        assert r.prev_close == t["prev_close"] and r.change == t["price"] - t["prev_close"]
        assert r.ask1 is None or r.bid1 is None or r.ask1 > r.bid1
    assert stats.requests == 1


def test_multi_price_refuses_31_codes_before_sending(env, busy_codes):
    with pytest.raises(ValueError, match="at most 30"):
        run(_call(env, "multi_price", busy_codes[:31]))
    assert env.sim_stats().get("requests_total", 0) == 0


def test_daily_price_oldest_first_with_today(sim, env, busy_codes):
    code = busy_codes[1]
    bars, _ = run(_call(env, "daily_price", code))
    assert len(bars) == 30
    assert [b.day for b in bars] == sorted({b.day for b in bars})
    today = bars[-1]
    t = truth_quote(sim, code)
    assert today.day == FROZEN.date()
    assert (today.close, today.open, today.high, today.low, today.volume) == (
        t["price"],
        t["open"],
        t["high"],
        t["low"],
        t["acml_vol"],
    )
    assert bars[-2].close == t["prev_close"]  # the previous trading day's row carries the previous close


def test_daily_chart_pages_back_past_100_rows(env, busy_codes):
    code = busy_codes[1]
    start, end = FROZEN.date() - timedelta(days=250), FROZEN.date()

    async def go():
        async with env.client() as c:
            chart = await c.daily_chart(code, start, end)
            recent = await c.daily_price(code)
            return chart, recent, c.stats.requests

    chart, recent, requests = run(go())
    days = [b.day for b in chart]
    assert days == sorted(set(days)) and days[0] >= start and days[-1] == end
    assert len(chart) > 200 and requests >= 1 + 3  # three chart pages at least, one daily-price call
    assert all(b.value is not None and b.value > 0 for b in chart)
    # the chart TR and the daily-price TR agree on every day they share
    by_day = {b.day: b for b in chart}
    for b in recent:
        c = by_day[b.day]
        assert (c.open, c.high, c.low, c.close, c.volume) == (b.open, b.high, b.low, b.close, b.volume)


def _minutes_from_ticks(ticks: list[dict]) -> dict[str, dict]:
    bars: dict[str, dict] = {}
    for t in ticks:
        m = t["time"][:4] + "00"
        b = bars.get(m)
        if b is None:
            bars[m] = {
                "open": t["price"],
                "high": t["price"],
                "low": t["price"],
                "close": t["price"],
                "volume": t["qty"],
                "acml_value": t["acml_value"],
            }
        else:
            b["high"] = max(b["high"], t["price"])
            b["low"] = min(b["low"], t["price"])
            b["close"] = t["price"]
            b["volume"] += t["qty"]
            b["acml_value"] = t["acml_value"]
    return bars


def test_minute_bars_all_pages_back_to_the_start_and_equals_ticks(sim, env, busy_codes):
    code = busy_codes[2]
    result, stats = run(_call(env, "minute_bars_all", code, "110000", since="000000"))
    bars = result.bars
    ats = [b.at for b in bars]
    assert ats == sorted(set(ats)), "oldest first, no duplicates"
    assert ats[0] == FROZEN.replace(hour=0, minute=0) and ats[-1] == FROZEN.replace(hour=11, minute=0)
    assert len(bars) == 11 * 60 + 1  # every minute 00:00..11:00, empty minutes included
    assert stats.requests == -(-len(bars) // 30)  # 30 bars a page, no wasted call
    truth = _minutes_from_ticks(truth_ticks(sim, code, to="110000"))
    for b in bars:
        t = truth.get(b.at.strftime("%H%M%S"))
        if t is None:
            assert b.volume == 0
            continue
        assert (b.open, b.high, b.low, b.close, b.volume, b.acml_value) == (
            t["open"],
            t["high"],
            t["low"],
            t["close"],
            t["volume"],
            t["acml_value"],
        ), b.at
    assert result.summary is not None and result.summary.price == truth_quote(sim, code)["price"]


def test_minute_bars_one_page_and_session_floor(sim, env, busy_codes):
    code = busy_codes[2]

    async def go():
        async with env.client() as c:
            page = await c.minute_bars(code, "103000")
            floor = await c.minute_bars_all(code, "103000")  # default floor: the KRX session open (09:00)
            return page, floor

    page, floor = run(go())
    assert len(page.bars) == 30 and page.bars[-1].at == FROZEN.replace(hour=10, minute=30)
    assert [b.at for b in page.bars] == sorted(b.at for b in page.bars)
    assert floor.bars[-1].at == FROZEN.replace(hour=10, minute=30)
    assert floor.bars[0].at <= FROZEN.replace(hour=9, minute=0)
    assert floor.bars[0].at > FROZEN.replace(hour=8, minute=0)


def test_past_minute_bars_equal_that_days_ticks(sim, env, busy_codes):
    code = busy_codes[3]
    day = FROZEN.date() - timedelta(days=1)
    result, _ = run(_call(env, "past_minute_bars", code, day, "153000"))
    assert len(result.bars) == 120
    assert result.bars[-1].at == datetime(day.year, day.month, day.day, 15, 30, tzinfo=KST)
    assert all(b.at.date() == day for b in result.bars)
    truth = _minutes_from_ticks(truth_ticks(sim, code, day=day, to="153059"))
    for b in result.bars:
        t = truth.get(b.at.strftime("%H%M%S"))
        assert t is not None and (b.close, b.volume) == (t["close"], t["volume"]), b.at


def test_conclusions_follow_continuation_to_the_last_tick(sim, env, busy_codes):
    code = busy_codes[0]
    until = "000500"
    ticks, stats = run(_call(env, "conclusions", code, until, day=FROZEN.date()))
    truth = truth_ticks(sim, code, to=until)
    assert len(truth) > 90, "the check needs several pages"
    assert stats.requests == stats.pages == -(-len(truth) // 30)
    assert [(c.at.strftime("%H%M%S"), c.price, c.qty, c.acml_vol) for c in ticks] == [
        (t["time"], t["price"], t["qty"], t["acml_vol"]) for t in truth
    ], "oldest first, complete, no duplicates"
    assert all(c.at.date() == FROZEN.date() and c.at.tzinfo is not None for c in ticks)


def test_volume_rank_in_rank_order(sim, env):
    rows, _ = run(_call(env, "volume_rank"))
    assert [r.rank for r in rows] == list(range(1, len(rows) + 1)) and len(rows) >= 10
    vols = [r.acml_vol for r in rows]
    assert vols == sorted(vols, reverse=True)
    for r in rows[:3]:
        t = truth_quote(sim, r.code)
        assert (r.price, r.acml_vol) == (t["price"], t["acml_vol"])


def test_holidays_follow_ctx_paging(env):
    rows, stats = run(_call(env, "holidays", FROZEN.date()))
    days = [r.day for r in rows]
    assert days[0] == FROZEN.date()
    assert days == [FROZEN.date() + timedelta(days=i) for i in range(len(days))], "contiguous, no duplicates"
    assert stats.requests >= 2 and len(rows) > 30
    assert all(isinstance(r.market_open, bool) for r in rows)
    assert rows[0].market_open  # the exchange trades today (open clock)


def test_search_info(sim, env, busy_codes):
    code = busy_codes[4]
    info, _ = run(_call(env, "search_info", code))
    listing = next(li for li in sim.admin("listings")["listings"] if li["code"] == code)
    assert info.code == code and info.name == listing["name"] and info.product_type == "300"
    assert info.isin.startswith("KR") and info.first_listed is not None


def test_unknown_code_is_no_data(env):
    with pytest.raises(NoDataError) as exc:
        run(_call(env, "inquire_price", "999990"))
    assert exc.value.rt_cd == "7"
    assert env.sim_stats()["requests_total"] == 1


# --- error handling ---------------------------------------------------------------------------------


def test_rate_limit_is_retried_with_short_backoff(env, busy_codes):
    env.fault("rest_rate_limit", n=3)
    t0 = time.monotonic()
    q, stats = run(_call(env, "inquire_price", busy_codes[0]))
    elapsed = time.monotonic() - t0
    assert q.code == busy_codes[0]
    assert stats.retries["rate_limit"] == 3 and stats.rate_limit_waits == 3
    assert 0.3 <= stats.rate_limit_wait_seconds <= 1.0 * 3 and elapsed < 3.0
    s = env.sim_stats()
    assert s["requests_total"] == 4 and s["rate_limited_total"] == 3


def test_rate_limit_gives_up_after_max_retries(env, busy_codes):
    env.fault("rest_rate_limit", n=10)
    with pytest.raises(RateLimitedError) as exc:
        run(_call(env, "inquire_price", busy_codes[0], client_kw={"max_rate_retries": 2}))
    assert exc.value.code == "EGW00201" and exc.value.http_status == 500
    assert env.sim_stats()["requests_total"] == 3
    env.sim.admin("faults", method="DELETE")


def test_expired_token_is_refreshed_once(env, clock, busy_codes):
    async def go():
        async with env.client() as c:
            await c.inquire_price(busy_codes[0])
            first = await env.tokens.access_token()
            env.fault("token_expire_now")
            clock.set(clock.at + timedelta(seconds=61))  # KIS issues at most one token a minute
            q = await c.inquire_price(busy_codes[0])
            return first, await env.tokens.access_token(), q, c.stats

    try:
        first, second, q, stats = run(go())
    finally:
        clock.set(FROZEN)
    assert q.code == busy_codes[0] and first != second
    assert stats.retries["token"] == 1 and stats.requests == 3
    assert env.sim_stats()["tokens_issued_total"] == 2


def test_token_rejected_twice_raises_token_expired(sim, clock, make_creds, tmp_path, busy_codes):
    """A provider whose refresh hands back the same rejected token: one retry, then TokenExpiredError."""
    env = Env(sim, clock, make_creds, tmp_path)

    class StuckTokens:
        def __init__(self):
            self.refreshes = 0

        async def access_token(self):
            return "not-a-token"

        async def refresh(self, rejected):
            self.refreshes += 1
            return rejected

        async def approval_key(self):
            raise AssertionError("not used")

    stuck = StuckTokens()

    async def go():
        async with KisRestClient(env.config, stuck, env.limiter) as c:
            await c.inquire_price(busy_codes[0])

    with pytest.raises(TokenExpiredError) as exc:
        run(go())
    assert exc.value.code == "EGW00121" and stuck.refreshes == 1
    assert env.sim_stats()["requests_total"] == 2


def test_5xx_without_kis_body_is_retried_after_1_then_2_seconds(env, busy_codes):
    env.fault("rest_5xx", n=2, status=503)
    t0 = time.monotonic()
    q, stats = run(_call(env, "inquire_price", busy_codes[0]))
    elapsed = time.monotonic() - t0
    assert q.code == busy_codes[0] and stats.retries["transient"] == 2
    assert 3.0 <= elapsed < 5.0
    assert env.sim_stats()["requests_total"] == 3


def test_5xx_gives_up_as_transient(env, busy_codes):
    env.fault("rest_5xx", n=3, status=502)
    with pytest.raises(TransientError):
        run(_call(env, "inquire_price", busy_codes[0], client_kw={"transient_delays": (0.05, 0.05)}))
    assert env.sim_stats()["requests_total"] == 3


def test_timeout_is_transient_and_retried(env, busy_codes):
    env.fault("rest_slow", n=1, seconds=1.5)
    q, stats = run(_call(env, "inquire_price", busy_codes[0], client_kw={"timeout": 0.5, "transient_delays": (0.05,)}))
    assert q.code == busy_codes[0] and stats.retries["transient"] == 1


def test_connection_refused_is_transient(sim, clock, make_creds, tmp_path, busy_codes):
    env = Env(sim, clock, make_creds, tmp_path, rest_url="http://127.0.0.1:9")  # tokens still from the exchange
    with pytest.raises(TransientError):
        run(_call(env, "inquire_price", busy_codes[0], client_kw={"transient_delays": (0.01, 0.01)}))


def test_bad_app_secret_fails_at_once_with_one_request(sim, clock, make_creds, tmp_path, busy_codes, caplog):
    _, other_secret = make_creds(1999)
    env = Env(sim, clock, make_creds, tmp_path, secret_for_rest=other_secret)
    caplog.set_level(logging.DEBUG, logger="observer")
    with pytest.raises(BadCredentialsError) as exc:
        run(_call(env, "inquire_price", busy_codes[0]))
    assert exc.value.code == "EGW00105"
    assert env.sim_stats()["requests_total"] == 1, "no retry storm"
    for secret in (env.secret, other_secret, env.app_key):
        assert secret not in caplog.text and secret not in str(exc.value)


def test_bad_credentials_at_the_token_endpoint_send_no_quote_request(sim, clock, make_creds, tmp_path, busy_codes):
    first = Env(sim, clock, make_creds, tmp_path)
    run(_call(first, "inquire_price", busy_codes[0]))  # binds the key's real secret on the exchange
    _, wrong = make_creds(1998)
    env = Env.__new__(Env)
    env.__dict__.update(first.__dict__)
    env.token_config = KisConfig(first.app_key, wrong, "real", sim.rest_url, sim.ws_url)
    env.tokens = SharedTokenProvider(env.token_config, SqliteTokenStore(tmp_path / "wrong.db"), clock=clock)
    with pytest.raises(BadCredentialsError):
        run(_call(env, "inquire_price", busy_codes[0]))
    assert first.sim_stats()["requests_total"] == 1  # only the first client's request


def test_other_api_errors_are_not_retried_nor_slept_on(env, busy_codes):
    t0 = time.monotonic()
    with pytest.raises(KisApiError) as exc:
        run(_call(env, "inquire_price", busy_codes[0], market="XX"))
    assert type(exc.value) is KisApiError and exc.value.rt_cd not in ("0", "")
    assert time.monotonic() - t0 < 1.0
    assert env.sim_stats()["requests_total"] == 1


def test_paper_key_gets_paper_unsupported(sim_factory, make_creds, tmp_path):
    paper = sim_factory("--mode", "paper", "--clock", "open", "--seed", "7", "--listings", "60")
    clock = SimTime(paper, FROZEN)
    env = Env(paper, clock, make_creds, tmp_path)
    code = paper.admin("listings", params={"limit": "1"})["listings"][0]["code"]
    q, _ = run(_call(env, "inquire_price", code))  # quotes work on paper
    assert q.code == code
    with pytest.raises(PaperUnsupportedError):
        run(_call(env, "multi_price", [code]))


def test_stats_count_requests_retries_and_errors(env, busy_codes):
    env.fault("rest_rate_limit", n=1)

    async def go():
        async with env.client() as c:
            await c.inquire_price(busy_codes[0])
            with pytest.raises(NoDataError):
                await c.inquire_price("999990")
            return c.stats.as_dict()

    s = run(go())
    assert s["requests"] == 3 and s["retries"] == {"rate_limit": 1}
    assert s["rate_limit_waits"] == 1 and 0.1 <= s["rate_limit_wait_seconds"] <= 1.0
    assert len(s["errors"]) == 1 and list(s["errors"].values()) == [1]  # the no-data answer, by its msg_cd
