"""The scanner on the generated corpus: every malicious file unsafe, no benign file unsafe, nothing run."""

from __future__ import annotations

import io
import os
import pickle
import random

import pytest

from lmdev.secure import scan_file, scan_paths
from lmdev.secure.pickles import PickleVerdict, scan_pickles

from . import corpus


def test_every_malicious_file_is_unsafe_and_nothing_runs(files):
    missed = [p.name for p in files["malicious"] if scan_file(p).verdict != "unsafe"]
    assert missed == []
    assert len(files["malicious"]) >= 40
    assert not files["canary"][0].exists()


def test_no_benign_file_is_unsafe(files):
    flagged = {p.name: scan_file(p).findings[:2] for p in files["benign"] if scan_file(p).verdict == "unsafe"}
    assert flagged == {}
    assert len(files["benign"]) >= 20


def test_report_names_the_callable_and_its_byte_position(tmp_path):
    path = tmp_path / "m.pkl"
    path.write_bytes(corpus.global_call("os", "system", "echo hi", 2))
    finding = scan_file(path).findings[0]
    assert finding.callable == "os.system"
    assert finding.position == 2  # right after the PROTO header


def test_memo_indirection_resolves_the_real_name(files):
    path = next(p for p in files["malicious"] if p.name == "memo_indirection.pkl")
    assert [f.callable for f in scan_file(path).findings] == ["os.system"]


def test_a_payload_in_a_second_stream_is_found_at_its_offset(tmp_path):
    first = pickle.dumps({"a": 1}, protocol=4)
    path = tmp_path / "two.pkl"
    path.write_bytes(first + corpus.global_call("subprocess", "call", "x", 2))
    finding = scan_file(path).findings[0]
    assert finding.callable == "subprocess.call" and finding.position > len(first)


def test_broken_stream_is_unsafe_with_its_reason(tmp_path):
    path = tmp_path / "cut.pkl"
    path.write_bytes(pickle.dumps({"a": [1, 2, 3]}, protocol=2)[:-3])
    result = scan_file(path)
    assert result.verdict == "unsafe" and result.findings[0].kind == "broken"
    assert "does not parse" in result.findings[0].message


def test_torch_zip_with_payload_is_named_by_member(files):
    path = next(p for p in files["malicious"] if p.name == "torch_zip_payload.pt")
    finding = scan_file(path).findings[0]
    assert finding.member == "archive/data.pkl" and finding.callable == "os.system"


def test_format_comes_from_content_not_extension(files):
    path = next(p for p in files["malicious"] if p.name == "torch_zip_wrong_ext.safetensors")
    assert scan_file(path).format == "torch-zip"


@pytest.mark.parametrize("seed", range(3))
def test_truncations_and_random_bytes_never_crash(tmp_path, seed):
    rng = random.Random(seed)
    data = pickle.dumps({"w": list(range(50)), "s": {"x"}, "t": (1.5, b"ab")}, protocol=seed + 2)
    for cut in range(0, len(data), 7):
        verdict = PickleVerdict()
        scan_pickles(io.BytesIO(data[:cut]), verdict)
    for _ in range(50):
        path = tmp_path / "r.bin"
        path.write_bytes(bytes([0x80, 2]) + rng.randbytes(rng.randint(0, 200)))
        assert scan_file(path).verdict in ("safe", "unsafe")


def test_folder_scan_skips_text_and_binary_data(tmp_path):
    (tmp_path / "notes.txt").write_text("config of the model\nline two\n")
    (tmp_path / "raw.bin").write_bytes(bytes(range(256)) * 4)
    results = scan_paths([tmp_path])
    assert {r.verdict for r in results} == {"skipped"}


def _bytes_read() -> int:
    with open("/proc/self/io") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("rchar"))


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="needs Linux /proc/self/io")
def test_a_large_torch_file_is_judged_from_its_pickle(tmp_path):
    torch = pytest.importorskip("torch")
    path = tmp_path / "big.pt"
    torch.save({"w": torch.zeros(8 * 1024 * 1024)}, path)  # 32 MiB of tensor data
    before = _bytes_read()
    assert scan_file(path, log=False).verdict == "safe"
    assert _bytes_read() - before < 1024 * 1024


def test_scan_verdicts_are_audited(tmp_path, _home):
    path = tmp_path / "m.pkl"
    path.write_bytes(corpus.global_call("os", "system", "x", 2))
    scan_file(path)
    log = (_home / "audit.log").read_text()
    assert '"event":"scan"' in log and '"verdict":"unsafe"' in log and str(path) in log


def test_legacy_keras_h5_with_a_lambda_layer_is_unsafe(tmp_path):
    h5py = pytest.importorskip("h5py")
    import json

    config = {"class_name": "Sequential", "config": {"layers": [
        {"class_name": "Lambda", "config": {"function": ["4wEAAAAAAAAA", None, None]}}]}}
    path = tmp_path / "model.h5"
    with h5py.File(path, "w") as h:
        h.attrs["model_config"] = json.dumps(config)
    result = scan_file(path)
    assert result.verdict == "unsafe" and result.findings[0].kind == "lambda"
    with h5py.File(tmp_path / "weights.h5", "w") as h:
        h["w"] = [1.0, 2.0]
    assert scan_file(tmp_path / "weights.h5").verdict == "safe"
