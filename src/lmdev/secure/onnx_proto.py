"""A minimal protobuf walk of an ONNX model that collects its tensors' external-data locations.

It follows only the fields that can hold tensors (graph initializers, node attributes, subgraphs)
and skips everything else by length, so the weights are never decoded. Field numbers are ONNX's
(onnx/onnx.proto3).
"""

from __future__ import annotations

from collections.abc import Iterator

# message -> {field number: message kind of that field}
_FIELDS = {
    "model": {7: "graph"},
    "graph": {1: "node", 5: "tensor", 15: "sparse"},
    "node": {5: "attribute"},
    "attribute": {5: "tensor", 6: "graph", 10: "tensor", 11: "graph", 22: "sparse", 23: "sparse"},
    "sparse": {1: "tensor", 2: "tensor"},
    "tensor": {13: "entry"},
    "entry": {},
}
MAX_DEPTH = 64


class NotProtobuf(Exception):
    pass


def _varint(buf: memoryview, i: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        if i >= len(buf) or shift > 63:
            raise NotProtobuf("truncated varint")
        b = buf[i]
        i += 1
        result |= (b & 0x7F) << shift
        if not b & 0x80:
            return result, i
        shift += 7


def fields(buf: memoryview) -> Iterator[tuple[int, int, object]]:
    """(field number, wire type, value) of one message: value is an int or a memoryview."""
    i = 0
    while i < len(buf):
        key, i = _varint(buf, i)
        number, wire = key >> 3, key & 7
        value: int | memoryview
        if number == 0:
            raise NotProtobuf("field number 0")
        if wire == 0:
            value, i = _varint(buf, i)
        elif wire == 1 or wire == 5:
            width = 8 if wire == 1 else 4
            if i + width > len(buf):
                raise NotProtobuf("truncated fixed field")
            value, i = 0, i + width
        elif wire == 2:
            n, i = _varint(buf, i)
            if i + n > len(buf):
                raise NotProtobuf("length past the end")
            value, i = buf[i:i + n], i + n
        else:
            raise NotProtobuf(f"wire type {wire}")
        yield number, wire, value


def external_locations(buf: memoryview, kind: str = "model", depth: int = 0) -> list[str]:
    """Every external_data ``location`` in the message ``buf`` of ``kind``."""
    if depth > MAX_DEPTH:
        raise NotProtobuf("nesting too deep")
    out: list[str] = []
    children = _FIELDS[kind]
    for number, wire, value in fields(buf):
        if kind == "entry":
            continue
        child = children.get(number)
        if child is None or wire != 2:
            continue
        assert isinstance(value, memoryview)
        if child == "entry":
            entry = {n: bytes(v) for n, w, v in fields(value) if w == 2 and isinstance(v, memoryview)}
            if entry.get(1) == b"location":
                out.append(entry.get(2, b"").decode("utf-8", "replace"))
        else:
            out.extend(external_locations(value, child, depth + 1))
    return out


def looks_like_onnx(buf: memoryview) -> bool:
    """An ONNX ModelProto starts with ir_version (field 1, varint) and has a graph (field 7)."""
    if len(buf) < 2 or buf[0] != 0x08:
        return False
    try:
        return any(number == 7 and wire == 2 for number, wire, _ in fields(buf))
    except NotProtobuf:
        return False
