"""Every place lmdev loads a file from outside goes through the scanner.

The test walks lmdev's source (AST), finds calls that load model or array files, and requires the
enclosing function to call ``require_safe`` first, unless the site is listed below with a reason.
A new unscanned load site fails this test.
"""

from __future__ import annotations

import ast

from tests.code_sites import sites, walk_source

LOADERS = {"load", "loads", "load_file", "safe_open", "from_pretrained", "load_model", "load_state_dict_from_keys",
           "_load_state_dict_from_keys"}
ALWAYS = {"load_file", "safe_open", "_load_state_dict_from_keys"}  # loaders by their own name
LOADER_MODULES = {"torch", "pickle", "np", "numpy", "joblib", "dcp", "keras", "AutoModelForCausalLM", "AutoConfig",
                  "safetensors", "cloudpickle", "dill"}

# (file relative to src/lmdev, function) -> why it needs no scan
EXEMPT = {
    ("train/models.py", "build_hf"): "AutoConfig.from_pretrained reads config.json only (from_config)",
    ("compress/formats.py", "read_torch"): "the model.safetensors lmdev compress wrote in its own output folder",
    ("compress/memprobe.py", "probe"): "the inputs.safetensors its parent lmdev compress process just wrote for it",
    ("explain/model.py", "checkpoint_weights"): "loads through checkpoint.load / export_safetensors (both scan), "
                                                "then the safetensors file export wrote in this process",
    ("train/dcp_safe.py", "load_bytes"): "torch.load(weights_only=True) of a DCP bytes entry",
    ("train/dcp_safe.py", "load"): "dcp.load through the restricted reader; its callers (checkpoint.load_sharded_into, "
                                   "export_safetensors) run on folders checkpoint.load / export scanned",
    ("secure/load.py", "load"): "lmdev.secure.load: require_safe runs first in the same function",
    ("secure/load.py", "_load_safetensors"): "called by lmdev.secure.load after require_safe",
    ("train/checkpoint.py", "read_tensors"): "called by checkpoint.load / export_safetensors after require_safe "
                                             "scanned the folder; decrypted bytes pass require_safe_safetensors",
}


def _is_loader(call: ast.Call) -> bool:
    f = call.func
    if isinstance(f, ast.Attribute) and f.attr in ALWAYS:  # whatever the module is imported as
        return True
    if isinstance(f, ast.Attribute) and f.attr in LOADERS:
        base = f.value
        root = base
        while isinstance(root, ast.Attribute):
            root = root.value
        return isinstance(root, ast.Name) and (root.id in LOADER_MODULES or
                                               (isinstance(base, ast.Attribute) and base.attr in LOADER_MODULES))
    return isinstance(f, ast.Name) and f.id in ALWAYS


def _no_pickle(call: ast.Call) -> bool:
    """np.load(..., allow_pickle=False) reads numeric arrays only: it cannot unpickle."""
    return any(k.arg == "allow_pickle" and isinstance(k.value, ast.Constant) and k.value.value is False
               for k in call.keywords)


def _sites() -> list[tuple[str, str, int, bool]]:
    """(file, innermost function, line, scanned) of every loader call; scanned: an enclosing
    function calls require_safe, or the call cannot unpickle."""
    return [(site.rel, site.function, site.node.lineno, site.scanned or _no_pickle(site.node))
            for site in sites() if isinstance(site.node, ast.Call) and _is_loader(site.node)]


def test_every_load_site_is_scanned_or_exempt_with_a_reason():
    unscanned = sorted({(f, fn, line) for f, fn, line, scanned in _sites()
                        if not scanned and (f, fn) not in EXEMPT})
    assert unscanned == [], "new load sites without lmdev.secure.require_safe: " + repr(unscanned)
    stale = sorted(set(EXEMPT) - {(f, fn) for f, fn, _, _ in _sites()})
    assert stale == [], f"EXEMPT lists load sites that no longer exist: {stale}"


def test_the_finder_sees_the_known_sites():
    sites_ = {(f, fn): scanned for f, fn, _, scanned in _sites()}
    assert ("train/models.py", "build_hf") in sites_
    assert sites_[("train/data.py", "_read_npy")] and sites_[("secure/load.py", "load")]
    assert ("train/checkpoint.py", "read_tensors") in sites_


def test_a_new_unscanned_load_is_caught():
    code = ("from lmdev.secure import require_safe\n\ndef good(p):\n    require_safe(p)\n"
            "    return torch.load(p, weights_only=True)\n\ndef bad(p):\n    return np.load(p)\n")
    found = [(s.function, s.scanned) for s in walk_source("x.py", code)
             if isinstance(s.node, ast.Call) and _is_loader(s.node)]
    assert found == [("good", True), ("bad", False)]
