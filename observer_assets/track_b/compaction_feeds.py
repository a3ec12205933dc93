"""Journal frames of the feeds besides the tape -> typed Arrow rows: order books, expected prices, market status.

Each record is kept as received, one row per record, in receive order, with the venue it came from (``KRX``,
``NXT`` or ``UN``, the unified view) and its provenance (key, connection, journal line). Nothing is inferred:
an order book row is the exchange's book at ``exchange_ts`` as far as the feed told it; a status row is the
exchange's word on a venue's phase (docs/kis-protocol.md §8.5 for the codes). The trade feeds of NXT and the
unified view are tapes like KRX's and go through the tick pipeline (``compaction_ticks``).
"""

from __future__ import annotations

from datetime import date

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from observer_assets.track_b.compaction_ticks import TZ, _epoch_s
from observer_assets.track_b.phase_check import reading
from observer_resources.kis import protocol as p
from observer_resources.kis.feeds import FEED_OF_TR
from observer_resources.kis.frames import FeedFrame, OrderBookFrame

LEVELS = 10
_PROVENANCE = [
    ("key_id", pa.string()),
    ("conn_id", pa.string()),  # <run>/<connection>
    ("frame_seq", pa.int64()),  # journal line counter ``n`` of the frame
]
BOOK_SCHEMA = pa.schema(
    [
        ("code", pa.string()),
        ("venue", pa.string()),  # KRX | NXT | UN
        ("exchange_ts", pa.timestamp("ms", tz=TZ)),  # the partition's day + BSOP_HOUR (1 s resolution)
        ("receive_ts", pa.timestamp("us", tz=TZ)),
        ("hour_cls_code", pa.string()),
        *[(f"ask{i}", pa.int64()) for i in range(1, LEVELS + 1)],  # 0 = an empty level, as KIS sends it
        *[(f"bid{i}", pa.int64()) for i in range(1, LEVELS + 1)],
        *[(f"ask_size{i}", pa.int64()) for i in range(1, LEVELS + 1)],
        *[(f"bid_size{i}", pa.int64()) for i in range(1, LEVELS + 1)],
        ("total_ask_size", pa.int64()),
        ("total_bid_size", pa.int64()),
        ("expected_price", pa.int64()),  # ANTC_CNPR: non-zero during auctions
        ("expected_qty", pa.int64()),  # ANTC_CNQN
        ("acml_vol", pa.int64()),
        ("krx_mid_price", pa.int64()),  # KMID_PRC .. NMID_CLS_CODE: NXT and unified books only, else null
        ("krx_mid_total_size", pa.int64()),
        ("krx_mid_cls_code", pa.string()),
        ("nxt_mid_price", pa.int64()),
        ("nxt_mid_total_size", pa.int64()),
        ("nxt_mid_cls_code", pa.string()),
        *_PROVENANCE,
    ]
)
SAMPLED_LEVELS = 5
BOOK_SAMPLE_S = 1.0
#: the sampled view: per code and venue, the last book of each whole KST second of receipt, best five levels
BOOK_SAMPLE_SCHEMA = pa.schema(
    [
        ("code", pa.string()),
        ("venue", pa.string()),
        ("bucket_start", pa.timestamp("us", tz=TZ)),
        ("bucket_books", pa.int64()),  # books received in the bucket (the row is the last)
        ("exchange_ts", pa.timestamp("ms", tz=TZ)),
        ("receive_ts", pa.timestamp("us", tz=TZ)),
        *[(f"ask{i}", pa.int64()) for i in range(1, SAMPLED_LEVELS + 1)],
        *[(f"bid{i}", pa.int64()) for i in range(1, SAMPLED_LEVELS + 1)],
        *[(f"ask_size{i}", pa.int64()) for i in range(1, SAMPLED_LEVELS + 1)],
        *[(f"bid_size{i}", pa.int64()) for i in range(1, SAMPLED_LEVELS + 1)],
        ("total_ask_size", pa.int64()),
        ("total_bid_size", pa.int64()),
        ("expected_price", pa.int64()),
        ("acml_vol", pa.int64()),
    ]
)
EXPECTED_SCHEMA = pa.schema(
    [
        ("code", pa.string()),
        ("venue", pa.string()),
        ("exchange_ts", pa.timestamp("ms", tz=TZ)),  # BSOP_DATE + STCK_CNTG_HOUR
        ("receive_ts", pa.timestamp("us", tz=TZ)),
        ("expected_price", pa.int64()),  # STCK_PRPR of the expected-price layout
        ("change", pa.int64()),
        ("change_sign", pa.string()),
        ("change_rate", pa.float64()),
        ("expected_volume", pa.int64()),  # ACML_VOL of the layout: the volume the auction would cross
        ("session_code", pa.string()),  # NEW_MKOP_CLS_CODE
        ("halted", pa.bool_()),
        *_PROVENANCE,
    ]
)
STATUS_SCHEMA = pa.schema(
    [
        ("receive_ts", pa.timestamp("us", tz=TZ)),
        ("venue", pa.string()),  # whose phase: the feed's venue, or EXCH_CLS_CODE's on the unified feed
        ("feed", pa.string()),  # KRX | NXT | UN: the TR the record came over
        ("code", pa.string()),  # the anchor code; null on the unified feed, which carries none
        ("halted", pa.bool_()),
        ("phase_code", pa.string()),  # MKOP_CLS_CODE
        ("next_phase_code", pa.string()),  # ANTC_MKOP_CLS_CODE
        ("trading_kind_code", pa.string()),  # MRKT_TRTM_CLS_CODE
        ("vi_code", pa.string()),  # VI_CLS_CODE
        ("record", pa.string()),  # the record's fields joined with '^', as received
        *_PROVENANCE,
    ]
)
_ASP = {name: i for i, name in enumerate(p.H0NXASP0_FIELDS)}
_ANC = {name: i for i, name in enumerate(p.H0NXANC0_FIELDS)}


def _int(text: str) -> int | None:
    try:
        return int(text)
    except ValueError:
        return None


def _float(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


class FeedRows:
    """Rows of the three feed tables, collected line by line and built once (they are small beside the tape)."""

    def __init__(self, day: date) -> None:
        self.day = day.strftime("%Y%m%d")
        self.books: dict[str, list] = {f.name: [] for f in BOOK_SCHEMA}
        self.expected: dict[str, list] = {f.name: [] for f in EXPECTED_SCHEMA}
        self.status: dict[str, list] = {f.name: [] for f in STATUS_SCHEMA}
        self._ex: dict[str, int] = {}

    def add_books(self, msg: OrderBookFrame, rx_us: int, conn_id: str, key_id: str | None, n: int | None) -> None:
        venue = FEED_OF_TR[msg.tr_id][1]
        c = self.books
        for b in msg.records:
            c["code"].append(b.code)
            c["venue"].append(venue)
            c["exchange_ts"].append(_epoch_s(self.day, b.time, self._ex) * 1000)
            c["receive_ts"].append(rx_us)
            c["hour_cls_code"].append(b.hour_cls_code)
            for i in range(LEVELS):
                c[f"ask{i + 1}"].append(b.asks[i])
                c[f"bid{i + 1}"].append(b.bids[i])
                c[f"ask_size{i + 1}"].append(b.ask_sizes[i])
                c[f"bid_size{i + 1}"].append(b.bid_sizes[i])
            c["total_ask_size"].append(b.total_ask_size)
            c["total_bid_size"].append(b.total_bid_size)
            c["expected_price"].append(b.expected_price)
            c["expected_qty"].append(b.expected_qty)
            c["acml_vol"].append(b.acml_vol)
            mid = len(b.raw) >= len(p.H0NXASP0_FIELDS)
            for col, field, conv in (
                ("krx_mid_price", "KMID_PRC", _int),
                ("krx_mid_total_size", "KMID_TOTAL_RSQN", _int),
                ("krx_mid_cls_code", "KMID_CLS_CODE", str),
                ("nxt_mid_price", "NMID_PRC", _int),
                ("nxt_mid_total_size", "NMID_TOTAL_RSQN", _int),
                ("nxt_mid_cls_code", "NMID_CLS_CODE", str),
            ):
                c[col].append(conv(b.raw[_ASP[field]]) if mid and msg.tr_id != p.TR_WS_ORDERBOOK else None)
            c["key_id"].append(key_id)
            c["conn_id"].append(conn_id)
            c["frame_seq"].append(n)

    def add_feed(self, msg: FeedFrame, rx_us: int, conn_id: str, key_id: str | None, n: int | None) -> None:
        if FEED_OF_TR[msg.tr_id][0] == "status":
            self._add_status(msg, rx_us, conn_id, key_id, n)
        else:
            self._add_expected(msg, rx_us, conn_id, key_id, n)

    def _add_expected(self, msg: FeedFrame, rx_us: int, conn_id: str, key_id: str | None, n: int | None) -> None:
        venue = FEED_OF_TR[msg.tr_id][1]
        c = self.expected
        for r in msg.records:
            c["code"].append(r[0])
            c["venue"].append(venue)
            c["exchange_ts"].append(_epoch_s(r[_ANC["BSOP_DATE"]] or self.day, r[1], self._ex) * 1000)
            c["receive_ts"].append(rx_us)
            c["expected_price"].append(_int(r[_ANC["STCK_PRPR"]]))
            c["change"].append(_int(r[_ANC["PRDY_VRSS"]]))
            c["change_sign"].append(r[_ANC["PRDY_VRSS_SIGN"]])
            c["change_rate"].append(_float(r[_ANC["PRDY_CTRT"]]))
            c["expected_volume"].append(_int(r[_ANC["ACML_VOL"]]))
            c["session_code"].append(r[_ANC["NEW_MKOP_CLS_CODE"]])
            c["halted"].append(r[_ANC["TRHT_YN"]] == "Y")
            c["key_id"].append(key_id)
            c["conn_id"].append(conn_id)
            c["frame_seq"].append(n)

    def _add_status(self, msg: FeedFrame, rx_us: int, conn_id: str, key_id: str | None, n: int | None) -> None:
        feed = FEED_OF_TR[msg.tr_id][1]
        names = p.WS_FEED_FIELDS[msg.tr_id]
        c = self.status
        for r in msg.records:
            f = dict(zip(names, r, strict=False))
            rd = reading(msg.tr_id, r)  # the capture's own reading of a status record
            c["receive_ts"].append(rx_us)
            c["venue"].append(rd.venue)
            c["feed"].append(feed)
            c["code"].append(rd.code)
            c["halted"].append(rd.halted)
            c["phase_code"].append(rd.phase_code)
            c["next_phase_code"].append(f.get("ANTC_MKOP_CLS_CODE"))
            c["trading_kind_code"].append(f.get("MRKT_TRTM_CLS_CODE"))
            c["vi_code"].append(f.get("VI_CLS_CODE"))
            c["record"].append("^".join(r))
            c["key_id"].append(key_id)
            c["conn_id"].append(conn_id)
            c["frame_seq"].append(n)

    def tables(self) -> dict[str, pa.Table]:
        """``books``, ``expected``, ``status``: each sorted by receive time (the order the records arrived); and
        ``books_sampled``, the books' fixed-rate view (:func:`sample_books`)."""
        out = {}
        for name, cols, schema in (
            ("books", self.books, BOOK_SCHEMA),
            ("expected", self.expected, EXPECTED_SCHEMA),
            ("status", self.status, STATUS_SCHEMA),
        ):
            arrays = []
            for f in schema:
                if pa.types.is_timestamp(f.type):
                    arrays.append(pa.array(cols[f.name], pa.int64()).cast(f.type))
                else:
                    arrays.append(pa.array(cols[f.name], f.type))
            t = pa.Table.from_arrays(arrays, schema=schema)
            out[name] = t.sort_by([("receive_ts", "ascending")]) if t.num_rows else t
        out["books_sampled"] = sample_books(out["books"])
        return out


def sample_books(books: pa.Table, bucket_s: float = BOOK_SAMPLE_S) -> pa.Table:
    """Order-book snapshots at a fixed rate: per (code, venue), the last book received in each ``bucket_s`` of
    receive time (aligned to whole KST seconds), with how many books the bucket held; the best five levels."""
    n = books.num_rows
    if n == 0:
        return BOOK_SAMPLE_SCHEMA.empty_table()
    width = int(round(bucket_s * 1_000_000))
    rx = books["receive_ts"].cast(pa.int64()).to_numpy()
    work = books.append_column("_b", pa.array(rx // width)).append_column("_i", pa.array(np.arange(n)))
    order = pc.sort_indices(
        work, [("code", "ascending"), ("venue", "ascending"), ("_b", "ascending"), ("_i", "ascending")]
    ).to_numpy()
    key = pc.binary_join_element_wise(books["code"], books["venue"], "|")
    k = pc.dictionary_encode(key).combine_chunks().indices.to_numpy(zero_copy_only=False)[order]
    b = (rx // width)[order]
    new = np.ones(n, dtype=bool)
    new[1:] = (k[1:] != k[:-1]) | (b[1:] != b[:-1])
    starts = np.flatnonzero(new)
    lasts = np.append(starts[1:] - 1, n - 1)
    out = books.take(pa.array(order[lasts]))
    cols = {
        "bucket_start": pa.array(b[starts] * width, pa.int64()).cast(pa.timestamp("us", tz=TZ)),
        "bucket_books": pa.array(np.diff(np.append(starts, n)), pa.int64()),
    }
    arrays = [cols[f.name] if f.name in cols else out[f.name].combine_chunks() for f in BOOK_SAMPLE_SCHEMA]
    return pa.Table.from_arrays(arrays, schema=BOOK_SAMPLE_SCHEMA)
