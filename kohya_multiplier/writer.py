"""The one writer: every file the tool writes goes through here.

No output ever overwrites an input, and no output is ever left half-written:

* **Checked before any work** (:func:`check_outputs`): an output is refused, with the one-line
  error, when it is a directory, when its folder does not exist or cannot be written, when it *is*
  an input by file identity (device and inode, so through symbolic and hard links and any spelling:
  the dataset config, a fine-tuning metadata file, a schedule being read), or when it lies inside
  an input folder (a subset's ``image_dir``, the DreamBooth ``--train_data_dir`` / ``--reg_data_dir``
  trees, the folders of the images a metadata file names: images, captions, ``multiply.txt``,
  sd-scripts' caches).
* **Written whole** (:class:`OutputFiles`): each output goes to a temporary file beside its target
  and is renamed over it only when the command has finished; an error, an interrupt, a full disk
  or a concurrent run leaves either the old file or the new one, whole. A symbolic link as the
  target is kept: the file it points to is replaced. A temporary that a killed run left behind is
  removed by the next run that writes the same target.

Pure Python; the commands and the training adapter share it.
"""

from __future__ import annotations

import os
import secrets
import signal
import sys
import threading
from dataclasses import dataclass
from typing import IO, Any, Iterable

from kohya_multiplier.dataset.reading import file_identity
from kohya_multiplier.errors import UserError

STDOUT = "-"
_TEMP_MARK = ".km-"  # .NAME.km-PID-RANDOM.tmp: a writer's temporary, beside its target


@dataclass(frozen=True)
class InputPaths:
    """What outputs must never touch: the config file, the image folder trees, the metadata files
    and any other file the command reads (``read_files``: a schedule given to ``report``)."""

    config_file: str | None
    folders: tuple[str, ...]
    metadata_files: tuple[str, ...] = ()  # fine-tuning metadata (metadata_file, --in_json)
    read_files: tuple[str, ...] = ()


def _absolute(path: str) -> str:
    return os.path.abspath(os.path.expanduser(str(path)))


def _real(path: str) -> str:
    return os.path.normcase(os.path.realpath(_absolute(path)))


def input_paths(config_file: str | None = None, *, train_data_dir: str | None = None,
                reg_data_dir: str | None = None, image_dirs: Iterable[str] = (), in_json: str | None = None,
                read_files: Iterable[str] = ()) -> InputPaths:
    """The inputs of a run: the config file, the ``image_dir`` of each of its subsets (read from the
    file; an unreadable file contributes no folders: reading it later gives the real error), the
    DreamBooth base folders (used only without a config file, as sd-scripts uses them), and
    ``image_dirs`` and ``read_files`` given directly."""
    folders = [str(d) for d in image_dirs]
    metadata: list[str] = []
    if config_file is not None:
        named_folders, metadata = _inputs_named_in(config_file)
        folders.extend(named_folders)
    else:
        folders.extend(d for d in (train_data_dir, reg_data_dir) if d)
        metadata.extend([in_json] if in_json else [])
    return InputPaths(config_file, tuple(dict.fromkeys(folders)), tuple(dict.fromkeys(metadata)),
                      tuple(dict.fromkeys(str(f) for f in read_files)))


def with_config_folders(inputs: InputPaths, config: Any) -> InputPaths:
    """``inputs`` plus the folders a read config's subsets train from (a fine-tuning subset's are
    those of the images its metadata names), first: the check once the config is read."""
    folders = [folder for dataset in config.datasets for subset in dataset.subsets for folder in subset.image_folders]
    return InputPaths(inputs.config_file, tuple(dict.fromkeys([*folders, *inputs.folders])), inputs.metadata_files,
                      inputs.read_files)


def _inputs_named_in(config_file: str) -> tuple[list[str], list[str]]:
    """The ``image_dir`` and ``metadata_file`` strings of the config's subsets."""
    from kohya_multiplier.dataset.config import read_config_file

    try:
        raw = read_config_file(config_file)
    except UserError:
        return [], []
    found, metadata = [], []
    datasets = raw.get("datasets") if isinstance(raw, dict) else None
    for dataset in datasets if isinstance(datasets, list) else []:
        subsets = dataset.get("subsets") if isinstance(dataset, dict) else None
        for subset in subsets if isinstance(subsets, list) else []:
            if isinstance(subset, dict) and isinstance(subset.get("image_dir"), str):
                found.append(subset["image_dir"])
            if isinstance(subset, dict) and isinstance(subset.get("metadata_file"), str):
                metadata.append(subset["metadata_file"])
    return found, metadata


def _input_files(inputs: InputPaths) -> dict[tuple[int, int], str]:
    """Identity -> what that input is, for the refusal's wording."""
    named: dict[tuple[int, int], str] = {}
    for path in inputs.read_files:
        if (identity := file_identity(path)) is not None:
            named[identity] = "is an input of this command (the schedule it reads); writing it would destroy it"
    for path in inputs.metadata_files:
        if (identity := file_identity(path)) is not None:
            named[identity] = "is a fine-tuning metadata file of the dataset; writing it would destroy it"
    if inputs.config_file is not None and (identity := file_identity(inputs.config_file)) is not None:
        named[identity] = "is the dataset config; writing it would destroy the config"
    return named


def _folder_holding(target: str, inputs: InputPaths) -> str | None:
    """The input folder that holds ``target`` (its real path), by the identity of each folder above it."""
    folders = {}
    for folder in inputs.folders:
        base = _real(folder)
        if os.path.normcase(target) == base or os.path.normcase(target).startswith(base.rstrip(os.sep) + os.sep):
            return folder  # by spelling, which also covers a folder that does not exist (yet)
        if (identity := file_identity(folder)) is not None:
            folders.setdefault(identity, folder)
    if not folders:
        return None
    current = target
    while True:
        identity = file_identity(current)
        if identity in folders:
            return folders[identity]
        parent = os.path.dirname(current)
        if parent == current:
            return None
        current = parent


def _hard_link_in_folders(target: str, inputs: InputPaths) -> str | None:
    """An input folder's file that ``target`` is a hard link of (looked for only when the target has
    several links, so the common case costs one stat)."""
    try:
        st = os.stat(target)
    except OSError:
        return None
    if st.st_nlink < 2:
        return None
    wanted = (st.st_dev, st.st_ino)
    for folder in inputs.folders:
        for root, _, files in os.walk(folder):
            for name in files:
                path = os.path.join(root, name)
                if file_identity(path) == wanted:
                    return path
    return None


def check_output_path(path: str | None, *, key: str, inputs: InputPaths | None) -> str | None:
    """Raise a one-line UserError (naming ``key``) if ``path`` cannot be written or writing it could
    destroy an input; return the file that will be written (a link's target), or None for stdout.

    ``None`` (option not given) and ``-`` (stdout) pass.
    """
    if path is None or path == STDOUT:
        return None
    shown = str(path)
    if shown.endswith(("/", os.sep)) or os.path.isdir(shown):
        raise UserError("is a directory; give a file name", file=shown, key=key)
    target = os.path.realpath(_absolute(shown))
    if os.path.isdir(target):
        raise UserError("is a link to a directory; give a file name", file=shown, key=key)
    if inputs is not None:
        identity = file_identity(target)
        named = _input_files(inputs)
        if identity is not None and identity in named:
            raise UserError(named[identity], file=shown, key=key)
        folder = _folder_holding(target, inputs)
        if folder is not None:
            raise UserError(
                f"is inside the image folder {folder}, which training reads (images, captions, multiply.txt, "
                "caches); write it elsewhere",
                file=shown,
                key=key,
            )
        linked = _hard_link_in_folders(target, inputs)
        if linked is not None:
            raise UserError(f"is a hard link of {linked}, which training reads; write it elsewhere", file=shown, key=key)
    _check_writable_folder(shown, target, key)
    return target


def _check_writable_folder(shown: str, target: str, key: str) -> None:
    folder = os.path.dirname(target)
    if not os.path.isdir(folder):
        raise UserError(f"its folder {os.path.dirname(_absolute(shown)) or '.'} does not exist; create it first",
                        file=shown, key=key)
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UserError(f"cannot write into its folder {folder}: permission denied (or read-only)", file=shown, key=key)
    if os.path.exists(target) and not os.access(target, os.W_OK) and sys.platform == "win32":
        raise UserError("is read-only; it cannot be replaced", file=shown, key=key)


def check_outputs(outputs: dict[str, Any], inputs: InputPaths | None) -> dict[str, str | None]:
    """Check several ``{key: path}`` outputs; two options naming the same file are refused too.
    Returns ``{key: file to write}`` (None for stdout) for the keys given."""
    seen: dict[str, str] = {}
    targets: dict[str, str | None] = {}
    for key, path in outputs.items():
        if path is None:
            continue
        target = check_output_path(path, key=key, inputs=inputs)
        targets[key] = target
        if target is None:
            continue
        same = os.path.normcase(target)
        if same in seen:
            raise UserError(f"is also given to {seen[same]}; give each output its own file", file=str(path), key=key)
        seen[same] = key
    return targets


def check_training_output(path: str | None, options: Any, *, key: str = "--multiplier_schedule") -> None:
    """Training's ``--multiplier_schedule FILE``, checked against the run's dataset options
    (``dataset_config``, ``train_data_dir``, ``reg_data_dir`` of a ``CommandLineOptions``) before
    the recorder opens (and truncates) the file. The recorder appends as batches train (a killed
    run's record is what it trained up to the kill), so its folder is created when missing."""
    inputs = input_paths(getattr(options, "dataset_config", None), train_data_dir=getattr(options, "train_data_dir", None),
                         reg_data_dir=getattr(options, "reg_data_dir", None), in_json=getattr(options, "in_json", None))
    if path is not None and path != STDOUT:
        folder = os.path.dirname(_absolute(path))
        if folder and not os.path.isdir(folder):
            try:
                os.makedirs(folder, exist_ok=True)
            except OSError as error:
                raise UserError(f"cannot create its folder: {error.strerror or error}", file=str(path), key=key) from None
    check_output_path(path, key=key, inputs=inputs)


# --- writing whole files -------------------------------------------------------------------------


class Interrupted(KeyboardInterrupt):
    """Ctrl-C while a command had outputs pending: they were left as they were."""

    def __init__(self, unchanged: list[str]):
        super().__init__(", ".join(unchanged))
        self.unchanged = unchanged


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    if sys.platform == "win32":
        import ctypes

        handle = ctypes.windll.kernel32.OpenProcess(0x1000, False, pid)  # PROCESS_QUERY_LIMITED_INFORMATION
        if not handle:
            return False
        ctypes.windll.kernel32.CloseHandle(handle)
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, owned by someone else
    return True


def _temp_prefix(target: str) -> str:
    return "." + os.path.basename(target)[:100] + _TEMP_MARK


def remove_stale_temporaries(target: str) -> None:
    """Remove the temporaries of ``target`` left by writers that were killed (their process is gone)."""
    folder, prefix = os.path.dirname(target), _temp_prefix(target)
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        if not (name.startswith(prefix) and name.endswith(".tmp")):
            continue
        pid_text = name[len(prefix):].split("-", 1)[0]
        if pid_text.isdigit() and not _pid_alive(int(pid_text)):
            try:
                os.unlink(os.path.join(folder, name))
            except OSError:
                pass


def _new_file_mode() -> int:
    if sys.platform == "win32":
        return 0o666
    mask = os.umask(0)
    os.umask(mask)
    return 0o666 & ~mask


@dataclass
class _Pending:
    key: str
    shown: str
    target: str
    temp: str
    handle: IO[Any]
    exclusive: bool = False


class OutputFiles:
    """The files one command writes, checked before any work and written whole.

    ``open(key)`` gives a stream onto a temporary file beside the target (or stdout for ``-``);
    leaving the ``with`` block normally renames every temporary over its target; an exception
    (an error, Ctrl-C, a full disk) removes them and leaves every target as it was. Ctrl-C becomes
    :class:`Interrupted`, naming the outputs left unchanged."""

    def __init__(self, outputs: dict[str, Any], inputs: InputPaths | None):
        self._shown = {key: str(path) for key, path in outputs.items() if path is not None}
        self._targets = check_outputs(outputs, inputs)
        self._pending: list[_Pending] = []

    def __contains__(self, key: str) -> bool:
        return key in self._targets

    def open(self, key: str, *, binary: bool = False, exclusive: bool = False) -> IO[Any]:
        """A stream for output ``key``. ``exclusive``: the target must not exist when it is renamed
        into place (a backup never replaces another file)."""
        target = self._targets[key]
        if target is None:
            return sys.stdout.buffer if binary else sys.stdout
        remove_stale_temporaries(target)
        temp = os.path.join(os.path.dirname(target), f"{_temp_prefix(target)}{os.getpid()}-{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o600)
        except OSError as error:
            raise UserError(f"cannot write: {error.strerror or error}", file=self._shown[key], key=key) from None
        handle = os.fdopen(fd, "wb") if binary else os.fdopen(fd, "w", encoding="utf-8", newline="\n")
        self._pending.append(_Pending(key, self._shown[key], target, temp, handle, exclusive))
        return _NamedStream(handle, self._shown[key], key)

    def write(self, key: str, data: bytes | str, *, exclusive: bool = False) -> None:
        handle = self.open(key, binary=isinstance(data, bytes), exclusive=exclusive)
        handle.write(data)

    def __enter__(self) -> "OutputFiles":
        return self

    def __exit__(self, kind, error, traceback) -> None:
        if kind is None:
            self.commit()
            return
        unchanged = [p.shown for p in self._pending] or [s for k, s in self._shown.items() if self._targets.get(k)]
        self.discard()
        if isinstance(error, KeyboardInterrupt) and not isinstance(error, Interrupted):
            raise Interrupted(unchanged) from None

    def commit(self) -> None:
        """Flush every temporary to disk and rename each over its target (Ctrl-C held off meanwhile,
        so the renames happen together)."""
        for pending in self._pending:
            try:
                self._finish(pending)
            except OSError as error:
                self.discard()
                raise UserError(f"cannot write: {error.strerror or error}", file=pending.shown, key=pending.key) from None
        for pending in self._pending:
            if pending.exclusive and os.path.lexists(pending.target):
                self.discard()
                raise UserError("exists already; not replaced", file=pending.shown, key=pending.key)
        with _sigint_held():
            for pending in self._pending:
                os.replace(pending.temp, pending.target)
        self._pending = []

    def _finish(self, pending: _Pending) -> None:
        pending.handle.flush()
        os.fsync(pending.handle.fileno())
        pending.handle.close()
        try:
            mode = os.stat(pending.target).st_mode & 0o7777
        except OSError:
            mode = _new_file_mode()
        try:
            os.chmod(pending.temp, mode)
        except OSError:
            pass

    def discard(self) -> None:
        for pending in self._pending:
            try:
                pending.handle.close()
            except OSError:
                pass
            try:
                os.unlink(pending.temp)
            except OSError:
                pass
        self._pending = []


class _NamedStream:
    """A temporary's stream whose write errors (a full disk) name the output, not the temporary."""

    def __init__(self, handle: IO[Any], shown: str, key: str):
        self._handle, self._shown, self._key = handle, shown, key

    def write(self, data):
        try:
            return self._handle.write(data)
        except OSError as error:
            raise UserError(f"cannot write: {error.strerror or error}", file=self._shown, key=self._key) from None

    def flush(self) -> None:
        try:
            self._handle.flush()
        except OSError as error:
            raise UserError(f"cannot write: {error.strerror or error}", file=self._shown, key=self._key) from None


class _sigint_held:
    """Hold Ctrl-C off for a few renames (main thread only), then deliver it."""

    def __enter__(self):
        self._caught = False
        self._previous = None
        if threading.current_thread() is threading.main_thread():
            try:
                self._previous = signal.signal(signal.SIGINT, self._note)
            except (ValueError, OSError):
                self._previous = None
        return self

    def _note(self, *_):
        self._caught = True

    def __exit__(self, *exc):
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
        if self._caught and exc[0] is None:
            raise KeyboardInterrupt
        return False


def write_file(path: str, data: bytes | str, *, key: str, inputs: InputPaths | None = None) -> None:
    """Write one whole file (checked, temporary, rename)."""
    with OutputFiles({key: path}, inputs) as outputs:
        outputs.write(key, data)


class update_lock:
    """Hold ``path + '.lock'`` while reading, changing and writing ``path``, so concurrent runs lose
    no update. The lock is a file made with O_EXCL (portable; no POSIX-only locks) holding the
    holder's process id; a lock whose holder is gone (a killed run) is taken over."""

    def __init__(self, path: str, *, timeout: float = 30.0):
        self.path = str(path) + ".lock"
        self.timeout = timeout

    def __enter__(self) -> "update_lock":
        import time

        deadline = time.monotonic() + self.timeout
        while True:
            try:
                fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                if self._holder_gone():
                    try:
                        os.unlink(self.path)
                    except OSError:
                        pass
                    continue
                if time.monotonic() > deadline:
                    raise UserError(f"another kohya-multiplier run holds {self.path}; try again when it has finished "
                                    "(or remove the file if no run is active)") from None
                time.sleep(0.02)
                continue
            with os.fdopen(fd, "w") as handle:
                handle.write(str(os.getpid()))
            return self

    def _holder_gone(self) -> bool:
        try:
            with open(self.path, encoding="ascii", errors="replace") as handle:
                text = handle.read().strip()
        except OSError:
            return False
        return text.isdigit() and not _pid_alive(int(text))

    def __exit__(self, *exc) -> None:
        try:
            os.unlink(self.path)
        except OSError:
            pass
