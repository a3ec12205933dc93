"""FID_ORG_ADJ_PRC means opposite things in the two daily TRs (docs/kis-protocol.md §6.3/§6.4): 0 = adjusted in
inquire-daily-itemchartprice, 1 = adjusted in inquire-daily-price. The client's ``adjusted=`` must give the adjusted
series in both, which the exchange (whose truth knows which is which) proves over real HTTP."""

from __future__ import annotations

import asyncio
from datetime import date, datetime, timedelta

import httpx
from support import kis_for

from local_exchange.accounts import demo_credentials
from observer_resources import clock
from observer_resources.calendar import KST
from observer_resources.resources import kis_rest_clients


def test_both_daily_trs_answer_adjusted_and_raw_as_the_client_asks(sim_factory, tmp_path, monkeypatch):
    sim = sim_factory("--mode", "real", "--clock", "open", "--seed", "7", "--listings", "120")
    acts = sim.admin("truth/corporate_actions")["actions"]
    ev = next(a for a in acts if a["kind"] == "split")
    ex = date.fromisoformat(ev["ex_date"])
    # ten days after the split, both clocks frozen at the same instant (inquire-daily-price serves the last 30 days;
    # tokens expire by the exchange's time, which Observer's clock must share)
    at = datetime.combine(ex + timedelta(days=10), datetime.min.time(), KST).replace(hour=21)
    sim.admin("clock", json={"at": at.isoformat(), "speed": 0})
    clock.write_sim(tmp_path / "clock.json", at, speed=0.0)
    monkeypatch.setenv("OBSERVER_CLOCK_FILE", str(tmp_path / "clock.json"))
    truth = {
        date.fromisoformat(b["day"]): b
        for b in sim.admin(
            "truth/daily_bars",
            params={
                "code": ev["code"],
                "from": (ex - timedelta(days=20)).isoformat(),
                "to": (ex + timedelta(days=10)).isoformat(),
            },
        )["bars"]
    }
    kis = kis_for(sim, tmp_path, 620)

    async def ask():  # noqa: ANN202
        async with kis_rest_clients(kis) as (c,):
            lo, hi = ex - timedelta(days=15), ex + timedelta(days=9)
            return (
                await c.daily_chart(ev["code"], lo, hi, adjusted=True),
                await c.daily_chart(ev["code"], lo, hi, adjusted=False),
                await c.daily_price(ev["code"], adjusted=True),
                await c.daily_price(ev["code"], adjusted=False),
            )

    chart_adj, chart_raw, price_adj, price_raw = asyncio.run(ask())
    for got, series in ((chart_adj, "adjusted"), (chart_raw, "raw"), (price_adj, "adjusted"), (price_raw, "raw")):
        assert got and all(b.close == truth[b.day][series]["close"] for b in got), series
        assert all(b.volume == truth[b.day][series]["volume"] for b in got), series
    before = [b for b in chart_raw if b.day < ex]
    assert before and all(b.close != truth[b.day]["adjusted"]["close"] for b in before)  # a split: raw = adj x ratio
    assert any(b.close != truth[b.day]["adjusted"]["close"] for b in price_raw)  # the 30 days span the split
    ex_row = next(b for b in chart_raw if b.day == ex)
    assert (ex_row.raw["mod_yn"], ex_row.raw["prtt_rate"]) == ("Y", ev["prtt_rate"])
    assert next(b for b in price_raw if b.day == ex).raw["acml_prtt_rate"] == ev["prtt_rate"]


def test_an_invalid_fid_org_adj_prc_is_refused(sim_factory):
    sim = sim_factory("--mode", "real", "--clock", "open", "--seed", "7", "--listings", "120")
    key, secret = demo_credentials(621)
    with httpx.Client(base_url=sim.rest_url, timeout=30) as http:
        token = http.post(
            "/oauth2/tokenP", json={"grant_type": "client_credentials", "appkey": key, "appsecret": secret}
        ).json()["access_token"]
        headers = {"authorization": f"Bearer {token}", "appkey": key, "appsecret": secret, "tr_id": "FHKST03010100"}
        params = {
            "FID_COND_MRKT_DIV_CODE": "J",
            "FID_INPUT_ISCD": sim.admin("listings")["listings"][0]["code"],
            "FID_INPUT_DATE_1": "20230101",
            "FID_INPUT_DATE_2": "20230131",
            "FID_PERIOD_DIV_CODE": "D",
            "FID_ORG_ADJ_PRC": "2",
        }
        body = http.get(
            "/uapi/domestic-stock/v1/quotations/inquire-daily-itemchartprice", params=params, headers=headers
        ).json()
    assert body["rt_cd"] != "0" and "FID_ORG_ADJ_PRC" in body["msg1"]
