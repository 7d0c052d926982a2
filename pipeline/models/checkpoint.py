"""Reads tensors out of PyTorch checkpoint files without ever running code from them.

Checkpoints are pickles, and a pickle can import and call anything. Files from the internet
are read here with an unpickler that knows exactly the few functions that rebuild tensors
and plain containers; every other name a file mentions (Lightning callbacks, numpy scalars,
TorchScript classes, `os.system`) becomes an inert `Opaque` placeholder that records what it
was given and does nothing. Three layouts are read: `torch.save` zip files, TorchScript
archives (OpenAI's CLIP `.pt` files) and the legacy pre-1.6 `torch.save` format.

Tensors come out of the pickle as `TensorRef`s, and only the ones a model needs are read from
disk: a transformer checkpoint whose VQGAN is its first stage does not load the transformer.
"""

from __future__ import annotations

import pickle
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch
from torch import nn

from pipeline.errors import ModelError
from pipeline.models.registry import file_sha256

# The storage classes a pickle names, by the dtype of the elements they hold.
_STORAGE_DTYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "UntypedStorage": torch.uint8,
}
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001


class Opaque:
    """Stands in for an object of a class the checkpoint names but this reader does not trust.

    Built with `cls(*args)` or `cls.__new__(cls, *args)` and `__setstate__(state)`, it keeps
    `args` and `state` and nothing happens: the named class is never imported.
    """

    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Opaque:
        self = super().__new__(cls)
        self.args = args
        self.state = None
        return self

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __repr__(self) -> str:
        return f"<opaque {self.qualname}>"


_placeholders: dict[tuple[str, str], type[Opaque]] = {}


def _placeholder(module: str, name: str) -> type[Opaque]:
    """One inert class per global name, so a class used as a dict key stays one key."""
    key = (module, name)
    if key not in _placeholders:
        _placeholders[key] = type(name, (Opaque,), {"qualname": f"{module}.{name}"})
    return _placeholders[key]


def _sealed(self: object, state: object) -> None:
    """A pickle's BUILD opcode would otherwise rewrite a reference after it was checked."""
    raise pickle.UnpicklingError("a pickle tried to modify a tensor reference or loader function")


@dataclass(frozen=True, slots=True)
class StorageRef:
    """A block of tensor data in the file: its key, element type and element count."""

    key: str
    dtype: torch.dtype
    numel: int
    base: int = 0  # a legacy storage view starts this many elements into its root storage

    __setstate__ = _sealed


@dataclass(frozen=True, slots=True)
class TensorRef:
    """A tensor in a checkpoint, not yet read: a strided view into a storage."""

    storage: StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]

    __setstate__ = _sealed


def _is_int_tuple(value: Any) -> bool:
    return isinstance(value, tuple) and all(isinstance(v, int) and v >= 0 for v in value)


def _rebuild_tensor(storage: Any, offset: Any, size: Any, stride: Any, *_: Any) -> TensorRef:
    """Our `torch._utils._rebuild_tensor_v2`: a view into a storage, bounds-checked here.

    Requires-grad flags, backward hooks and metadata are dropped: nothing but numbers is kept.
    """
    if not (isinstance(storage, StorageRef) and isinstance(offset, int) and offset >= 0):
        raise pickle.UnpicklingError("a tensor without a storage")
    if not (_is_int_tuple(size) and _is_int_tuple(stride) and len(size) == len(stride)):
        raise pickle.UnpicklingError("a tensor with a malformed shape")
    if 0 not in size:
        extent = offset + sum((n - 1) * s for n, s in zip(size, stride, strict=True)) + 1
        if extent > storage.numel:
            raise pickle.UnpicklingError("a tensor that reaches past the end of its data")
    return TensorRef(storage, offset, size, stride)


def _rebuild_parameter(data: Any, *_: Any) -> TensorRef:
    if not isinstance(data, TensorRef):
        raise pickle.UnpicklingError("a parameter without a tensor")
    return data


class _Trusted:
    """One of the functions a pickle may call, handed out wrapped: a pickle can apply BUILD to
    anything it holds, and on a bare function that would rewrite its defaults for later loads."""

    __slots__ = ("function",)
    __setstate__ = _sealed

    def __init__(self, function: Callable[..., TensorRef]):
        self.function = function

    def __call__(self, *args: Any) -> TensorRef:
        return self.function(*args)


_REBUILD_TENSOR = _Trusted(_rebuild_tensor)
_REBUILD_PARAMETER = _Trusted(_rebuild_parameter)


def _rebuild_from_type(func: Any, _new_type: Any, args: Any, _state: Any) -> TensorRef:
    """A tensor pickled with extra attributes: rebuild the plain tensor, drop the rest."""
    if func not in (_REBUILD_TENSOR, _REBUILD_PARAMETER) or not isinstance(args, tuple):
        raise pickle.UnpicklingError("a tensor of an unsupported kind")
    return func(*args)


# OrderedDict is a C type, whose attributes a pickle cannot set.
_TRUSTED: dict[tuple[str, str], Any] = {
    ("torch._utils", "_rebuild_tensor_v2"): _REBUILD_TENSOR,
    ("torch._utils", "_rebuild_parameter"): _REBUILD_PARAMETER,
    ("torch._utils", "_rebuild_parameter_with_state"): _REBUILD_PARAMETER,
    ("torch._tensor", "_rebuild_from_type_v2"): _Trusted(_rebuild_from_type),
    ("collections", "OrderedDict"): OrderedDict,
}


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves globals only to the trusted rebuild functions, dtypes and placeholders."""

    def __init__(self, file: IO[bytes], storage_id_length: int | None = None):
        super().__init__(file)
        self._storage_id_length = storage_id_length
        self.storages: dict[str, StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _TRUSTED:
            return _TRUSTED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        return _placeholder(module, name)

    def persistent_load(self, pid: Any) -> StorageRef:
        """('storage', dtype, key, location, numel[, legacy view]) -> a StorageRef."""
        length = self._storage_id_length
        if not (length and isinstance(pid, tuple) and len(pid) == length and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"an unknown persistent id {pid!r:.80}")
        dtype, key, numel = pid[1], pid[2], pid[4]
        if not (isinstance(dtype, torch.dtype) and isinstance(key, str)):
            raise pickle.UnpicklingError(f"a malformed storage id {pid!r:.80}")
        if not (isinstance(numel, int) and numel >= 0):
            raise pickle.UnpicklingError("a storage of impossible size")
        root = self.storages.setdefault(key, StorageRef(key, dtype, numel))
        if root.dtype != dtype or root.numel != numel:
            raise pickle.UnpicklingError(f"storage {key} is described two ways")
        view = pid[5] if length == 6 else None
        if view is None:
            return root
        _, base, view_numel = view
        if not (isinstance(base, int) and isinstance(view_numel, int) and base >= 0):
            raise pickle.UnpicklingError("a malformed storage view")
        if base + view_numel > numel:
            raise pickle.UnpicklingError("a storage view past the end of its storage")
        return StorageRef(key, dtype, view_numel, base)


def _read_into(file: IO[bytes], tensor: torch.Tensor) -> None:
    """Fill a flat tensor with raw little-endian bytes from `file`."""
    view = memoryview(tensor.view(torch.uint8).numpy())
    filled = 0
    while filled < len(view):
        count = file.readinto(view[filled:])
        if not count:
            raise EOFError("the file ends inside a tensor's data")
        filled += count


def _load_error(path: Path, error: Exception) -> ModelError:
    return ModelError(
        f"{path} is not a readable PyTorch checkpoint ({type(error).__name__}: {error}). "
        "It may be corrupt or a partial download: delete it and download it again."
    )


class Checkpoint:
    """An open checkpoint: `root` is its unpickled object, with every tensor as a TensorRef;
    `tensor(ref)` reads one from disk. Use as a context manager."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.is_torchscript = False
        self._file: IO[bytes] | None = None
        self._archive: zipfile.ZipFile | None = None
        self._prefix = ""
        self._roots: dict[str, StorageRef] = {}
        self._offsets: dict[str, int] = {}  # legacy format: where each storage's data starts
        self._storages: dict[str, torch.Tensor] = {}
        try:
            self.root = self._open()
        except OSError as error:
            self.close()
            raise ModelError(f"cannot read {path}: {error.strerror or error}") from error
        except Exception as error:  # any failure inside the file is the same story for the user
            self.close()
            raise _load_error(self.path, error) from error

    def __enter__(self) -> Checkpoint:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()

    def close(self) -> None:
        self._storages.clear()
        if self._archive is not None:
            self._archive.close()
        if self._file is not None:
            self._file.close()

    def _open(self) -> Any:
        self._file = open(self.path, "rb")
        if zipfile.is_zipfile(self._file):
            self._archive = zipfile.ZipFile(self._file)
            return self._open_zip(self._archive)
        self._file.seek(0)
        return self._open_legacy(self._file)

    def _open_zip(self, archive: zipfile.ZipFile) -> Any:
        """A `torch.save` zip or a TorchScript archive: <prefix>/data.pkl, <prefix>/data/<key>."""
        names = set(archive.namelist())
        pickles = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if len(pickles) != 1:
            raise pickle.UnpicklingError("a zip file that is not a PyTorch checkpoint")
        self._prefix = pickles[0][: -len("data.pkl")]
        byteorder = self._prefix + "byteorder"
        if byteorder in names and archive.read(byteorder) != b"little":
            raise pickle.UnpicklingError("a big-endian checkpoint")
        self.is_torchscript = self._prefix + "constants.pkl" in names
        with archive.open(pickles[0]) as file:
            unpickler = _RestrictedUnpickler(file, storage_id_length=5)
            root = unpickler.load()
        self._roots = unpickler.storages
        for storage in self._roots.values():
            info = archive.getinfo(f"{self._prefix}data/{storage.key}")
            if info.file_size < storage.numel * storage.dtype.itemsize:
                raise pickle.UnpicklingError(f"tensor data {storage.key} is cut short")
        return root

    def _open_legacy(self, file: IO[bytes]) -> Any:
        """Pre-1.6 `torch.save`: magic, protocol, system info, the object, its storage keys,
        then each storage's element count and data, in that order."""

        def plain() -> Any:
            return _RestrictedUnpickler(file).load()

        if plain() != _LEGACY_MAGIC or plain() != _LEGACY_PROTOCOL:
            raise pickle.UnpicklingError("not a PyTorch checkpoint")
        system = plain()
        if isinstance(system, dict) and not system.get("little_endian", True):
            raise pickle.UnpicklingError("a big-endian checkpoint")
        unpickler = _RestrictedUnpickler(file, storage_id_length=6)
        root = unpickler.load()
        keys = plain()
        self._roots = unpickler.storages
        if not (isinstance(keys, list) and set(keys) == set(self._roots)):
            raise pickle.UnpicklingError("a storage list that does not match the object")
        size = self.path.stat().st_size
        for key in keys:
            expected = self._roots[key].numel
            (numel,) = struct.unpack("<q", file.read(8))
            if numel != expected:
                raise pickle.UnpicklingError(f"storage {key} has {numel} elements, not {expected}")
            self._offsets[key] = file.tell()
            if file.seek(numel * self._roots[key].dtype.itemsize, 1) > size:
                raise EOFError("the file ends inside a tensor's data")
        return root

    def _storage(self, ref: StorageRef) -> torch.Tensor:
        if ref.key not in self._storages:
            flat = torch.empty(self._roots[ref.key].numel, dtype=ref.dtype)
            if self._archive is not None:
                with self._archive.open(f"{self._prefix}data/{ref.key}") as data:
                    _read_into(data, flat)
            else:
                assert self._file is not None
                self._file.seek(self._offsets[ref.key])
                _read_into(self._file, flat)
            self._storages[ref.key] = flat
        return self._storages[ref.key]

    def tensor(self, ref: TensorRef) -> torch.Tensor:
        """Read one tensor (a CPU tensor sharing memory with others from the same storage)."""
        try:
            storage = self._storage(ref.storage)
            return storage.as_strided(ref.shape, ref.stride, ref.storage.base + ref.offset)
        except Exception as error:
            raise _load_error(self.path, error) from error


def module_tensors(root: Opaque) -> dict[str, TensorRef]:
    """Every tensor in a TorchScript module tree, by dotted attribute path (its state dict
    plus any tensor attributes, such as attention masks, that were not parameters)."""
    tensors: dict[str, TensorRef] = {}
    seen: set[int] = set()
    stack: list[tuple[str, Opaque]] = [("", root)]
    while stack:
        prefix, node = stack.pop()
        if id(node) in seen or not isinstance(node.state, dict):
            continue
        seen.add(id(node))
        for name, value in node.state.items():
            if isinstance(value, TensorRef):
                tensors[prefix + str(name)] = value
            elif isinstance(value, Opaque):
                stack.append((f"{prefix}{name}.", value))
    return tensors


def state_dict_refs(root: Any, path: Path) -> dict[str, TensorRef]:
    """The tensors of a checkpoint that holds a state dict, bare or under "state_dict"."""
    if isinstance(root, dict) and isinstance(root.get("state_dict"), dict):
        root = root["state_dict"]
    if not isinstance(root, dict):
        raise ModelError(f"{path} holds no state dict")
    return {k: v for k, v in root.items() if isinstance(k, str) and isinstance(v, TensorRef)}


def load_state_checked(
    model: nn.Module,
    refs: dict[str, TensorRef],
    checkpoint: Checkpoint,
    what: str,
    ignore_extra: bool = False,
) -> None:
    """Check every tensor's name and shape against the model, then read and load them;
    one readable ModelError lists whatever does not fit."""
    expected = model.state_dict()
    missing = [key for key in expected if key not in refs]
    extra = [] if ignore_extra else [key for key in refs if key not in expected]
    wrong = [
        f"{key} is {refs[key].shape} in the file but {tuple(value.shape)} here"
        for key, value in expected.items()
        if key in refs and refs[key].shape != tuple(value.shape)
    ]
    problems = []
    for label, keys in (("shape mismatch", wrong), ("missing", missing), ("unexpected", extra)):
        if keys:
            more = f" (and {len(keys) - 3} more)" if len(keys) > 3 else ""
            problems.append(f"{label}: {'; '.join(keys[:3])}{more}")
    if problems:
        raise ModelError(f"{what}. " + ". ".join(problems))
    model.load_state_dict({key: checkpoint.tensor(refs[key]) for key in expected})


def verify_sha256(path: Path, expected: str | None, name: str = "") -> str:
    """The file's SHA-256; raises ModelError before anything reads it if it is not `expected`."""
    actual = file_sha256(path)
    if expected and actual != expected.lower():
        fix = (
            f"Delete it and fetch it again with `feverdream models download {name}`."
            if name
            else "Delete it and get it again (a file that came with feverdream: reinstall it)."
        )
        raise ModelError(
            f"{path} has SHA-256 {actual}, but {expected} was expected: the file is corrupt, "
            f"incomplete or not the one it claims to be. {fix}"
        )
    return actual
