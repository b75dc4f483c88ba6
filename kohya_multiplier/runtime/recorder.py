"""``--multiplier_schedule FILE``: the batches a training run actually trained, as JSON Lines.

Same records as ``kohya-multiplier plan --schedule`` (kohya_multiplier.report.schedule), one line per batch,
in the order they were trained. A batch is recorded in the process that trains it, at the moment
accelerate's DataLoader hands it to sd-scripts' training loop: batches a worker prefetched but the
loop never took (the rest of an epoch cut short by ``--max_train_steps``) are not recorded. Each GPU
rank appends the batches it trains to the same file, one ``write`` per line on an ``O_APPEND``
descriptor, so lines never interleave.

Known gap: when sd-scripts resumes in the middle of an epoch (``--skip_until_initial_step`` with an
``--initial_step`` that is not an epoch boundary) it takes one batch and discards it; that batch is
recorded although it is not trained.
"""

from __future__ import annotations

import json
import os

from kohya_multiplier.errors import UserError

# The key under which a dataset hands its batch's record through the DataLoader to the recorder
# (removed here, so the training loop never sees it).
BATCH_RECORD_KEY = "kohya_multiplier_batch"

_state = {"fd": None, "path": None}


def start(path: str, *, truncate: bool) -> None:
    """Open the schedule file for appending; rank 0 truncates it first."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | (os.O_TRUNC if truncate else 0)
    try:
        directory = os.path.dirname(path)
        if directory:
            os.makedirs(directory, exist_ok=True)
        _state["fd"] = os.open(path, flags, 0o644)
    except OSError as error:
        raise UserError(f"cannot write: {error.strerror or error}", file=path, key="--multiplier_schedule") from None
    _state["path"] = path


def write_record(record: dict) -> None:
    fd = _state["fd"]
    if fd is None:
        return
    line = json.dumps(record, separators=(", ", ": ")) + "\n"
    os.write(fd, line.encode("utf-8"))


def take_record(batch) -> None:
    """Remove our record from a batch dict (the training loop never sees it) and write it."""
    if isinstance(batch, dict):
        record = batch.pop(BATCH_RECORD_KEY, None)
        if record is not None:
            write_record(record)


def _wrap_iter(original):
    def __iter__(self):
        for batch in original(self):
            take_record(batch)
            yield batch

    __iter__.__wrapped__ = original
    return __iter__


_WRAPPED_LOADERS = ("DataLoaderShard", "DataLoaderDispatcher", "SkipDataLoader")


def dataloader_hook_installed() -> bool:
    """Whether accelerate's DataLoader wrappers record batches (the self-check asks)."""
    from accelerate import data_loader

    shard = getattr(data_loader, "DataLoaderShard", None)
    return _state["fd"] is not None and shard is not None and getattr(shard.__iter__, "__wrapped__", None) is not None


def install_dataloader_hook() -> None:
    """Record at accelerate's DataLoader wrappers, which every sd-scripts training loop iterates."""
    from accelerate import data_loader

    for name in _WRAPPED_LOADERS:
        cls = getattr(data_loader, name, None)
        original = cls.__dict__.get("__iter__") if cls is not None else None
        if original is None or getattr(original, "__wrapped__", None) is not None:
            continue
        cls.__iter__ = _wrap_iter(original)
