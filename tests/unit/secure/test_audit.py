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
