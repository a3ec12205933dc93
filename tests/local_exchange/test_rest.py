"""The exchange's REST side over real loopback HTTP: token rules, rate limits, errors, every TR's
shape and paging, masters, exact header bytes (docs/kis-protocol.md §2-§7, §10)."""

from __future__ import annotations

import asyncio
import io
import socket
import time
import zipfile
from datetime import date, datetime, timedelta

import httpx
import pytest

from observer_resources import calendar as cal
from observer_resources.calendar import KST

from ._wire import QUOTE, Kis

# Field lists as docs/kis-protocol.md Appendix A gives them (kept separate from the server's own constants,
# so a drift in either is caught).
APPENDIX = {
    "inquire-price": (
        "iscd_stat_cls_code marg_rate rprs_mrkt_kor_name new_hgpr_lwpr_cls_code bstp_kor_isnm temp_stop_yn "
        "oprc_rang_cont_yn clpr_rang_cont_yn crdt_able_yn grmn_rate_cls_code elw_pblc_yn stck_prpr prdy_vrss "
        "prdy_vrss_sign prdy_ctrt acml_tr_pbmn acml_vol prdy_vrss_vol_rate stck_oprc stck_hgpr stck_lwpr stck_mxpr "
        "stck_llam stck_sdpr wghn_avrg_stck_prc hts_frgn_ehrt frgn_ntby_qty pgtr_ntby_qty pvt_scnd_dmrs_prc "
        "pvt_frst_dmrs_prc pvt_pont_val pvt_frst_dmsp_prc pvt_scnd_dmsp_prc dmrs_val dmsp_val cpfn rstc_wdth_prc "
        "stck_fcam stck_sspr aspr_unit hts_deal_qty_unit_val lstn_stcn hts_avls per pbr stac_month vol_tnrt eps bps "
        "d250_hgpr d250_hgpr_date d250_hgpr_vrss_prpr_rate d250_lwpr d250_lwpr_date d250_lwpr_vrss_prpr_rate "
        "stck_dryy_hgpr dryy_hgpr_vrss_prpr_rate dryy_hgpr_date stck_dryy_lwpr dryy_lwpr_vrss_prpr_rate "
        "dryy_lwpr_date w52_hgpr w52_hgpr_vrss_prpr_ctrt w52_hgpr_date w52_lwpr w52_lwpr_vrss_prpr_ctrt w52_lwpr_date "
        "whol_loan_rmnd_rate ssts_yn stck_shrn_iscd fcam_cnnm cpfn_cnnm apprch_rate frgn_hldn_qty vi_cls_code "
        "ovtm_vi_cls_code last_ssts_cntg_qty invt_caful_yn mrkt_warn_cls_code short_over_yn sltr_yn mang_issu_cls_code"
    ).split(),
    "search-info": (
        "pdno prdt_type_cd std_pdno shtn_pdno prdt_name prdt_name120 prdt_abrv_name prdt_eng_name prdt_eng_name120 "
        "prdt_eng_abrv_name prdt_sale_stat_cd prdt_risk_grad_cd prdt_clsf_cd prdt_clsf_name sale_strt_dt sale_end_dt "
        "wrap_asst_type_cd ivst_prdt_type_cd ivst_prdt_type_cd_name frst_erlm_dt"
    ).split(),
    "intstock-multprice": (
        "kospi_kosdaq_cls_name mrkt_trtm_cls_name hour_cls_code inter_shrn_iscd inter_kor_isnm inter2_prpr "
        "inter2_prdy_vrss prdy_vrss_sign prdy_ctrt acml_vol inter2_oprc inter2_hgpr inter2_lwpr inter2_llam inter2_mxpr "
        "inter2_askp inter2_bidp seln_rsqn shnu_rsqn total_askp_rsqn total_bidp_rsqn acml_tr_pbmn inter2_prdy_clpr "
        "oprc_vrss_hgpr_rate intr_antc_cntg_vrss intr_antc_cntg_vrss_sign intr_antc_cntg_prdy_ctrt intr_antc_vol "
        "inter2_sdpr"
    ).split(),
    "time-chart-1": "prdy_vrss prdy_vrss_sign prdy_ctrt stck_prdy_clpr acml_vol acml_tr_pbmn hts_kor_isnm stck_prpr".split(),
    "time-chart-2": "stck_bsop_date stck_cntg_hour stck_prpr stck_oprc stck_hgpr stck_lwpr cntg_vol acml_tr_pbmn".split(),
    "inquire-daily-price": (
        "stck_bsop_date stck_oprc stck_hgpr stck_lwpr stck_clpr acml_vol prdy_vrss_vol_rate prdy_vrss prdy_vrss_sign "
        "prdy_ctrt hts_frgn_ehrt frgn_ntby_qty flng_cls_code acml_prtt_rate"
    ).split(),
    "daily-chart-1": (
        "prdy_vrss prdy_vrss_sign prdy_ctrt stck_prdy_clpr acml_vol acml_tr_pbmn hts_kor_isnm stck_prpr stck_shrn_iscd "
        "prdy_vol stck_mxpr stck_llam stck_oprc stck_hgpr stck_lwpr stck_prdy_oprc stck_prdy_hgpr stck_prdy_lwpr askp "
        "bidp prdy_vrss_vol vol_tnrt stck_fcam lstn_stcn cpfn hts_avls per eps pbr itewhol_loan_rmnd_ratem"
    ).split(),
    "daily-chart-2": (
        "stck_bsop_date stck_clpr stck_oprc stck_hgpr stck_lwpr acml_vol acml_tr_pbmn flng_cls_code prtt_rate mod_yn "
        "prdy_vrss_sign prdy_vrss revl_issu_reas"
    ).split(),
    "conclusion-1": "stck_prpr prdy_vrss prdy_vrss_sign prdy_ctrt acml_vol prdy_vol rprs_mrkt_kor_name".split(),
    "conclusion-2": "stck_cntg_hour stck_pbpr prdy_vrss prdy_vrss_sign prdy_ctrt askp bidp tday_rltv acml_vol cnqn".split(),
    "volume-rank": (
        "hts_kor_isnm mksc_shrn_iscd data_rank stck_prpr prdy_vrss_sign prdy_vrss prdy_ctrt acml_vol prdy_vol lstn_stcn "
        "avrg_vol n_befr_clpr_vrss_prpr_rate vol_inrt vol_tnrt nday_vol_tnrt avrg_tr_pbmn tr_pbmn_tnrt "
        "nday_tr_pbmn_tnrt acml_tr_pbmn"
    ).split(),
    "chk-holiday": "bass_dt wday_dvsn_cd bzdy_yn tr_day_yn opnd_yn sttl_day_yn".split(),
}

# A frozen KRX-mode exchange at 10:30 on an ordinary Wednesday: deterministic for paging tests.
FROZEN_AT = "2026-03-04T10:30:00+09:00"
FROZEN = ("--clock", "krx", "--start", FROZEN_AT, "--speed", "0", "--seed", "11", "--listings", "300")


def assert_shape(obj: dict, fields: list[str]) -> None:
    assert list(obj) == fields, set(obj) ^ set(fields)
    bad = {k: v for k, v in obj.items() if not isinstance(v, str)}
    assert not bad, f"non-string values: {bad}"


def P(code: str, **extra: str) -> dict[str, str]:  # noqa: N802 - KIS parameter dict
    return {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": code, **extra}


def codes_with_ticks(sim, kis_day: str, lo: int, hi: int, until: str = "103000", limit: int = 300) -> str:
    """A common stock with between lo and hi ticks from the open through ``until`` on ``kis_day``."""
    for row in sim.admin("listings", params={"limit": str(limit)})["listings"]:
        if row["group"] != "ST" or row["halted"] or row["etp"]:
            continue
        t = sim.admin("truth/ticks", params={"code": row["code"], "day": kis_day, "to": until, "records": "0"})
        if lo <= t["count"] <= hi:
            return row["code"]
    raise AssertionError(f"no symbol with {lo}..{hi} ticks")


# --- tokens ------------------------------------------------------------------------------------
def test_token_rules_by_sim_clock(sim_factory, make_creds):
    sim = sim_factory("--clock", "open", "--listings", "50", "--start", "2026-03-04T08:00:00+09:00")
    kis = Kis(sim, make_creds(1))
    r = kis.token_response()
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == 86400
    issued = datetime.fromisoformat(sim.admin("clock")["now"])
    expiry = datetime.strptime(body["access_token_token_expired"], "%Y-%m-%d %H:%M:%S").replace(tzinfo=KST)
    assert abs((expiry - issued) - timedelta(hours=24)) < timedelta(seconds=5)
    tok = body["access_token"]

    again = kis.token_response()  # within a minute: refused, KIS's token-endpoint error shape
    assert again.status_code == 403
    assert again.json() == {
        "error_code": "EGW00133",
        "error_description": "접근토큰 발급 잠시 후 다시 시도하세요(1분당 1회)",
    }

    sim.admin("clock", {"at": (issued + timedelta(hours=2)).isoformat()})
    assert kis.token_response().json()["access_token"] == tok  # same token within 6 h

    r = kis.http.post("/oauth2/revokeP", json={"appkey": kis.key, "appsecret": kis.secret, "token": tok})
    assert r.status_code == 200
    dead = kis.get("inquire-price", "FHKST01010100", P("005930"), token=tok)
    assert dead.status_code == 500 and dead.json() == {
        "rt_cd": "1",
        "msg_cd": "EGW00121",
        "msg1": "유효하지 않은 token 입니다.",
    }
    assert kis.token_response().json()["error_code"] == "EGW00133"  # still within the minute

    sim.admin("clock", {"at": (issued + timedelta(hours=2, seconds=61)).isoformat()})
    fresh = kis.token_response().json()["access_token"]
    assert fresh != tok
    code = sim.admin("listings", params={"limit": "1"})["listings"][0]["code"]
    assert kis.get("inquire-price", "FHKST01010100", P(code), token=fresh).status_code == 200

    sim.admin("clock", {"at": (issued + timedelta(hours=26, seconds=62)).isoformat()})
    expired = kis.get("inquire-price", "FHKST01010100", P(code), token=fresh)
    assert expired.status_code == 500
    assert expired.json() == {"rt_cd": "1", "msg_cd": "EGW00123", "msg1": "기간이 만료된 token 입니다."}
    stats = sim.admin("stats", params={"appkey": kis.key})["for_appkey"]
    assert stats["tokens_new_total"] == 2 and stats["token_refused_total"] == 2


def test_credentials_are_checked(sim, make_creds):
    key, secret = make_creds(2)

    def post(k, s):
        return httpx.post(
            sim.rest_url + "/oauth2/tokenP", json={"grant_type": "client_credentials", "appkey": k, "appsecret": s}
        )

    assert post(key, secret).status_code == 200
    wrong = post(key, make_creds(3)[1])  # a different secret than the one that bound the key
    assert wrong.status_code == 403 and wrong.json()["error_code"] == "EGW00105"
    assert wrong.json()["error_description"] == "유효하지 않은 AppSecret입니다."
    assert post("short", secret).json()["error_code"] == "EGW00103"
    assert post(make_creds(4)[0], "x" * 10).json()["error_code"] == "EGW00105"
    assert post("", secret).json()["error_code"] == "EGW00102"
    assert key not in wrong.text and secret not in wrong.text
    approval = httpx.post(
        sim.rest_url + "/oauth2/Approval", json={"grant_type": "client_credentials", "appkey": key, "secretkey": secret}
    )
    assert approval.status_code == 200 and len(approval.json()["approval_key"]) == 36


def test_accounts_file_restricts_keys_and_sets_modes(sim_factory, make_creds, tmp_path):
    import json

    (k1, s1), (k2, s2) = make_creds(5), make_creds(6)
    f = tmp_path / "accounts.json"
    f.write_text(json.dumps([{"appkey": k1, "appsecret": s1, "mode": "paper"}, {"appkey": k2, "appsecret": s2}]))
    sim = sim_factory("--clock", "open", "--listings", "50", "--accounts", str(f))
    assert Kis(sim, make_creds(7)).token_response().json()["error_code"] == "EGW00103"  # unknown key
    paper, real = Kis(sim, (k1, s1)), Kis(sim, (k2, s2))
    refused = paper.get("volume-rank", "FHPST01710000", {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "0000"})
    assert refused.json()["msg1"] == "모의투자 TR 이 아닙니다."
    ok = real.get("volume-rank", "FHPST01710000", {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "0000"})
    assert ok.json()["rt_cd"] == "0"


def test_uapi_header_checks(sim, creds):
    kis = Kis(sim, creds)
    code = sim.admin("listings", params={"limit": "1"})["listings"][0]["code"]
    missing = httpx.get(sim.rest_url + QUOTE + "inquire-price", params=P(code))
    assert missing.status_code == 500 and missing.json()["msg_cd"] == "EGW00121"
    h = kis.headers("FHKST01010100")
    bad_secret = kis.http.get(QUOTE + "inquire-price", params=P(code), headers=h | {"appsecret": "A" * 180})
    assert bad_secret.json()["msg_cd"] == "EGW00105"
    bad_tr = kis.http.get(QUOTE + "inquire-price", params=P(code), headers=h | {"tr_id": "FHKST01010400"})
    assert bad_tr.json()["rt_cd"] == "1" and bad_tr.json()["msg_cd"] == "OPSQ0002"
    lower = kis.http.get(
        QUOTE + "inquire-price", params={"fid_cond_mrkt_div_code": "J", "fid_input_iscd": code}, headers=h
    )
    assert lower.json()["output"]["stck_shrn_iscd"] == code  # names match case-insensitively
    unknown = kis.get("inquire-price", "FHKST01010100", P("999999"))
    assert unknown.json()["rt_cd"] == "7"
    no_param = kis.get("inquire-price", "FHKST01010100", {"FID_COND_MRKT_DIV_CODE": "J"})
    assert no_param.json()["rt_cd"] != "0" and "FID_INPUT_ISCD" in no_param.json()["msg1"]
    mine = sim.admin("stats", params={"appkey": kis.key})["for_appkey"]
    assert (mine["requests_total"], mine["rest_errors_total"]) == (5, 4)  # every failure counted, once


def test_response_header_bytes(sim, creds):
    """Content-Type capitalised, tr_id / tr_cont / gt_uid lower case: the official sample depends on it."""
    kis = Kis(sim, creds)
    code = sim.admin("listings", params={"limit": "1"})["listings"][0]["code"]
    host, port = sim.rest_url.removeprefix("http://").split(":")
    hdrs = kis.headers("FHKST01010100")
    req = (
        f"GET {QUOTE}inquire-price?FID_COND_MRKT_DIV_CODE=J&FID_INPUT_ISCD={code} HTTP/1.1\r\nHost: {host}\r\n"
        + "".join(f"{k}: {v}\r\n" for k, v in hdrs.items())
        + "Connection: close\r\n\r\n"
    )
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(req.encode())
        raw = b""
        while chunk := s.recv(65536):
            raw += chunk
    head = raw.split(b"\r\n\r\n", 1)[0].decode()
    names = [line.split(":", 1)[0] for line in head.split("\r\n")[1:]]
    assert "Content-Type: application/json; charset=utf-8" in head.split("\r\n")
    for n in ("tr_id", "tr_cont", "gt_uid"):
        assert n in names
    assert all(n in ("tr_id", "tr_cont", "gt_uid") or not n.islower() for n in names), names
    assert "tr_id: FHKST01010100" in head and "tr_cont: D" in head


# --- rate limits -------------------------------------------------------------------------------
async def _burst(sim, kis: Kis, code: str, n: int) -> list[httpx.Response]:
    async with httpx.AsyncClient(base_url=sim.rest_url, timeout=30) as c:
        h = kis.headers("FHKST01010100")
        return await asyncio.gather(*(c.get(QUOTE + "inquire-price", params=P(code), headers=h) for _ in range(n)))


def test_rate_limit_real_burst_is_refused_and_counted(sim, creds):
    kis = Kis(sim, creds)
    kis.token()
    code = sim.admin("listings", params={"limit": "1"})["listings"][0]["code"]
    t0 = time.monotonic()
    rs = asyncio.run(_burst(sim, kis, code, 40))
    elapsed = time.monotonic() - t0
    limited = [r for r in rs if r.status_code == 500]
    for r in limited:
        assert r.json() == {"rt_cd": "1", "msg_cd": "EGW00201", "msg1": "초당 거래건수를 초과하였습니다."}
    ok = [r for r in rs if r.status_code == 200]
    assert len(ok) + len(limited) == 40
    if elapsed < 1.0:  # all in one window: exactly the budget got through
        assert len(ok) == 20
    assert len(limited) >= 1
    stats = sim.admin("stats", params={"appkey": kis.key})
    assert stats["for_appkey"]["rate_limited_total"] == len(limited)
    assert stats["for_appkey"]["requests_total"] == 40


def test_rate_limit_paper_two_per_second(sim_factory, make_creds):
    sim = sim_factory("--mode", "paper", "--clock", "open", "--listings", "50")
    kis = Kis(sim, make_creds(8))
    kis.token()
    code = sim.admin("listings", params={"limit": "1"})["listings"][0]["code"]
    codes = [kis.get("inquire-price", "FHKST01010100", P(code)).json()["msg_cd"] for _ in range(5)]
    assert codes[:2] == ["MCA00000", "MCA00000"] and set(codes[2:]) == {"EGW00201"}
    time.sleep(1.05)
    assert kis.get("inquire-price", "FHKST01010100", P(code)).json()["rt_cd"] == "0"


def test_paper_refuses_real_only_trs(sim_factory, make_creds):
    sim = sim_factory("--mode", "paper", "--clock", "open", "--listings", "50", "--rate-paper", "50")
    kis = Kis(sim, make_creds(9))
    code = sim.admin("listings", params={"limit": "1"})["listings"][0]["code"]
    for name, tr, params in (
        ("intstock-multprice", "FHKST11300006", {"FID_COND_MRKT_DIV_CODE_1": "J", "FID_INPUT_ISCD_1": code}),
        ("volume-rank", "FHPST01710000", {"FID_COND_MRKT_DIV_CODE": "J", "FID_INPUT_ISCD": "0000"}),
        ("chk-holiday", "CTCA0903R", {"BASS_DT": "20260304", "CTX_AREA_NK": "", "CTX_AREA_FK": ""}),
        ("chk-holiday", "VTCA0903R", {"BASS_DT": "20260304", "CTX_AREA_NK": "", "CTX_AREA_FK": ""}),
    ):
        r = kis.get(name, tr, params)
        assert r.status_code == 500 and r.json()["rt_cd"] == "1" and r.json()["msg1"] == "모의투자 TR 이 아닙니다.", (
            name
        )
    assert kis.get("inquire-price", "FHKST01010100", P(code)).json()["rt_cd"] == "0"


# --- shapes ------------------------------------------------------------------------------------
def test_every_tr_returns_every_appendix_field_as_strings(sim, creds):
    kis = Kis(sim, creds)
    code = [
        r for r in sim.admin("listings", params={"order": "activity", "limit": "20"})["listings"] if r["group"] == "ST"
    ][0]["code"]
    now = datetime.fromisoformat(sim.admin("clock")["now"])
    today = now.strftime("%Y%m%d")

    assert_shape(kis.ok("inquire-price", "FHKST01010100", P(code))["output"], APPENDIX["inquire-price"])
    multi = kis.ok("intstock-multprice", "FHKST11300006", {"FID_COND_MRKT_DIV_CODE_1": "J", "FID_INPUT_ISCD_1": code})
    assert len(multi["output"]) == 1
    assert_shape(multi["output"][0], APPENDIX["intstock-multprice"])
    daily = kis.ok("inquire-daily-price", "FHKST01010400", P(code, FID_PERIOD_DIV_CODE="D", FID_ORG_ADJ_PRC="0"))
    assert len(daily["output"]) == 30
    for row in daily["output"]:
        assert_shape(row, APPENDIX["inquire-daily-price"])
    chart = kis.ok(
        "inquire-daily-itemchartprice",
        "FHKST03010100",
        P(
            code,
            FID_INPUT_DATE_1=(now - timedelta(days=20)).strftime("%Y%m%d"),
            FID_INPUT_DATE_2=today,
            FID_PERIOD_DIV_CODE="D",
            FID_ORG_ADJ_PRC="0",
        ),
    )
    assert_shape(chart["output1"], APPENDIX["daily-chart-1"])
    assert 1 <= len(chart["output2"]) <= 21
    for row in chart["output2"]:
        assert_shape(row, APPENDIX["daily-chart-2"])
    for name, tr, extra in (
        (
            "inquire-time-itemchartprice",
            "FHKST03010200",
            {"FID_INPUT_HOUR_1": now.strftime("%H%M%S"), "FID_PW_DATA_INCU_YN": "Y", "FID_ETC_CLS_CODE": ""},
        ),
        (
            "inquire-time-dailychartprice",
            "FHKST03010230",
            {
                "FID_INPUT_DATE_1": today,
                "FID_INPUT_HOUR_1": now.strftime("%H%M%S"),
                "FID_PW_DATA_INCU_YN": "Y",
                "FID_FAKE_TICK_INCU_YN": "",
            },
        ),
    ):
        body = kis.ok(name, tr, P(code, **extra))
        assert_shape(body["output1"], APPENDIX["time-chart-1"])
        assert body["output2"], name
        for row in body["output2"]:
            assert_shape(row, APPENDIX["time-chart-2"])
    r = kis.get("inquire-time-itemconclusion", "FHPST01060000", P(code, FID_INPUT_HOUR_1=now.strftime("%H%M%S")))
    conc = r.json()
    assert_shape(conc["output1"], APPENDIX["conclusion-1"])
    assert conc["output2"] and (len(conc["output2"]) == 30 or r.headers["tr_cont"] == "D")
    for row in conc["output2"]:
        assert_shape(row, APPENDIX["conclusion-2"])
    rank = kis.ok(
        "volume-rank",
        "FHPST01710000",
        {
            "FID_COND_MRKT_DIV_CODE": "J",
            "FID_COND_SCR_DIV_CODE": "20171",
            "FID_INPUT_ISCD": "0000",
            "FID_DIV_CLS_CODE": "0",
            "FID_BLNG_CLS_CODE": "0",
            "FID_TRGT_CLS_CODE": "111111111",
            "FID_TRGT_EXLS_CLS_CODE": "0000000000",
            "FID_INPUT_PRICE_1": "",
            "FID_INPUT_PRICE_2": "",
            "FID_VOL_CNT": "",
            "FID_INPUT_DATE_1": "",
        },
    )
    assert len(rank["output"]) == 30
    for row in rank["output"]:
        assert_shape(row, APPENDIX["volume-rank"])
    vols = [int(r["acml_vol"]) for r in rank["output"]]
    assert vols == sorted(vols, reverse=True) and [r["data_rank"] for r in rank["output"]] == [
        str(i) for i in range(1, 31)
    ]
    hol = kis.ok("chk-holiday", "CTCA0903R", {"BASS_DT": today, "CTX_AREA_NK": "", "CTX_AREA_FK": ""})
    for row in hol["output"]:
        assert_shape(row, APPENDIX["chk-holiday"])
    info = kis.ok("search-info", "CTPF1604R", {"PDNO": code, "PRDT_TYPE_CD": "300"})
    assert_shape(info["output"], APPENDIX["search-info"])
    assert info["output"]["pdno"] == code
    missing = kis.get("search-info", "CTPF1604R", {"PDNO": "999999", "PRDT_TYPE_CD": "300"}).json()
    assert missing["rt_cd"] == "7"


def test_inquire_price_is_internally_consistent(sim, creds):
    kis = Kis(sim, creds)
    code = sim.admin("listings", params={"order": "activity", "limit": "1"})["listings"][0]["code"]
    o = kis.ok("inquire-price", "FHKST01010100", P(code))["output"]
    price, prev = int(o["stck_prpr"]), int(o["stck_sdpr"])
    assert int(o["prdy_vrss"]) == price - prev
    assert o["prdy_vrss_sign"] == ("2" if price > prev else "5" if price < prev else "3") or o["prdy_vrss_sign"] in "14"
    if int(o["acml_vol"]):  # (just after midnight in open mode the day may have no trade yet)
        assert int(o["stck_lwpr"]) <= price <= int(o["stck_hgpr"]) <= int(o["stck_mxpr"])
        assert abs(float(o["wghn_avrg_stck_prc"]) - int(o["acml_tr_pbmn"]) / int(o["acml_vol"])) < 0.01
        assert int(o["d250_hgpr"]) >= int(o["stck_hgpr"]) and int(o["w52_lwpr"]) <= int(o["stck_lwpr"])


def test_multprice_thirty_pairs_and_refuses_more(sim, creds):
    kis = Kis(sim, creds)
    codes = [r["code"] for r in sim.admin("listings", params={"limit": "31"})["listings"]]
    params = {}
    for i, c in enumerate(codes[:30], 1):
        params[f"FID_COND_MRKT_DIV_CODE_{i}"] = "J"
        params[f"FID_INPUT_ISCD_{i}"] = c
    rows = kis.ok("intstock-multprice", "FHKST11300006", params)["output"]
    assert [r["inter_shrn_iscd"] for r in rows] == codes[:30]
    too_many = kis.get(
        "intstock-multprice",
        "FHKST11300006",
        params | {"FID_COND_MRKT_DIV_CODE_31": "J", "FID_INPUT_ISCD_31": codes[30]},
    ).json()
    assert too_many["rt_cd"] != "0" and "30" in too_many["msg1"]


# --- paging (frozen clock) ---------------------------------------------------------------------
def test_conclusion_paging_covers_every_tick_once(sim_factory, make_creds):
    sim = sim_factory(*FROZEN)
    kis = Kis(sim, make_creds(10))
    code = codes_with_ticks(sim, "20260304", 70, 400)
    truth = sim.admin("truth/ticks", params={"code": code, "day": "20260304", "to": "102000"})["ticks"]
    params = P(code, FID_INPUT_HOUR_1="102000")
    seen, conts, cont = [], [], ""
    for _ in range(50):
        r = kis.get("inquire-time-itemconclusion", "FHPST01060000", params, tr_cont=cont)
        assert r.status_code == 200 and r.json()["rt_cd"] == "0"
        rows = r.json()["output2"]
        assert len(rows) <= 30
        seen += rows
        conts.append(r.headers["tr_cont"])
        if r.headers["tr_cont"] == "D":
            break
        cont = "N"
    assert conts[-1] == "D" and set(conts[:-1]) <= {"M"}
    assert len(seen) == len(truth)  # every tick, exactly once, newest first
    for row, t in zip(seen, reversed(truth)):
        assert (row["stck_cntg_hour"], row["stck_pbpr"], row["cnqn"], row["acml_vol"]) == (
            t["time"],
            str(t["price"]),
            str(t["qty"]),
            str(t["acml_vol"]),
        )
    restart = kis.get("inquire-time-itemconclusion", "FHPST01060000", params).json()["output2"]
    assert restart == seen[:30]  # without tr_cont N a request starts over


def test_minute_bar_paging_backwards(sim_factory, make_creds):
    sim = sim_factory(*FROZEN)
    kis = Kis(sim, make_creds(11))
    code = codes_with_ticks(sim, "20260304", 200, 20_000)
    bars, hour = [], "153000"  # a future time is clamped to now (10:30)
    for _ in range(10):
        body = kis.ok(
            "inquire-time-itemchartprice",
            "FHKST03010200",
            P(code, FID_INPUT_HOUR_1=hour, FID_PW_DATA_INCU_YN="Y", FID_ETC_CLS_CODE=""),
        )
        page = body["output2"]
        if not page:
            break
        assert len(page) <= 30
        bars += page
        earliest = datetime.strptime(page[-1]["stck_cntg_hour"], "%H%M%S")
        if earliest.time() <= datetime.strptime("090000", "%H%M%S").time():
            break
        hour = (earliest - timedelta(minutes=1)).strftime("%H%M%S")
    hours = [b["stck_cntg_hour"] for b in bars]
    expected = [(datetime(2026, 3, 4, 10, 30) - timedelta(minutes=i)).strftime("%H%M%S") for i in range(91)]
    assert hours == expected  # 10:30 back to 09:00, each minute exactly once, newest first
    truth = sim.admin("truth/ticks", params={"code": code, "day": "20260304", "to": "103000", "records": "0"})["ticks"]
    assert sum(int(b["cntg_vol"]) for b in bars) == truth[-1]["acml_vol"]
    assert bars[0]["stck_prpr"] == str(truth[-1]["price"])
    by_minute = {}
    for t in truth:
        by_minute.setdefault(t["time"][:4] + "00", []).append(t["price"])
    for b in bars:
        prices = by_minute.get(b["stck_cntg_hour"])
        if prices:
            assert (int(b["stck_oprc"]), int(b["stck_hgpr"]), int(b["stck_lwpr"]), int(b["stck_prpr"])) == (
                prices[0],
                max(prices),
                min(prices),
                prices[-1],
            )


def test_daily_rows_show_today_only_once_the_session_started(sim_factory, make_creds):
    sim = sim_factory(*FROZEN)
    kis = Kis(sim, make_creds(12))
    code = sim.admin("listings", params={"order": "activity", "limit": "1"})["listings"][0]["code"]
    rows = kis.ok("inquire-daily-price", "FHKST01010400", P(code, FID_PERIOD_DIV_CODE="D", FID_ORG_ADJ_PRC="0"))[
        "output"
    ]
    days = [r["stck_bsop_date"] for r in rows]
    expected = [d.strftime("%Y%m%d") for d in reversed(cal.trading_days(date(2025, 12, 1), date(2026, 3, 4)))][:30]
    assert days == expected  # newest first, today's row during the session
    assert rows[1]["stck_clpr"] == rows[0]["stck_clpr"] or int(rows[0]["prdy_vrss"]) == int(rows[0]["stck_clpr"]) - int(
        rows[1]["stck_clpr"]
    )
    sim.admin("clock", {"at": "2026-03-04T08:10:00+09:00"})
    before = kis.ok("inquire-daily-price", "FHKST01010400", P(code, FID_PERIOD_DIV_CODE="D", FID_ORG_ADJ_PRC="0"))[
        "output"
    ]
    assert before[0]["stck_bsop_date"] == "20260303"  # before the open row 0 is the previous trading day
    chart = kis.ok(
        "inquire-daily-itemchartprice",
        "FHKST03010100",
        P(code, FID_INPUT_DATE_1="20250101", FID_INPUT_DATE_2="20260303", FID_PERIOD_DIV_CODE="D", FID_ORG_ADJ_PRC="0"),
    )
    assert len(chart["output2"]) == 100 and chart["output2"][0]["stck_bsop_date"] == "20260303"
    weekly = kis.ok("inquire-daily-price", "FHKST01010400", P(code, FID_PERIOD_DIV_CODE="W", FID_ORG_ADJ_PRC="0"))[
        "output"
    ]
    assert (
        len(weekly) == 30
        and len(
            {
                date.fromisoformat(
                    w["stck_bsop_date"][:4] + "-" + w["stck_bsop_date"][4:6] + "-" + w["stck_bsop_date"][6:]
                ).isocalendar()[:2]
                for w in weekly
            }
        )
        == 30
    )


def test_chk_holiday_pages_and_matches_calendar(sim_factory, make_creds):
    sim = sim_factory(*FROZEN)
    kis = Kis(sim, make_creds(13))
    params = {"BASS_DT": "20260220", "CTX_AREA_NK": "", "CTX_AREA_FK": ""}
    rows, pages, cont = [], 0, ""
    while True:
        r = kis.get("chk-holiday", "CTCA0903R", params, tr_cont=cont)
        body = r.json()
        assert body["rt_cd"] == "0"
        rows += body["output"]
        pages += 1
        if r.headers["tr_cont"] in ("D", "E"):
            break
        assert r.headers["tr_cont"] in ("F", "M")
        params = params | {"CTX_AREA_NK": body["ctx_area_nk"], "CTX_AREA_FK": body["ctx_area_fk"]}
        cont = "N"
    assert pages > 1
    days = [datetime.strptime(x["bass_dt"], "%Y%m%d").date() for x in rows]
    assert days == [date(2026, 2, 20) + timedelta(days=i) for i in range(len(days))]
    for d, x in zip(days, rows):
        assert x["opnd_yn"] == ("Y" if cal.is_trading_day(d) else "N"), d


# --- masters -----------------------------------------------------------------------------------
@pytest.mark.parametrize("market,tail", [("kospi", 227), ("kosdaq", 221)])
def test_master_download_is_a_zip_with_one_mst(sim, market, tail):
    r = httpx.get(f"{sim.rest_url}/common/master/{market}_code.mst.zip", timeout=60)
    assert r.status_code == 200
    z = zipfile.ZipFile(io.BytesIO(r.content))
    names = z.namelist()
    assert len(names) == 1 and names[0].endswith(".mst")
    lines = z.read(names[0]).decode("cp949").splitlines()
    listed = {x["code"] for x in sim.admin("listings", params={"market": market})["listings"]}
    codes = {line[: len(line) - tail][0:9].strip() for line in lines}
    assert codes == listed
    assert httpx.get(f"{sim.rest_url}/common/master/konex_code.mst.zip").status_code == 404
