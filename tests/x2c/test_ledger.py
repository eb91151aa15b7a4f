"""The nightly ledger: an entry counts only at the same last_modified and pipeline version."""

from __future__ import annotations

import json
import threading
from pathlib import Path

from x2c.ledger import Ledger


def test_an_entry_counts_only_while_nothing_changed(tmp_path: Path) -> None:
    ledger = Ledger(tmp_path / "state")
    assert not ledger.known("P", "demo", "E1", "2026-01-01 10:00", "1.0")
    ledger.record_done("P", "demo", "E1", "2026-01-01 10:00", "1.0")
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
    path.write_text("{not json")
    assert ledger.entries("../../P", "demo/x") == {}
    ledger.record_done("../../P", "demo/x", "E1", "t", "1")
    assert json.loads(path.read_text())["E1"]["verdict"] == "done"


def test_concurrent_writers_lose_nothing(tmp_path: Path) -> None:
    ledgers = [Ledger(tmp_path), Ledger(tmp_path)]  # as two processes would
    threads = [
        threading.Thread(
            target=lambda n=n: ledgers[n % 2].record_done("P", "demo", f"E{n}", "t", "1")
        )
        for n in range(40)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(Ledger(tmp_path).entries("P", "demo")) == sorted(f"E{n}" for n in range(40))
