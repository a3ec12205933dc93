"""The venues' phases: the shipped phases.toml on real days of the shipped KRX calendar, and every refusal of a
bad edit (the loader and `make calendar`'s build step), each naming the file, the entry and the problem."""

from datetime import UTC, date, datetime, time

import pytest

from observer_resources.calendar import build, krx
from observer_resources.calendar import phases as ph
from observer_resources.calendar.market import MarketCalendar

KRX = MarketCalendar("krx")
SHIPPED = ph.PHASES_FILE.read_text(encoding="utf-8")


def at(d: date, hhmmss: str) -> datetime:
    return datetime.combine(d, time.fromisoformat(hhmmss), krx.KST)


def table(cal: MarketCalendar, d: date, venue: str) -> list[tuple[str, str, str, str]]:
    v = cal.venues(d)[venue]
    return [(p.name, p.kind, ph.hms(_secs(p.start)), ph.hms(_secs(p.end))) for p in v.phases]


def _secs(t: datetime) -> int:
    return t.hour * 3600 + t.minute * 60 + t.second


# --- the shipped file on real days ------------------------------------------------------------------------------

KRX_2016 = [
    ("opening_auction", "auction", "08:30", "09:00"),
    ("regular", "continuous", "09:00", "15:20"),
    ("closing_auction", "auction", "15:20", "15:30"),
    ("closing_price", "closing_price", "15:40", "16:00"),
    ("after_hours_single", "periodic_auction", "16:00", "18:00"),
]
NXT = [
    ("pre_market", "continuous", "08:00", "08:50"),
    ("main", "continuous", "09:00:30", "15:20"),
    ("after_market_orders", "auction", "15:30", "15:40"),
    ("after_market", "continuous", "15:40", "20:00"),
]


def test_an_ordinary_day_before_krx_extends_its_hours():
    d = date(2026, 3, 10)
    assert table(KRX, d, "KRX") == KRX_2016 and table(KRX, d, "NXT") == NXT
    v = KRX.venues(d)
    assert all(x.confirmed and x.special is None for x in v.values())
    assert (v["KRX"].effective, v["NXT"].effective) == (date(2016, 8, 1), date(2025, 3, 4))
    assert KRX.venue_window(d, "KRX") == (at(d, "08:30"), at(d, "18:00"))
    assert KRX.venue_window(d, "NXT") == (at(d, "08:00"), at(d, "20:00"))
    assert [(b.venue, b.after, b.before, b.start, b.end) for b in KRX.breaks(d)] == [
        ("NXT", "pre_market", "main", at(d, "08:50"), at(d, "09:00:30")),
        ("NXT", "main", "after_market_orders", at(d, "15:20"), at(d, "15:30")),
        ("KRX", "closing_auction", "closing_price", at(d, "15:30"), at(d, "15:40")),
    ]
    ps = KRX.phases(d)
    assert [(p.venue, p.name) for p in ps[:3]] == [
        ("NXT", "pre_market"),
        ("KRX", "opening_auction"),
        ("KRX", "regular"),
    ]
    assert all(p.start.utcoffset().total_seconds() == 9 * 3600 for p in ps)


@pytest.mark.parametrize(
    "t, krx_phase, nxt_phase",
    [
        ("07:59:59", None, None),
        ("08:00", None, "pre_market"),
        ("08:45", "opening_auction", "pre_market"),
        ("08:55", "opening_auction", None),  # NXT pauses for KRX's opening auction
        ("09:00:10", "regular", None),
        ("09:00:30", "regular", "main"),
        ("15:25", "closing_auction", None),
        ("15:35", None, "after_market_orders"),
        ("15:45", "closing_price", "after_market"),
        ("17:00", "after_hours_single", "after_market"),
        ("19:59:59", None, "after_market"),
        ("20:00", None, None),
    ],
)
def test_phase_at(t, krx_phase, nxt_phase):
    d = date(2026, 3, 10)
    got = [KRX.phase_at(at(d, t), v) for v in ("KRX", "NXT")]
    assert [p.name if p else None for p in got] == [krx_phase, nxt_phase]
    assert KRX.phase_at(at(d, t).astimezone(UTC), "KRX") == got[0]  # any time zone in, KST day out


def test_krx_extended_hours_from_2026_06_29_are_data_marked_unconfirmed():
    d = date(2026, 12, 4)
    v = KRX.venues(d)["KRX"]
    assert v.effective == date(2026, 6, 29) and not v.confirmed and all(not p.confirmed for p in v.phases)
    assert table(KRX, d, "KRX")[0] == ("pre_market", "continuous", "07:00", "08:00")
    assert table(KRX, d, "KRX")[-1] == ("after_market", "continuous", "16:00", "20:00")
    assert "after_hours_single" not in [p.name for p in v.phases]
    assert KRX.venues(d)["NXT"].confirmed and table(KRX, d, "NXT") == NXT
    assert KRX.venues(date(2026, 6, 26))["KRX"].effective == date(2016, 8, 1)  # the Friday before


def test_first_trading_day_of_the_year():
    d = date(2026, 1, 2)
    assert [p[2:] for p in table(KRX, d, "KRX")] == [
        ("09:30", "10:00"),
        ("10:00", "15:20"),
        ("15:20", "15:30"),
        ("15:40", "16:00"),
        ("16:00", "18:00"),
    ]
    assert table(KRX, d, "NXT") == [("main", "continuous", "10:00:30", "15:20"), *NXT[2:]]
    assert {v.special for v in KRX.venues(d).values()} == {"first_day_of_year"}
    nxt27 = KRX.venues(date(2027, 1, 4))["NXT"]
    assert nxt27.phases[0].name == "main" and nxt27.phases[0].start == at(date(2027, 1, 4), "10:00:30")


def test_csat_day():
    d = date(2026, 11, 19)
    assert [p[::3] for p in table(KRX, d, "KRX")] == [
        ("opening_auction", "10:00"),
        ("regular", "16:20"),
        ("closing_auction", "16:30"),
        ("closing_price", "17:00"),
        ("after_market", "20:00"),
    ]
    assert table(KRX, d, "NXT") == [
        ("main", "continuous", "10:00:30", "16:20"),
        ("after_market_orders", "auction", "16:30", "16:40"),
        ("after_market", "continuous", "16:40", "20:00"),
    ]
    old = KRX.venues(date(2025, 11, 13))["KRX"]  # the 2016 schedule: the single-price session still ends at 18:00
    assert (old.special, old.phases[-1].name, old.phases[-1].start.time(), old.phases[-1].end.time()) == (
        "csat",
        "after_hours_single",
        time(17),
        time(18),
    )


def test_closed_days_and_days_before_nxt():
    for d in (date(2026, 6, 3), date(2026, 12, 31), date(2026, 11, 28)):
        assert KRX.venues(d) == {} and KRX.phases(d) == [] and KRX.breaks(d) == []
        assert KRX.venue_window(d, "NXT") is None and KRX.phase_at(at(d, "10:00"), "KRX") is None
    assert list(KRX.venues(date(2025, 2, 28))) == ["KRX"] and list(KRX.venues(date(2025, 3, 4))) == ["KRX", "NXT"]


def test_every_day_of_the_calendar_krx_phases_span_its_session():
    first, last = krx.calendar_range()
    for d in krx.trading_days(first, last):
        s, v = krx.session(d), KRX.venues(d)
        reg = {p.name: p for p in v["KRX"].phases}
        assert (reg["regular"].start, reg["closing_auction"].end) == (s.open, s.close), d
        for day in v.values():
            ps = day.phases
            assert all(a.end <= b.start for a, b in zip(ps, ps[1:])) and all(p.start < p.end for p in ps), d
        assert ("NXT" in v) == (d >= date(2025, 3, 4))


def test_demo_calendar_stretches_the_day_over_24_hours():
    demo = MarketCalendar("open")
    d = date(2026, 3, 10)  # 08:00-20:00 onto 00:00-24:00: twice as long, the same pattern
    assert table(demo, d, "KRX")[1] == ("regular", "continuous", "02:00", "14:40")
    assert table(demo, d, "NXT")[1] == ("main", "continuous", "02:01", "14:40")
    assert demo.venue_window(d, "NXT") == (at(d, "00:00"), at(d, "23:59:59"))
    assert [demo.phase_at(at(d, "03:00"), v).name for v in ("KRX", "NXT")] == ["regular", "main"]
    for d in (date(2026, 11, 28), date(2026, 12, 4)):  # a Saturday; a day of the unconfirmed KRX schedule
        assert all(
            demo.phase_at(at(d, f"{h:02d}:05"), "KRX") or demo.phase_at(at(d, f"{h:02d}:05"), "NXT") for h in range(24)
        )
        assert min(p.start for p in demo.phases(d)) == at(d, "00:00")
        assert max(p.end for p in demo.phases(d)) == at(d, "23:59:59")


def test_a_special_session_the_file_does_not_name_moves_krx_only():
    data = ph.tomllib.loads(SHIPPED)
    data["special_days"].pop("first_day_of_year")
    for s in data["schedule"]:
        s.get("adjust", {}).pop("first_day_of_year", None)
    book, problems = ph.validate(data)
    assert problems == []
    v = book.venue_days(date(2026, 3, 12), (time(10), time(15, 30)))
    assert v["KRX"].special is None and v["KRX"].phases[0].start.time() == time(9, 30)
    assert [p.name for p in v["NXT"].phases] == [n for n, *_ in NXT]


def test_confirming_the_krx_schedule_is_an_edit_of_the_file(tmp_path):
    f = tmp_path / "phases.toml"
    f.write_text(SHIPPED.replace("effective = 2026-06-29\nconfirmed = false", "effective = 2026-06-29"), "utf-8")
    assert MarketCalendar("krx", phases_file=f).venues(date(2026, 12, 4))["KRX"].confirmed
    g = tmp_path / "later.toml"
    g.write_text(SHIPPED.replace("effective = 2026-06-29", "effective = 2027-03-02"), "utf-8")
    assert table(MarketCalendar("krx", phases_file=g), date(2026, 12, 4), "KRX") == KRX_2016


# --- refusals ---------------------------------------------------------------------------------------------------

NXT1 = "[[schedule]] #3 (NXT 2025-03-04)"
KRX1 = "[[schedule]] #1 (KRX 2016-08-01)"
KRX2 = "[[schedule]] #2 (KRX 2026-06-29)"


def edited(*pairs: tuple[str, str]) -> str:
    text = SHIPPED
    for old, new in pairs:
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


@pytest.mark.parametrize(
    "edits, expected",
    [
        (  # overlapping phases of one venue
            [('start = "15:30",    end = "15:40"', 'start = "15:10",    end = "15:40"')],
            f"{NXT1}: phases main and after_market_orders overlap (after_market_orders starts 15:10, before main ends 15:20)",
        ),
        (
            [('start = "15:40", end = "16:00"', 'start = "15:40", end = "15:40"')],
            f"{KRX1} phase #4 (closing_price): end 15:40 is not after start 15:40",
        ),
        (
            [('name = "main",', 'name = "mian",')],
            f"{NXT1} phase #2 (mian): unknown phase name 'mian' for NXT (allowed: pre_market, main,",
        ),
        (
            [('name = "regular",            kind = "continuous"', 'name = "regular",            kind = "continous"')],
            f"{KRX1} phase #2 (regular): unknown kind 'continous' (allowed: continuous, auction,",
        ),
        (
            [('venue = "NXT"', 'venue = "NEXT"')],
            "[[schedule]] #3 (NEXT 2025-03-04): unknown venue 'NEXT' (allowed: KRX, NXT)",
        ),
        (
            [("effective = 2026-06-29", "effective = 2015-01-01")],
            f"[[schedule]] #2 (KRX 2015-01-01): effective 2015-01-01 is before that of {KRX1}: list each venue's",
        ),
        (
            [("effective = 2026-06-29", "effective = 2016-08-01")],
            f"[[schedule]] #2 (KRX 2016-08-01): effective 2016-08-01 is the same as that of {KRX1}",
        ),
        (
            [('start = "08:00",    end = "08:50"', 'start = "8:00",    end = "08:50"')],
            f'{NXT1} phase #1 (pre_market): start must be a quoted time "HH:MM" or "HH:MM:SS" (00:00..23:59:59), got \'8:00\'',
        ),
        ([('end = "20:00" },\n]\n\n# First', 'end = "24:00" },\n]\n\n# First')], "end must be a quoted time"),
        ([('start = "09:00:30"', 'start = "09:00:60"')], "got '09:00:60'"),
        ([('start = "09:00:30"', "start = 09:00:30")], "got datetime.time(9, 0, 30) (write it quoted)"),
        (
            [("effective = 2025-03-04", 'effective = "2025-03-04"')],
            "[[schedule]] #3: effective must be a TOML date, got str '2025-03-04' (write it unquoted",
        ),
        (
            [("effective = 2016-08-01\n", "effective = 2016-08-01\nuntil = 2016-07-31\n")],
            f"{KRX1}: until 2016-07-31 is before effective 2016-08-01",
        ),
        (
            [("effective = 2016-08-01\n", "effective = 2016-08-01\nuntil = 2026-07-01\n")],
            f"{KRX2}: starts 2026-06-29, but the previous KRX schedule runs until 2026-07-01",
        ),
        (
            [("[schedule.adjust.csat]", "[schedule.adjust.cast]")],
            f"{KRX1} adjust.cast: no special day 'cast' in [special_days] (known: first_day_of_year, csat)",
        ),
        (
            [('drop = ["pre_market"]', 'drop = ["premarket"]')],
            f"{KRX2} adjust.first_day_of_year: no phase 'premarket' in this schedule (it has pre_market, opening_auction,",
        ),
        (
            [("times = { after_hours_single", 'shift = "+01:00"\ntimes = { after_hours_single')],
            f"{KRX1} adjust.csat: KRX takes no shift: its phases follow the KRX calendar's session of the day",
        ),
        ([('shift = "+01:00"', 'shift = "1h"')], f'{NXT1} adjust.csat: shift must be a quoted "+HH:MM" or "-HH:MM"'),
        (  # a special-day rule that makes two phases overlap on that day
            [('after_market = ["16:40", "20:00"]', 'after_market = ["16:35", "20:00"]')],
            f"{NXT1} on csat: phases after_market_orders and after_market overlap",
        ),
        (
            [('shift = "+01:00"\ntimes = { after_market = ["16:40", "20:00"] }', 'shift = "+05:00"')],
            f"{NXT1} on csat: phase after_market (20:40-25:00) leaves the day (00:00-24:00)",
        ),
        (
            [('krx_session = ["10:00", "16:30"]', 'krx_session = ["10:00", "15:30"]')],
            "[special_days.csat]: krx_session 10:00-15:30 already marks 'first_day_of_year'",
        ),
        (
            [('krx_session = ["10:00", "16:30"]', 'krx_session = ["09:00", "15:30"]')],
            "[special_days.csat]: krx_session 09:00-15:30 is the ordinary session",
        ),
        (
            [('start = "09:00", end = "15:20"', 'start = "09:05", end = "15:20"')],
            f"{KRX1}: KRX's phases must span the KRX calendar's ordinary session: one starting at 09:00 and one ending at 15:30",
        ),
        (
            [('start = "08:00",    end = "08:50"', 'start = "20:10",    end = "20:50"')],
            f"{NXT1}: phase main (09:00:30) is listed after pre_market (20:10): list phases in time order",
        ),
        ([('name = "after_market_orders",', 'name = "main",')], f"{NXT1}: phase 'main' is listed 2 times"),
        (
            [('kind = "auction",    start = "15:30"', 'start = "15:30"')],
            "phase #3 (after_market_orders): missing 'kind'",
        ),
        (
            [('confirmed = false\nsource = "KRX plan', 'confirmed = "no"\nsource = "KRX plan')],
            f"{KRX2}: confirmed must be true or false",
        ),
        ([("[special_days.csat]", "[holidays]\n[special_days.csat]")], "unknown top-level key 'holidays'"),
        ([("[special_days.csat]", "[special_days.csat")], "not valid TOML"),
    ],
)
def test_a_bad_edit_is_refused_naming_the_file_the_entry_and_the_problem(tmp_path, edits, expected):
    f = tmp_path / "phases.toml"
    f.write_text(edited(*edits), encoding="utf-8")
    with pytest.raises(ph.PhaseDataError) as e:
        ph.load_phases(f)
    assert any(expected in p for p in e.value.problems), e.value.problems
    assert all(line.startswith(f"{f}: ") for line in str(e.value).splitlines())
    assert isinstance(e.value, krx.CalendarDataError)  # the CLI's bad-configuration handling applies


def test_an_unreadable_file_and_many_problems_at_once(tmp_path):
    with pytest.raises(ph.PhaseDataError, match="cannot read it"):
        ph.load_phases(tmp_path / "missing.toml")
    data = {
        "schedule": [
            {
                "venue": "NXT",
                "effective": date(2025, 3, 4),
                "phases": [{"name": "x", "kind": "y", "start": "9", "end": "1"}],
            },
            {"venue": "LSE", "effective": "2025-01-01", "phases": []},
        ]
    }
    _, problems = ph.validate(data)
    assert len(problems) == 7, problems


def test_make_calendar_refuses_a_bad_phases_file_before_building(tmp_path, capsys):
    bad = tmp_path / "phases.toml"
    bad.write_text(edited(('name = "main",', 'name = "mian",')), encoding="utf-8")
    out = tmp_path / "sessions.json"
    out.write_bytes(krx.SESSIONS_FILE.read_bytes())
    before = out.read_bytes()
    rc = build.main(["--phases", str(bad), "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and out.read_bytes() == before
    assert err[0].startswith(f"{bad}: {NXT1} phase #2 (mian): unknown phase name")
    assert err[-1] == f"{bad}: {len(err) - 1} problem(s); {out} left unchanged"
