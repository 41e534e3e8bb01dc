"""The audit log: hash-chained, every kind of tampering named at its first bad entry."""

from __future__ import annotations

from pathlib import Path

from lmdev.secure import audit


def _log(home: Path, n: int = 5) -> list[bytes]:
    for i in range(n):
        audit.append("test", n=i)
    return (home / "audit.log").read_bytes().splitlines(keepends=True)


def test_a_fresh_log_verifies(_home):
    _log(_home)
    result = audit.verify()
    assert result.ok and result.entries == 5 and len(result.head) == 64


def test_an_edited_entry_is_named(_home):
    lines = _log(_home)
    lines[2] = lines[2].replace(b'"n":2', b'"n":9')
    (_home / "audit.log").write_bytes(b"".join(lines))
    result = audit.verify()
    assert not result.ok and result.first_bad == 3 and "edited" in result.problem


def test_a_deleted_entry_is_named(_home):
    lines = _log(_home)
    del lines[1]
    (_home / "audit.log").write_bytes(b"".join(lines))
    result = audit.verify()
    assert not result.ok and result.first_bad == 2 and "deleted" in result.problem


def test_reordered_entries_are_named(_home):
    lines = _log(_home)
    lines[3], lines[4] = lines[4], lines[3]
    (_home / "audit.log").write_bytes(b"".join(lines))
    result = audit.verify()
    assert not result.ok and result.first_bad == 4


def test_an_inserted_entry_is_named(_home):
    lines = _log(_home)
    lines.insert(2, lines[0])  # a valid entry, in the wrong place
    (_home / "audit.log").write_bytes(b"".join(lines))
    result = audit.verify()
    assert not result.ok and result.first_bad == 3


def test_entries_removed_from_the_end_need_the_head(_home):
    lines = _log(_home)
    head = audit.verify().head
    (_home / "audit.log").write_bytes(b"".join(lines[:-1]))
    assert audit.verify().ok
    assert not audit.verify(head=head).ok


def test_a_torn_last_line_is_reported_then_dropped_with_a_record(_home):
    lines = _log(_home, 3)
    (_home / "audit.log").write_bytes(b"".join(lines) + lines[0][:40])
    result = audit.verify()
    assert result.ok and result.torn_tail and result.entries == 3
    audit.append("after")
    events = [e["event"] for e in audit.entries()]
    assert events[-2:] == ["audit.torn-tail-dropped", "after"]
    assert audit.verify().ok and not audit.verify().torn_tail


def test_since_filters_entries(_home):
    _log(_home, 2)
    assert len(list(audit.entries(since=0))) == 2
    assert list(audit.entries(since=4102444800)) == []  # 2100-01-01


def _big_log(home: Path, n: int = 600) -> list[bytes]:
    """A log written with the log's own line format, quickly (no fsync per entry)."""
    prev, lines = audit.GENESIS, []
    for seq in range(n):
        lines.append(audit.format_entry(prev, seq, "test", {"n": seq}))
        prev = lines[-1][-67:-3].decode()
    (home / "audit.log").parent.mkdir(parents=True, exist_ok=True)
    (home / "audit.log").write_bytes(b"".join(lines))
    return lines


def test_the_parallel_check_agrees_with_one_pass(_home, monkeypatch):
    monkeypatch.setattr(audit, "PARALLEL_MIN", 0)  # the 600-entry log is checked in 3 pieces
    _big_log(_home)
    one = audit.verify(workers=1)
    many = audit.verify(workers=3)
    assert one.ok and many.ok and (many.entries, many.head) == (one.entries, one.head) == (600, one.head)
    assert not audit.verify(head="0" * 64, workers=3).ok


def test_the_parallel_check_names_the_first_bad_entry(_home, monkeypatch):
    monkeypatch.setattr(audit, "PARALLEL_MIN", 0)
    lines = _big_log(_home)
    cases = {"edited in the second piece": lambda ls: ls.__setitem__(350, ls[350].replace(b'"n":350', b'"n":9')),
             "deleted at a joint": lambda ls: ls.__delitem__(200),
             "moved across pieces": lambda ls: ls.insert(450, ls.pop(100)),
             "torn tail": lambda ls: ls.__setitem__(-1, ls[-1][:40])}
    for name, tamper in cases.items():
        changed = list(lines)
        tamper(changed)
        (_home / "audit.log").write_bytes(b"".join(changed))
        one, many = audit.verify(workers=1), audit.verify(workers=3)
        assert (many.ok, many.first_bad, many.problem) == (one.ok, one.first_bad, one.problem), name
        assert many.first_bad is not None, name
