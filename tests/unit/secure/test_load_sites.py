"""Every place lmdev loads a file from outside goes through the scanner.

The test walks lmdev's source (AST), finds calls that load model or array files, and requires the
enclosing function to call ``require_safe`` first, unless the site is listed below with a reason.
A new unscanned load site fails this test.
"""

from __future__ import annotations

import ast
from pathlib import Path

import lmdev

LOADERS = {"load", "loads", "load_file", "safe_open", "from_pretrained", "load_model", "load_state_dict_from_keys",
           "_load_state_dict_from_keys"}
LOADER_MODULES = {"torch", "pickle", "np", "numpy", "joblib", "dcp", "keras", "AutoModelForCausalLM", "AutoConfig",
                  "safetensors", "cloudpickle", "dill"}

# (file relative to src/lmdev, function) -> why it needs no scan
EXEMPT = {
    ("train/models.py", "build_hf"): "AutoConfig.from_pretrained reads config.json only (from_config)",
    ("train/checkpoint.py", "load_sharded_into"): "dcp.load of the checkpoint train/components/checkpointer.py got from "
                                                    "ckpt.load / load_latest, which scanned the folder",
    ("compress/formats.py", "read_torch"): "the model.safetensors lmdev compress wrote in its own output folder",
    ("compress/formats.py", "read_int8"): "the model.safetensors lmdev compress wrote in its own output folder",
    ("explain/model.py", "checkpoint_weights"): "loads through checkpoint.load / export_safetensors (both scan), "
                                                "then the safetensors file export wrote in this process",
    ("train/dcp_safe.py", "load_bytes"): "torch.load(weights_only=True) of a DCP bytes entry",
    ("train/dcp_safe.py", "_planner_class"): "torch.load(weights_only=True) of a DCP bytes entry",
    ("train/dcp_safe.py", "load"): "dcp.load through the restricted reader; its callers (checkpoint.load_sharded_into, "
                                   "export_safetensors) run on folders checkpoint.load / export scanned",
    ("secure/load.py", "load"): "lmdev.secure.load: require_safe runs first in the same function",
    ("secure/load.py", "_load_safetensors"): "called by lmdev.secure.load after require_safe",
    ("secure/guard.py", "_wrap_pickle"): "the guard's wrappers: they scan, then call the original",
    ("secure/guard.py", "guarded_load"): "the guard's wrapper: scans, then calls the original",
    ("secure/guard.py", "guarded_loads"): "the guard's wrapper: scans, then calls the original",
    ("secure/guard.py", "guarded"): "the guard's wrapper: scans, then calls the original",
    ("secure/formats.py", "keras_config_findings"): "json only",
}


def _is_loader(call: ast.Call) -> bool:
    f = call.func
    if isinstance(f, ast.Attribute) and f.attr in LOADERS:
        base = f.value
        root = base
        while isinstance(root, ast.Attribute):
            root = root.value
        return isinstance(root, ast.Name) and (root.id in LOADER_MODULES or
                                               (isinstance(base, ast.Attribute) and base.attr in LOADER_MODULES))
    return isinstance(f, ast.Name) and f.id in {"load_file", "safe_open", "_load_state_dict_from_keys"}


def _no_pickle(call: ast.Call) -> bool:
    """np.load(..., allow_pickle=False) reads numeric arrays only: it cannot unpickle."""
    return any(k.arg == "allow_pickle" and isinstance(k.value, ast.Constant) and k.value.value is False
               for k in call.keywords)


def _sites() -> list[tuple[str, str, int, bool]]:
    root = Path(lmdev.__file__).parent
    out = []
    for path in sorted(root.rglob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for func in ast.walk(tree):
            if not isinstance(func, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            calls = [n for n in ast.walk(func) if isinstance(n, ast.Call)]
            scanned = any(isinstance(c.func, (ast.Name, ast.Attribute)) and
                          getattr(c.func, "id", getattr(c.func, "attr", "")) == "require_safe" for c in calls)
            for call in calls:
                if _is_loader(call):
                    out.append((str(path.relative_to(root)), func.name, call.lineno, scanned or _no_pickle(call)))
    return out


def test_every_load_site_is_scanned_or_exempt_with_a_reason():
    unscanned = sorted({(f, fn, line) for f, fn, line, scanned in _sites()
                        if not scanned and (f, fn) not in EXEMPT})
    assert unscanned == [], "new load sites without lmdev.secure.require_safe: " + repr(unscanned)


def test_the_finder_sees_the_known_sites():
    sites = {(f, fn) for f, fn, _, _ in _sites()}
    assert ("train/models.py", "build_hf") in sites
    assert ("train/checkpoint.py", "load") in sites and ("secure/load.py", "load") in sites
