"""KOSPI/KOSDAQ stock master files (`*.mst.zip`): download and parse.

There is no REST endpoint that lists all stocks (docs/kis-protocol.md §6.8), so the universe starts here. The layout is
the one the broker's own parsers read (docs/kis-protocol.md §7.2): CP949 lines, a variable head (short code 9, ISIN 12,
Korean name) and a fixed-width ASCII tail of 227 (KOSPI) / 221 (KOSDAQ) characters whose column widths are listed
below in the official order. Parsing slices the tail by those widths; a line whose tail is not exactly that long
is refused with its line number rather than misaligned silently.
"""

from __future__ import annotations

import io
import zipfile
from dataclasses import dataclass
from datetime import date
from typing import Literal

import httpx

from observer_resources.kis import protocol as p
from observer_resources.kis.errors import KisError

Which = Literal["kospi", "kosdaq"]

# (name, width) in file order; names are ours, widths and order are the official parsers'.
_KOSPI_COLUMNS: tuple[tuple[str, int], ...] = (
    ("group", 2),
    ("cap_size", 1),
    ("sector_l", 4),
    ("sector_m", 4),
    ("sector_s", 4),
    ("manufacturing", 1),
    ("low_liquidity", 1),
    ("governance", 1),
    ("k200_sector", 1),
    ("kospi100", 1),
    ("kospi50", 1),
    ("krx", 1),
    ("etp", 1),
    ("elw_issuer", 1),
    ("krx100", 1),
    ("krx_auto", 1),
    ("krx_semi", 1),
    ("krx_bio", 1),
    ("krx_bank", 1),
    ("spac", 1),
    ("krx_energy", 1),
    ("krx_steel", 1),
    ("short_overheat_code", 1),
    ("krx_media", 1),
    ("krx_construction", 1),
    ("non1", 1),
    ("krx_securities", 1),
    ("krx_ship", 1),
    ("krx_insurance", 1),
    ("krx_transport", 1),
    ("sri", 1),
    ("base_price", 9),
    ("lot", 5),
    ("after_hours_lot", 5),
    ("halted", 1),
    ("liquidation", 1),
    ("administrative", 1),
    ("market_warning", 2),
    ("warning_notice", 1),
    ("unfaithful_disclosure", 1),
    ("backdoor_listing", 1),
    ("lock_code", 2),
    ("par_change_code", 2),
    ("capital_increase_code", 2),
    ("margin_rate", 3),
    ("credit_ok", 1),
    ("credit_days", 3),
    ("prev_volume", 12),
    ("par_value", 12),
    ("listing_date", 8),
    ("listed_shares_k", 15),
    ("capital", 21),
    ("settle_month", 2),
    ("ipo_price", 7),
    ("preferred_code", 1),
    ("short_sale_overheat", 1),
    ("abnormal_surge", 1),
    ("krx300", 1),
    ("kospi_flag", 1),
    ("sales", 9),
    ("operating_profit", 9),
    ("ordinary_profit", 9),
    ("net_income", 5),
    ("roe", 9),
    ("base_ym", 8),
    ("market_cap_100m", 9),
    ("group_company", 3),
    ("credit_limit_over", 1),
    ("collateral_loan", 1),
    ("stock_lending", 1),
)
_KOSDAQ_COLUMNS: tuple[tuple[str, int], ...] = (
    ("group", 2),
    ("cap_size", 1),
    ("sector_l", 4),
    ("sector_m", 4),
    ("sector_s", 4),
    ("venture", 1),
    ("low_liquidity", 1),
    ("krx", 1),
    ("etp", 1),
    ("krx100", 1),
    ("krx_auto", 1),
    ("krx_semi", 1),
    ("krx_bio", 1),
    ("krx_bank", 1),
    ("spac", 1),
    ("krx_energy", 1),
    ("krx_steel", 1),
    ("short_overheat_code", 1),
    ("krx_media", 1),
    ("krx_construction", 1),
    ("investment_attention", 1),
    ("krx_securities", 1),
    ("krx_ship", 1),
    ("krx_insurance", 1),
    ("krx_transport", 1),
    ("kosdaq150", 1),
    ("base_price", 9),
    ("lot", 5),
    ("after_hours_lot", 5),
    ("halted", 1),
    ("liquidation", 1),
    ("administrative", 1),
    ("market_warning", 2),
    ("warning_notice", 1),
    ("unfaithful_disclosure", 1),
    ("backdoor_listing", 1),
    ("lock_code", 2),
    ("par_change_code", 2),
    ("capital_increase_code", 2),
    ("margin_rate", 3),
    ("credit_ok", 1),
    ("credit_days", 3),
    ("prev_volume", 12),
    ("par_value", 12),
    ("listing_date", 8),
    ("listed_shares_k", 15),
    ("capital", 21),
    ("settle_month", 2),
    ("ipo_price", 7),
    ("preferred_code", 1),
    ("short_sale_overheat", 1),
    ("abnormal_surge", 1),
    ("krx300", 1),
    ("sales", 9),
    ("operating_profit", 9),
    ("ordinary_profit", 9),
    ("net_income", 5),
    ("roe", 9),
    ("base_ym", 8),
    ("market_cap_100m", 9),
    ("group_company", 3),
    ("credit_limit_over", 1),
    ("collateral_loan", 1),
    ("stock_lending", 1),
)
COLUMNS: dict[str, tuple[tuple[str, int], ...]] = {"kospi": _KOSPI_COLUMNS, "kosdaq": _KOSDAQ_COLUMNS}
assert sum(w for _, w in _KOSPI_COLUMNS) == p.MASTER_TAIL_LEN["kospi"] and len(_KOSPI_COLUMNS) == 70
assert sum(w for _, w in _KOSDAQ_COLUMNS) == p.MASTER_TAIL_LEN["kosdaq"] and len(_KOSDAQ_COLUMNS) == 64


class MasterFormatError(KisError):
    """A master file that does not have the official layout."""


@dataclass(frozen=True, slots=True)
class MasterRow:
    """One master line, decoded. Code values are as the official C headers list them (docs/kis-protocol.md §7.2);
    a blank one-character flag means "no", as real files leave many of them blank."""

    market: Which
    code: str
    isin: str
    name: str
    group: str  # scrt_grp_cls_code: ST stock, EF ETF, RT REIT, MF fund, ...
    etp: str  # '0' none, '1'/'2' ETF, '3'/'4' ETN, '5' listed trust
    spac: bool
    base_price: int  # stck_sdpr: normally the previous close, adjusted for corporate actions
    halted: bool
    liquidation: bool
    administrative: bool
    market_warning: str  # '00' none, '01' caution, '02' warning, '03' risk
    preferred: bool
    prev_volume: int
    listed_shares: int
    listing_date: date | None
    market_cap_100m: int
    sector_large: str | None  # index-sector codes (bstp_*_div_code); None for '0000' or blank
    sector_medium: str | None
    sector_small: str | None
    kospi200_sector: str | None  # KOSPI 200 sector code ('1'..); None when '0' (unclassified) or blank
    kospi100: bool
    kospi50: bool
    krx100: bool
    kosdaq150: bool  # KOSDAQ master only; False on KOSPI
    krx300: bool
    lot: int | None  # regular-session trading unit in shares; None when the field is 0 or blank
    low_liquidity: bool
    warning_notice: bool  # mrkt_alrm_risk_adnt_yn: notice that a warning/risk designation may follow
    unfaithful_disclosure: bool
    investment_attention: bool  # KOSDAQ's investment-attention issue (투자주의환기종목); False on KOSPI
    short_term_overheat: str  # '0' none, '1' notice, '2' designated, '3' designation extended
    short_sale_overheat: bool
    abnormal_surge: bool
    fields: dict[str, str]  # every tail column, raw, for whoever needs more

    @property
    def kospi200(self) -> bool:
        """A KOSPI 200 constituent: only constituents carry a KOSPI 200 sector."""
        return self.kospi200_sector is not None


def _int(s: str) -> int:
    s = s.strip()
    return int(s) if s.lstrip("-").isdigit() else 0


def _date(s: str) -> date | None:
    s = s.strip()
    if len(s) == 8 and s.isdigit() and s != "00000000":
        try:
            return date(int(s[:4]), int(s[4:6]), int(s[6:]))
        except ValueError:
            return None
    return None


def _yes(f: dict[str, str], name: str) -> bool:
    """A Y/N flag; absent from this market's layout, blank or anything but 'Y' is no."""
    return f.get(name, "") == "Y"


def _code(s: str, none: tuple[str, ...]) -> str | None:
    s = s.strip()
    return None if s in none else s


def parse_mst(text: str, which: Which) -> list[MasterRow]:
    """Parse a decoded `.mst` file (one line per security)."""
    cols = COLUMNS[which]
    tail_len = p.MASTER_TAIL_LEN[which]
    rows: list[MasterRow] = []
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        if len(line) < tail_len + 21 or not line[-tail_len:].isascii():
            raise MasterFormatError(
                f"{which} master line {n}: expected a 21+ character head and a {tail_len}-character ASCII tail"
            )
        head, tail = line[:-tail_len], line[-tail_len:]
        f: dict[str, str] = {}
        pos = 0
        for name, width in cols:
            f[name] = tail[pos : pos + width]
            pos += width
        code = head[0:9].rstrip()
        if not code:
            raise MasterFormatError(f"{which} master line {n}: empty short code")
        rows.append(
            MasterRow(
                market=which,
                code=code,
                isin=head[9:21].rstrip(),
                name=head[21:].strip(),
                group=f["group"].strip(),
                etp=f["etp"].strip() or "0",
                spac=f["spac"] == "Y",
                base_price=_int(f["base_price"]),
                halted=f["halted"] == "Y",
                liquidation=f["liquidation"] == "Y",
                administrative=f["administrative"] == "Y",
                market_warning=f["market_warning"].strip() or "00",
                preferred=f["preferred_code"].strip() not in ("", "0"),
                prev_volume=_int(f["prev_volume"]),
                listed_shares=_int(f["listed_shares_k"]) * 1000,
                listing_date=_date(f["listing_date"]),
                market_cap_100m=_int(f["market_cap_100m"]),
                sector_large=_code(f["sector_l"], ("", "0000")),
                sector_medium=_code(f["sector_m"], ("", "0000")),
                sector_small=_code(f["sector_s"], ("", "0000")),
                kospi200_sector=_code(f.get("k200_sector", ""), ("", "0")),
                kospi100=_yes(f, "kospi100"),
                kospi50=_yes(f, "kospi50"),
                krx100=_yes(f, "krx100"),
                kosdaq150=_yes(f, "kosdaq150"),
                krx300=_yes(f, "krx300"),
                lot=_int(f["lot"]) or None,
                low_liquidity=_yes(f, "low_liquidity"),
                warning_notice=_yes(f, "warning_notice"),
                unfaithful_disclosure=_yes(f, "unfaithful_disclosure"),
                investment_attention=_yes(f, "investment_attention"),
                short_term_overheat=f["short_overheat_code"].strip() or "0",
                short_sale_overheat=_yes(f, "short_sale_overheat"),
                abnormal_surge=_yes(f, "abnormal_surge"),
                fields=f,
            )
        )
    return rows


def parse_master_zip(data: bytes, which: Which) -> list[MasterRow]:
    """Parse a downloaded `kospi_code.mst.zip` / `kosdaq_code.mst.zip`."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            names = [n for n in zf.namelist() if n.endswith(".mst")]
            if len(names) != 1:
                raise MasterFormatError(f"{which} master zip holds {len(names)} .mst files, expected 1")
            raw = zf.read(names[0])
    except zipfile.BadZipFile as e:
        raise MasterFormatError(f"{which} master is not a zip file: {e}") from e
    return parse_mst(raw.decode(p.MASTER_ENCODING), which)


def master_url(base_url: str, which: Which) -> str:
    return base_url.rstrip("/") + p.MASTER_PATHS[which]


async def download_master(http: httpx.AsyncClient, base_url: str, which: Which) -> bytes:
    """Fetch one master zip. `base_url` is the download host (KIS: protocol.MASTER_DOWNLOAD_URL; the local
    exchange serves the same paths on its REST port)."""
    r = await http.get(master_url(base_url, which), timeout=60.0)
    if r.status_code != 200:
        raise KisError(f"{which} master download failed: HTTP {r.status_code}")
    return r.content
