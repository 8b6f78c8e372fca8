"""Checkpoint folders: the one owner of the on-disk model format (save and load).

A checkpoint is a folder with

- ``config.json``: ``{"format", "format_version", "model": <ModelConfig>, ...}``.
  ``format`` is ``smu_explain.midibert`` (a pre-trained encoder with its attribute and
  masker heads: kind ``"pretrained"``) or ``smu_explain.finetuned`` (an encoder plus a
  task head: kind ``"finetuned"``, with ``task``, ``level``, ``classes``, ``head``).
  The other keys are the metadata saved with the model (``strategy``, ``training``,
  ``training_data``, ``pretrained``, ``finetune``, ``results``...); loaded, they are the
  model's ``checkpoint_info``.
- ``model.safetensors``: the weights. Never a pickle: nothing is ever unpickled, and a
  folder holding only pickle weights (``*.bin``, ``*.pt``, ...) is refused unopened.
- ``tokenizer.json``: the ``TokenizerConfig`` the model reads music with
  (``TokenizerConfig.to_json``), when the model has one. Folders written before this
  file existed kept it as the ``"tokenizer"`` section of config.json; those still load
  (the shipped models in ``models/`` and old runs). When both exist, tokenizer.json wins.

Rules:

- One writer, :func:`save_checkpoint` ``(folder, model, extra)``, for pre-training and
  fine-tuning (the trainer, ``finetune.finetune`` and ``published`` call it; :func:`savable`
  says which models it takes). The models know nothing of files. A new folder is written
  as a temporary sibling and renamed into place; an existing folder gets each file
  replaced atomically (weights, then tokenizer.json, then config.json; a stale
  tokenizer.json is removed when the model has no tokenizer). Other files in the folder are left alone. The weights get
  the mode ``open()`` gives a new file (``io.default_file_mode``; safetensors writes 0o600).
- One loader, :func:`load_checkpoint` -> :class:`Checkpoint` (model, tokenizer, kind,
  task, metadata), used by every reader (CLI, app, explain, fine-tuning, benches);
  :func:`load_model` is its model alone (the tokenizer optional).
  Anything wrong (missing, corrupt, pickled, too large, sizes that do not match the
  weights, a tokenizer that does not fit the model) raises ``SMUCheckpointError``
  naming the file and the reason. Sizes are checked against the safetensors header on
  the meta device before any memory is allocated (``weights.py``'s checks).
- The tokenizer has its own pair :func:`save_tokenizer` / :func:`load_tokenizer`; it is
  checked against the model config (attributes, vocabularies, window length) on load.

This module imports neither torch nor the model at import time (``is_finetuned``,
``task_heads`` and ``read_config`` stay cheap for the app and the CLI). It may import the
lower layers (errors, io, weights, tokenizer, octuple, model, heads), inside functions for the
torch ones; never explain, finetune, the trainer, the CLI or the app (the notebook API that
explains a loaded checkpoint is ``notebook.py``'s).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import SMUCheckpointError, SMUInputError
from .io import atomic_write_text, default_file_mode
from .weights import (
    check_weights_header,
    parameters_in_header,
    refuse_non_finite,
    skip_random_fills,
    weights_header,
)

if TYPE_CHECKING:  # pragma: no cover
    from .model import MidiBert, ModelConfig
    from .tokenizer import Tokenizer

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
TOKENIZER_NAME = "tokenizer.json"
PRETRAINED_FORMAT = "smu_explain.midibert"
PRETRAINED_VERSION = 1
FINETUNED_FORMAT = "smu_explain.finetuned"
FINETUNED_VERSION = 1
KINDS = ("pretrained", "finetuned")
# File names that hold pickles (torch.save / pickle): refused, never opened.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt")
MAX_CONFIG_BYTES = 16 * 1024 * 1024
# longest folder path accepted (Linux PATH_MAX; a name in it at most NAME_MAX bytes)
MAX_PATH_BYTES = 4095
MAX_NAME_BYTES = 255
# config.json keys of a fine-tuned folder that the model holds itself (not metadata)
_FINETUNED_KEYS = ("format", "format_version", "model", "task", "level", "classes", "head")
_RESERVED = ("format", "format_version", "model")


# ----------------------------------------------------------------------------- the loaded checkpoint

@dataclass
class Checkpoint:
    """A loaded checkpoint folder.

    ``model``: a ``MidiBert`` (kind ``"pretrained"``) or a ``heads.FineTuneModel``
    (kind ``"finetuned"``), on ``map_location``, in training mode like a fresh module.
    ``tokenizer``: the ``Tokenizer`` saved with it (checked against the model), or None
    when the folder has none. ``meta``: config.json as read.
    """

    folder: Path
    kind: str
    model: Any
    tokenizer: Tokenizer | None
    meta: dict[str, Any] = field(repr=False)

    @property
    def encoder(self) -> MidiBert:
        """The ``MidiBert``: the model itself, or the encoder of a fine-tuned model."""
        return self.model.encoder if self.kind == "finetuned" else self.model

    @property
    def task(self) -> str | None:
        """The fine-tuning task (``melody``, ``emotion``, ...), None for a pre-trained model."""
        return self.model.task if self.kind == "finetuned" else None

    @property
    def classes(self) -> list[str]:
        return list(self.model.classes) if self.kind == "finetuned" else []

    @property
    def info(self) -> dict[str, Any]:
        """The metadata saved with the model (``model.checkpoint_info``)."""
        return self.model.checkpoint_info


# ----------------------------------------------------------------------------- reading config.json

def read_config(folder: str | os.PathLike) -> dict[str, Any]:
    """The parsed ``config.json`` of a checkpoint folder; ``SMUCheckpointError`` when the folder
    or the file is missing (a folder with only pickle weights says so), too large, not JSON, or
    has no ``"model"`` section, or the path itself is unusable (:func:`checked_path`)."""
    folder = checked_path(folder)
    if not _is(folder, "dir"):
        raise SMUCheckpointError(folder, "checkpoint folder not found")
    cfg_path = folder / CONFIG_NAME
    if not _is(cfg_path, "file"):
        if not _is(folder / WEIGHTS_NAME, "file"):
            refuse_pickles(folder)
        raise SMUCheckpointError(folder, f"no {CONFIG_NAME} in the checkpoint folder")
    meta = read_json_file(cfg_path)
    if not isinstance(meta, dict) or not isinstance(meta.get("model"), dict):
        raise SMUCheckpointError(cfg_path, 'config.json has no "model" section; not a smu_explain checkpoint')
    return meta


def read_json_file(path: Path) -> Any:
    """A small JSON file (at most ``MAX_CONFIG_BYTES``) parsed by :func:`loads_json`; every failure
    is an ``SMUCheckpointError`` naming it."""
    name = path.name
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise SMUCheckpointError(path, f"{name} is larger than {MAX_CONFIG_BYTES} bytes")
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise SMUCheckpointError(path, f"cannot read {name} ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise SMUCheckpointError(path, f"{name} is not valid JSON ({e})") from None
    return loads_json(text, path)


def loads_json(text: str, where: str | os.PathLike, error: type[SMUInputError] = SMUCheckpointError) -> Any:
    """``json.loads`` whose every failure is an ``error`` (``SMUCheckpointError``) naming ``where``: not JSON,
    an integer of more digits than Python converts (``sys.get_int_max_str_digits``, a
    ``ValueError`` of json.loads), nesting deeper than the interpreter's stack (``RecursionError``)."""
    name = Path(where).name
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise error(where, f"{name} is not valid JSON ({e})") from None
    except ValueError as e:  # "Exceeds the limit (4300 digits) for integer string conversion"
        raise error(where, f"{name} holds a number too long to read ({e})") from None
    except RecursionError:
        raise error(where, f"{name} is nested too deeply to read") from None


def checked_path(path: str | os.PathLike, error: type[SMUInputError] = SMUCheckpointError) -> Path:
    """``path`` as a ``Path`` a file system call can take, ``~`` / ``~user`` expanded; ``error``
    (an ``SMUInputError``) with the reason for one that none can: an empty path, a NUL character,
    an unknown user in ``~user`` (``Path.expanduser`` raises ``RuntimeError``), more than
    ``MAX_PATH_BYTES`` bytes in all or ``MAX_NAME_BYTES`` in one name (``stat`` raises
    ``ENAMETOOLONG``), text the file system cannot encode."""
    text = os.fspath(path)
    shown = (text[:60] + "...") if isinstance(text, str) and len(text) > 64 else text
    if isinstance(text, bytes):
        text = os.fsdecode(text)
    if not text.strip():
        raise error(shown, "empty path")
    if "\0" in text:
        raise error(shown, "the path holds a NUL character")
    try:
        raw = os.fsencode(text)
    except UnicodeError:
        raise error(shown, "the path holds characters the file system cannot encode") from None
    if len(raw) > MAX_PATH_BYTES:
        raise error(shown, f"the path is {len(raw):,} bytes long; at most {MAX_PATH_BYTES:,} are allowed")
    long_names = [n for n in raw.split(b"/") if len(n) > MAX_NAME_BYTES]
    if long_names:
        raise error(shown, f"a name in the path is {len(long_names[0]):,} bytes long; at most "
                           f"{MAX_NAME_BYTES} are allowed")
    p = Path(text)
    if text.startswith("~"):
        try:
            p = p.expanduser()
        except RuntimeError:
            user = text[1:].split("/", 1)[0]
            raise error(shown, f"no such user {user!r} (the path starts with ~{user})" if user else
                        "cannot find the home folder for ~") from None
    return p


def user_folder(text: str | os.PathLike) -> Path:
    """A folder path a person typed (surrounding blanks stripped): :func:`checked_path` with
    ``SMUInputError``."""
    return checked_path(os.fspath(text).strip() if isinstance(text, str) else text, SMUInputError)


def _is(path: Path, what: str) -> bool:
    """``path.is_dir()`` / ``is_file()`` with every ``OSError`` (a too-long name, a loop, no
    permission) as False instead of raised."""
    try:
        return path.is_dir() if what == "dir" else path.is_file()
    except (OSError, ValueError):
        return False


def kind_of(meta: dict[str, Any]) -> str:
    """``"finetuned"`` for a config.json of format ``smu_explain.finetuned``, else ``"pretrained"``."""
    return "finetuned" if meta.get("format") == FINETUNED_FORMAT else "pretrained"


def is_checkpoint(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds both ``config.json`` and ``model.safetensors`` (nothing is read)."""
    try:
        d = checked_path(folder)
    except SMUInputError:
        return False
    return _is(d / CONFIG_NAME, "file") and _is(d / WEIGHTS_NAME, "file")


def is_finetuned(folder: str | os.PathLike) -> bool:
    """Whether ``folder`` holds a fine-tuned model (its config.json has format
    ``smu_explain.finetuned``); unreadable or missing configs are not."""
    try:
        p = checked_path(folder) / CONFIG_NAME
        if p.stat().st_size > MAX_CONFIG_BYTES:
            return False
        meta = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # SMUInputError is a ValueError
        return False
    return isinstance(meta, dict) and meta.get("format") == FINETUNED_FORMAT


def task_heads(folder: str | os.PathLike) -> list[Path]:
    """Fine-tuned task models kept with a model: the folder itself when it is a fine-tuned
    model, and its sub-folders (and ``finetuned/*``) that are fine-tuned models."""
    try:
        p = checked_path(folder)
    except SMUInputError:
        return []
    found = [p] if is_finetuned(p) else []
    for base in (p, p / "finetuned"):
        if _is(base, "dir"):
            with contextlib.suppress(OSError):
                found += [d for d in sorted(base.iterdir()) if _is(d, "dir") and is_finetuned(d)]
    return found


def refuse_pickles(folder: Path) -> None:
    """``SMUCheckpointError`` if ``folder`` holds pickle weights (they are never opened)."""
    try:
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES)
    except OSError:
        return
    if pickles:
        raise SMUCheckpointError(
            folder,
            f"holds pickle weights ({', '.join(pickles)}) and no {WEIGHTS_NAME}; pickle files can run "
            "arbitrary code when loaded, so smu_explain refuses them. Convert them to safetensors "
            "in a trusted environment, or re-train/re-save with smu_explain.")


def model_config(meta: dict[str, Any], where: str | os.PathLike) -> ModelConfig:
    """The ``ModelConfig`` of a checkpoint's config.json; ``SMUCheckpointError`` naming ``where``."""
    from .model import ModelConfig

    try:
        return ModelConfig.from_dict(meta["model"])
    except (TypeError, ValueError, KeyError) as e:
        raise SMUCheckpointError(where, f"invalid model config: {e}") from None


# ----------------------------------------------------------------------------- the tokenizer

def tokenizer_config_dict(tokenizer: Any) -> dict[str, Any] | None:
    """A ``Tokenizer``, ``TokenizerConfig`` or config dict -> the config dict (None stays None);
    an ``octuple.OctupleIds`` -> its description (``{"kind": "octuple", ...}``)."""
    if tokenizer is None:
        return None
    if getattr(tokenizer, "name", None) == "octuple" and hasattr(tokenizer, "to_dict"):
        return tokenizer.to_dict()
    if hasattr(tokenizer, "config") and hasattr(tokenizer.config, "to_dict"):
        return tokenizer.config.to_dict()
    if hasattr(tokenizer, "to_dict"):
        return tokenizer.to_dict()
    if isinstance(tokenizer, dict):
        return dict(tokenizer)
    raise TypeError(f"not a tokenizer or tokenizer config: {type(tokenizer).__name__}")


def save_tokenizer(folder: str | os.PathLike, tokenizer: Any) -> Path:
    """Write ``tokenizer.json`` into ``folder`` atomically (``TokenizerConfig.save``).
    ``tokenizer``: a ``Tokenizer``, ``TokenizerConfig`` or config dict."""
    from .tokenizer_config import TokenizerConfig

    d = tokenizer_config_dict(tokenizer)
    path = Path(folder) / TOKENIZER_NAME
    if d.get("kind") == "octuple":  # imported Adversarial-MidiBERT: Octuple tokens (octuple.OctupleIds)
        from .octuple import OctupleIds

        atomic_write_text(path, json.dumps(OctupleIds.from_dict(d).to_dict(), sort_keys=True) + "\n")
        return path
    TokenizerConfig.from_dict(d).save(path)
    return path


def load_tokenizer(folder: str | os.PathLike, meta: dict[str, Any] | None = None, *,
                   required: bool = True) -> Tokenizer | None:
    """The ``Tokenizer`` saved with a checkpoint: ``tokenizer.json``, else (older folders) the
    ``"tokenizer"`` section of config.json. Checked against the model config of ``meta``
    (default: the folder's config.json): same attributes and vocabularies, windows no longer
    than the model's ``max_len``. None when the folder has no tokenizer and not ``required``;
    ``SMUCheckpointError`` on anything else."""
    from .tokenizer import Tokenizer
    from .tokenizer_config import TokenizerConfig

    folder = Path(folder)
    meta = read_config(folder) if meta is None else meta
    path = folder / TOKENIZER_NAME
    if path.is_file():
        where, tok = path, read_json_file(path)
        if not isinstance(tok, dict):
            raise SMUCheckpointError(path, "tokenizer.json does not hold a tokenizer config (a JSON object)")
    elif path.exists() or path.is_symlink():  # there, but not a file: never silently read another config
        raise SMUCheckpointError(path, "tokenizer.json is not a regular file (a folder, device, pipe or broken link)")
    else:
        where, tok = folder / CONFIG_NAME, meta.get("tokenizer")
        if not isinstance(tok, dict):
            if required:
                raise SMUCheckpointError(folder, f"no {TOKENIZER_NAME} (nor a \"tokenizer\" section in "
                                                 f"{CONFIG_NAME}); cannot read music for this model")
            return None
    config = model_config(meta, folder / CONFIG_NAME)
    try:
        if tok.get("kind") == "octuple":
            from .octuple import OctupleIds

            tokenizer = OctupleIds.from_dict(tok)
        else:
            tokenizer = Tokenizer(TokenizerConfig.from_dict(tok))
    except (TypeError, ValueError, KeyError) as e:
        raise SMUCheckpointError(where, f"invalid tokenizer config: {e}") from None
    attrs, vocab = list(tokenizer.attributes), [int(v) for v in tokenizer.vocab_sizes]
    if attrs != config.attributes or vocab != config.vocab_sizes:
        raise SMUCheckpointError(
            where, f"the tokenizer does not match the model: tokenizer attributes {attrs} with "
                   f"vocabularies {vocab}, model {config.attributes} with {config.vocab_sizes}")
    if tokenizer.config.max_len > config.max_len:
        raise SMUCheckpointError(where, f"the tokenizer's windows ({tokenizer.config.max_len} tokens) are "
                                        f"longer than the model's max_len ({config.max_len})")
    return tokenizer


# ----------------------------------------------------------------------------- save

def _is_finetuned_model(model: Any) -> bool:
    return hasattr(model, "head") and hasattr(model, "encoder") and hasattr(model, "task")


def savable(model: Any) -> bool:
    """Whether :func:`save_checkpoint` writes ``model``: a ``MidiBert`` or a ``heads.FineTuneModel``
    (not a wrapper around one, nor any other module)."""
    from .heads import FineTuneModel
    from .model import MidiBert

    return isinstance(model, (MidiBert, FineTuneModel))


def save_checkpoint(folder: str | os.PathLike, model: Any, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model`` (a ``MidiBert`` or a ``FineTuneModel``) into ``folder``: config.json +
    model.safetensors + tokenizer.json, atomically (module docstring). Returns the folder.

    config.json = {"format", "format_version", "model": <ModelConfig>, ...}: for a fine-tuned
    model also ``task``, ``level``, ``classes``, ``head`` and its ``checkpoint_info``; then the
    keys of ``extra`` (a pre-trained model: ``ValueError`` if ``extra`` sets a reserved key;
    a fine-tuned one: reserved keys of ``extra`` are ignored). The tokenizer (``extra`` or
    ``checkpoint_info`` key ``"tokenizer"``: a config dict, ``TokenizerConfig`` or
    ``Tokenizer``) goes to tokenizer.json, never into config.json.
    """
    extra = dict(extra or {})
    if _is_finetuned_model(model):
        info = dict(getattr(model, "checkpoint_info", None) or {})
        tokenizer = extra.pop("tokenizer", info.pop("tokenizer", None))
        fmt = FINETUNED_FORMAT
        meta = {"format": fmt, "format_version": FINETUNED_VERSION, "model": model.encoder.config.to_dict(),
                "task": model.task, "level": model.level, "classes": list(model.classes),
                "head": model.head_config()}
        meta.update({k: v for k, v in info.items() if k not in meta})
        meta.update({k: v for k, v in extra.items() if k not in _RESERVED})
    else:
        for reserved in _RESERVED:
            if reserved in extra:
                raise ValueError(f"extra may not set the reserved key {reserved!r}")
        tokenizer = extra.pop("tokenizer", None)
        fmt = PRETRAINED_FORMAT
        meta = {"format": fmt, "format_version": PRETRAINED_VERSION, "model": model.config.to_dict(), **extra}
    tok_dict = tokenizer_config_dict(tokenizer)
    text = json.dumps(meta, indent=2, default=_json_default)
    # contiguous CPU copies; safetensors refuses shared/non-contiguous storage.
    state = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    return _write_folder(Path(folder), state, fmt, text, tok_dict)


def _write_folder(folder: Path, state: dict, fmt: str, config_text: str, tokenizer: dict | None) -> Path:
    from safetensors.torch import save_file

    folder.parent.mkdir(parents=True, exist_ok=True)
    if not folder.exists():
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
        try:
            save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": fmt})
            os.chmod(tmp / WEIGHTS_NAME, default_file_mode())  # safetensors creates it 0o600
            _fsync_path(tmp / WEIGHTS_NAME)
            if tokenizer is not None:
                save_tokenizer(tmp, tokenizer)
            atomic_write_text(tmp / CONFIG_NAME, config_text)
            os.replace(tmp, folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return folder
    tmp_w = folder / f".{WEIGHTS_NAME}.tmp{os.getpid()}"
    try:
        save_file(state, str(tmp_w), metadata={"format": fmt})
        os.chmod(tmp_w, default_file_mode())
        _fsync_path(tmp_w)
        os.replace(tmp_w, folder / WEIGHTS_NAME)
    finally:
        if tmp_w.exists():
            tmp_w.unlink()
    if tokenizer is not None:
        save_tokenizer(folder, tokenizer)
    else:
        (folder / TOKENIZER_NAME).unlink(missing_ok=True)  # never pair new weights with a stale tokenizer
    atomic_write_text(folder / CONFIG_NAME, config_text)
    return folder


def _json_default(o: Any) -> Any:
    if hasattr(o, "to_dict"):
        return o.to_dict()
    if isinstance(o, Path):
        return str(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    if hasattr(o, "__dataclass_fields__"):
        return asdict(o)
    raise TypeError(f"cannot store {type(o).__name__} in config.json")


def _fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# ----------------------------------------------------------------------------- memory

# bytes per parameter (fp32): loading holds the weights read from the file and the model's own
# copy at once; training holds weights, gradients and Adam's two moments (activations come on top)
BYTES_PER_PARAMETER = {"load": 8, "training": 16, "training_loaded": 12}


def _cgroup_room() -> int | None:
    """Bytes left under this process's cgroup (v2 ``memory.max`` - ``memory.current``, or v1's
    ``limit_in_bytes`` - ``usage_in_bytes``), None when unlimited or unknown."""
    pairs = (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
             ("/sys/fs/cgroup/memory/memory.limit_in_bytes", "/sys/fs/cgroup/memory/memory.usage_in_bytes"))
    for limit_file, usage_file in pairs:
        try:
            limit = Path(limit_file).read_text().strip()
            usage = int(Path(usage_file).read_text().strip())
        except (OSError, ValueError):
            continue
        if limit.isdigit() and int(limit) < 1 << 60:
            return max(0, int(limit) - usage)
        return None
    return None


def available_memory() -> int | None:
    """Bytes of memory this process can still take: ``MemAvailable`` of /proc/meminfo (else the
    free pages of ``os.sysconf``), lowered to what the cgroup (a container's limit) leaves;
    None when the machine does not say."""
    found = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found = int(line.split()[1]) * 1024
                break
    except (OSError, ValueError, IndexError):
        pass
    if found is None:
        try:
            found = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (OSError, ValueError, AttributeError):
            found = None
    room = _cgroup_room()
    if room is not None:
        found = room if found is None else min(found, room)
    return found


def _gpu_free(device: Any) -> int | None:
    """Free bytes on a CUDA ``device`` (``cuda``, ``cuda:N``), None for other devices."""
    name = str(device or "")
    if not name.startswith("cuda"):
        return None
    try:
        import torch

        if not torch.cuda.is_available():
            return None
        return int(torch.cuda.mem_get_info(torch.device(name))[0])
    except (RuntimeError, ValueError, AssertionError):
        return None


def check_memory(n_parameters: int, where: str | os.PathLike, *, purpose: str = "load", device: Any = None,
                 error: type[SMUInputError] = SMUCheckpointError) -> None:
    """``error`` (naming ``where``, with the numbers) when a model of ``n_parameters`` parameters
    cannot fit the memory the machine has now (:func:`available_memory`; on a CUDA ``device`` also
    the GPU's free memory), for ``purpose``: ``"load"`` (8 bytes per parameter),
    ``"training"`` (16: weights, gradients, Adam's two moments) or ``"training_loaded"`` (12: the
    weights are already in memory). Called before anything is allocated; a machine that does not
    say how much memory it has is not refused."""
    per = BYTES_PER_PARAMETER[purpose]
    need = int(n_parameters) * per
    what = {"load": "to load", "training": "to train", "training_loaded": "to train"}[purpose]
    for room, place in ((available_memory(), "memory available on this machine"),
                        (_gpu_free(device), f"free memory on {device}")):
        if room is not None and need > room:
            raise error(where, f"a model of {n_parameters:,} parameters needs about {need / 1e9:.1f} GB {what} "
                               f"({per} bytes per parameter{', before activations' if per > 8 else ''}); "
                               f"the {place} is {room / 1e9:.1f} GB. Use a smaller model (d_model, n_layers, "
                               "d_ff, max_len) or a machine with more memory.")


# ----------------------------------------------------------------------------- load

_NOT_KIND = {
    "pretrained": "is a fine-tuned model (config.json format {fmt!r}, task {task!r}); a pre-trained model is "
                  "needed here (its masker and attribute heads), e.g. the folder given to finetune --from",
    "finetuned": "not a fine-tuned model (config.json format is {fmt!r}); load it with checkpoint.load_model(folder)",
}


def load_checkpoint(folder: str | os.PathLike, map_location: Any = "cpu", *, kind: str | None = None,
                    require_tokenizer: bool = True) -> Checkpoint:
    """Load a checkpoint folder (JSON and safetensors only) -> :class:`Checkpoint`.

    ``kind``: ``"pretrained"`` / ``"finetuned"`` refuses the other kind before the weights are
    read. ``require_tokenizer``: a folder without a tokenizer is refused (else its
    ``tokenizer`` is None); a tokenizer that is there is always checked against the model.
    ``SMUCheckpointError`` on a missing folder, pickle-only weights, a missing, corrupt or
    oversized file, an invalid config, sizes that differ from the weights.
    """
    if kind is not None and kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}, got {kind!r}")
    folder = checked_path(folder)
    if not _is(folder, "dir"):
        raise SMUCheckpointError(folder, "checkpoint folder not found")
    weights = folder / WEIGHTS_NAME
    if not _is(weights, "file"):
        refuse_pickles(folder)
        raise SMUCheckpointError(folder, f"no {WEIGHTS_NAME} in the checkpoint folder")
    meta = read_config(folder)
    found = kind_of(meta)
    if kind is not None and found != kind:
        raise SMUCheckpointError(folder, _kind_message(kind, meta))
    config = model_config(meta, folder / CONFIG_NAME)
    tokenizer = load_tokenizer(folder, meta, required=require_tokenizer)
    info = {k: v for k, v in meta.items() if k not in (_FINETUNED_KEYS if found == "finetuned" else ("model",))}
    info.pop("tokenizer", None)
    if tokenizer is not None:
        info["tokenizer"] = tokenizer_config_dict(tokenizer)
    build = _pretrained_builder(config) if found == "pretrained" else _finetuned_builder(folder, meta, config)
    # Sizes are checked against the weights file's header, and the memory they take against the
    # memory the machine has, before anything is allocated.
    check_memory(parameters_in_header(weights_header(weights)), weights, purpose="load")
    check_weights_header(weights, build)
    with skip_random_fills(any_device=True):  # every parameter is overwritten by the strict load below
        model = build()

    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
        state = load_file(str(weights), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise SMUCheckpointError(weights, f"corrupt or unreadable safetensors file ({e})") from None
    refuse_non_finite(state, weights)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise SMUCheckpointError(weights, f"weights do not match config.json ({str(e).splitlines()[0]})") from None
    model.checkpoint_info = info
    return Checkpoint(folder=folder, kind=found, model=model.to(map_location), tokenizer=tokenizer, meta=meta)


def load_model(folder: str | os.PathLike, map_location: Any = "cpu", *, kind: str = "pretrained") -> Any:
    """The model of a checkpoint folder (:func:`load_checkpoint` with ``kind``, the tokenizer optional):
    a ``MidiBert`` for ``"pretrained"``, a ``heads.FineTuneModel`` for ``"finetuned"``. The
    metadata saved with it (config.json's other keys, the tokenizer config) is its
    ``checkpoint_info``. ``SMUCheckpointError`` on anything missing, broken, pickled, of the
    wrong shapes or of the other kind."""
    return load_checkpoint(folder, map_location, kind=kind, require_tokenizer=False).model


def _kind_message(kind: str, meta: dict[str, Any]) -> str:
    return _NOT_KIND[kind].format(fmt=meta.get("format"), task=meta.get("task"))


def _pretrained_builder(config: ModelConfig) -> Callable[[], Any]:
    from .model import MidiBert

    return lambda: MidiBert(config)


def _finetuned_builder(folder: Path, meta: dict[str, Any], config: ModelConfig) -> Callable[[], Any]:
    from .heads import FineTuneModel
    from .model import MidiBert

    head = meta.get("head", {})

    def build():
        try:
            return FineTuneModel(MidiBert(config), meta["task"], meta["classes"], head.get("head_hidden", 256),
                                 head.get("dropout", 0.1), head.get("pool_hops", 4))
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError) as e:
            if isinstance(e, SMUCheckpointError):
                raise
            raise SMUCheckpointError(folder / CONFIG_NAME, f"invalid fine-tuned config ({e})") from None

    return build


# ----------------------------------------------------------------------------- stored masker scores

SCORES_NAME = "masker_scores.json"
SCORES_FORMAT = "smu_explain.masker_scores"
SCORES_VERSION = 1


def weights_digest(folder: str | os.PathLike) -> str:
    """sha256 (hex) of a folder's weights file: what a file stored beside the weights was made from."""
    h = hashlib.sha256()
    with open(Path(folder) / WEIGHTS_NAME, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def save_masker_scores(folder: str | os.PathLike, pieces: dict[str, dict[str, Any]]) -> Path:
    """Write ``masker_scores.json`` beside a model's weights (atomically): the masker's view of
    some pieces (``stored_scores.store_masker_scores`` makes the entries), so the app can draw a
    sample's masker overlay before it has even imported torch. ``pieces`` maps the sha256 of
    a file's bytes to ``{"name", "n_notes", "ratio", "score", "frozen", "picked"}`` (scores as
    floats, frozen and picked as note indices). The entry is tied to the weights by their
    sha256: once the weights change it is stale and :func:`load_masker_scores` ignores it."""
    folder = Path(folder)
    doc = {"format": SCORES_FORMAT, "format_version": SCORES_VERSION,
           "weights_sha256": weights_digest(folder), "pieces": pieces}
    path = folder / SCORES_NAME
    atomic_write_text(path, json.dumps(doc, separators=(",", ":")) + "\n")
    return path


def load_masker_scores(folder: str | os.PathLike, *, strict: bool = False) -> dict[str, dict[str, Any]]:
    """The pieces of a folder's ``masker_scores.json`` (:func:`save_masker_scores`), or ``{}`` when
    the file is absent, of another format, or made from other weights, and (unless ``strict``)
    when it cannot be read. Never raises unless ``strict``: the stored view is a shortcut, and
    without it the app runs the model. ``strict``: a file that is there but cannot be read (too
    large, not JSON, a number over Python's digit limit, nested too deeply, an I/O error) is an
    ``SMUCheckpointError`` with the reason (the app says why it runs the model)."""
    path = Path(SCORES_NAME)
    try:
        folder = checked_path(folder)
        path = folder / SCORES_NAME
        if not _is(path, "file"):
            return {}
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise SMUCheckpointError(path, f"{SCORES_NAME} is larger than {MAX_CONFIG_BYTES} bytes")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise SMUCheckpointError(path, f"{SCORES_NAME} is not valid JSON ({e})") from None
        doc = loads_json(text, path)  # not JSON, too deep, numbers too long: SMUCheckpointError
        if (not isinstance(doc, dict) or doc.get("format") != SCORES_FORMAT
                or doc.get("format_version") != SCORES_VERSION or not isinstance(doc.get("pieces"), dict)):
            return {}
        if doc.get("weights_sha256") != weights_digest(folder):
            return {}
    except SMUCheckpointError:
        if strict:
            raise
        return {}
    except OSError as e:
        if strict:
            raise SMUCheckpointError(path, f"cannot read {SCORES_NAME} ({e.strerror or e})") from None
        return {}
    return doc["pieces"]
