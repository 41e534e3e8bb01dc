"""``lmdev.secure.load`` and the load sites of lmdev refuse unsafe files before anything is unpickled."""

from __future__ import annotations

import pickle

import pytest

from lmdev.errors import LmdevError
from lmdev.secure import UnsafeModelError, load

from . import corpus


def test_the_canary_payload_is_refused_before_unpickling(tmp_path):
    canary = tmp_path / "CANARY"
    path = tmp_path / "model.pt"
    path.write_bytes(corpus._torch_zip(corpus.global_call("os", "system", f"touch {canary}", 2)))
    with pytest.raises(UnsafeModelError, match="os.system"):
        load(path)
    assert not canary.exists()


def test_trust_overrides_the_scan_and_is_audited(tmp_path, _home):
    pytest.importorskip("torch")
    from lmdev.secure import require_safe

    path = tmp_path / "odd.pt"
    path.write_bytes(corpus._torch_zip(corpus.global_call("math", "sqrt", "x", 2)))
    with pytest.raises(UnsafeModelError, match="--trust"):
        require_safe(path)
    assert require_safe(path, trust=[path])[0].verdict == "unsafe"
    # trusted: the scan lets it through, and torch's weights-only unpickler is still the loader
    with pytest.raises(pickle.UnpicklingError):
        load(path, trust=True)
    log = (_home / "audit.log").read_text()
    assert '"event":"refuse"' in log and '"event":"trust"' in log


def test_safetensors_torch_and_numpy_load(tmp_path):
    torch = pytest.importorskip("torch")
    import numpy as np
    from safetensors.torch import save_file

    save_file({"w": torch.ones(2, 3)}, str(tmp_path / "m.safetensors"))
    assert load(tmp_path / "m.safetensors")["w"].shape == (2, 3)
    torch.save({"w": torch.arange(4)}, tmp_path / "m.pt")
    assert load(tmp_path / "m.pt")["w"].tolist() == [0, 1, 2, 3]
    np.save(tmp_path / "a.npy", np.arange(3))
    assert load(tmp_path / "a.npy").tolist() == [0, 1, 2]


def test_a_plain_pickle_is_never_loaded(tmp_path):
    path = tmp_path / "d.pkl"
    path.write_bytes(pickle.dumps({"a": 1}))
    with pytest.raises(LmdevError, match="does not load"):
        load(path)


def test_hf_model_folder_with_a_payload_is_refused(tmp_path):
    pytest.importorskip("transformers")
    from lmdev.train.config import HFModelConfig
    from lmdev.train.models import DataShape, build_hf

    canary = tmp_path / "CANARY"
    folder = tmp_path / "hfmodel"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "gpt2", "n_layer": 1, "n_head": 1, "n_embd": 8, '
                                        '"vocab_size": 16, "n_positions": 8}')
    (folder / "pytorch_model.bin").write_bytes(
        corpus._torch_zip(corpus.global_call("os", "system", f"touch {canary}", 2)))
    cfg = HFModelConfig(type=f"hf:{folder}")
    with pytest.raises(UnsafeModelError, match="pytorch_model.bin"):
        build_hf(cfg, DataShape("tokens", (8,), 16, "language_modeling"))
    assert not canary.exists()


def test_plan_on_a_folder_scans_it(tmp_path):
    from lmdev.plan.model_input import resolve_model

    folder = tmp_path / "m"
    folder.mkdir()
    (folder / "config.json").write_text('{"model_type": "gpt2"}')
    (folder / "evil.pkl").write_bytes(corpus.global_call("os", "system", "true", 2))
    with pytest.raises(UnsafeModelError, match="evil.pkl"):
        resolve_model(str(folder))
