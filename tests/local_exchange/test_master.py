"""The sim's stock master files, read back the way the broker's official parsers read them.

`koreainvestment/open-trading-api` (`stocks_info/kis_kospi_code_mst.py`, `kis_kosdaq_code_mst.py`)
decodes CP949, cuts each line into a head (all but the last 228 / 222 characters) and a tail,
splits the head at 9 and 21 characters, and reads the tails with `pandas.read_fwf` and the
widths below. That algorithm is re-implemented here and every listing must round-trip.
"""

from __future__ import annotations

import io
import zipfile
from datetime import date

import pandas as pd
import pytest

from local_exchange.market import Market
from local_exchange.master import build_master_zip
from observer_resources.calendar import previous_trading_day
from observer_resources.kis.masters import parse_master_zip

DAY = date(2026, 3, 10)

# Widths and column names as the official parsers list them.
KOSPI_WIDTHS = (
    [2, 1, 4, 4, 4]
    + [1] * 26
    + [
        9,
        5,
        5,
        1,
        1,
        1,
        2,
        1,
        1,
        1,
        2,
        2,
        2,
        3,
        1,
        3,
        12,
        12,
        8,
        15,
        21,
        2,
        7,
        1,
        1,
        1,
        1,
        1,
        9,
        9,
        9,
        5,
        9,
        8,
        9,
        3,
        1,
        1,
        1,
    ]
)
KOSPI_NAMES = [
    "그룹코드",
    "시가총액규모",
    "지수업종대분류",
    "지수업종중분류",
    "지수업종소분류",
    "제조업",
    "저유동성",
    "지배구조지수종목",
    "KOSPI200섹터업종",
    "KOSPI100",
    "KOSPI50",
    "KRX",
    "ETP",
    "ELW발행",
    "KRX100",
    "KRX자동차",
    "KRX반도체",
    "KRX바이오",
    "KRX은행",
    "SPAC",
    "KRX에너지화학",
    "KRX철강",
    "단기과열",
    "KRX미디어통신",
    "KRX건설",
    "Non1",
    "KRX증권",
    "KRX선박",
    "KRX섹터_보험",
    "KRX섹터_운송",
    "SRI",
    "기준가",
    "매매수량단위",
    "시간외수량단위",
    "거래정지",
    "정리매매",
    "관리종목",
    "시장경고",
    "경고예고",
    "불성실공시",
    "우회상장",
    "락구분",
    "액면변경",
    "증자구분",
    "증거금비율",
    "신용가능",
    "신용기간",
    "전일거래량",
    "액면가",
    "상장일자",
    "상장주수",
    "자본금",
    "결산월",
    "공모가",
    "우선주",
    "공매도과열",
    "이상급등",
    "KRX300",
    "KOSPI",
    "매출액",
    "영업이익",
    "경상이익",
    "당기순이익",
    "ROE",
    "기준년월",
    "시가총액",
    "그룹사코드",
    "회사신용한도초과",
    "담보대출가능",
    "대주가능",
]
KOSDAQ_WIDTHS = (
    [2, 1, 4, 4, 4]
    + [1] * 21
    + [
        9,
        5,
        5,
        1,
        1,
        1,
        2,
        1,
        1,
        1,
        2,
        2,
        2,
        3,
        1,
        3,
        12,
        12,
        8,
        15,
        21,
        2,
        7,
        1,
        1,
        1,
        1,
        9,
        9,
        9,
        5,
        9,
        8,
        9,
        3,
        1,
        1,
        1,
    ]
)
KOSDAQ_NAMES = [
    "증권그룹구분코드",
    "시가총액 규모 구분 코드 유가",
    "지수업종 대분류 코드",
    "지수 업종 중분류 코드",
    "지수업종 소분류 코드",
    "벤처기업 여부 (Y/N)",
    "저유동성종목 여부",
    "KRX 종목 여부",
    "ETP 상품구분코드",
    "KRX100 종목 여부 (Y/N)",
    "KRX 자동차 여부",
    "KRX 반도체 여부",
    "KRX 바이오 여부",
    "KRX 은행 여부",
    "기업인수목적회사여부",
    "KRX 에너지 화학 여부",
    "KRX 철강 여부",
    "단기과열종목구분코드",
    "KRX 미디어 통신 여부",
    "KRX 건설 여부",
    "(코스닥)투자주의환기종목여부",
    "KRX 증권 구분",
    "KRX 선박 구분",
    "KRX섹터지수 보험여부",
    "KRX섹터지수 운송여부",
    "KOSDAQ150지수여부 (Y,N)",
    "주식 기준가",
    "정규 시장 매매 수량 단위",
    "시간외 시장 매매 수량 단위",
    "거래정지 여부",
    "정리매매 여부",
    "관리 종목 여부",
    "시장 경고 구분 코드",
    "시장 경고위험 예고 여부",
    "불성실 공시 여부",
    "우회 상장 여부",
    "락구분 코드",
    "액면가 변경 구분 코드",
    "증자 구분 코드",
    "증거금 비율",
    "신용주문 가능 여부",
    "신용기간",
    "전일 거래량",
    "주식 액면가",
    "주식 상장 일자",
    "상장 주수(천)",
    "자본금",
    "결산 월",
    "공모 가격",
    "우선주 구분 코드",
    "공매도과열종목여부",
    "이상급등종목여부",
    "KRX300 종목 여부 (Y/N)",
    "매출액",
    "영업이익",
    "경상이익",
    "단기순이익",
    "ROE(자기자본이익률)",
    "기준년월",
    "전일기준 시가총액 (억)",
    "그룹사 코드",
    "회사신용한도초과여부",
    "담보대출가능여부",
    "대주가능여부",
]
# our keys -> each market's column name
KEYS = {
    "kospi": {
        "group": "그룹코드",
        "sdpr": "기준가",
        "etp": "ETP",
        "spac": "SPAC",
        "halted": "거래정지",
        "liquidation": "정리매매",
        "administrative": "관리종목",
        "alarm": "시장경고",
        "preferred": "우선주",
        "shares": "상장주수",
        "prdy_vol": "전일거래량",
        "listed": "상장일자",
        "mcap": "시가총액",
        "par": "액면가",
    },
    "kosdaq": {
        "group": "증권그룹구분코드",
        "sdpr": "주식 기준가",
        "etp": "ETP 상품구분코드",
        "spac": "기업인수목적회사여부",
        "halted": "거래정지 여부",
        "liquidation": "정리매매 여부",
        "administrative": "관리 종목 여부",
        "alarm": "시장 경고 구분 코드",
        "preferred": "우선주 구분 코드",
        "shares": "상장 주수(천)",
        "prdy_vol": "전일 거래량",
        "listed": "주식 상장 일자",
        "mcap": "전일기준 시가총액 (억)",
        "par": "주식 액면가",
    },
}
TAIL = {"kospi": 227, "kosdaq": 221}
SPEC = {"kospi": (KOSPI_WIDTHS, KOSPI_NAMES), "kosdaq": (KOSDAQ_WIDTHS, KOSDAQ_NAMES)}


def unzip(data: bytes, which: str) -> bytes:
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        names = zf.namelist()
        assert names == [f"{which}_code.mst"]
        return zf.read(names[0])


def official_parse(mst: bytes, which: str, *, dtype: type | None = str) -> pd.DataFrame:
    """The official algorithm: CP949 text lines, head/tail split by the tail width + newline."""
    cut = TAIL[which] + 1
    heads, tails = [], []
    for row in io.TextIOWrapper(io.BytesIO(mst), encoding="cp949"):
        head = row[0 : len(row) - cut]
        heads.append((head[0:9].rstrip(), head[9:21].rstrip(), head[21:].strip()))
        tails.append(row[-cut:])
    widths, names = SPEC[which]
    df2 = pd.read_fwf(io.StringIO("".join(tails)), widths=widths, names=names, dtype=dtype)
    df1 = pd.DataFrame(heads, columns=["code", "isin", "name"])
    return pd.concat([df1, df2], axis=1)


@pytest.fixture(scope="module")
def market() -> Market:
    return Market(seed=4)


@pytest.fixture(scope="module")
def masters(market: Market) -> dict[str, bytes]:
    return {w: build_master_zip(market, w, DAY) for w in ("kospi", "kosdaq")}


def test_official_widths_match_the_protocol() -> None:
    assert sum(KOSPI_WIDTHS) == 227 and len(KOSPI_WIDTHS) == len(KOSPI_NAMES) == 70
    assert sum(KOSDAQ_WIDTHS) == 221 and len(KOSDAQ_WIDTHS) == len(KOSDAQ_NAMES) == 64


@pytest.mark.parametrize("which", ["kospi", "kosdaq"])
def test_lines_are_cp949_heads_with_fixed_ascii_tails(masters: dict[str, bytes], market: Market, which: str) -> None:
    mst = unzip(masters[which], which)
    lines = mst.split(b"\n")
    assert lines[-1] == b""  # every line ends with a newline, nothing after the last
    lines = lines[:-1]
    want = [x for x in market.listings if x.market == which]
    assert len(lines) == len(want)
    for raw, x in zip(lines, want):
        tail = raw[-TAIL[which] :]
        assert tail.isascii() and b"\r" not in tail
        head = raw[: -TAIL[which]]
        assert head[:9].rstrip() == x.code.encode() and head[9:21] == x.isin.encode()
        assert head[21:].strip().decode("cp949") == x.name and len(head) == 9 + 12 + 40
    mst.decode("cp949")  # the whole file decodes


@pytest.mark.parametrize("which", ["kospi", "kosdaq"])
def test_every_listing_round_trips_through_the_official_parser(
    masters: dict[str, bytes], market: Market, which: str
) -> None:
    df = official_parse(unzip(masters[which], which), which)
    k = KEYS[which]
    want = [x for x in market.listings if x.market == which]
    assert len(df) == len(want)
    prev = previous_trading_day(DAY)
    for row, x in zip(df.to_dict("records"), want):
        sdpr = market.prev_close(x.code, DAY)
        assert (row["code"], row["isin"], row["name"]) == (x.code, x.isin, x.name)
        assert row[k["group"]] == x.group and row[k["etp"]] == str(x.etp)
        assert int(row[k["sdpr"]]) == sdpr
        assert row[k["spac"]] == ("Y" if x.spac else "N")
        assert row[k["halted"]] == ("Y" if x.halted else "N")
        assert row[k["liquidation"]] == ("Y" if x.liquidation else "N")
        assert row[k["administrative"]] == ("Y" if x.administrative else "N")
        assert row[k["alarm"]] == x.alarm
        assert (row[k["preferred"]] != "0") == x.preferred and row[k["preferred"]] in ("0", "1", "2")
        assert int(row[k["shares"]]) == x.listed_shares // 1000
        assert int(row[k["prdy_vol"]]) == int(market.day_ticks(x.code, prev).qty.sum())
        assert row[k["listed"]] == x.listing_date.strftime("%Y%m%d")
        assert int(row[k["mcap"]]) == sdpr * x.listed_shares // 100_000_000
        assert int(row[k["par"]]) == x.par_value
        if which == "kospi":
            assert row["KOSPI"] == ("Y" if x.is_stock else "N")


@pytest.mark.parametrize("which", ["kospi", "kosdaq"])
def test_the_official_parser_runs_unchanged(masters: dict[str, bytes], market: Market, which: str) -> None:
    """With pandas' default dtype inference, as the official code calls it, numbers come out numeric."""
    df = official_parse(unzip(masters[which], which), which, dtype=None)
    k = KEYS[which]
    want = [x for x in market.listings if x.market == which]
    assert df[k["sdpr"]].tolist() == [market.prev_close(x.code, DAY) for x in want]
    assert pd.api.types.is_integer_dtype(df[k["sdpr"]]) and pd.api.types.is_integer_dtype(df[k["shares"]])


@pytest.mark.parametrize("which", ["kospi", "kosdaq"])
def test_the_collectors_parser_reads_what_the_official_parser_reads(masters: dict[str, bytes], which: str) -> None:
    """observer_resources.kis.masters slices the tail itself: every raw column equals the official parser's."""
    df = official_parse(unzip(masters[which], which), which)
    rows = parse_master_zip(masters[which], which)
    names = SPEC[which][1]
    assert len(rows) == len(df)
    for row, rec in zip(rows, df.to_dict("records")):
        assert (row.code, row.isin, row.name) == (rec["code"], rec["isin"], rec["name"])
        assert [v.strip() for v in row.fields.values()] == ["" if pd.isna(rec[n]) else rec[n] for n in names]
        assert row.kospi200 == (rec.get("KOSPI200섹터업종", "0") != "0")


def test_masters_cover_the_cases_a_universe_filter_needs(masters: dict[str, bytes], market: Market) -> None:
    kospi = official_parse(unzip(masters["kospi"], "kospi"), "kospi")
    kosdaq = official_parse(unzip(masters["kosdaq"], "kosdaq"), "kosdaq")
    assert not set(kospi["code"]) & set(kosdaq["code"])
    assert {"ST", "EF", "RT", "MF", "IF", "SC", "BC"} <= set(kospi["그룹코드"])
    assert kospi["code"].str.startswith("Q").sum() >= 20  # ETNs
    assert set(kospi.loc[kospi["code"].str.startswith("Q"), "ETP"]) == {"3", "4"}
    assert (kospi["거래정지"] == "Y").any() and (kosdaq["거래정지 여부"] == "Y").any()
    assert (kospi["정리매매"] == "Y").any() or (kosdaq["정리매매 여부"] == "Y").any()
    assert (kosdaq["기업인수목적회사여부"] == "Y").sum() >= 30
    assert kospi["code"].str.match(r"^\d{5}[A-Z]$").any()  # alphanumeric preferred codes
    stocks = pd.concat([kospi[kospi["그룹코드"] == "ST"]["code"], kosdaq[kosdaq["증권그룹구분코드"] == "ST"]["code"]])
    assert len(stocks) >= 2_500  # the collector refuses masters with fewer stock codes


def test_masters_carry_index_membership_sectors_and_cautions(masters: dict[str, bytes], market: Market) -> None:
    """The tail columns the universe reads beyond its filter: some constituents of each index, varied sectors
    (a preferred share in its common share's), lot 1, and a few of every caution and overheat flag."""
    kospi = official_parse(unzip(masters["kospi"], "kospi"), "kospi")
    kosdaq = official_parse(unzip(masters["kosdaq"], "kosdaq"), "kosdaq")
    k200 = kospi["KOSPI200섹터업종"]
    assert set(k200) <= set("012345678") and len(set(k200) - {"0"}) == 8
    assert (k200 != "0").sum() == 200 and (kospi["KOSPI100"] == "Y").sum() == 100 and (kospi["KOSPI50"] == "Y").sum()
    assert set(kospi.loc[kospi["KOSPI100"] == "Y", "code"]) <= set(kospi.loc[k200 != "0", "code"])
    assert (kosdaq["KOSDAQ150지수여부 (Y,N)"] == "Y").sum() == 150
    assert (kospi["KRX300"] == "Y").sum() + (kosdaq["KRX300 종목 여부 (Y/N)"] == "Y").sum() == 300
    assert (kospi["KRX100"] == "Y").sum() + (kosdaq["KRX100 종목 여부 (Y/N)"] == "Y").sum() == 100
    stocks = kospi[kospi["그룹코드"] == "ST"]
    assert stocks["지수업종중분류"].nunique() >= 8 and {"0027", "0021"} <= set(stocks["지수업종대분류"])
    assert set(kospi.loc[kospi["그룹코드"] != "ST", "지수업종대분류"]) == {"0000"}
    by_code = kospi.set_index("code")
    for x in (x for x in market.listings if x.preferred and x.market == "kospi"):
        cols = ["지수업종대분류", "지수업종중분류"]
        assert list(by_code.loc[x.code, cols]) == list(by_code.loc[x.parent, cols]), x.code
    assert set(kospi["매매수량단위"]) == set(kosdaq["정규 시장 매매 수량 단위"]) == {"00001"}
    for df, cols in (
        (kospi, ("경고예고", "불성실공시", "공매도과열", "이상급등", "저유동성")),
        (kosdaq, ("시장 경고위험 예고 여부", "불성실 공시 여부", "공매도과열종목여부", "이상급등종목여부")),
        (kosdaq, ("(코스닥)투자주의환기종목여부", "저유동성종목 여부")),
    ):
        for c in cols:
            assert 0 < (df[c] == "Y").sum() < len(df) * 0.05, c
    overheat = pd.concat([kospi["단기과열"], kosdaq["단기과열종목구분코드"]])
    assert set(overheat) == {"0", "1", "2", "3"} and (overheat != "0").sum() < len(overheat) * 0.05


def test_master_bytes_are_deterministic() -> None:
    a, b = Market(seed=9, listings=400), Market(seed=9, listings=400)
    b.quote(b.listings[0].code, pd.Timestamp("2026-03-10 10:00", tz="Asia/Seoul").to_pydatetime())
    for which in ("kospi", "kosdaq"):
        za = build_master_zip(a, which, DAY)
        assert za == build_master_zip(b, which, DAY)
        assert za != build_master_zip(a, which, date(2026, 3, 11))
        with zipfile.ZipFile(io.BytesIO(za)) as zf:
            assert zf.infolist()[0].date_time == (2026, 3, 10, 0, 0, 0)
    with pytest.raises(ValueError):
        build_master_zip(a, "konex", DAY)  # type: ignore[arg-type]
