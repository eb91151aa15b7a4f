"""The nightly ledger: an entry counts only at the same last_modified and pipeline version."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from x2c.ledger import DONE, Ledger


def test_an_entry_counts_only_while_nothing_changed(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "state")
    assert not ledger.known("P", "demo", "E1", "2026-01-01 10:00", "1.0")
    ledger.record("P", "demo", "1.0", [("E1", "2026-01-01 10:00", DONE, "")])
    assert ledger.known("P", "demo", "E1", "2026-01-01 10:00", "1.0")
    assert not ledger.known("P", "demo", "E1", "2026-01-02 09:00", "1.0")  # changed on XNAT
    assert not ledger.known("P", "demo", "E1", "2026-01-01 10:00", "2.0")  # new version
    assert not ledger.known("P", "other", "E1", "2026-01-01 10:00", "1.0")
    assert not ledger.known("P", "demo", "E1", "", "1.0")  # no timestamp: always check
    ledger.record_nothing("P", "demo", "E2", "t", "1.0", "no scan of type T1")
    entry = ledger.entries("P", "demo")["E2"]
    assert (entry["verdict"], entry["reason"]) == ("nothing", "no scan of type T1")


def test_a_corrupt_ledger_is_rebuilt_and_hostile_names_stay_inside(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path)
    path = ledger.path("../../P", "demo/x")
    assert path.parent == tmp_path / "ledger"
    path.parent.mkdir(parents=True)
    path.write_text('{not json\n{"experiment": "E0", "verdict": "done"}\n{"experiment": "E9", "ver')
    assert ledger.entries("../../P", "demo/x") == {"E0": {"verdict": "done"}}  # the torn line waits
    ledger.record("../../P", "demo/x", "1", [("E1", "t", DONE, "")])
    assert sorted(Ledger(tmp_path).entries("../../P", "demo/x")) == ["E0", "E1"]
    lines = path.read_text().splitlines()
    assert json.loads(lines[-1])["experiment"] == "E1" and lines[-2].endswith('"ver')


def test_a_verdict_is_one_appended_line_and_the_log_is_compacted(tmp_path: Path) -> None:
    """Recording does not rewrite the project's entries, and another process (a second Ledger)
    reads only what was appended; a log of mostly superseded lines is compacted."""
    writer, reader = Ledger(tmp_path), Ledger(tmp_path)
    for n in range(50):
        writer.record("P", "demo", "1", [(f"E{n}", "t0", DONE, "")])
    path = writer.path("P", "demo")
    assert len(path.read_text().splitlines()) == 50
    assert len(reader.entries("P", "demo")) == 50
    size = path.stat().st_size
    writer.record("P", "demo", "1", [("E0", "t1", DONE, "")])
    assert path.stat().st_size > size and path.read_bytes()[:size] == path.read_bytes()[:size]
    assert reader.entry("P", "demo", "E0")["last_modified"] == "t1"  # type: ignore[index]
    for round_ in range(3):  # the same 50 experiments again and again
        for n in range(50):
            writer.record("P", "demo", "1", [(f"E{n}", f"r{round_}", DONE, "")])
    lines = path.read_text().splitlines()
    assert len(lines) <= 2 * 50 + 64, len(lines)
    assert {e["last_modified"] for e in reader.entries("P", "demo").values()} == {"r2"}
    assert reader.known("P", "demo", "E7", "r2", "1")


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    ledgers = [Ledger(tmp_path), Ledger(tmp_path)]  # as two processes would
    threads = [
        threading.Thread(
            target=lambda n=n: ledgers[n % 2].record("P", "demo", "1", [(f"E{n}", "t", DONE, "")])
        )
        for n in range(40)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(Ledger(tmp_path).entries("P", "demo")) == sorted(f"E{n}" for n in range(40))
