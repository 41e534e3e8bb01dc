"""Run.rewind: a resumed run replaces what the crashed process logged past its checkpoint."""

import lmdev
from lmdev.track.store import Store


def stored(home, ref):
    with Store(home) as s:
        run = s.get_run(ref)
        return s.metrics(run), s.events(run), s.summaries(run)


def test_rewind_drops_points_past_the_step_and_records_an_event(home):
    run = lmdev.init("rw", flush_interval=0.05)
    for i in range(10):
        run.log({"loss": float(i), "acc": 10.0 * i}, step=i)
        if i == 4:
            run.flush()  # a chunk 0..4 in the store, then 5..9 buffered: the rewind straddles both
    dropped = run.rewind(6)  # live writer thread: 7, 8, 9 of both keys go
    assert dropped == 6
    run.log({"loss": 70.0, "acc": 700.0})  # the next step is 7
    run.finish()
    metrics, events, summaries = stored(home, "rw")
    assert [(s, v) for s, v, _ in metrics["loss"]] == [(i, float(i)) for i in range(7)] + [(7, 70.0)]
    assert [s for s, _, _ in metrics["acc"]] == list(range(8))
    resumes = [e for e in events if e.data.get("kind") == "resume"]
    assert len(resumes) == 1
    assert resumes[0].data == {"kind": "resume", "step": 6, "dropped": 6}
    assert resumes[0].message == "resumed at step 6 (6 points past it replaced)"
    last = {m.key: (m.last_step, m.last, m.max, m.count) for m in summaries}
    assert last["loss"] == (7, 70.0, 70.0, 8)  # chunk ranges were rewritten with the points


def test_rewind_inside_one_chunk_keeps_order_and_ranges(home):
    run = lmdev.init("one", flush_interval=60)
    for i in range(100):
        run.log({"x": float(100 - i)}, step=i)
    run.flush()
    assert run.rewind(49) == 50
    for i in range(50, 60):
        run.log({"x": -1.0}, step=i)
    run.finish()
    metrics, _, summaries = stored(home, "one")
    assert [s for s, _, _ in metrics["x"]] == list(range(60))
    assert metrics["x"][49][1] == 51.0
    (m,) = summaries
    assert (m.min, m.max, m.count) == (-1.0, 100.0, 60)


def test_rewind_past_the_end_drops_nothing(home):
    with lmdev.init("noop") as run:
        run.log({"x": 1.0}, step=3)
        assert run.rewind(3) == 0
        assert run.rewind(10) == 0
    metrics, events, _ = stored(home, "noop")
    assert [s for s, _, _ in metrics["x"]] == [3]
    assert sum(e.data.get("kind") == "resume" for e in events) == 2
