"""lmdev never unpickles data it did not write in the same process.

Every call in src/lmdev that can deserialise code-bearing data (pickle, torch.load, numpy.load,
torch.distributed.checkpoint's load, joblib, dill, marshal, shelve, from_pretrained, ...) is
listed below with why it is safe; a new one fails this test until it is guarded and listed.
The guards the reasons name are checked too (the keyword arguments that make a call safe)."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[3] / "src" / "lmdev"

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


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Call):
        return _dotted(node.func)
    return "?"


class _Finder(ast.NodeVisitor):
    """Call sites and imports, each named by where it is: ``function``, ``Class.method`` or
    ``<module>``."""

    def __init__(self, rel: str) -> None:
        self.rel, self.stack, self.found = rel, [], []

    def _scoped(self, node: ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef) -> None:
        if isinstance(node, ast.ClassDef):
            for base in node.bases:
                self.stack.append((node.name, True))
                self._check(_dotted(base), node)
                self.stack.pop()
        self.stack.append((node.name, isinstance(node, ast.ClassDef)))
        self.generic_visit(node)
        self.stack.pop()

    visit_FunctionDef = visit_AsyncFunctionDef = visit_ClassDef = _scoped

    def _where(self) -> str:
        if not self.stack:
            return "<module>"
        name = self.stack[-1][0]
        if len(self.stack) > 1 and self.stack[-2][1]:
            return f"{self.stack[-2][0]}.{name}"
        return name

    def _check(self, name: str, node: ast.AST) -> None:
        last = name.rsplit(".", 1)[-1]
        if last.endswith("Error") or last in ("dump", "dumps"):  # raising or writing is harmless
            return
        if name in RISKY_CALLS or last in RISKY_CALLS or name.split(".")[0] in RISKY_MODULES \
                or (last.startswith("_Restricted")):
            self.found.append(((self.rel, self._where(), name), node))

    def visit_Call(self, node: ast.Call) -> None:
        self._check(_dotted(node.func), node)
        self.generic_visit(node)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            if alias.name.split(".")[0] in RISKY_MODULES:
                self.found.append(((self.rel, self._where(), f"import {alias.name}"), node))

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        if (node.module or "").split(".")[0] in RISKY_MODULES:
            self.found.append(((self.rel, self._where(), f"from {node.module} import"), node))
        self.generic_visit(node)


def _sites() -> list[tuple[tuple[str, str, str], ast.AST]]:
    out = []
    for f in sorted(SRC.rglob("*.py")):
        finder = _Finder(f.relative_to(SRC).as_posix())
        finder.visit(ast.parse(f.read_text(encoding="utf-8")))
        out += finder.found
    return out


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
    finder = _Finder("x.py")
    finder.visit(ast.parse(code))
    assert [key for key, _ in finder.found] == [("x.py", "f", "torch.load")]
