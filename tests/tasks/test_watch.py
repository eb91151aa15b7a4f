"""The watcher's high-water mark: which sessions are new, with ties, late arrivals and restarts."""

from __future__ import annotations

import re

from tasks.watch import Mark, new_sessions, parse_stamp, variable_name
from x2c.xnat import Experiment


def exp(eid: str, stamp: str) -> Experiment:
    return Experiment(
        id=eid,
        label=f"L_{eid}",
        project="P",
        subject="S",
        date="",
        insert_date=stamp,
        last_modified=stamp,
    )


T0 = "2026-11-27 05:00:00.000"
T1 = "2026-11-27 05:10:00.000"
T2 = "2026-11-27 05:20:00.500"


def ids(exps: list[Experiment]) -> list[str]:
    return [e.id for e in exps]


def test_first_look_hands_on_nothing_and_sets_the_mark() -> None:
    fresh, mark = new_sessions([exp("E1", T0), exp("E2", T1)], None)
    assert fresh == []
    assert mark is not None and mark.mark == T1
    assert set(mark.seen) == {"E1", "E2"}


def test_first_look_with_backfill_hands_on_everything_oldest_first() -> None:
    fresh, _ = new_sessions([exp("E2", T1), exp("E1", T0)], None, backfill=True)
    assert ids(fresh) == ["E1", "E2"]


def test_a_session_seen_twice_is_handed_on_once() -> None:
    _, mark = new_sessions([exp("E1", T0)], None)
    listing = [exp("E1", T0), exp("E2", T1)]
    fresh, mark = new_sessions(listing, mark)
    assert ids(fresh) == ["E2"]
    fresh, mark = new_sessions(listing, mark)
    assert fresh == []
    assert mark is not None and mark.mark == T1


def test_a_tie_at_the_mark_that_appears_later_is_not_lost() -> None:
    _, mark = new_sessions([exp("E1", T1)], None)
    fresh, mark = new_sessions([exp("E1", T1), exp("E9", T1)], mark)
    assert ids(fresh) == ["E9"]
    fresh, _ = new_sessions([exp("E1", T1), exp("E9", T1)], mark)
    assert fresh == []


def test_a_late_arrival_older_than_the_mark_is_found_within_the_look_back() -> None:
    _, mark = new_sessions([exp("E2", T2)], None)
    fresh, mark = new_sessions([exp("E2", T2), exp("E1", T1)], mark, lookback_s=3600)
    assert ids(fresh) == ["E1"]
    # outside the look-back window it is left to the nightly reconcile
    _, mark = new_sessions([exp("E2", T2)], None)
    fresh, _ = new_sessions([exp("E2", T2), exp("E0", T0)], mark, lookback_s=60)
    assert fresh == []


def test_the_mark_never_moves_back_when_sessions_are_deleted() -> None:
    _, mark = new_sessions([exp("E2", T2)], None)
    fresh, mark = new_sessions([exp("E1", T0)], mark, lookback_s=60)
    assert fresh == []
    assert mark is not None and mark.mark == T2


def test_undated_sessions_are_left_out() -> None:
    fresh, mark = new_sessions([exp("E1", "")], Mark(mark=T0))
    assert fresh == []
    assert mark == Mark(mark=T0)


def test_marks_round_trip_and_names_are_valid_variable_names() -> None:
    mark = Mark(mark=T1, seen=("E1", "E2"))
    assert Mark.from_json(mark.to_json()) == mark
    assert Mark.from_json(None) is None
    name = variable_name("https://x.org", "ADNI_2", "FreeSurfer6 hippo")
    assert re.fullmatch(r"x2c-watch-[0-9a-f]{10}-adni_2-freesurfer6-hippo", name), name
    # one project name on two XNATs: two watches, two marks
    assert name != variable_name("https://y.org", "ADNI_2", "FreeSurfer6 hippo")
    assert parse_stamp("2026-11-27T05:00:00+01:00") == parse_stamp("2026-11-27 05:00:00")
    assert parse_stamp("yesterday") is None
