"""record_explanation: an explanation kept in its run's folder, with an artifact and an event."""

from __future__ import annotations

import json

import pytest

from lmdev import track
from lmdev.errors import LmdevError
from lmdev.explain import Attribution, Explanation, record_explanation
from lmdev.track.store import Store


def _explanation(run_id: str, score: float) -> Explanation:
    return Explanation(run_id, "r", 7, "gpt", "tokens", "saliency",
                       items=[Attribution("ab", "c", [score, 1.0], tokens=["a", "b"])])


def test_a_rerun_replaces_the_file_and_adds_a_row(tmp_path):
    home = tmp_path / ".lmdev"
    run = track.init("r", home=home, telemetry=False)
    run.finish()
    first = record_explanation(_explanation(run.id, 0.5), home)
    again = record_explanation(_explanation(run.id, 0.25), home)
    assert first == again and [p.name for p in first.parent.iterdir()] == ["7-saliency.json"]
    assert json.loads(again.read_text())["items"][0]["scores"] == [0.25, 1.0]
    with Store(home) as store:
        info = store.get_run(run.id)
        assert info.status == "finished"  # not reopened
        assert [a.kind for a in store.artifacts(info)] == ["explanation", "explanation"]
        assert sum("explained step 7 with saliency" in e.message for e in store.events(info)) == 2


def test_a_blocked_folder_is_a_user_error(tmp_path):
    home = tmp_path / ".lmdev"
    run = track.init("r", home=home, telemetry=False)
    run.finish()
    (home / "runs" / run.id).mkdir(parents=True, exist_ok=True)
    (home / "runs" / run.id / "explain").write_text("in the way")
    with pytest.raises(LmdevError, match="cannot write into the run's folder"):
        record_explanation(_explanation(run.id, 0.5), home)
