"""autolog's post-import hook, and the integrations' logic with duck-typed frameworks."""

import sys
import types

import pytest

from lmdev.integrations import autolog as al


def test_patch_runs_now_or_right_after_import(tmp_path, monkeypatch):
    pkg = tmp_path / "lmdev_fake_framework"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("class Trainer:\n    pass\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    seen = []
    al.when_imported("lmdev_fake_framework", lambda m: seen.append(m.Trainer))
    assert seen == []  # not imported yet: nothing happens, nothing is imported
    assert "lmdev_fake_framework" not in sys.modules
    import lmdev_fake_framework

    assert seen == [lmdev_fake_framework.Trainer]
    al.when_imported("lmdev_fake_framework", lambda m: seen.append("again"))
    assert len(seen) == 1  # once per module
    mod = types.ModuleType("lmdev_fake_loaded")
    monkeypatch.setitem(sys.modules, "lmdev_fake_loaded", mod)
    al.when_imported("lmdev_fake_loaded", lambda m: seen.append(m))
    assert seen[-1] is mod  # already imported: patched at once


def test_keras_fit_gets_one_callback(monkeypatch):
    class Callback:
        def __init__(self, log_every_n_batches=50):
            self.n = log_every_n_batches

    fake = types.ModuleType("lmdev.integrations.keras")
    fake.LmdevCallback = Callback
    monkeypatch.setitem(sys.modules, "lmdev.integrations.keras", fake)

    class Model:
        def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose=1, callbacks=None):
            return callbacks

    keras = types.SimpleNamespace(Model=Model)
    al._patch_keras(keras)
    al._patch_keras(keras)  # idempotent
    cbs = Model().fit([1], [2])
    assert len(cbs) == 1 and isinstance(cbs[0], Callback)
    mine = Callback()
    assert Model().fit(callbacks=[mine]) == [mine]
    assert len(Model().fit(1, 2, 3, 4, 5, [])) == 1  # callbacks given by position


def test_transformers_callback_logs_numeric_logs(home):
    pytest.importorskip("transformers")
    from lmdev.integrations.transformers import LmdevTrainerCallback
    from lmdev.track.store import Store

    state = types.SimpleNamespace(is_world_process_zero=True, global_step=0)
    args = types.SimpleNamespace(to_dict=lambda: {"learning_rate": 5e-5, "output_dir": "x", "x": [1]})
    cb = LmdevTrainerCallback(name="hf")
    cb.on_train_begin(args, state, None)
    for step in (10, 20):
        state.global_step = step
        cb.on_log(args, state, None, logs={"loss": 1.0 / step, "epoch": step / 20, "note": "text"})
    cb.on_train_end(args, state, None)
    with Store(home) as s:
        run = s.get_run("hf")
        assert run.status == "finished" and run.config["learning_rate"] == 5e-5
        assert "x" not in run.config
        metrics = s.metrics(run)
    assert sorted(metrics) == ["epoch", "loss"]
    assert [st for st, _, _ in metrics["loss"]] == [10, 20]


def test_import_lmdev_and_autolog_import_no_framework():
    import subprocess

    code = (
        "import sys, lmdev\n"
        "assert 'lmdev.track' not in sys.modules\n"
        "lmdev.autolog()\n"
        "assert callable(lmdev.init) and callable(lmdev.log) and callable(lmdev.finish)\n"
        "heavy = [m for m in ('torch', 'tensorflow', 'keras', 'lightning', 'transformers', 'jax')"
        " if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
