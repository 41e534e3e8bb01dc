"""Judge pickle data without running it: walk the opcodes (``pickletools.genops``), emulate just
enough of the unpickler's stack and memo to know which callable each opcode reaches, and judge
every global against the allowlist (``lmdev.secure.allowlist``).

Nothing here imports a module a pickle names or calls anything it builds.
"""

from __future__ import annotations

import math
import pickletools
from dataclasses import dataclass, field
from typing import IO, Any

from lmdev.secure.allowlist import canonical, is_allowed
from lmdev.secure.types import Finding

MAX_FINDINGS = 100
_STRINGS = {"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE", "SHORT_BINUNICODE",
            "BINUNICODE8"}
_SCALARS = {"INT", "BININT", "BININT1", "BININT2", "LONG", "LONG1", "LONG4", "FLOAT", "BINFLOAT"}
_MEMO = {"GET", "BINGET", "LONG_BINGET", "PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"}
_OPAQUE = {"BINBYTES", "SHORT_BINBYTES", "BINBYTES8", "BYTEARRAY8", "PERSID", "NEXT_BUFFER"}


class _Mark:
    pass


class _Opaque:
    """A value the scanner does not track (bytes, a persistent id's result, a buffer)."""


MARK, OPAQUE = _Mark(), _Opaque()


@dataclass(frozen=True)
class Global:
    module: str
    name: str

    @property
    def dotted(self) -> str:
        return f"{self.module}.{self.name}"


@dataclass
class Call:
    """The result of calling ``func`` (a REDUCE, NEWOBJ, OBJ or INST)."""

    func: Any
    args: Any = None
    state: Any = None


class BrokenStream(Exception):
    pass


@dataclass
class PickleVerdict:
    findings: list[Finding] = field(default_factory=list)
    callables: set[str] = field(default_factory=set)
    streams: int = 0


@dataclass
class _Machine:
    """One stream's stack and memo."""

    verdict: PickleVerdict
    member: str | None
    stack: list[Any] = field(default_factory=list)
    memo: dict[int, Any] = field(default_factory=dict)

    def find(self, kind: str, message: str, pos: int, callable_: str | None = None) -> None:
        if len(self.verdict.findings) < MAX_FINDINGS:
            self.verdict.findings.append(Finding(kind, message, pos, self.member, callable_))

    def pop(self) -> Any:
        if not self.stack:
            raise BrokenStream("stack underflow")
        value = self.stack.pop()
        if value is MARK:
            raise BrokenStream("an opcode popped a MARK")
        return value

    def pop_mark(self) -> list[Any]:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i] is MARK:
                items = self.stack[i + 1:]
                del self.stack[i:]
                return items
        raise BrokenStream("no MARK on the stack")

    def top(self) -> Any:
        if not self.stack or self.stack[-1] is MARK:
            raise BrokenStream("stack underflow")
        return self.stack[-1]

    def global_(self, module: Any, name: Any, pos: int) -> Global | _Opaque:
        if not isinstance(module, str) or not isinstance(name, str):
            self.find("callable", "a global whose module or name is not a string the scanner can "
                      "resolve (computed at load time)", pos)
            return OPAQUE
        g = Global(*canonical(module, name))
        if is_allowed(g.module, g.name):
            self.verdict.callables.add(g.dotted)
        else:
            self.find("callable", f"imports {g.dotted}, which model files do not need", pos, g.dotted)
        return g

    def call(self, func: Any, pos: int, args: Any = None) -> Call:
        if not isinstance(func, Global):
            self.find("callable", "calls a value that is not a named, allowlisted global", pos)
        return Call(func, args)


def _container_op(m: _Machine, name: str, arg: Any) -> bool:
    if name == "EMPTY_LIST":
        m.stack.append([])
    elif name == "EMPTY_DICT":
        m.stack.append({})
    elif name in ("EMPTY_TUPLE",):
        m.stack.append(())
    elif name == "EMPTY_SET":
        m.stack.append(OPAQUE)
    elif name == "APPEND":
        v = m.pop()
        if isinstance(m.top(), list):
            m.top().append(v)
    elif name == "APPENDS":
        items = m.pop_mark()
        if isinstance(m.top(), list):
            m.top().extend(items)
    elif name == "LIST":
        m.stack.append(m.pop_mark())
    elif name == "TUPLE":
        m.stack.append(tuple(m.pop_mark()))
    elif name in ("TUPLE1", "TUPLE2", "TUPLE3"):
        n = int(name[-1])
        items = [m.pop() for _ in range(n)][::-1]
        m.stack.append(tuple(items))
    elif name in ("DICT", "SETITEMS"):
        items = m.pop_mark()
        target = {} if name == "DICT" else m.top()
        if isinstance(target, dict):
            for k, v in zip(items[::2], items[1::2]):
                _set(target, k, v)
        if name == "DICT":
            m.stack.append(target)
    elif name == "SETITEM":
        v, k = m.pop(), m.pop()
        if isinstance(m.top(), dict):
            _set(m.top(), k, v)
    elif name in ("ADDITEMS", "FROZENSET"):
        m.pop_mark()
        if name == "FROZENSET":
            m.stack.append(OPAQUE)
        else:
            m.top()
    else:
        return False
    return True


def _set(d: dict[Any, Any], k: Any, v: Any) -> None:
    try:
        d[k] = v
    except TypeError:
        pass


def _memo_op(m: _Machine, name: str, arg: Any, pos: int) -> bool:
    if name in ("GET", "BINGET", "LONG_BINGET"):
        if arg not in m.memo:
            raise BrokenStream(f"memo key {arg} read before it was written")
        m.stack.append(m.memo[arg])
    elif name in ("PUT", "BINPUT", "LONG_BINPUT"):
        m.memo[arg] = m.top()
    elif name == "MEMOIZE":
        m.memo[len(m.memo)] = m.top()
    else:
        return False
    return True


def _call_op(m: _Machine, name: str, arg: Any, pos: int) -> bool:
    if name == "GLOBAL":
        module, _, gname = str(arg).partition(" ")
        m.stack.append(m.global_(module, gname, pos))
    elif name == "STACK_GLOBAL":
        gname, module = m.pop(), m.pop()
        m.stack.append(m.global_(module, gname, pos))
    elif name == "INST":
        module, _, gname = str(arg).partition(" ")
        g = m.global_(module, gname, pos)
        m.stack.append(Call(g, tuple(m.pop_mark())))
    elif name == "OBJ":
        items = m.pop_mark()
        if not items:
            raise BrokenStream("OBJ without a class")
        m.stack.append(m.call(items[0], pos, tuple(items[1:])))
    elif name == "REDUCE" or name == "NEWOBJ":
        args = m.pop()
        m.stack.append(m.call(m.pop(), pos, args))
    elif name == "NEWOBJ_EX":
        m.pop()
        args = m.pop()
        m.stack.append(m.call(m.pop(), pos, args))
    elif name in ("EXT1", "EXT2", "EXT4"):
        m.find("extension", f"{name} {arg}: a callable from the copyreg extension registry, which "
               "the scanner cannot see (the registry is the loading process's)", pos, f"copyreg.extension:{arg}")
        m.stack.append(OPAQUE)
    else:
        return False
    return True


def _build(m: _Machine, pos: int) -> Call | None:
    state = m.pop()
    target = m.top()
    if isinstance(target, Global):
        m.find("build-on-global", f"BUILD sets attributes on {target.dotted} itself (monkey-patches "
               "a class or module)", pos, target.dotted)
        return None
    if isinstance(target, Call):
        target.state = state
        if isinstance(target.func, Global) and target.func.dotted == "joblib.numpy_pickle.NumpyArrayWrapper":
            return target
    return None


def _step(m: _Machine, op: Any, arg: Any, pos: int) -> Call | None:
    """Apply one opcode. Returns a joblib array wrapper whose raw data follows, else None."""
    name = op.name
    if name in _MEMO:
        _memo_op(m, name, arg, pos)
    elif name in _STRINGS or name in _SCALARS:
        m.stack.append(arg)
    elif name in _OPAQUE:
        m.stack.append(OPAQUE)
    elif name in ("NONE", "NEWTRUE", "NEWFALSE"):
        m.stack.append({"NONE": None, "NEWTRUE": True, "NEWFALSE": False}[name])
    elif name == "MARK":
        m.stack.append(MARK)
    elif name in ("PROTO", "FRAME", "READONLY_BUFFER"):
        pass
    elif name in ("POP", "STOP"):
        m.pop()
    elif name == "POP_MARK":
        m.pop_mark()
    elif name == "DUP":
        m.stack.append(m.top())
    elif name == "BINPERSID":
        m.pop()
        m.stack.append(OPAQUE)
    elif name == "BUILD":
        return _build(m, pos)
    elif not (_container_op(m, name, arg) or _memo_op(m, name, arg, pos) or _call_op(m, name, arg, pos)):
        raise BrokenStream(f"opcode {name} is not understood by the scanner")
    return None


def _joblib_array_bytes(wrapper: Call) -> tuple[int, bool] | None:
    """(bytes of raw data, aligned) that follow a joblib NumpyArrayWrapper; None for object arrays
    (a nested pickle follows instead)."""
    import numpy as np

    state = wrapper.state if isinstance(wrapper.state, dict) else {}
    shape, dtype = state.get("shape"), state.get("dtype")
    if not isinstance(shape, tuple) or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise BrokenStream("a joblib array without a readable shape")
    if not (isinstance(dtype, Call) and isinstance(dtype.args, tuple) and dtype.args
            and isinstance(dtype.args[0], str)):
        raise BrokenStream("a joblib array without a readable dtype")
    try:
        dt = np.dtype(dtype.args[0])
    except TypeError:
        raise BrokenStream(f"a joblib array with an unknown dtype {dtype.args[0]!r}") from None
    if dt.hasobject:
        return None
    return math.prod(shape) * dt.itemsize, "numpy_array_alignment_bytes" in state


def _skip_joblib_data(f: IO[bytes], wrapper: Call, verdict: PickleVerdict, member: str | None) -> None:
    size = _joblib_array_bytes(wrapper)
    if size is None:
        scan_stream(f, verdict, member)  # object array: a nested pickle stream
        return
    nbytes, aligned = size
    if aligned:
        pad = f.read(1)
        if len(pad) != 1:
            raise BrokenStream("truncated joblib array")
        nbytes += pad[0]
    if nbytes:
        f.seek(nbytes - 1, 1)
        if len(f.read(1)) != 1:
            raise BrokenStream("truncated joblib array")


def scan_stream(f: IO[bytes], verdict: PickleVerdict, member: str | None = None) -> None:
    """Walk one pickle stream from ``f``'s position to its STOP; findings go into ``verdict``.
    Raises ``BrokenStream`` for a stream that does not parse."""
    m = _Machine(verdict, member)
    while True:
        try:
            for op, arg, pos in pickletools.genops(f):
                wrapper = _step(m, op, arg, pos or 0)
                if op.name == "STOP":
                    verdict.streams += 1
                    return
                if wrapper is not None:
                    break
            else:
                raise BrokenStream("the stream ends before its STOP opcode")
        except BrokenStream:
            raise
        except Exception as exc:  # genops: unknown opcode, truncated argument, bad text
            raise BrokenStream(str(exc) or type(exc).__name__) from None
        _skip_joblib_data(f, wrapper, verdict, member)


def _more(f: IO[bytes], pos: int) -> bool:
    peek = getattr(f, "peek", None)
    if peek is not None:
        return bool(peek(1))
    more = bool(f.read(1))
    f.seek(pos)
    return more


def scan_pickles(f: IO[bytes], verdict: PickleVerdict, member: str | None = None,
                 max_streams: int | None = None) -> None:
    """Scan every pickle stream in ``f`` until its end (or ``max_streams``). A stream that does not
    parse is a ``broken`` finding: a loader runs every opcode before the break."""
    while max_streams is None or verdict.streams < max_streams:
        pos = f.tell()
        if not _more(f, pos):
            return
        try:
            scan_stream(f, verdict, member)
        except BrokenStream as exc:
            verdict.findings.append(Finding("broken", f"pickle stream {verdict.streams + 1} does not "
                                            f"parse: {exc}", pos, member))
            return
