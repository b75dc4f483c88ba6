"""A spawned DataLoader worker that dies while starting must end the run, not hang it.

multiprocessing's POSIX spawn (macOS, or Linux when forced) writes the pickled worker (with the
whole dataset: megabytes, cached latents included) into a pipe to the new process. The parent keeps
its own copy of the pipe's read end open until the write is done, so when the child dies before
reading it all (an import error while it re-imports the training script, or while it unpickles the
dataset), the write blocks forever: the run hangs with the child's traceback as its last words.

While a worker starts, a watcher thread checks whether the child is still alive. If it died, the
watcher reaps it (recording its exit status on the Popen object, where multiprocessing looks) and
drains the pipe so that the write completes. PyTorch's DataLoader then finds a dead worker and
raises its usual "DataLoader worker ... exited unexpectedly", and the run ends with the worker's
own error above it. Nothing changes for workers that start normally.
"""

from __future__ import annotations

import os
import select
import threading

_POLL_SECONDS = 0.2


def install() -> None:
    """Idempotent; does nothing where multiprocessing has no POSIX spawn (Windows reports the error itself)."""
    try:
        from multiprocessing import popen_spawn_posix
    except ImportError:  # pragma: no cover - Windows
        return
    original = popen_spawn_posix.Popen._launch
    if getattr(original, "__wrapped__", None) is not None:
        return

    def _launch(self, process_obj):
        done = threading.Event()
        watcher = threading.Thread(target=_watch, args=(self, done), name="kohya-multiplier-worker-watch", daemon=True)
        watcher.start()
        try:
            return original(self, process_obj)
        finally:
            done.set()
            watcher.join()

    _launch.__wrapped__ = original
    popen_spawn_posix.Popen._launch = _launch


def _watch(popen, done: threading.Event) -> None:
    child_read_end = None
    while not done.wait(_POLL_SECONDS):
        pid = getattr(popen, "pid", None)
        fds = getattr(popen, "_fds", None)
        if pid is None or not isinstance(fds, list) or len(fds) < 2:
            continue  # not started yet
        # pid is set right after _fds got [..., child's read end, child's write end]; the fds before
        # them are the resource tracker's and any the pickled dataset shares (tensors)
        child_read_end = fds[-2]
        try:
            waited, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            return
        if waited == pid:
            popen.returncode = os.waitstatus_to_exitcode(status)
            break
    else:
        return
    while not done.is_set():  # the child is gone: read what the parent still writes, so it finishes
        try:
            readable, _, _ = select.select([child_read_end], [], [], _POLL_SECONDS)
            if readable:
                os.read(child_read_end, 1 << 16)
        except OSError:
            return
