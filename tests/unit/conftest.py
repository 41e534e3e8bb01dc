import pytest

from lmdev.track import api


@pytest.fixture
def home(tmp_path, monkeypatch):
    """An isolated store folder, set as LMDEV_HOME; no launcher or `lmdev run` variables (the
    unit tests of track/ and remote/ use it)."""
    h = tmp_path / "lmdev-home"
    monkeypatch.setenv("LMDEV_HOME", str(h))
    for var in ("LMDEV_RUN_ID", "LMDEV_RUN_NAME", "RANK", "LOCAL_RANK", "WORLD_SIZE",
                "LOCAL_WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("LMDEV_TELEMETRY", "0")
    yield h
    while api.active_run() is not None:  # never leak a run (and its writer thread) into other tests
        api.active_run().finish()
