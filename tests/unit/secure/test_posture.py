"""``lmdev secure check`` on a generated project."""

from __future__ import annotations

import pytest

from lmdev.secure.posture import check

from . import corpus


def test_posture_names_unsafe_unsigned_pickled_models_and_remote_code(tmp_path, _home):
    torch = pytest.importorskip("torch")
    project = tmp_path / "project"
    (project / "models").mkdir(parents=True)
    torch.save({"w": torch.ones(2)}, project / "models" / "weights.pt")
    (project / "models" / "evil.pkl").write_bytes(corpus.global_call("os", "system", "true", 2))
    (project / "load.py").write_text("AutoModel.from_pretrained(name, trust_remote_code=True)\n")
    _home.mkdir(mode=0o755)
    posture = check(project, _home)
    found = {(i.check, i.path.rsplit("/", 1)[-1]) for i in posture.issues}
    assert ("unsafe-model", "evil.pkl") in found
    assert ("pickle", "weights.pt") in found and ("unsigned", "weights.pt") in found
    assert ("remote-code", "load.py:1") in found
    assert ("store-permissions", "home") in found
    assert posture.errors == 2
    fixed = check(project, _home, fix=True)
    assert fixed.errors == 1 and (_home.stat().st_mode & 0o777) == 0o700
