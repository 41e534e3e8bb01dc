"""lmdev never unpickles data it did not write in the same process.

Every call in src/lmdev that can deserialise code-bearing data (pickle, torch.load, numpy.load,
torch.distributed.checkpoint's load, joblib, dill, marshal, shelve, from_pretrained, ...) is
listed below with why it is safe; a new one fails this test until it is guarded and listed.
The guards the reasons name are checked too (the keyword arguments that make a call safe)."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.code_sites import Site, sites, walk_source

RISKY_MODULES = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}
# call names (the dotted text as written, or its last part) that can load code-bearing data
RISKY_CALLS = {"torch.load", "np.load", "numpy.load", "dcp.load", "torch.jit.load", "load_model",
               "_load_state_dict_from_keys", "from_pretrained", "load_from_checkpoint", "Unpickler",
               "pickle.load", "pickle.loads", "marshal.load", "marshal.loads", "shelve.open", "joblib.load",
               "dill.load", "dill.loads", "cloudpickle.load", "cloudpickle.loads", "load_state_dict_from_url"}

# (file, enclosing function or class, call or import) -> why it is safe
ALLOWED = {
    ("train/dcp_safe.py", "<module>", "import pickle"):
        "only for pickle.Unpickler, subclassed with a find_class that resolves DCP's own classes only",
    ("train/dcp_safe.py", "_Restricted", "pickle.Unpickler"):
        "the restricted unpickler: find_class allows the ALLOWED (module, name) pairs and torch dtypes",
    ("train/dcp_safe.py", "read_metadata", "_Restricted"):
        "the restricted unpickler reading dcp/.metadata; the result's shape is checked after",
    ("train/dcp_safe.py", "SafePlanner.load_bytes", "torch.load"):
        "weights_only=True: torch's own restricted unpickler (tensors and plain containers)",
    ("train/dcp_safe.py", "load", "dcp.load"):
        "storage_reader=SafeReader (restricted .metadata), planner=SafePlanner (weights_only bytes)",
    ("train/data.py", "_read_npy", "np.load"): "allow_pickle=False (both calls: .npz and .npy)",
    ("train/data.py", "_sparse", "np.load"): "allow_pickle=False",
    ("data/read.py", "_npy_chunks", "np.load"): "allow_pickle=False (both calls: .npz and a memory-mapped .npy)",
    ("secure/guard.py", "<module>", "import pickle"):
        "lmdev run --guard wraps pickle.load/loads in the user's script so they scan before they load",
    ("secure/load.py", "load", "torch.load"): "weights_only=True, after require_safe scanned the file",
    ("secure/load.py", "load", "np.load"): "allow_pickle=False, after require_safe scanned the file",
    ("secure/load.py", "load", "keras.saving.load_model"):
        "safe_mode=True (no Lambda bytecode), after require_safe scanned the archive",
    ("train/models.py", "build_hf", "AutoConfig.from_pretrained"): "reads config.json (JSON), local_files_only",
    ("train/models.py", "build_hf", "AutoModelForCausalLM.from_pretrained"):
        "use_safetensors=True (never a .bin pickle), local_files_only=True",
}

# guards checked on the call itself: call name -> (keyword, required constant value)
GUARDS = {"torch.load": ("weights_only", True), "np.load": ("allow_pickle", False),
          "numpy.load": ("allow_pickle", False), "keras.saving.load_model": ("safe_mode", True)}


def _risky(site: Site) -> bool:
    """A call, class base or import that can deserialise code-bearing data."""
    name = site.name
    if name.startswith(("import ", "from ")):
        module = name.split()[1]
        return module.split(".")[0] in RISKY_MODULES
    last = name.rsplit(".", 1)[-1]
    if last.endswith("Error") or last in ("dump", "dumps"):  # raising or writing is harmless
        return False
    return (name in RISKY_CALLS or last in RISKY_CALLS or name.split(".")[0] in RISKY_MODULES
            or last.startswith("_Restricted"))


def _sites(found: tuple[Site, ...] | list[Site] | None = None) -> list[tuple[tuple[str, str, str], ast.AST]]:
    return [((s.rel, s.where, s.name), s.node) for s in (sites() if found is None else found) if _risky(s)]


def test_every_deserialising_call_site_is_listed_with_its_reason() -> None:
    found = {key for key, _ in _sites()}
    unlisted = sorted(found - set(ALLOWED))
    assert not unlisted, ("new call sites that may unpickle; guard them (allow_pickle=False, weights_only=True, "
                          f"lmdev.train.dcp_safe) and list them in ALLOWED with the reason: {unlisted}")
    stale = sorted(set(ALLOWED) - found)
    assert not stale, f"ALLOWED lists call sites that no longer exist: {stale}"


def test_the_guards_the_reasons_name_are_in_place() -> None:
    for (rel, _where, name), node in _sites():
        if not isinstance(node, ast.Call):
            continue
        kw = {k.arg: k.value for k in node.keywords}
        if name in GUARDS:
            key, want = GUARDS[name]
            assert isinstance(kw.get(key), ast.Constant) and kw[key].value is want, \
                f"{rel}:{node.lineno} {name} needs {key}={want}"
        if name == "dcp.load":
            assert {"storage_reader", "planner"} <= set(kw), f"{rel}:{node.lineno} dcp.load needs the safe reader"
        if name.endswith("from_pretrained") and not name.startswith("AutoConfig"):
            assert isinstance(kw.get("use_safetensors"), ast.Constant) and kw["use_safetensors"].value is True, \
                f"{rel}:{node.lineno} from_pretrained needs use_safetensors=True"


def test_the_scanner_sees_a_new_unguarded_call(tmp_path: Path) -> None:
    code = "import torch\n\ndef f(p):\n    return torch.load(p)\n"
    assert [key for key, _ in _sites(walk_source("x.py", code))] == [("x.py", "f", "torch.load")]
