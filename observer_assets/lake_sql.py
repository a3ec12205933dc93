"""``observer sql``: DuckDB over the lake, one view per dataset, so a question about the data is one SQL line.

The views are plain ``read_parquet`` over each dataset's files (``hive_partitioning`` for the ``date``/``slot``/
``hour``/``year`` columns, ``union_by_name`` so a day written before a column existed still reads, its new columns
null); ``--init`` prints exactly the statements this command runs, for the ``duckdb`` CLI or any DuckDB client. The
list of datasets is ``layout.TABLE_DATASETS``; a dataset with no file yet gets no view (DuckDB refuses a view over
zero files). A lake on an fsspec URL is read through the same filesystem Observer writes it with, registered with
DuckDB. Nothing here writes.
"""

from __future__ import annotations

import csv
import io
import itertools
import json
import shutil
import sys
from collections.abc import Iterable, Iterator
from contextlib import redirect_stdout
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any, TextIO

import duckdb

from observer_resources.secrets import redact_url
from observer_resources.storage import lake
from observer_resources.storage.layout import TABLE_DATASETS

FORMATS = ("table", "csv", "json")
PROMPT, MORE = "observer> ", "     ...> "


class SqlError(Exception):
    """A statement DuckDB refused: its message as one line."""


def one_line(e: BaseException) -> str:
    """DuckDB's message up to its first blank line (what is wrong and any hint; not the caret drawing), one line."""
    head = str(e).split("\n\n", 1)[0]
    return " ".join(head.split())


def _glob(root: lake.LakePath, dataset: str) -> str:
    return f"{str(root).rstrip('/')}/{dataset}/**/*.parquet"


def _has_files(root: lake.LakePath, dataset: str) -> bool:
    d = root / dataset
    if isinstance(d, Path):
        return d.is_dir() and next(d.rglob("*.parquet"), None) is not None
    return bool(d.fs.glob(f"{d.path}/**/*.parquet"))


def datasets(root: lake.LakePath) -> list[str]:
    """The datasets of ``layout.TABLE_DATASETS`` that have at least one Parquet file under ``root``."""
    return [ds for ds in TABLE_DATASETS if _has_files(root, ds)]


def _literal(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def init_statements(root: lake.LakePath) -> list[str]:
    """The session's zone (timestamps shown in KST, as the other tools show them) and one view per present dataset."""
    out = ["SET TimeZone = 'Asia/Seoul';"]
    for ds in datasets(root):
        out.append(
            f'CREATE OR REPLACE TEMP VIEW "{ds}" AS SELECT * FROM read_parquet('
            f"{_literal(_glob(root, ds))}, hive_partitioning = true, union_by_name = true);"
        )
    return out


def init_script(root: lake.LakePath) -> str:
    """``init_statements`` as a script for any DuckDB client (``duckdb -init``), with a comment saying what it is."""
    stmts = init_statements(root)
    head = [
        f"-- Observer's lake at {root if lake.is_local(root) else redact_url(str(root))}: "
        f"{len(stmts) - 1} view(s), one per dataset with files (`observer sql --init`)",
    ]
    if not lake.is_local(root):
        head.append("-- a URL lake: the duckdb CLI reads it through its own extension (httpfs) and a CREATE SECRET")
    return "\n".join([*head, *stmts]) + "\n"


def connect(root: lake.LakePath) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB with the lake's views (and, for a URL lake, its fsspec filesystem registered)."""
    con = duckdb.connect()
    if not lake.is_local(root):
        con.register_filesystem(root.fs)
    for stmt in init_statements(root):
        con.sql(stmt)
    return con


def run(con: duckdb.DuckDBPyConnection, sql: str) -> duckdb.DuckDBPyRelation | None:
    """Every statement of ``sql``; the last one's result (None when it has none)."""
    try:
        rel = con.sql(sql)
    except duckdb.Error as e:
        raise SqlError(one_line(e)) from e
    if rel is None or _is_status(rel):
        return None
    return rel


def _is_status(rel: duckdb.DuckDBPyRelation) -> bool:
    """DuckDB answers SET / CREATE with a one-column status relation (``Success``, ``Count``): not a result to show."""
    return rel.columns in (["Success"], ["Count"]) and rel.shape[0] == 0


def _plain(v: Any) -> Any:
    if isinstance(v, datetime | date | time):
        return v.isoformat()
    if isinstance(v, Decimal):
        return str(v)
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _plain(x) for k, x in v.items()}
    return v


def _rows(rel: duckdb.DuckDBPyRelation) -> Iterator[tuple[Any, ...]]:
    try:
        yield from rel.iter_rows()
    except duckdb.Error as e:  # a bad file or a failed cast shows up only when the rows are read
        raise SqlError(one_line(e)) from e


def write(rel: duckdb.DuckDBPyRelation, fmt: str, out: TextIO, max_rows: int = 40) -> None:
    """A readable box (``table``, at most ``max_rows`` rows shown), CSV with a header, or a JSON array of objects."""
    if fmt == "table":
        width = shutil.get_terminal_size().columns if out.isatty() else None
        buf = io.StringIO()
        try:
            with redirect_stdout(buf):  # DuckDB's renderer prints; it is given no stream
                rel.show(max_rows=max_rows, max_width=width)
        except duckdb.Error as e:
            raise SqlError(one_line(e)) from e
        out.write(buf.getvalue())
        return
    cols = list(rel.columns)
    it = _rows(rel)
    first = next(it, None)  # read before anything is written: a query that fails at once prints nothing
    rest = it if first is None else itertools.chain([first], it)
    if fmt == "csv":
        w = csv.writer(out, lineterminator="\n")
        w.writerow(cols)
        for row in rest:
            w.writerow([_csv_cell(v) for v in row])
        return
    n = 0
    out.write("[")
    for row in rest:
        out.write(("," if n else "") + "\n" + json.dumps(dict(zip(cols, map(_plain, row))), ensure_ascii=False))
        n += 1
    out.write("\n]\n" if n else "]\n")


def _csv_cell(v: Any) -> Any:
    if v is None:
        return ""
    p = _plain(v)
    return json.dumps(p, ensure_ascii=False) if isinstance(p, list | dict) else p


def _statements(lines: Iterable[str]) -> Iterator[str]:
    """Lines gathered into statements ending with ``;`` (a dot-command is one line)."""
    buf: list[str] = []
    for line in lines:
        if not buf and line.strip().startswith("."):
            yield line.strip()
            continue
        buf.append(line)
        if line.rstrip().endswith(";"):
            yield "\n".join(buf)
            buf = []
    if any(s.strip() for s in buf):
        yield "\n".join(buf)


def _prompted() -> Iterator[str]:
    """Lines typed at the terminal, with the prompt (or the continuation one) before each; ends at Ctrl-D."""
    try:
        import readline  # noqa: F401, PLC0415 - line editing and history for input()
    except ImportError:  # not on every platform; input() works without it
        pass
    more = False
    while True:
        try:
            line = input(MORE if more else PROMPT)
        except EOFError:
            print()
            return
        except KeyboardInterrupt:  # drop the statement being typed, as a shell does
            print()
            more = False
            continue
        if more:
            more = not line.rstrip().endswith(";")
        else:  # a dot-command or a blank line is whole; anything else goes on until its ';'
            more = bool(line.strip()) and not line.strip().startswith(".") and not line.rstrip().endswith(";")
        yield line


def repl(con: duckdb.DuckDBPyConnection, views: list[str], out: TextIO, max_rows: int) -> int:
    """The interactive prompt: statements end with ``;``; ``.tables`` lists the views, ``.quit`` (or Ctrl-D) ends."""
    print(
        f"observer sql: {len(views)} view(s): {', '.join(views) or 'none (the lake has no files yet)'}. "
        "End statements with ';'. .tables lists them, .quit leaves.",
        file=out,
    )
    for stmt in _statements(_prompted()):
        if stmt in (".quit", ".exit", ".q"):
            break
        if stmt == ".tables":
            print("  ".join(views) or "(no views)", file=out)
            continue
        if stmt.startswith("."):
            print(f"unknown command {stmt.split()[0]} (.tables, .quit)", file=out)
            continue
        try:
            rel = run(con, stmt)
            if rel is not None:
                write(rel, "table", out, max_rows)
        except SqlError as e:
            print(f"Error: {e}", file=out)
        out.flush()
    return 0


def main(sql: str | None, *, fmt: str = "table", init: bool = False, max_rows: int = 40) -> int:
    """The command (exit codes: cli.py's): the SQL given, else stdin's SQL, else the prompt on a terminal."""
    root = lake.data_dir()
    if lake.is_local(root):
        root = lake.existing_local_dir()  # a typo'd or unmounted path is refused, not shown as an empty lake
    if init:
        sys.stdout.write(init_script(root))
        return 0
    try:
        con = connect(root)
    except duckdb.Error as e:  # an unreadable file behind a view, a filesystem DuckDB cannot use
        print(f"observer sql: cannot open the lake at {root}: {one_line(e)}", file=sys.stderr)
        return 1
    if sql is None and sys.stdin.isatty():
        return repl(con, datasets(root), sys.stdout, max_rows)
    if sql is None:
        sql = sys.stdin.read()
    if not sql.strip():
        print("observer sql: no SQL given (an argument, or on standard input)", file=sys.stderr)
        return 2
    try:
        rel = run(con, sql)
        if rel is not None:
            write(rel, fmt, sys.stdout, max_rows)
    except SqlError as e:
        print(f"observer sql: {e}", file=sys.stderr)
        return 1
    return 0
