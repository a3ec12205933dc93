"""The local exchange's securities: a deterministic, realistically mixed KRX universe.

The collector's universe rules (stock group, halted / delisting / administrative filters, the
4,000 KRW previous-close floor, preferred and alphanumeric codes, ETN `Q` codes) can only be
tested against a universe that has all of those cases in realistic proportions, so this module
builds one from a seed: 950 KOSPI and 1,650 KOSDAQ listings at the default n = 2600, mostly
stocks, plus ETFs, ETNs, SPACs, REITs, funds, depositary receipts and foreign shares.

The largest listings are real KRX names under their real codes (`KNOWN_LISTINGS`), because the codes people
try first (005930 in every KIS example) must answer; everything below them is generated.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Literal

import numpy as np

from local_exchange.listing_traits import (
    assign_activity,
    assign_common_levels,
    assign_flags,
    compress_generated_caps,
)
from observer_resources.kis.protocol import MASTER_ENCODING

NAME_MAX_BYTES = 40  # SZ_KORNAME of the master's C header

# (category, market, count at n = 2600). Order matters for determinism. Stocks (group ST: common,
# preferred, SPAC, and ETNs, which have no group code of their own) are >= 2,500 of the 2,600, as
# in the real masters, so a "fewer than 2,500 stock codes" quality floor passes on the default sim.
_MIX: tuple[tuple[str, str, int], ...] = (
    ("common", "kospi", 767),
    ("preferred", "kospi", 100),
    ("etf", "kospi", 35),
    ("etn", "kospi", 25),
    ("reit", "kospi", 8),
    ("mf", "kospi", 3),
    ("if", "kospi", 2),
    ("sc", "kospi", 2),
    ("dr", "kospi", 2),
    ("bc", "kospi", 2),
    ("fe", "kospi", 1),
    ("fs", "kospi", 3),
    ("common", "kosdaq", 1574),
    ("preferred", "kosdaq", 8),
    ("spac", "kosdaq", 60),
    ("fs", "kosdaq", 5),
    ("dr", "kosdaq", 3),
)
_MIX_TOTAL = sum(c for _, _, c in _MIX)
_MIX_INDEX = {(cat, market): i for i, (cat, market, _) in enumerate(_MIX)}

# Every listing predates the sim's calendar (2018 on), so its whole price history is "listed"; a real listing
# date after this is pulled back to it.
_LATEST_LISTING = date(2017, 12, 28)

_GROUP = {
    "common": "ST",
    "preferred": "ST",
    "spac": "ST",
    "etf": "EF",
    "etn": "ST",
    "reit": "RT",
    "mf": "MF",
    "if": "IF",
    "sc": "SC",
    "dr": "DR",
    "bc": "BC",
    "fe": "FE",
    "fs": "FS",
}

_PREFIXES = (
    "한빛 대성 동양 세진 우진 태광 삼화 신흥 대한 한국 서울 동방 금호 일진 영풍 성창 고려 유니 코리아 아이"
    " 에이스 하이 나라 새한 미래 동원 삼영 경동 한일 진흥 대림 현대 국제 중앙 광명 신성 오리 제일 태평 화신"
    " 청담 푸른 은성 다온 누리 지엔 에스 엘티 케이 제이 비엠 티에스 디엔 에이치 씨앤 와이 엔에스 유진 한솔 동화"
    " 세아 한라 동국 삼양 대원 부국 백산 선진 조광 모나 인성 광전 정원 해성 상신 극동 범양 남선 덕산 용평"
).split()
_SUFFIXES = (
    "전자 화학 제약 바이오 건설 산업 중공업 테크 에너지 소재 홀딩스 시스템 로보틱스 반도체 엔터 정밀 기계 물산"
    " 식품 제지 섬유 통신 미디어 게임즈 소프트 디스플레이 머티리얼즈 메디칼 헬스케어 케미칼 스틸 금속 해운 항공"
    " 리테일 유통 증권 금융지주 보험 화재 생명과학 인베스트 파마 이노텍 모터스 전기 전선 오토 랩스 네트웍스"
).split()
_ETF_BRANDS = "KODEX TIGER KBSTAR ARIRANG HANARO KOSEF ACE SOL RISE PLUS TIMEFOLIO WOORI".split()
_ETF_THEMES = (
    "200|코스닥150|레버리지|인버스|200선물인버스2X|코스닥150레버리지|반도체|2차전지산업|은행|증권|자동차"
    "|헬스케어|배당성장|고배당|국고채3년|국고채10년|단기채권|단기채권PLUS|미국S&P500|미국나스닥100"
    "|미국배당다우존스|차이나CSI300|일본TOPIX|골드선물(H)|WTI원유선물(H)|미국채10년선물|인도니프티50|200TR"
    "|코스피|MSCI Korea|K-방산|조선TOP10|AI반도체|미국테크TOP10|리츠부동산인프라|바이오|게임산업|건설|철강"
    "|에너지화학"
).split("|")
_ETN_ISSUERS = "신한 삼성 미래에셋 KB NH 한투 메리츠 키움".split()
_ETN_UNDERLYINGS = (
    "레버리지 WTI원유 선물|인버스 WTI원유 선물|천연가스 선물|구리 선물|금 선물|은 선물|미국 S&P500 선물"
    "|인버스 2X 나스닥100|레버리지 중국 CSI300|코스피 변동성|미국 달러 선물|엔화 선물|유로 선물|콩 선물"
    "|옥수수 선물|밀 선물|니켈 선물|알루미늄 선물|팔라듐 선물|원유 선물"
).split("|")
_SPAC_BROKERS = "하나금융 엔에이치 삼성 미래에셋 신한 교보 유안타 키움 대신밸런스 한국투자 케이비 디비금융".split()
_REIT_INFIX = ("알파", "프라임", "오피스", "글로벌", "물류", "에너지", "인프라", "")
_FOREIGN = "차이나 이스트 퍼시픽 오션 그린 로얄 골든 윙입 크리스탈 컬러".split()
_FOREIGN_SUFFIX = "홀딩스 인터내셔널 그룹 테크놀로지 푸드 신소재".split()


@dataclass(frozen=True)
class Listing:
    code: str  # short code, 6 chars ('005930'); ETNs 'Q' + 6 digits; new-style preferred like '00088K'
    isin: str  # 12 chars 'KR7...' with a valid ISIN check digit
    name: str  # Korean, encodes to CP949 in at most 40 bytes, no commas
    market: Literal["kospi", "kosdaq"]
    group: str  # scrt_grp_cls_code: ST, EF, RT, MF, IF, SC, DR, BC, FE, FS
    etp: int  # etp_prod_cls_code 0 none, 1/2 ETF, 3/4 ETN, 5 listed trust
    spac: bool
    preferred: bool
    halted: bool
    liquidation: bool
    administrative: bool
    alarm: str  # mrkt_alrm_cls_code '00'..'03'
    listed_shares: int
    par_value: int
    listing_date: date
    base_level: float  # long-run price level in KRW
    activity: float  # mean trades/second during continuous trading
    volatility: float = 0.02  # daily log-price volatility of the close chain
    parent: str = ""  # for a preferred share: the common share's code

    @property
    def is_stock(self) -> bool:
        """Common or preferred share (group ST, not an ETN)."""
        return self.group == "ST" and self.etp == 0


@dataclass(frozen=True)
class KnownListing:
    """A real KRX listing the sim carries under its real code and name; sizes are plausible, not live."""

    code: str
    name: str
    market: Literal["kospi", "kosdaq"]
    level: float  # long-run price level, KRW
    shares: int
    par: int
    listed: date
    parent: str = ""  # a preferred share's common share


# The largest KRX listings, largest first, each market cap (level x shares) well above anything generated
# (listing_traits.GENERATED_CAP_MAX) so they stay the largest on every day of the calendar.
KNOWN_LISTINGS: tuple[KnownListing, ...] = (
    KnownListing("005930", "삼성전자", "kospi", 65_000, 5_969_782_550, 100, date(1975, 6, 11)),
    KnownListing("005935", "삼성전자우", "kospi", 55_000, 822_886_700, 100, date(1989, 9, 25), parent="005930"),
    KnownListing("000660", "SK하이닉스", "kospi", 170_000, 728_002_365, 5_000, date(1996, 12, 26)),
    KnownListing("373220", "LG에너지솔루션", "kospi", 390_000, 234_000_000, 500, date(2022, 1, 27)),
    KnownListing("207940", "삼성바이오로직스", "kospi", 900_000, 71_174_000, 2_500, date(2016, 11, 10)),
    KnownListing("005380", "현대차", "kospi", 210_000, 209_416_191, 5_000, date(1974, 6, 28)),
    KnownListing("000270", "기아", "kospi", 95_000, 397_672_632, 5_000, date(1973, 7, 21)),
    KnownListing("068270", "셀트리온", "kospi", 170_000, 216_963_000, 1_000, date(2005, 7, 19)),
    KnownListing("035420", "NAVER", "kospi", 190_000, 158_437_008, 100, date(2002, 10, 29)),
    KnownListing("035720", "카카오", "kospi", 50_000, 444_000_000, 100, date(1999, 11, 11)),
    KnownListing("051910", "LG화학", "kospi", 330_000, 70_592_343, 5_000, date(2001, 4, 25)),
    KnownListing("006400", "삼성SDI", "kospi", 320_000, 68_764_530, 5_000, date(1979, 2, 27)),
    KnownListing("005490", "POSCO홀딩스", "kospi", 260_000, 84_571_230, 5_000, date(1988, 6, 10)),
    KnownListing("105560", "KB금융", "kospi", 55_000, 403_511_072, 5_000, date(2008, 10, 10)),
    KnownListing("055550", "신한지주", "kospi", 40_000, 509_000_000, 5_000, date(2001, 9, 10)),
    KnownListing("012330", "현대모비스", "kospi", 220_000, 94_000_000, 5_000, date(1989, 9, 5)),
    KnownListing("066570", "LG전자", "kospi", 90_000, 163_647_814, 5_000, date(2002, 4, 22)),
    KnownListing("017670", "SK텔레콤", "kospi", 50_000, 214_790_053, 100, date(1989, 11, 7)),
    KnownListing("030200", "KT", "kospi", 38_000, 258_000_000, 5_000, date(1998, 12, 23)),
    KnownListing("015760", "한국전력", "kospi", 20_000, 641_964_077, 5_000, date(1989, 8, 10)),
    KnownListing("247540", "에코프로비엠", "kosdaq", 230_000, 97_801_344, 500, date(2019, 3, 5)),
    KnownListing("086520", "에코프로", "kosdaq", 90_000, 133_138_340, 100, date(2007, 7, 20)),
    KnownListing("196170", "알테오젠", "kosdaq", 200_000, 53_400_000, 500, date(2014, 12, 12)),
    KnownListing("028300", "HLB", "kosdaq", 75_000, 131_000_000, 500, date(1996, 11, 6)),
)
KNOWN_CODES = frozenset(k.code for k in KNOWN_LISTINGS)
# generated codes never share a known code's first five digits, so no generated common or preferred share
# (a preferred derives its code from its common share's) can take a real code
_RESERVED_PREFIXES = np.array(sorted({int(k.code[:5]) for k in KNOWN_LISTINGS}))


def isin_check_digit(body: str) -> int:
    """ISIN (ISO 6166) check digit of the first 11 characters: letters as 10..35, then Luhn."""
    digits = "".join(str(int(c, 36)) for c in body.upper())
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = int(ch)
        if i % 2 == 0:
            d *= 2
            if d > 9:
                d -= 9
        total += d
    return (10 - total % 10) % 10


def make_isin(code: str) -> str:
    core = code[1:] if code.startswith("Q") else code
    body = f"KR7{core}00"
    return body + str(isin_check_digit(body))


def _counts(n: int) -> list[int]:
    """Scale the mix to n listings (largest remainder), keeping preferred <= common per market."""
    if n < 1:
        raise ValueError(f"need at least one listing, got n={n}")
    raw = [c * n / _MIX_TOTAL for _, _, c in _MIX]
    counts = [int(x) for x in raw]
    order = sorted(range(len(raw)), key=lambda i: (-(raw[i] - counts[i]), i))
    for i in order[: n - sum(counts)]:
        counts[i] += 1
    return counts


def _fits(name: str) -> bool:
    return len(name.encode(MASTER_ENCODING)) <= NAME_MAX_BYTES and "," not in name


class _Names:
    """Unique, CP949-safe names; a clash gets a numeric suffix rather than an error."""

    def __init__(self) -> None:
        self.used: set[str] = set()

    def take(self, name: str) -> str:
        name = name.strip()
        candidate, k = name, 2
        while candidate in self.used or not _fits(candidate):
            candidate = f"{name[:14]}{k}"
            k += 1
        self.used.add(candidate)
        return candidate


def _pick_combos(rng: np.random.Generator, sizes: tuple[int, ...], k: int) -> list[tuple[int, ...]]:
    total = int(np.prod(sizes))
    flat = rng.choice(total, size=min(k, total), replace=False)
    out = [tuple(int(x) for x in np.unravel_index(int(f), sizes)) for f in flat]
    while len(out) < k:  # more wanted than combinations: reuse (the name pool adds a suffix)
        out.append(out[len(out) % max(total, 1)])
    return out


def _known_rows(counts: list[int]) -> list[dict]:
    """Rows of the real listings that fit the mix at this size, largest first; each takes its category's slot.

    A small sim keeps the head of the table (those are the codes people try), and a preferred share comes only
    with its common share.
    """
    rows: list[dict] = []
    for k in KNOWN_LISTINGS:
        cat = "preferred" if k.parent else "common"
        i = _MIX_INDEX[(cat, k.market)]
        if counts[i] == 0 or (k.parent and not any(r["code"] == k.parent for r in rows)):
            continue
        counts[i] -= 1
        rows.append(
            {
                "market": k.market,
                "group": "ST",
                "etp": 0,
                "spac": False,
                "preferred": bool(k.parent),
                "par_value": k.par,
                "cat": cat,
                "parent": k.parent,
                "code": k.code,
                "name": k.name,
                "base_level": float(k.level),
                "listed_shares": k.shares,
                "listing_date": min(k.listed, _LATEST_LISTING),
                # large caps move less than the generated median; KOSDAQ's growth names more than KOSPI's
                "volatility": 0.015 if k.parent else (0.016 if k.market == "kospi" else 0.022),
                "known": True,
            }
        )
    return rows


def generate_listings(seed: int, n: int = 2600) -> list[Listing]:
    """The sim's securities for `seed`, sorted by code; same (seed, n) gives the same list."""
    rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, 0x4C495354])))
    counts = _counts(n)
    known_rows = _known_rows(counts)  # takes its slots out of `counts`
    names = _Names()
    names.used.update(k.name for k in KNOWN_LISTINGS)

    # Six-digit code pools: stocks/SPACs/REITs/funds end in 0 (preferred derive 5/7/K/L from them);
    # ETFs and other products end in 1-4, 6, 8 or 9, so the pools cannot collide. Real codes' prefixes are
    # reserved.
    n_zero = sum(c for (cat, _, _), c in zip(_MIX, counts) if cat not in ("preferred", "etf", "etn"))
    zero_pool = np.setdiff1d(np.arange(1, 50_000), _RESERVED_PREFIXES)
    zero_codes = [f"{int(k):05d}0" for k in rng.choice(zero_pool, size=n_zero, replace=False)]
    n_etf = sum(c for (cat, _, _), c in zip(_MIX, counts) if cat == "etf")
    etf_pool = np.arange(100_001, 500_000)
    etf_pool = etf_pool[~np.isin(etf_pool % 10, (0, 5, 7))]
    etf_codes = [f"{int(k):06d}" for k in rng.choice(etf_pool, size=n_etf, replace=False)]
    n_etn = sum(c for (cat, _, _), c in zip(_MIX, counts) if cat == "etn")
    etn_codes = [f"Q5{int(k):05d}" for k in rng.choice(100_000, size=n_etn, replace=False)]

    company = iter(_pick_combos(rng, (len(_PREFIXES), len(_SUFFIXES)), sum(counts)))
    etf_names = iter(_pick_combos(rng, (len(_ETF_BRANDS), len(_ETF_THEMES)), n_etf))
    etn_names = iter(_pick_combos(rng, (len(_ETN_ISSUERS), len(_ETN_UNDERLYINGS)), n_etn))

    def company_name(suffix: str | None = None) -> str:
        p, s = next(company)
        return _PREFIXES[p] + (suffix if suffix is not None else _SUFFIXES[s])

    rows: list[dict] = list(known_rows)
    commons: dict[str, list[dict]] = {"kospi": [], "kosdaq": []}  # generated ones: parents of generated preferreds
    zi = ei = ni = n_spac = 0
    early, late = date(1956, 3, 3).toordinal(), _LATEST_LISTING.toordinal()

    def listing_day(lo: date | None = None) -> date:
        a = lo.toordinal() if lo else early
        # later listings are more common: skew toward the recent end
        return date.fromordinal(int(a + (late - a) * rng.random() ** 0.6))

    for (cat, market, _), count in zip(_MIX, counts):
        for _ in range(count):
            row: dict = {
                "market": market,
                "group": _GROUP[cat],
                "etp": 0,
                "spac": False,
                "preferred": False,
                "par_value": 500,
                "cat": cat,
                "parent": "",
            }
            if cat == "common":
                row["code"] = zero_codes[zi]
                zi += 1
                row["name"] = names.take(company_name())
                row["base_level"] = 0.0  # assigned cross-sectionally below
                row["listed_shares"] = int(np.exp(rng.uniform(np.log(2e6), np.log(4e8))))
                row["par_value"] = int(
                    rng.choice([100, 200, 500, 1000, 2500, 5000], p=[0.25, 0.05, 0.45, 0.05, 0.05, 0.15])
                )
                row["listing_date"] = listing_day()
                row["volatility"] = min(0.04, float(np.exp(rng.normal(np.log(0.022), 0.3))))
                commons[market].append(row)
            elif cat == "preferred":
                pool = commons[market]
                parent = pool[int(rng.integers(len(pool)))] if pool else None
                if parent is None or parent.get("_prefs", 0) >= 2:
                    parent = next((p for p in pool if p.get("_prefs", 0) < 2), None)
                if parent is None:  # tiny n: no room for a preferred share, make it a common one
                    row["cat"] = "common"
                    row["code"] = f"{int(rng.integers(1, 50_000)):05d}9"
                    row["name"] = names.take(company_name())
                    row.update(base_level=0.0, listed_shares=int(1e7), listing_date=listing_day(), volatility=0.02)
                    rows.append(row)
                    continue
                k = parent.get("_prefs", 0)
                parent["_prefs"] = k + 1
                new_style = rng.random() < 0.35
                suffix = ("K", "L")[k] if new_style else ("5", "7")[k]
                label = ("3우B", "4우B")[k] if new_style else ("우", "2우B")[k]
                row["code"] = parent["code"][:5] + suffix
                row["name"] = names.take(parent["name"] + label)
                row["preferred"] = True
                row["parent"] = parent["code"]
                row["_parent_row"] = parent
                row["listed_shares"] = max(100_000, int(parent["listed_shares"] * rng.uniform(0.02, 0.2)))
                row["par_value"] = parent["par_value"]
                row["listing_date"] = listing_day(parent["listing_date"])
                row["volatility"] = 0.015
            elif cat == "etf":
                row["code"] = etf_codes[ei]
                ei += 1
                b, t = next(etf_names)
                row["name"] = names.take(f"{_ETF_BRANDS[b]} {_ETF_THEMES[t]}")
                row["etp"] = 1 if rng.random() < 0.1 else 2
                row["base_level"] = float(np.clip(np.exp(rng.normal(np.log(12_000), 0.6)), 2_000, 150_000))
                row["listed_shares"] = int(np.exp(rng.uniform(np.log(1e6), np.log(1e8))))
                row["par_value"] = 0
                row["listing_date"] = listing_day(date(2002, 10, 14))
                row["volatility"] = 0.01
            elif cat == "etn":
                row["code"] = etn_codes[ni]
                ni += 1
                i_, u_ = next(etn_names)
                row["name"] = names.take(f"{_ETN_ISSUERS[i_]} {_ETN_UNDERLYINGS[u_]} ETN")
                row["etp"] = 4 if rng.random() < 0.1 else 3
                row["base_level"] = float(np.clip(np.exp(rng.normal(np.log(10_000), 0.7)), 300, 100_000))
                row["listed_shares"] = int(np.exp(rng.uniform(np.log(1e6), np.log(4e7))))
                row["par_value"] = 0
                row["listing_date"] = listing_day(date(2014, 11, 17))
                row["volatility"] = 0.015
            else:
                row["code"] = zero_codes[zi]
                zi += 1
                row["listing_date"] = listing_day(date(2001, 1, 1))
                row["listed_shares"] = int(np.exp(rng.uniform(np.log(5e6), np.log(2e8))))
                level, vol = {
                    "spac": (float(rng.uniform(1_990, 2_150)), 0.003),
                    "reit": (float(np.exp(rng.normal(np.log(4_800), 0.3))), 0.01),
                    "mf": (float(np.exp(rng.normal(np.log(5_000), 0.3))), 0.01),
                    "if": (float(np.exp(rng.normal(np.log(12_000), 0.2))), 0.008),
                    "sc": (float(np.exp(rng.normal(np.log(5_000), 0.3))), 0.01),
                    "dr": (float(np.exp(rng.normal(np.log(3_000), 0.5))), 0.025),
                    "bc": (float(np.exp(rng.normal(np.log(10_000), 0.2))), 0.008),
                    "fe": (float(np.exp(rng.normal(np.log(20_000), 0.3))), 0.012),
                    "fs": (float(np.exp(rng.normal(np.log(2_500), 0.6))), 0.03),
                }[cat]
                row["base_level"], row["volatility"] = level, vol
                if cat == "spac":
                    n_spac += 1
                    broker = _SPAC_BROKERS[int(rng.integers(len(_SPAC_BROKERS)))]
                    row["name"] = names.take(f"{broker}제{n_spac + 10}호스팩")
                    row["spac"] = True
                    row["par_value"] = 100
                    row["listed_shares"] = int(rng.uniform(5e6, 2e7))
                    row["listing_date"] = listing_day(date(2015, 1, 1))
                elif cat == "reit":
                    infix = _REIT_INFIX[int(rng.integers(len(_REIT_INFIX)))]
                    row["name"] = names.take(f"{company_name('')}{infix}리츠")
                elif cat == "mf":
                    row["name"] = names.take(f"{company_name('')}{int(rng.integers(1, 30))}호투자회사")
                elif cat == "if":
                    row["name"] = names.take(f"{company_name('')}인프라")
                elif cat == "sc":
                    row["name"] = names.take(f"{company_name('')}해운{int(rng.integers(1, 30))}호")
                elif cat == "dr":
                    row["name"] = names.take(f"{company_name()}DR")
                elif cat == "bc":
                    row["name"] = names.take(f"{company_name('')}부동산신탁{int(rng.integers(1, 20))}호")
                    row["etp"] = 5
                elif cat == "fe":
                    b = _ETF_BRANDS[int(rng.integers(len(_ETF_BRANDS)))]
                    row["name"] = names.take(f"{b} 해외{_ETF_THEMES[int(rng.integers(len(_ETF_THEMES)))]}")
                    row["par_value"] = 0
                elif cat == "fs":
                    f = _FOREIGN[int(rng.integers(len(_FOREIGN)))]
                    s = _FOREIGN_SUFFIX[int(rng.integers(len(_FOREIGN_SUFFIX)))]
                    row["name"] = names.take(f + s)
                    row["par_value"] = 0
            rows.append(row)

    assign_common_levels(
        rng,
        [r for r in rows if r["cat"] == "common" and not r.get("known")],
        top=sum(r["cat"] == "common" for r in known_rows),
    )
    for r in rows:
        if r["cat"] == "preferred" and not r.get("known"):
            r["base_level"] = r.pop("_parent_row")["base_level"] * float(rng.uniform(0.45, 0.95))
    assign_flags(rng, rows)
    assign_activity(rng, rows)
    compress_generated_caps(rows)

    out = [
        Listing(
            code=r["code"],
            isin=make_isin(r["code"]),
            name=r["name"],
            market=r["market"],
            group=r["group"],
            etp=r["etp"],
            spac=r["spac"],
            preferred=r["preferred"],
            halted=r["halted"],
            liquidation=r["liquidation"],
            administrative=r["administrative"],
            alarm=r["alarm"],
            listed_shares=int(r["listed_shares"]),
            par_value=int(r["par_value"]),
            listing_date=r["listing_date"],
            base_level=round(float(r["base_level"]), 2),
            activity=float(r["activity"]),
            volatility=round(float(r["volatility"]), 5),
            parent=r["parent"],
        )
        for r in rows
    ]
    out.sort(key=lambda x: x.code)
    codes = [x.code for x in out]
    if len(set(codes)) != len(codes):  # pragma: no cover - guarded by construction
        raise AssertionError("duplicate listing codes generated")
    return out
