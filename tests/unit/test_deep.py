"""--deep runs each framework in its own subprocess: a hang or a crash there never hangs or
crashes doctor."""

import sys

from lmdev.diagnose import diagnose
from lmdev.probe import deep
from lmdev.probe.types import DeepCheck, Facts, SoftwareFacts


def test_frameworks_to_check_follow_the_installed_packages():
    sw = SoftwareFacts(packages={"torch": "2.5.1", "tensorflow-cpu": "2.17.0", "jax": "0.4.30"})
    assert deep.frameworks_to_check(sw) == ["torch", "tensorflow"]  # jax without jaxlib: skipped
    sw.packages["jaxlib"] = "0.4.30"
    assert deep.frameworks_to_check(sw) == ["torch", "tensorflow", "jax"]
    assert deep.frameworks_to_check(SoftwareFacts()) == []


def test_a_hanging_import_is_cut_off(monkeypatch):
    monkeypatch.setitem(deep._SCRIPTS, "torch", "import time\ntime.sleep(30)\n")
    [check] = deep.run_deep(["torch"], timeout=1.0)
    assert not check.ok and "did not finish within 1 s" in check.error


def test_a_crashing_check_is_reported(monkeypatch):
    monkeypatch.setitem(deep._SCRIPTS, "torch",
                        "import sys\nsys.stderr.write('Segmentation fault\\n')\nsys.exit(139)\n")
    [check] = deep.run_deep(["torch"], timeout=60)
    assert not check.ok and check.error == "the check crashed (Segmentation fault)"


def test_checks_run_side_by_side(monkeypatch):
    script = deep._PRELUDE + "out['version'] = 'x'\nout['devices'] = ['cpu']\nout['op_results'] = {'cpu': 'ok'}\ndone()\n"
    monkeypatch.setitem(deep._SCRIPTS, "torch", script)
    monkeypatch.setitem(deep._SCRIPTS, "jax", script.replace("'x'", "'y'"))
    checks = deep.run_deep(["torch", "jax"], timeout=60, python=sys.executable)
    assert [(c.framework, c.ok, c.version) for c in checks] == [("torch", True, "x"), ("jax", True, "y")]


def test_import_failure_becomes_a_finding(monkeypatch):
    monkeypatch.setitem(deep._SCRIPTS, "torch", deep._PRELUDE + "try:\n    import no_such_module_x\n"
                        "except Exception as e:\n    out.update(ok=False, error=first_line(e)); done()\n")
    [check] = deep.run_deep(["torch"], timeout=60)
    assert not check.ok and "No module named 'no_such_module_x'" in check.error
    findings = diagnose(Facts(deep=[check]))
    assert any(f.id == "deep.import_failed" and f.severity == "error" for f in findings)


def test_failed_operation_becomes_a_finding():
    check = DeepCheck("torch", ok=True, version="2.5.1", devices=["cpu", "cuda:0"],
                      op_results={"cpu": "ok", "cuda:0": "RuntimeError: CUDA error: no kernel image is available"})
    ids = [f.id for f in diagnose(Facts(deep=[check]))]
    assert ids.count("deep.op_failed") == 1
