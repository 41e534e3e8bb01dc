from __future__ import annotations

from pathlib import Path

import pytest

from . import corpus


@pytest.fixture(autouse=True)
def _home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own LMDEV_HOME (its own audit log) and no trusted paths."""
    home = tmp_path / "home"
    monkeypatch.setenv("LMDEV_HOME", str(home))
    monkeypatch.delenv("LMDEV_TRUST", raising=False)
    monkeypatch.delenv("LMDEV_AGE_KEY", raising=False)
    monkeypatch.delenv("LMDEV_AGE_KEY_FILE", raising=False)
    return home


@pytest.fixture(scope="session")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """The generated corpus, written once per session. The canary must never appear."""
    root = tmp_path_factory.mktemp("corpus")
    canary = root / "CANARY"
    out = {"malicious": corpus.write_all(corpus.malicious(canary), root / "malicious"),
           "benign": corpus.write_all(corpus.benign(), root / "benign"), "canary": [canary]}
    return out
