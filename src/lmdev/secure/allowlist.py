"""The callables a legitimate model file may reach from a pickle, each with the reason it is safe.

The scanner is an allowlist: a pickle that names anything not listed here is unsafe. An entry
belongs here only when calling it with attacker-chosen arguments cannot run code, touch files or
import arbitrary modules: it builds a tensor, a container or a numeric value. Arguments that are
themselves callables (a storage class, a tensor subclass, a defaultdict factory) are globals of
their own and are judged against this same list.
"""

from __future__ import annotations

# Python 2 names that pickle protocols 0-2 write for Python 3 objects (pickle's fix_imports).
MODULE_ALIASES = {"__builtin__": "builtins", "copy_reg": "copyreg"}

_TORCH_REBUILD = (
    "_rebuild_tensor", "_rebuild_tensor_v2", "_rebuild_tensor_v3", "_rebuild_parameter",
    "_rebuild_parameter_with_state", "_rebuild_qtensor", "_rebuild_sparse_tensor",
    "_rebuild_nested_tensor", "_rebuild_device_tensor_from_numpy", "_rebuild_meta_tensor_no_storage",
)
_TORCH_STORAGES = (
    "FloatStorage", "DoubleStorage", "HalfStorage", "BFloat16Storage", "LongStorage", "IntStorage",
    "ShortStorage", "CharStorage", "ByteStorage", "BoolStorage", "ComplexFloatStorage",
    "ComplexDoubleStorage", "QInt8Storage", "QUInt8Storage", "QInt32Storage", "QUInt4x2Storage",
    "QUInt2x4Storage", "UntypedStorage", "TypedStorage",
)
_TORCH_DTYPES = (
    "float32", "float", "float64", "double", "float16", "half", "bfloat16", "int8", "uint8", "int16",
    "short", "int32", "int", "int64", "long", "bool", "complex32", "complex64", "complex128", "cfloat",
    "cdouble", "uint16", "uint32", "uint64", "float8_e4m3fn", "float8_e5m2", "float8_e4m3fnuz",
    "float8_e5m2fnuz", "qint8", "quint8", "qint32", "quint4x2",
)
_TORCH_LAYOUTS = ("strided", "sparse_coo", "sparse_csr", "contiguous_format", "channels_last",
                  "channels_last_3d", "preserve_format")

# (module, name) -> why it is safe
ALLOWED: dict[tuple[str, str], str] = {}


def _allow(module: str, names: tuple[str, ...] | list[str], why: str) -> None:
    for name in names:
        ALLOWED[(module, name)] = why


_allow("torch._utils", _TORCH_REBUILD,
       "torch's tensor rebuild functions: build a tensor view over a storage the loader provides")
_allow("torch", _TORCH_STORAGES, "storage classes named in torch's persistent ids: select a dtype")
_allow("torch.storage", ("UntypedStorage", "TypedStorage"), "storage classes (no code on construction)")
_allow("torch", _TORCH_DTYPES, "dtype constants (getattr of a value, no call)")
_allow("torch", _TORCH_LAYOUTS, "layout / memory-format constants (no call)")
_allow("torch", ("device", "Size", "Tensor"), "a device name, a shape tuple, the tensor class")
_allow("torch.nn.parameter", ("Parameter",), "wraps a tensor as a parameter")
_allow("torch._tensor", ("_rebuild_from_type_v2",),
       "calls its first argument (itself a global, judged here) and casts to a tensor subclass")
_allow("torch.serialization", ("_get_layout",), "maps a layout name to a torch.layout constant")
_allow("collections", ("OrderedDict",), "the dict type of every state_dict")
_allow("collections", ("defaultdict",), "a dict; its factory is a global judged on its own")
_allow("numpy.core.multiarray", ("_reconstruct", "scalar"), "numpy's ndarray / scalar reconstructors")
_allow("numpy._core.multiarray", ("_reconstruct", "scalar"), "numpy 2's ndarray / scalar reconstructors")
_allow("numpy.core.numeric", ("_frombuffer",), "an array over a protocol-5 buffer")
_allow("numpy._core.numeric", ("_frombuffer",), "an array over a protocol-5 buffer (numpy 2)")
_allow("numpy", ("ndarray", "dtype"), "the array type and dtypes (a dtype is parsed from a string)")
_allow("joblib.numpy_pickle", ("NumpyArrayWrapper",), "joblib's array header; the data follows raw")
_allow("builtins", ("set", "frozenset", "complex", "slice", "bytearray", "bytes", "range", "int",
                    "float", "bool", "str", "dict", "list", "tuple"),
       "builtin value types: build a value from values")
_allow("copyreg", ("_reconstructor",), "protocol 0/1 object rebuild; the class and base are judged")
_allow("_codecs", ("encode",),
       "protocol 0-2 bytes: str.encode via the codec registry, which imports only encodings.*")


def canonical(module: str, name: str) -> tuple[str, str]:
    return MODULE_ALIASES.get(module, module), name


def is_allowed(module: str, name: str) -> bool:
    return canonical(module, name) in ALLOWED
_allow("torch.distributed.checkpoint.metadata",
       ("Metadata", "TensorStorageMetadata", "BytesStorageMetadata", "ChunkStorageMetadata",
        "TensorProperties", "MetadataIndex", "StorageMeta"),
       "distributed-checkpoint .metadata dataclasses: built without __init__, fields set by BUILD")
_allow("torch.distributed.checkpoint.metadata", ("_MEM_FORMAT_ENCODING",),
       "an Enum of memory formats: calling it looks a member up by value")
_allow("torch.distributed.checkpoint.filesystem", ("_StorageInfo",),
       "distributed-checkpoint storage record (a dataclass: relative path, offset, length)")
_allow("pathlib", ("PosixPath", "PurePosixPath"), "a path value; constructing one does no I/O")
