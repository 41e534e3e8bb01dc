"""One copy of each weight in an exported ONNX graph.

The torch exporter writes a head tied to its embedding twice: the embedding table [V, D] for the
lookup (``Gather``) and the head's weight, transposed and constant-folded, [D, V] for the
``MatMul``. For GPT-2 that second copy is a third of the file. ``share_weights`` finds
initializers that hold the same values (equal, or one the transpose of the other, compared by a
hash of their bytes), keeps one and rewires the other's consumers to it:

- an equal copy: its consumers read the kept initializer;
- a transposed copy read only by ``Gather`` on axis 0 (the embedding lookup): the lookup gathers
  columns of the kept [D, V] matrix (``Gather`` on axis 1) and a ``Transpose`` of the small
  gathered block puts the features last again;
- a transposed copy read otherwise: a ``Transpose`` node of the kept matrix (ONNX Runtime folds it
  when the session loads).

Each rewrite reads the same numbers as before, so the outputs are unchanged, bit for bit. Run after
ONNX Runtime's int8 quantiser too: it quantises the embedding and the head separately, and a
per-tensor int8 copy of the same values is the same int8 matrix, so the two int8 copies become one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIN_VALUES = 1024  # smaller initializers (biases, norms, scales) are not worth comparing
MAX_FILE_BYTES = 1_800_000_000  # a protobuf holds 2 GB; larger exports are left as they are


@dataclass
class Shared:
    """What ``share_weights`` did: the initializers dropped and the bytes they held."""

    dropped: list[str]
    bytes_saved: int
    lookups: list[str]  # the Gather nodes that now read a head's [D, V] matrix (axis 1)


def _digest(arr: Any) -> str:
    import numpy as np

    return hashlib.sha256(np.ascontiguousarray(arr).tobytes()).hexdigest()


def _consumers(graph: Any) -> dict[str, list[tuple[Any, int]]]:
    out: dict[str, list[tuple[Any, int]]] = {}
    for node in graph.node:
        for i, name in enumerate(node.input):
            out.setdefault(name, []).append((node, i))
    return out


def _index_ranks(model: Any) -> dict[str, int]:
    """Rank of every value whose shape ONNX shape inference knows."""
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:  # shape inference refuses some graphs; the generic Transpose rewrite is used
        return {}
    g = inferred.graph
    return {v.name: len(v.type.tensor_type.shape.dim) for v in [*g.value_info, *g.input, *g.output]
            if v.type.tensor_type.HasField("shape")}


def _gather_axis(node: Any) -> int:
    return next((a.i for a in node.attribute if a.name == "axis"), 0)


def _rewire_gathers(graph: Any, uses: list[tuple[Any, int]], kept: str, ranks: dict[str, int],
                    lookups: list[str]) -> bool:
    """Gather(X, idx, axis=0) -> Transpose(Gather(kept, idx, axis=1)) where kept = X^T; False when a
    use is not such a Gather or an index rank is unknown (nothing changed then)."""
    import onnx

    if not all(n.op_type == "Gather" and i == 0 and _gather_axis(n) == 0 and n.input[1] in ranks for n, i in uses):
        return False
    for node, _ in uses:
        rank = ranks[node.input[1]]
        out = node.output[0]
        node.input[0] = kept
        node.output[0] = f"{out}_columns"
        del node.attribute[:]
        node.attribute.append(onnx.helper.make_attribute("axis", 1))
        graph.node.append(onnx.helper.make_node("Transpose", [node.output[0]], [out],
                                                perm=[*range(1, rank + 1), 0], name=f"{node.name}_features_last"))
        lookups.append(node.name)
    return True


def _rewire_transpose(graph: Any, uses: list[tuple[Any, int]], kept: str, dropped: str) -> None:
    import onnx

    out = f"{dropped}_from_{kept}"
    graph.node.append(onnx.helper.make_node("Transpose", [kept], [out], perm=[1, 0], name=f"{out}_transpose"))
    for node, i in uses:
        node.input[i] = out


def _topological(graph: Any) -> None:
    """Reorder the nodes so each comes after the producers of its inputs (the rewrites append)."""
    produced = {i.name for i in graph.initializer} | {i.name for i in graph.input} | {""}
    pending, ordered = list(graph.node), []
    while pending:
        ready = [n for n in pending if all(x in produced for x in n.input)]
        if not ready:  # a cycle cannot come from these rewrites; keep the rest as they were
            ordered += pending
            break
        for n in ready:
            ordered.append(n)
            produced.update(n.output)
        pending = [n for n in pending if n not in ready]
    del graph.node[:]
    graph.node.extend(ordered)


def share_weights(src: Path, dst: Path) -> Shared:
    """Write ``src`` to ``dst`` with each repeated weight stored once (see the module's doc)."""
    import onnx
    from onnx import numpy_helper

    if src.stat().st_size > MAX_FILE_BYTES:
        dst.write_bytes(src.read_bytes())
        return Shared([], 0, [])
    model = onnx.load(str(src))
    graph = model.graph
    uses, ranks = _consumers(graph), _index_ranks(model)
    seen: dict[tuple[int, tuple[int, ...], str], Any] = {}
    dropped: list[Any] = []
    lookups: list[str] = []
    for init in list(graph.initializer):
        arr = numpy_helper.to_array(init)
        if arr.size < MIN_VALUES:
            continue
        same = (init.data_type, tuple(arr.shape), _digest(arr))
        flipped = (init.data_type, tuple(arr.shape[::-1]), _digest(arr.T)) if arr.ndim == 2 else None
        if same in seen:
            for node, i in uses.get(init.name, []):
                node.input[i] = seen[same].name
            dropped.append(init)
        elif flipped is not None and flipped in seen:
            other = seen[flipped]
            if _rewire_gathers(graph, uses.get(init.name, []), other.name, ranks, lookups):
                dropped.append(init)
            elif _rewire_gathers(graph, uses.get(other.name, []), init.name, ranks, lookups):
                dropped.append(other)  # the earlier copy was the lookup's: the head's copy stays
                del seen[flipped]
                seen[same] = init
            else:
                _rewire_transpose(graph, uses.get(init.name, []), other.name, init.name)
                dropped.append(init)
        else:
            seen[same] = init
    names = {i.name for i in dropped}
    saved = sum(numpy_helper.to_array(i).nbytes for i in dropped)
    kept = [i for i in graph.initializer if i.name not in names]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    if dropped:
        _topological(graph)
    onnx.save(model, str(dst))
    return Shared(sorted(names), saved, lookups)


def shared_lookups(path: Path) -> list[str]:
    """The Gather nodes of ``path`` that read a matrix another (non-Gather) node reads too: the
    lookups ``share_weights`` pointed at a head's matrix. ONNX Runtime's quantiser is told to leave
    them alone (``lookup_from_quantized`` then points them at the head's int8 copy)."""
    import onnx

    graph = onnx.load(str(path), load_external_data=False).graph
    inits = {i.name for i in graph.initializer}
    readers: dict[str, set[str]] = {}
    for n in graph.node:
        for x in n.input:
            readers.setdefault(x, set()).add(n.op_type)
    return [n.name for n in graph.node if n.op_type == "Gather" and n.input[0] in inits
            and readers[n.input[0]] - {"Gather"}]


def lookup_from_quantized(src: Path, dst: Path) -> Shared:
    """After ONNX Runtime's int8 quantiser: each lookup still reading an fp32 matrix of which the
    quantiser made an int8 copy for the head (``NAME_quantized``, one scale and zero point) reads
    the int8 copy and dequantises the gathered rows, so the fp32 matrix is dropped and the file
    holds the tied matrix once, in int8. The embedding then reads the head's int8 values, as
    ``torch.ao-int8`` does."""
    import onnx
    from onnx import numpy_helper

    model = onnx.load(str(src))
    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    done: list[str] = []
    for node in [n for n in graph.node if n.op_type == "Gather" and n.input[0] in inits]:
        name = node.input[0]
        q, scale, zp = f"{name}_quantized", f"{name}_scale", f"{name}_zero_point"
        if inits[name].data_type != onnx.TensorProto.FLOAT or not all(k in inits for k in (q, scale, zp)) or \
                numpy_helper.to_array(inits[scale]).size != 1:
            continue  # not a matrix the quantiser made an int8 copy of (or it is per channel)
        out = node.output[0]
        node.input[0], node.output[0] = q, f"{out}_int8"
        graph.node.append(onnx.helper.make_node("DequantizeLinear", [node.output[0], scale, zp], [out],
                                                name=f"{node.name}_dequantize"))
        done.append(node.name)
    still_used = {x for n in graph.node for x in n.input}
    gone = {n for n in inits if n not in still_used and n not in {o.name for o in graph.output}}
    saved = sum(numpy_helper.to_array(inits[n]).nbytes for n in gone)
    kept = [i for i in graph.initializer if i.name not in gone]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    _topological(graph)
    onnx.save(model, str(dst))
    return Shared(sorted(gone), saved, done)
