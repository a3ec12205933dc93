"""The shared access token against the local exchange: one issuance for many processes, refresh
once, KIS's one-a-minute rule, bad credentials, and no secret anywhere but the token store."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest

from observer_resources.calendar import KST
from observer_resources.kis import protocol as p
from observer_resources.kis.auth import (
    IssuedToken,
    issue_access_token,
    issue_approval_key,
    parse_token_body,
    revoke_access_token,
    token_endpoint_error,
)
from observer_resources.kis.config import KisConfig
from observer_resources.kis.errors import (
    BadCredentialsError,
    KisApiError,
    TokenIssueTooSoonError,
    TransientError,
)
from observer_resources.shared.token_store import SqliteTokenStore
from observer_resources.shared.tokens import SharedTokenProvider

from .workers import Workers

OWN_SIM = ("--mode", "real", "--clock", "open", "--seed", "7", "--listings", "600")
FAST = timedelta(seconds=0.2)  # stands in for KIS's 60 s in tests; the default is checked separately


def config(sim, creds: tuple[str, str], rest_url: str | None = None) -> KisConfig:
    return KisConfig(creds[0], creds[1], "real", rest_url or sim.rest_url, sim.ws_url if sim else "ws://127.0.0.1:9")


def key_stats(sim, appkey: str) -> dict:
    return sim.admin("stats")["by_appkey"].get(appkey, {})


def a_code(sim) -> str:
    return sim.admin("listings", params={"limit": "1"})["listings"][0]["code"]


def sim_now(sim) -> datetime:
    return datetime.fromisoformat(sim.admin("clock")["now"])


# --- auth calls (pure mapping + one round trip each) --------------------------------------------------


def test_expiry_comes_from_the_kst_string_not_expires_in() -> None:
    issued = datetime(2026, 6, 23, 22, 3, 0, tzinfo=KST)
    body = {
        "access_token": "tok",
        "token_type": "Bearer",
        "expires_in": 82_000,  # drifted, as mojito reports
        "access_token_token_expired": "2026-06-24 22:03:52",
    }
    tok = parse_token_body(body, issued)
    assert tok.expires_at == datetime(2026, 6, 24, 22, 3, 52, tzinfo=KST)
    assert tok.expires_at.utcoffset() == timedelta(hours=9)
    assert "tok" not in repr(tok).replace("IssuedToken", "")


def test_expires_in_is_only_a_logged_fallback(caplog: pytest.LogCaptureFixture) -> None:
    issued = datetime(2026, 6, 23, 22, 0, tzinfo=KST)
    with caplog.at_level(logging.WARNING, "observer.kis.token"):
        tok = parse_token_body({"access_token": "tok", "expires_in": "86400"}, issued)
    assert tok.expires_at == issued + timedelta(days=1)
    assert "access_token_token_expired" in caplog.text
    with pytest.raises(KisApiError):
        parse_token_body({"access_token": "tok"}, issued)
    with pytest.raises(KisApiError):
        parse_token_body({"error_code": "EGW00133"}, issued)


@pytest.mark.parametrize(
    ("status", "body", "kind"),
    [
        (
            403,
            {"error_code": "EGW00133", "error_description": p.ERROR_MESSAGES[p.EGW_TOKEN_TOO_OFTEN]},
            TokenIssueTooSoonError,
        ),
        (403, {"error_code": "EGW00105", "error_description": "유효하지 않은 AppSecret입니다."}, BadCredentialsError),
        (403, {"error_code": "EGW00103", "error_description": "유효하지 않은 AppKey입니다."}, BadCredentialsError),
        (401, None, BadCredentialsError),
        (502, None, TransientError),
        (503, {"unexpected": "html"}, TransientError),
        (403, {"error_code": "EGW00999", "error_description": "새 오류"}, KisApiError),
    ],
)
def test_token_endpoint_errors_are_typed_by_code(status: int, body: dict | None, kind: type) -> None:
    err = token_endpoint_error(status, body, what="tokenP")
    assert type(err) is kind
    if isinstance(err, KisApiError):
        assert err.code == (body or {}).get("error_code", "")
        assert err.http_status == status


def test_error_messages_never_echo_secrets() -> None:
    key, secret = "PS" + "k" * 34, "s" * 180
    err = token_endpoint_error(
        403,
        {"error_code": "EGW00103", "error_description": f"bad key {key} / {secret}"},
        what="tokenP",
        secrets=(key, secret),
    )
    assert key not in str(err) and secret not in str(err) and "***" in str(err)


def test_issue_approval_and_revoke_round_trip(sim, make_creds) -> None:
    creds = make_creds(201)
    cfg = config(sim, creds)
    code = a_code(sim)

    async def go() -> tuple[IssuedToken, str, dict]:
        async with httpx.AsyncClient() as http:
            tok = await issue_access_token(http, cfg)
            approval = await issue_approval_key(http, cfg)
            await revoke_access_token(http, cfg, tok.access_token)
            r = await http.get(
                f"{sim.rest_url}{p.QUOTE_BASE}/inquire-price",
                params={"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": code},
                headers={
                    "authorization": f"Bearer {tok.access_token}",
                    "appkey": creds[0],
                    "appsecret": creds[1],
                    "tr_id": p.TR_INQUIRE_PRICE,
                    "custtype": "P",
                },
            )
            return tok, approval, r.json()

    tok, approval, after_revoke = asyncio.run(go())
    lifetime = tok.expires_at - sim_now(sim)
    assert timedelta(hours=23, minutes=59) < lifetime <= timedelta(hours=24)
    assert tok.expires_at.utcoffset() == timedelta(hours=9)
    assert approval and approval != tok.access_token
    assert after_revoke["msg_cd"] == p.EGW_INVALID_TOKEN
    st = key_stats(sim, creds[0])
    assert st["tokens_issued_total"] == 1 and st["approval_keys_issued_total"] == 1


# --- one token for many processes ---------------------------------------------------------------------


def test_eight_processes_get_one_token_and_a_restart_reuses_it(sim, make_creds, tmp_path: Path) -> None:
    creds = make_creds(202)
    results = Workers(8, "token", creds=creds, rest_url=sim.rest_url, state=tmp_path).run()
    st = key_stats(sim, creds[0])
    assert st["tokens_issued_total"] == 1
    assert st["token_refused_total"] == 0
    assert len({r["token"] for r in results}) == 1
    assert sum(r["tokens"]["issued"] for r in results) == 1
    assert sum(r["tokens"]["reused"] for r in results) == 7

    restarted = Workers(1, "token", creds=creds, rest_url=sim.rest_url, state=tmp_path).run()[0]
    assert restarted["token"] == results[0]["token"]
    assert restarted["tokens"]["issued"] == 0 and restarted["tokens"]["reused"] == 1
    assert key_stats(sim, creds[0])["tokens_issued_total"] == 1


def test_concurrent_coroutines_of_one_process_issue_once(sim, make_creds, tmp_path: Path) -> None:
    creds = make_creds(203)
    provider = SharedTokenProvider(config(sim, creds), SqliteTokenStore(tmp_path / "t.sqlite"))

    async def go() -> list[str]:
        return await asyncio.gather(*(provider.access_token() for _ in range(20)))

    tokens = asyncio.run(go())
    assert len(set(tokens)) == 1
    assert provider.counters.issued == 1
    assert key_stats(sim, creds[0])["tokens_issued_total"] == 1


@pytest.mark.parametrize("how", ["clock_jump", "expire_fault"])
def test_expired_token_is_refreshed_once_when_four_processes_see_it(
    sim_factory, make_creds, tmp_path: Path, how: str
) -> None:
    sim = sim_factory(*OWN_SIM)
    creds = make_creds(204)
    workers = Workers(
        4,
        "refresh",
        creds=creds,
        rest_url=sim.rest_url,
        state=tmp_path,
        code=a_code(sim),
        too_soon_wait=FAST.total_seconds(),
    )
    workers.wait_ready()  # each holds the same token now
    assert key_stats(sim, creds[0])["tokens_issued_total"] == 1
    now = sim_now(sim)
    if how == "clock_jump":
        sim.admin("clock", json={"at": (now + timedelta(hours=25)).isoformat()})
    else:
        sim.admin("faults", json={"kind": "token_expire_now", "appkey": creds[0]})
        # KIS's one-issuance-a-minute rule runs on the exchange clock: let a minute pass there
        sim.admin("clock", json={"at": (now + timedelta(seconds=61)).isoformat()})
    results = workers.go()

    st = key_stats(sim, creds[0])
    assert st["rest_errors_total"] == 4  # every process saw EGW00123 once
    assert st["tokens_issued_total"] == 2 and st["tokens_new_total"] == 2
    assert st["token_refused_total"] == 0
    assert all(r["rest"]["retries"] == {"token": 1} for r in results)
    assert len({r["before"] for r in results}) == 1
    assert len({r["after"] for r in results}) == 1
    assert results[0]["after"] != results[0]["before"]
    assert sum(r["tokens"]["refreshed"] for r in results) == 1
    assert all(r["price"] > 0 for r in results)


def test_refresh_ahead_of_expiry_but_never_within_six_hours(sim_factory, make_creds, tmp_path: Path) -> None:
    sim = sim_factory(*OWN_SIM)
    creds = make_creds(205)
    offset = [timedelta(0)]

    def clock() -> datetime:
        return datetime.now(KST) + offset[0]

    store = SqliteTokenStore(tmp_path / "t.sqlite")
    provider = SharedTokenProvider(config(sim, creds), store, clock=clock, too_soon_wait=FAST)
    eager = SharedTokenProvider(
        config(sim, creds), store, clock=clock, too_soon_wait=FAST, refresh_margin=timedelta(hours=23, minutes=30)
    )
    t1 = asyncio.run(provider.access_token())
    # The eager provider finds < 23.5 h left at once, but KIS would hand back the same token within
    # 6 h of issuance, so it does not ask.
    assert asyncio.run(eager.access_token()) == t1
    assert eager.counters.issued == 0 and eager.counters.reused == 1
    assert key_stats(sim, creds[0])["tokens_issued_total"] == 1

    # 23.5 h later on both clocks: less than the 1 h margin is left, so the token is replaced.
    time.sleep(FAST.total_seconds())  # (and KIS's minute between issuances, shortened here, has passed)
    offset[0] = timedelta(hours=23, minutes=30)
    sim.admin("clock", json={"at": (sim_now(sim) + offset[0]).isoformat()})
    t2 = asyncio.run(provider.access_token())
    assert t2 != t1
    assert provider.counters.issued == 2 and provider.counters.refreshed == 1
    assert asyncio.run(eager.access_token()) == t2  # others pick up the refreshed token from the store
    assert eager.counters.issued == 0
    st = key_stats(sim, creds[0])
    assert st["tokens_new_total"] == 2 and st["token_refused_total"] == 0


def test_a_refused_refresh_ahead_keeps_the_valid_token_without_waiting(sim_factory, make_creds, tmp_path: Path) -> None:
    sim = sim_factory(*OWN_SIM)
    creds = make_creds(214)
    offset = [timedelta(0)]
    provider = SharedTokenProvider(
        config(sim, creds),
        SqliteTokenStore(tmp_path / "t.sqlite"),
        clock=lambda: datetime.now(KST) + offset[0],
        too_soon_wait=FAST,
    )
    t1 = asyncio.run(provider.access_token())
    time.sleep(FAST.total_seconds())
    offset[0] = timedelta(hours=23, minutes=30)
    sim.admin("clock", json={"at": (sim_now(sim) + offset[0]).isoformat()})
    sim.admin("faults", json={"kind": "token_refuse", "n": 1, "appkey": creds[0]})
    t0 = time.monotonic()
    assert asyncio.run(provider.access_token()) == t1  # still valid for 30 min: used, no 60-s wait
    assert time.monotonic() - t0 < FAST.total_seconds()
    assert provider.counters.too_soon == 1 and provider.counters.refreshed == 0
    assert asyncio.run(provider.access_token()) == t1  # not retried before the backoff ends
    time.sleep(FAST.total_seconds() + 0.05)
    t2 = asyncio.run(provider.access_token())  # retried after it
    assert t2 != t1 and provider.counters.refreshed == 1
    st = key_stats(sim, creds[0])
    assert st["token_refused_total"] == 1 and st["tokens_new_total"] == 2


def test_refresh_returns_a_newer_stored_token_without_issuing(sim, make_creds, tmp_path: Path) -> None:
    creds = make_creds(206)
    store = SqliteTokenStore(tmp_path / "t.sqlite")
    a = SharedTokenProvider(config(sim, creds), store)
    b = SharedTokenProvider(config(sim, creds), store)
    token = asyncio.run(a.access_token())
    assert asyncio.run(b.refresh("some-older-token")) == token  # the stored one differs: no issuance
    assert b.counters.issued == 0
    assert key_stats(sim, creds[0])["tokens_issued_total"] == 1


# --- KIS's one issuance a minute ----------------------------------------------------------------------


def test_egw00133_waits_then_succeeds(sim, make_creds, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    creds = make_creds(207)
    sim.admin("faults", json={"kind": "token_refuse", "n": 2, "appkey": creds[0]})
    provider = SharedTokenProvider(config(sim, creds), SqliteTokenStore(tmp_path / "t.sqlite"), too_soon_wait=FAST)
    t0 = time.monotonic()
    with caplog.at_level(logging.INFO, "observer.kis.token"):
        token = asyncio.run(provider.access_token())
    elapsed = time.monotonic() - t0
    assert token
    assert elapsed >= 0.2 + 0.4  # 1x then 2x the base wait
    c = provider.counters
    assert (c.too_soon, c.issued, c.waits, c.failures) == (2, 1, 2, 0)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING and "EGW00133" in r.getMessage()]
    assert len(warnings) == 2
    st = key_stats(sim, creds[0])
    assert st["token_refused_total"] == 2 and st["tokens_issued_total"] == 1


def test_egw00133_backoff_is_shared_and_bounded(sim, make_creds, tmp_path: Path) -> None:
    creds = make_creds(208)
    sim.admin("faults", json={"kind": "token_refuse", "n": 1, "appkey": creds[0]})
    store = SqliteTokenStore(tmp_path / "t.sqlite")
    wait = timedelta(seconds=1.0)
    first = SharedTokenProvider(config(sim, creds), store, too_soon_wait=wait, max_issue_attempts=1)
    with pytest.raises(TokenIssueTooSoonError):
        asyncio.run(first.access_token())
    assert first.counters.failures == 1
    # Another process (same store) respects the backoff the first one learned instead of asking KIS.
    second = SharedTokenProvider(config(sim, creds), store, too_soon_wait=wait)
    t0 = time.monotonic()
    assert asyncio.run(second.access_token())
    assert time.monotonic() - t0 >= 0.8
    assert second.counters.too_soon == 0 and second.counters.waits == 1
    st = key_stats(sim, creds[0])
    assert st["token_refused_total"] == 1 and st["tokens_issued_total"] == 1


def test_issuance_gives_up_after_bounded_refusals(sim, make_creds, tmp_path: Path) -> None:
    creds = make_creds(209)
    sim.admin("faults", json={"kind": "token_refuse", "n": 10, "appkey": creds[0]})
    provider = SharedTokenProvider(
        config(sim, creds),
        SqliteTokenStore(tmp_path / "t.sqlite"),
        too_soon_wait=timedelta(seconds=0.05),
        max_issue_attempts=3,
    )
    with pytest.raises(TokenIssueTooSoonError):
        asyncio.run(provider.access_token())
    assert provider.counters.too_soon == 3 and provider.counters.failures == 1
    assert key_stats(sim, creds[0])["token_refused_total"] == 3


def test_default_waits_follow_kis_minute(tmp_path: Path) -> None:
    from observer_resources.kis.config import DEMO_APP_KEY, DEMO_APP_SECRET

    provider = SharedTokenProvider(KisConfig(DEMO_APP_KEY, DEMO_APP_SECRET), SqliteTokenStore(tmp_path / "t.sqlite"))
    assert provider.too_soon_wait == timedelta(seconds=60)
    assert provider.refresh_margin == timedelta(hours=1)
    # waits of 60, 120, 240 s before giving up: the original design's schedule
    assert [provider.too_soon_wait.total_seconds() * 2**i for i in range(provider.max_issue_attempts - 1)] == [
        60,
        120,
        240,
    ]


# --- failures that must not be retried, or only briefly ------------------------------------------------


def test_bad_secret_raises_once_without_retry(sim, make_creds, tmp_path: Path) -> None:
    key, secret = make_creds(210)
    asyncio.run(_approval(config(sim, (key, secret))))  # the exchange binds the real secret to the key
    wrong = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    calls: list[str] = []

    async def count(request: httpx.Request) -> None:
        calls.append(request.url.path)

    async def go() -> None:
        async with httpx.AsyncClient(event_hooks={"request": [count]}) as http:
            provider = SharedTokenProvider(config(sim, (key, wrong)), store, http=http, too_soon_wait=FAST)
            try:
                await provider.access_token()
            finally:
                assert provider.counters.failures == 1 and provider.counters.issued == 0

    store = SqliteTokenStore(tmp_path / "t.sqlite")
    with pytest.raises(BadCredentialsError) as err:
        asyncio.run(go())
    assert calls == [p.PATH_TOKEN]
    assert err.value.code == p.EGW_BAD_SECRET
    assert key not in str(err.value) and wrong not in str(err.value)
    assert store.get(config(sim, (key, wrong)).key_id, "access") is None


async def _approval(cfg: KisConfig) -> str:
    async with httpx.AsyncClient() as http:
        return await issue_approval_key(http, cfg)


def test_network_failure_is_retried_briefly_then_transient(make_creds, tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    creds = make_creds(211)
    cfg = KisConfig(creds[0], creds[1], "real", f"http://127.0.0.1:{port}", "ws://127.0.0.1:9")
    provider = SharedTokenProvider(cfg, SqliteTokenStore(tmp_path / "t.sqlite"), transient_delays=(0.05, 0.1))
    with pytest.raises(TransientError) as err:
        asyncio.run(provider.access_token())
    assert provider.counters.waits == 2 and provider.counters.failures == 1
    assert creds[0] not in str(err.value) and creds[1] not in str(err.value)


# --- approval keys ------------------------------------------------------------------------------------


def test_approval_key_is_fresh_per_call_and_recorded(sim, make_creds, tmp_path: Path) -> None:
    creds = make_creds(212)
    store = SqliteTokenStore(tmp_path / "t.sqlite")
    provider = SharedTokenProvider(config(sim, creds), store)

    async def go() -> tuple[str, str]:
        return await provider.approval_key(), await provider.approval_key()

    k1, k2 = asyncio.run(go())
    assert k1 != k2
    rec = store.get(provider.key_id, "approval")
    assert rec is not None and rec.value == k2 and rec.expires_at > rec.issued_at
    assert provider.counters.approval_keys == 2
    assert key_stats(sim, creds[0])["approval_keys_issued_total"] == 2


# --- secrets ------------------------------------------------------------------------------------------


def test_no_secret_in_logs_reprs_or_the_store_file(
    sim_factory, make_creds, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    sim = sim_factory(*OWN_SIM)
    key, secret = creds = make_creds(213)
    path = tmp_path / "t.sqlite"
    store = SqliteTokenStore(path)
    provider = SharedTokenProvider(config(sim, creds), store, too_soon_wait=FAST)

    async def go() -> tuple[str, str, str]:
        t1 = await provider.access_token()
        sim.admin("clock", json={"at": (sim_now(sim) + timedelta(minutes=2)).isoformat()})
        t2 = await provider.refresh(t1)  # within 6 h: KIS hands back the same token (logged as such)
        return t1, t2, await provider.approval_key()

    with caplog.at_level(logging.DEBUG):
        t1, t2, approval = asyncio.run(go())
    assert t2 == t1
    assert any("same token" in r.getMessage() for r in caplog.records)
    assert provider.key_id in caplog.text  # events are logged, under the non-secret id
    shown = caplog.text + repr(provider) + repr(store.get(provider.key_id, "access")) + repr(provider.config)
    for s in (key, secret, t1, approval):
        assert s not in shown
        assert not any(s[i : i + 12] in shown for i in range(0, len(s) - 11, 6) if len(set(s[i : i + 12])) > 2)
    raw = b"".join(f.read_bytes() for f in tmp_path.iterdir() if f.name.startswith("t.sqlite"))
    assert t1.encode() in raw  # the store holds the token (0600) ...
    assert key.encode() not in raw and secret.encode() not in raw  # ... but never the key or secret
