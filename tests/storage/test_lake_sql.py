"""`observer sql` and docs/reading-the-lake.md, run as a user would: the installed command as a subprocess over a
real lake (the earlier-layout fixture, migrated, with the unified tape and minute bars the worked example reads),
and every code block of the page executed against it."""

from __future__ import annotations

import json
import os
import pty
import re
import shutil
import subprocess
import sys
import uuid
from datetime import date, datetime
from pathlib import Path

import duckdb
import lake_reading as rd
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from observer_assets import datadoc
from observer_assets.lake_migration import migrate
from observer_resources.clock import KST
from observer_resources.storage import lake, layout

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "lake_v1"
DOC = rd.ROOT / "docs" / "reading-the-lake.md"
DAY = "2026-11-26"
BIN = Path(sys.executable).parent  # the venv's console scripts, as installed
MINUTE_BARS_SCHEMA = pa.schema(  # the minute-bar table's columns (one row per code, venue and minute)
    [
        ("code", pa.string()),
        ("venue", pa.string()),
        ("market", pa.string()),
        ("minute", pa.timestamp("us", tz="Asia/Seoul")),
        ("open", pa.int64()),
        ("high", pa.int64()),
        ("low", pa.int64()),
        ("close", pa.int64()),
        ("volume", pa.int64()),
        ("value", pa.int64()),
        ("source", pa.string()),
        ("fetched_at", pa.timestamp("us", tz="Asia/Seoul")),
    ]
)
_PY = re.compile(r"```python\n# example: (\w+)\n(.*?)```", re.S)
_SQL = re.compile(r"```sql\n-- example: (\w+)\n(.*?)```", re.S)


def sql(root: Path | str, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "OBSERVER_DATA_DIR": str(root)}
    return subprocess.run(
        [str(BIN / "observer"), "sql", *args], input=stdin, capture_output=True, text=True, env=env, timeout=60
    )


def rows(root: Path, query: str) -> list[dict]:
    r = sql(root, "--format", "json", query)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)


def one_line_error(r: subprocess.CompletedProcess, *words: str) -> str:
    assert r.returncode == 1 and r.stdout == "", (r.returncode, r.stdout, r.stderr)
    lines = r.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("observer sql: ") and "Traceback" not in r.stderr, r.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])
    return lines[0]


def minute_bars_of(ticks: pa.Table) -> pa.Table:
    """KIS-shaped unified-tape bars of every code of ``ticks``: what the minute-bar run writes for a day."""
    df = ticks.select(["code", "seq", "exchange_ts", "price", "qty"]).to_pandas().sort_values(["code", "seq"])
    df["minute"] = df["exchange_ts"].dt.floor("1min").astype("datetime64[us, Asia/Seoul]")
    g = df.groupby(["code", "minute"], as_index=False).agg(
        open=("price", "first"),
        high=("price", "max"),
        low=("price", "min"),
        close=("price", "last"),
        volume=("qty", "sum"),
    )
    g["value"] = g["close"] * g["volume"]
    g["venue"], g["market"], g["source"] = "UN", "UN", "inquire-time-itemchartprice"
    g["fetched_at"] = pd.Timestamp(datetime(2026, 11, 26, 16, 0, tzinfo=KST))
    return pa.Table.from_pandas(g, schema=MINUTE_BARS_SCHEMA, preserve_index=False)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, str]:
    """A small real lake with the worked example's four datasets, and the code of its busiest streamed symbol."""
    root = tmp_path_factory.mktemp("lake_sql") / "data"
    shutil.copytree(FIXTURE, root)
    assert not migrate(root).conflicts
    # the fixture predates the unified tape as the default feed: its KRX tape stands in (the same schema)
    for f in sorted((root / layout.TRACK_B).rglob("*.parquet")):
        lake.write_bytes_atomic(root / "track_b_unified" / f.relative_to(root / layout.TRACK_B), f.read_bytes())
    ticks = pq.read_table(root / layout.TRACK_B, partitioning=None)
    bars = minute_bars_of(ticks)
    code = max(pc.value_counts(ticks["code"]).to_pylist(), key=lambda v: v["counts"])["values"]
    # one minute where KIS counted 100 more shares than the tape holds: the stream missed a trade
    first = pc.index(bars["code"], code).as_py()
    vol = bars["volume"].to_pylist()
    vol[first] += 100
    bars = bars.set_column(bars.schema.get_field_index("volume"), "volume", pa.array(vol, pa.int64()))
    lake.write_table_atomic(layout.minute_bars_path(root, date.fromisoformat(DAY)), bars)
    return root, code


# --- the list of datasets ---------------------------------------------------------------------------------------------
NOT_TABLES = {  # layout's names that are not a top-level Parquet table
    layout.UNIVERSE_RAW,  # raw inputs
    layout.TRACK_A_RAW,
    layout.UNIVERSE_INPUTS_OLD,  # the earlier layout, moved away by `observer lake migrate`
    layout.META,  # JSON sidecars
    layout.SYSTEM_EVENTS,  # JSON only, under _meta/
    layout.GAP_REPORT_NAME,  # a file name
}


def test_table_datasets_cover_every_dataset_the_writers_produce(built):
    tables = set(layout.TABLE_DATASETS)
    assert len(tables) == len(layout.TABLE_DATASETS)
    # every dataset name the layout module declares is a table or known not to be one
    declared = set()
    for name, value in vars(layout).items():
        if name.isupper() and isinstance(value, str):
            declared.add(value)
        elif name.isupper() and isinstance(value, dict):
            declared.update(value.values())
    assert declared - tables - NOT_TABLES == set(), "a new dataset: add it to layout.TABLE_DATASETS"
    assert tables <= declared
    # every table docs/data.md documents (generated from the writers' schemas)
    assert {d.name for d in datadoc.DATASETS if not d.name.startswith("raw/")} <= tables
    # every Parquet path the layout's path functions give lies in a table dataset
    root, day, start = Path("/lake"), date(2026, 12, 4), datetime(2026, 12, 4, 9, tzinfo=KST)
    paths = [
        layout.universe_path(root, day),
        layout.exclusions_path(root, day),
        layout.prev_close_path(root, day),
        layout.nxt_status_path(root, day),
        layout.rejected_path(root, day),
        layout.slot_dir(root, start) / "snapshot.parquet",
        layout.slot_dir(root, start, layout.TRACK_A_FAILURES) / "failures.parquet",
        layout.daily_path(root, day),
        layout.ticks_path(root, start),
        *(layout.venue_ticks_path(root, start, tr) for tr in layout.TRACK_B_TAPES),
        *(layout.feed_path(root, start, kind) for kind in layout.TRACK_B_FEEDS),
        layout.sampled_path(root, start),
        layout.restored_path(root, day),
        *(layout.restored_path(root, day, ds) for ds in layout.TRACK_B_TAPES_RESTORED.values()),
        layout.report_path(root, day),
        layout.verdict_table_path(root, day),
        layout.coverage_path(root, day),
        layout.minute_bars_path(root, day),
        layout.minute_bars_proof_path(root, day),
        layout.daily_bars_path(root, 2026),
    ]
    assert {p.relative_to(root).parts[0] for p in paths} <= tables
    # and every table directory a real (migrated) lake holds
    assert set(rd.datasets(built[0])) <= tables


# --- observer sql -------------------------------------------------------------------------------------------------------
def test_a_view_per_dataset_present_with_its_partition_columns(built):
    root, _ = built
    views = rows(root, "SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY view_name")
    present = rd.datasets(root)
    assert [v["view_name"] for v in views] == present
    assert {"track_a", "track_b_unified", "minute_bars", "gaps", "universe"} <= set(present)
    cols = {
        (r["table_name"], r["column_name"]): r["data_type"]
        for r in rows(root, "SELECT table_name, column_name, data_type FROM duckdb_columns() WHERE NOT internal")
    }
    assert cols[("track_a", "date")] == "DATE" and cols[("track_a", "slot")] == "VARCHAR"
    assert cols[("track_b_unified", "hour")] == "VARCHAR" and cols[("minute_bars", "date")] == "DATE"
    assert cols[("track_a", "slot_ts")] == "TIMESTAMP WITH TIME ZONE"
    slots = rows(root, "SELECT DISTINCT slot, strftime(slot_ts, '%H:%M') AS t FROM track_a ORDER BY slot")
    assert [s["slot"] for s in slots] == ["T0900", "T0910", "T1020", "T1530"]
    assert [s["t"] for s in slots] == ["09:00", "09:10", "10:20", "15:30"]  # shown in KST, the session's zone


def test_a_join_of_two_datasets_answers_what_the_files_hold(built):
    root, _ = built
    got = rows(
        root,
        "SELECT u.market, count(*) AS n, sum(a.trade_value) AS value FROM track_a a "
        "JOIN universe u USING (date, code) WHERE a.date = '2026-11-26' GROUP BY ALL ORDER BY ALL",
    )
    snaps = pq.read_table(root / "track_a", partitioning=None, columns=["code", "trade_value"]).to_pandas()
    uni = pq.read_table(root / "universe", partitioning=None, columns=["code", "market"]).to_pandas()
    want = snaps.merge(uni, on="code").groupby("market")["trade_value"].agg(["size", "sum"]).reset_index()
    assert got == [{"market": m, "n": int(n), "value": int(v)} for m, n, v in want.itertuples(index=False)]
    assert sum(g["n"] for g in got) > 0


def test_formats_csv_json_and_table(built):
    root, code = built
    q = f"SELECT seq, exchange_ts, price FROM track_b_unified WHERE code = '{code}' ORDER BY seq LIMIT 3"
    as_json = rows(root, q)
    assert len(as_json) == 3 and as_json[0]["exchange_ts"].endswith("+09:00")
    r = sql(root, "--format", "csv", q)
    assert r.returncode == 0 and r.stdout.splitlines()[0] == "seq,exchange_ts,price"
    assert r.stdout.splitlines()[1] == f"{as_json[0]['seq']},{as_json[0]['exchange_ts']},{as_json[0]['price']}"
    r = sql(root, "--max-rows", "5", f"SELECT * FROM track_b_unified WHERE code = '{code}'")
    assert r.returncode == 0 and "seq" in r.stdout and "rows" in r.stdout  # a box, with the footer counting rows
    r = sql(root, stdin="SET threads = 1; SELECT 42 AS answer;")  # statements on standard input; SET shows nothing
    assert r.returncode == 0 and "answer" in r.stdout and "42" in r.stdout and "Success" not in r.stdout
    assert rows(root, "SELECT 1 AS x WHERE false") == []


def test_the_init_script_gives_a_fresh_duckdb_the_same_views(built):
    root, _ = built
    r = sql(root, "--init")
    assert r.returncode == 0 and r.stderr == ""
    con = duckdb.connect()
    con.sql(r.stdout)
    views = [v for (v,) in con.sql("SELECT view_name FROM duckdb_views() WHERE NOT internal ORDER BY 1").fetchall()]
    assert views == rd.datasets(root)
    for ds in views:
        n = con.sql(f'SELECT count(*) FROM "{ds}"').fetchall()[0][0]
        assert n == pq.read_table(root / ds, partitioning=None).num_rows, ds
    assert con.sql("SELECT current_setting('TimeZone')").fetchall()[0][0] == "Asia/Seoul"


def test_bad_sql_is_one_line_and_exit_1(built):
    root, _ = built
    one_line_error(sql(root, "SELEC 1"), "Parser Error")
    one_line_error(sql(root, "SELECT * FROM track_b_nxt"), "track_b_nxt", "does not exist")
    one_line_error(sql(root, "SELECT 'x'::INTEGER"), "Conversion Error")
    one_line_error(sql(root, "--format", "csv", "SELECT CAST(name AS INTEGER) FROM universe"), "Conversion Error")
    r = sql(root, "--init", "SELECT 1")
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1
    r = sql(root / "nope", "SELECT 1")
    assert r.returncode == 2 and "does not exist" in r.stderr and len(r.stderr.splitlines()) == 1


def test_an_empty_lake_exits_cleanly(tmp_path):
    root = tmp_path / "data"
    (root / "track_a" / "date=2026-12-04" / "slot=T0900").mkdir(parents=True)  # a dataset directory, no file yet
    (root / "_meta").mkdir()
    r = sql(root, "SELECT 42 AS answer")
    assert r.returncode == 0 and "42" in r.stdout and r.stderr == ""
    r = sql(root, "--init")
    assert r.returncode == 0 and "CREATE" not in r.stdout and "SET TimeZone" in r.stdout
    one_line_error(sql(root, "SELECT * FROM track_a"), "track_a", "does not exist")
    r = sql(root, stdin="")
    assert r.returncode == 2 and "no SQL given" in r.stderr


def test_older_files_with_fewer_columns_read_through_the_view(built, tmp_path):
    """A day written before a column existed reads beside the newer ones: the missing column null there."""
    root = tmp_path / "data"
    shutil.copytree(built[0], root)
    t = pq.read_table(root / "track_a" / f"date={DAY}" / "slot=T0900" / "snapshot.parquet")
    old = t.drop_columns(["venue", "late_s"])
    lake.write_table_atomic(root / "track_a" / "date=2026-11-25" / "slot=T0900" / "snapshot.parquet", old)
    got = rows(root, "SELECT date, count(*) AS n, count(venue) AS with_venue FROM track_a GROUP BY 1 ORDER BY 1")
    assert got == [
        {"date": "2026-11-25", "n": t.num_rows, "with_venue": 0},
        {"date": DAY, "n": 4 * t.num_rows, "with_venue": 4 * t.num_rows},
    ]


def test_a_lake_on_an_fsspec_url(monkeypatch, capsys):
    """A URL lake (here memory://, a filesystem that is not a local path) is read through its fsspec filesystem."""
    from upath import UPath

    from observer_assets import cli

    url = f"memory://observer-sql-{uuid.uuid4().hex[:8]}"
    t = pa.table({"code": ["005930", "000660"], "price": pa.array([70000, 120000], pa.int64())})
    lake.write_table_atomic(layout.universe_path(UPath(url), date(2026, 12, 4)), t)
    monkeypatch.setenv("OBSERVER_DATA_DIR", url)  # reading needs no OBSERVER_LOCAL_DIR: nothing is written
    monkeypatch.delenv("OBSERVER_LOCAL_DIR", raising=False)
    assert cli.main(["sql", "--format", "json", "SELECT date, code, price FROM universe ORDER BY code"]) == 0
    assert json.loads(capsys.readouterr().out) == [
        {"date": "2026-12-04", "code": "000660", "price": 120000},
        {"date": "2026-12-04", "code": "005930", "price": 70000},
    ]
    assert cli.main(["sql", "--init"]) == 0
    assert f"read_parquet('{url}/universe/**/*.parquet'" in capsys.readouterr().out


def test_the_prompt_on_a_terminal(built):
    root, _ = built
    primary, secondary = pty.openpty()
    env = {"PATH": f"{BIN}:/usr/bin:/bin", "OBSERVER_DATA_DIR": str(root), "TERM": "dumb"}
    p = subprocess.Popen(
        [str(BIN / "observer"), "sql"], stdin=secondary, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env
    )
    os.close(secondary)
    try:
        os.write(
            primary, b"SELECT 40 +\n 2 AS answer;\nSELEC nonsense;\n.tables\nSELECT count(*) AS n FROM gaps;\n.quit\n"
        )
        out, err = p.communicate(timeout=60)
    finally:
        os.close(primary)
    text = out.decode()
    assert p.returncode == 0 and err == b"", err
    assert "observer> " in text and "...> " in text  # the continuation prompt of a statement that goes on
    assert "42" in text and "Error: Parser Error" in text  # an error does not end the session
    tables = next(line for line in text.splitlines() if "track_b_unified  " in line)  # .tables: the views
    assert {"track_a", "track_b_unified", "minute_bars", "gaps", "universe"} <= set(tables.split())
    assert "60" in text  # the gap report's rows, after the error


# --- docs/reading-the-lake.md ----------------------------------------------------------------------------------------------
def _as_lake(src: str, code: str) -> str:
    return src.replace('"2026-12-04"', f'"{DAY}"').replace("'2026-12-04'", f"'{DAY}'").replace("005930", code)


def test_the_worked_example_runs_as_written(built, tmp_path, monkeypatch):
    root, code = built
    text = DOC.read_text(encoding="utf-8")
    py, sq = dict(_PY.findall(text)), dict(_SQL.findall(text))
    assert text.count("```python") == len(py) and text.count("```sql") == len(sq)  # every block is run below
    monkeypatch.setenv("PATH", f"{BIN}:{os.environ.get('PATH', '')}")
    monkeypatch.setenv("OBSERVER_DATA_DIR", str(root))
    results = {}
    with rd.as_data(root, tmp_path):
        for name, src in py.items():
            ns: dict[str, object] = {}
            exec(compile(_as_lake(src, code), f"<reading-the-lake {name}>", "exec"), ns)  # noqa: S102 - the doc's own
            results[name] = ns.get("result")
    answers = {name: rows(root, _as_lake(src, code)) for name, src in sq.items()}

    ticks = pq.read_table(root / "track_b_unified", partitioning=None).to_pandas()
    mine = ticks[ticks["code"] == code]
    snaps = pq.read_table(root / "track_a", partitioning=None).to_pandas()
    my_snaps = snaps[snaps["code"] == code]
    gaps = pq.read_table(root / "gaps", partitioning=None).to_pandas()

    assert len(results["python_views"]) == 4 and set(results["python_views"]["members"]) == {21}
    track_a = results["track_a"]
    assert len(track_a) == len(my_snaps) == len(answers["track_a"]) == 4
    assert list(track_a["slot"]) == [r["slot"] for r in answers["track_a"]] == ["T0900", "T0910", "T1020", "T1530"]
    assert list(results["track_b"]["seq"]) == sorted(mine["seq"]) and len(results["track_b"]) == len(mine)
    assert sum(h["trades"] for h in answers["track_b"]) == len(mine)
    assert sum(h["volume"] for h in answers["track_b"]) == int(mine["qty"].sum())
    bars = results["minute_bars"]
    assert len(bars) == len(answers["minute_bars"]) > 1 and set(bars["venue"]) == {"UN"}
    check = results["tape_vs_bars"]
    assert len(check) == len(bars) and int(check["differs"].sum()) == 1  # the minute the fixture's KIS has 100 more
    assert int((check["kis"] - check["tape"]).sum()) == 100
    touching = gaps[(gaps["symbol"] == code) | gaps["symbol"].isna()]
    assert len(results["gaps"]) == len(answers["gaps"]) == len(touching) > 0
    page = results["one_page_python"]
    assert list(page["slot"]) == [r["slot"] for r in answers["one_page"]] == list(track_a["slot"])
    assert [r["last_trade"] for r in answers["one_page"]] == [None if pd.isna(x) else x for x in page["last_trade"]]
    # the tape's last trade (by seq) at or before each slot
    for r in answers["one_page"]:
        slot_ts = my_snaps.loc[my_snaps["slot_ts"].dt.strftime("%H%M") == r["slot"][1:], "slot_ts"].iloc[0]
        before = mine[mine["exchange_ts"] <= slot_ts].sort_values("seq")
        assert r["last_trade"] == (int(before["price"].iloc[-1]) if len(before) else None), r["slot"]
    assert any(r["last_trade"] is not None for r in answers["one_page"])
