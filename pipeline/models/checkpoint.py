"""Reads tensors out of PyTorch checkpoint files without ever running code from them.

Checkpoints are pickles, and a pickle can import and call anything. Files from the internet
are read here with an unpickler that knows exactly the few functions that rebuild tensors
and plain containers; every other name a file mentions (Lightning callbacks, numpy scalars,
TorchScript classes, `os.system`) becomes an inert `Opaque` placeholder that records what it
was given and does nothing. Three layouts are read: `torch.save` zip files, TorchScript
archives (OpenAI's CLIP `.pt` files) and the legacy pre-1.6 `torch.save` format. A
`.safetensors` file (OpenCLIP's) holds no pickle at all: a JSON header of names, dtypes and
shapes, then the numbers; `Safetensors` reads it the same way.

Tensors come out of the pickle as `TensorRef`s, and only the ones a model needs are read from
disk: a transformer checkpoint whose VQGAN is its first stage does not load the transformer.
"""

from __future__ import annotations

import _compat_pickle
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
from pipeline.models.files import file_sha256

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
    `args` and `state` and nothing happens: the named class is never imported. A dict or list
    subclass (Lightning's `AttributeDict` hyper-parameters, a `defaultdict`) gets its items
    the way a pickle gives them, kept in `items` (by key) and `elements` (in order).
    """

    qualname = "?"

    def __new__(cls, *args: Any, **kwargs: Any) -> Opaque:
        self = super().__new__(cls)
        self.args = args
        self.state = None
        self.items = {}
        self.elements = []
        return self

    def __setstate__(self, state: Any) -> None:
        self.state = state

    def __setitem__(self, key: Any, value: Any) -> None:
        self.items[key] = value

    def append(self, value: Any) -> None:
        self.elements.append(value)

    def extend(self, values: Any) -> None:
        self.elements.extend(values)

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


class UnsafePickle(pickle.UnpicklingError):
    """A pickle that names a function which would run code if called (`os.system`, `eval`)."""

    def __init__(self, module: str, name: str):
        super().__init__(f"{module}.{name}")
        self.global_name = f"{module}.{name}"


# Modules whose globals run code, or touch files, processes or the network, when called: a
# checkpoint has no reason to name them, so one that does is refused rather than read. (Any
# other name becomes an inert placeholder: Lightning's classes, numpy's, TorchScript's.)
_UNSAFE_MODULES = {
    "os", "posix", "nt", "subprocess", "sys", "shutil", "socket", "importlib", "runpy", "pty",
    "code", "codeop", "ctypes", "webbrowser", "pickle", "_pickle", "marshal", "io", "_io",
    "tempfile", "multiprocessing", "threading", "signal", "pydoc", "timeit", "asyncio",
    "http", "urllib", "ftplib", "smtplib", "telnetlib", "torch.hub", "numpy.f2py",
}  # fmt: skip
# Builtins that run code, touch files or reach other objects when called. Any other
# builtin (object, Ellipsis, set, ...) becomes inert data like every other global.
_UNSAFE_BUILTINS = {
    "eval", "exec", "compile", "__import__", "open", "getattr", "setattr", "delattr",
    "globals", "locals", "vars", "input", "breakpoint", "print", "exit", "quit", "help",
}  # fmt: skip


def _unsafe(module: str, name: str) -> bool:
    if module in ("builtins", "__builtin__"):
        return name in _UNSAFE_BUILTINS or name.startswith("_")
    if (module, name) == ("sys", "intern"):  # Python 2's builtin intern, as protocol 2 names it
        return False
    return any(module == root or module.startswith(root + ".") for root in _UNSAFE_MODULES)


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves globals only to the trusted rebuild functions, dtypes and placeholders, and
    refuses the ones that would run code."""

    def __init__(self, file: IO[bytes], storage_id_length: int | None = None):
        super().__init__(file)
        self._storage_id_length = storage_id_length
        self.storages: dict[str, StorageRef] = {}

    def find_class(self, module: str, name: str) -> Any:
        # Protocol 2 pickles name builtins as Python 2 did (`__builtin__.long` for int).
        if (module, name) in _compat_pickle.NAME_MAPPING:
            module, name = _compat_pickle.NAME_MAPPING[(module, name)]
        module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        if (module, name) in _TRUSTED:
            return _TRUSTED[(module, name)]
        if module == "torch" and name in _STORAGE_DTYPES:
            return _STORAGE_DTYPES[name]
        if _unsafe(module, name):
            raise UnsafePickle(module, name)
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


class OtherKind(pickle.UnpicklingError):
    """A whole, readable file that is not a checkpoint this reader takes; says what it is."""


def _load_error(path: Path, error: Exception) -> ModelError:
    """What went wrong reading `path`, as one of three stories: the file tried to run code
    (do not use it), it is not a PyTorch checkpoint at all (what it looks like instead), or
    it is cut short or corrupt (download it again)."""
    if isinstance(error, UnsafePickle):
        return ModelError(
            f"{path} is unsafe: reading it would call {error.global_name}, which runs code. "
            "Nothing was run. Do not use this file; get the model from its official source "
            "(`feverdream models download NAME`)."
        )
    looks_like = str(error) if isinstance(error, OtherKind) else _looks_like(path)
    if looks_like:
        return ModelError(
            f"{path} is not a PyTorch checkpoint: it looks like {looks_like}. If it came from "
            "a download, the server sent something else; delete it and download it again, or "
            "fetch the file by hand (`feverdream models path NAME` says where it goes)."
        )
    return ModelError(
        f"{path} is a cut-short or corrupt PyTorch checkpoint ({type(error).__name__}: "
        f"{error}). Delete it and download it again."
    )


def _looks_like(path: Path) -> str | None:
    """What a file that is not a PyTorch checkpoint seems to be, from its first bytes; None
    when it starts like one (a zip or a pickle), so the trouble is inside it."""
    try:
        with open(path, "rb") as file:
            head = file.read(512)
    except OSError:
        return None
    text = head.lstrip().lower()
    if head.startswith(b"PK") or head[:1] == b"\x80":
        return None
    if not head:
        return "an empty file"
    if text.startswith((b"<!doctype html", b"<html", b"<head", b"<?xml")) or b"<html" in text:
        return "a web page (HTML)"
    if text.startswith((b"{", b"[")):
        return "a JSON document"
    if head.startswith(b"version https://git-lfs"):
        return "a Git LFS pointer, not the file it points to"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip archive (unpack it first)"
    if head.startswith(b"GGUF") or head[8:9] == b"{":
        return "a GGUF or safetensors file"
    if all(32 <= byte < 127 or byte in b"\r\n\t" for byte in head):
        return "a text file"
    return "some other kind of file"


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
            shown = ", ".join(sorted(names)[:3]) + (", ..." if len(names) > 3 else "")
            raise OtherKind(f"a zip archive of other files ({shown}): unpack it first?")
        self._prefix = pickles[0][: -len("data.pkl")]
        byteorder = self._prefix + "byteorder"
        if byteorder in names and archive.read(byteorder) != b"little":
            raise OtherKind(
                "a checkpoint written on a big-endian machine: load and save it again with "
                "torch on an ordinary (little-endian) computer"
            )
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
            raise OtherKind("a Python pickle that torch.save did not write")
        system = plain()
        if isinstance(system, dict) and not system.get("little_endian", True):
            raise OtherKind(
                "a checkpoint written on a big-endian machine: load and save it again with "
                "torch on an ordinary (little-endian) computer"
            )
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
        raise ModelError(f"{path} holds no state dict: it looks like {kind_of(root)}")
    return {k: v for k, v in root.items() if isinstance(k, str) and isinstance(v, TensorRef)}


# What a state dict's tensor names say it is, by the prefixes they start with.
_KINDS = (
    (("model.diffusion_model.",), "a Stable Diffusion checkpoint"),
    (("first_stage_model.", "transformer."), "a taming transformer (its VQGAN is its first stage)"),
    (("encoder.", "decoder.", "quantize."), "a VQGAN checkpoint"),
    (("visual.", "token_embedding.", "ln_final."), "a CLIP model's weights"),
    (("pretrained.", "depth_head."), "a Depth Anything depth model"),
    (("first_stage_model.", "cond_stage_model."), "a latent diffusion checkpoint"),
)


def kind_of(root: Any) -> str:
    """What a checkpoint's unpickled object looks like, in words, for an error message that
    says which kind of file it is when it is not the kind asked for."""
    if isinstance(root, Opaque):
        if root.qualname.startswith("__torch__."):
            module = root.qualname[len("__torch__.") :]
            return f"a TorchScript module ({module}), like OpenAI's CLIP files"
        return f"a pickled {root.qualname} object"
    if isinstance(root, dict) and isinstance(root.get("state_dict"), dict):
        root = root["state_dict"]
    if not isinstance(root, dict):
        return f"a pickled {type(root).__name__}"
    names = [
        key for key, value in root.items() if isinstance(key, str) and isinstance(value, TensorRef)
    ]
    if not names:
        return "a checkpoint with no tensors"
    for prefixes, kind in _KINDS:
        if all(any(name.startswith(prefix) for name in names) for prefix in prefixes):
            return kind
    tops = sorted({name.split(".", 1)[0] for name in names})
    more = ", ..." if len(tops) > 4 else ""
    return f"a checkpoint of {len(names)} tensors named {', '.join(tops[:4])}{more}"


SAFETENSORS_HEADER_LIMIT = 100_000_000  # the format's own limit on its JSON header


def is_safetensors(path: Path) -> bool:
    """Whether a file is laid out as safetensors: an 8-byte header length, then JSON."""
    with open(path, "rb") as file:
        start = file.read(9)
    if len(start) < 9:
        return False
    (length,) = struct.unpack("<Q", start[:8])
    return 2 <= length <= min(SAFETENSORS_HEADER_LIMIT, Path(path).stat().st_size - 8) and (
        start[8:9] == b"{"
    )


@dataclass(frozen=True)
class NamedRef:
    """A tensor in a safetensors file, not yet read."""

    key: str
    shape: tuple[int, ...]


class Safetensors:
    """An open `.safetensors` file: `refs` names its tensors with their shapes, `tensor(ref)`
    reads one. Use as a context manager."""

    def __init__(self, path: Path):
        from safetensors import safe_open

        self.path = Path(path)
        try:
            self._file = safe_open(str(path), framework="pt", device="cpu")
            self.refs = {
                key: NamedRef(key, tuple(self._file.get_slice(key).get_shape()))
                for key in self._file.keys()  # noqa: SIM118 (not a dict)
            }
        except Exception as error:  # a broken header or a cut-off file, told the same way
            raise ModelError(
                f"{path} is not a readable safetensors file ({error}): it may be incomplete "
                "or damaged; fetch it again"
            ) from error

    def __enter__(self) -> Safetensors:
        return self

    def __exit__(self, *_: object) -> None:
        self._file = None

    def tensor(self, ref: NamedRef) -> torch.Tensor:
        try:
            return self._file.get_tensor(ref.key)
        except Exception as error:
            raise ModelError(f"{self.path}: cannot read the tensor {ref.key} ({error})") from error


def load_state_checked(
    model: nn.Module,
    refs: dict[str, TensorRef] | dict[str, NamedRef],
    checkpoint: Checkpoint | Safetensors,
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
