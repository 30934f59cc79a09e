"""The merge in a child process, started before the checks so that it imports torch meanwhile.

Importing torch takes about a second of one core, and so do the ``patchctl`` process's own
imports and checks (SQLAlchemy, pydantic, the catalog); in one process they take turns (the
GIL), in two they run side by side. ``patchctl install`` onto a local base therefore starts
``python -m patchctl._mergeproc`` as it begins (:class:`MergeWorker`), and hands it the
merge once the checks have passed: the plan, the output directory and the options go down its
stdin, and its progress, then its :class:`~patchctl.merge.MergeResult` or its error, come back
on its stdout, as length-prefixed pickles. When the install stops before the merge (a check
failed, an error), the child, which has written nothing, is killed. A child that cannot start
(it ends before it has imported the engine) or be started leaves the merge to the parent.

Errors keep their meaning across the pipe: a :class:`~patchctl.errors.PatchctlError` is raised
again in the parent with its class, message and hint (so the exit code is the same), an
``OSError`` with its errno (disk full is still exit 11), an interruption as
``KeyboardInterrupt`` (exit 130), anything else as a bug with the child's traceback. The child
ignores the terminal's Ctrl-C: the parent, interrupted, asks it to stop (SIGTERM), waits for it
to remove its temporary output and only then exits; a parent that is killed takes the child with
it (``PR_SET_PDEATHSIG``), leaving what a killed merge leaves. The output's bytes are those of
the in-process merge (the same code runs).
"""

from __future__ import annotations

import contextlib
import logging
import os
import pickle
import signal
import struct
import subprocess
import sys
import threading
import traceback
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

from patchctl._secrets import log_to_stderr
from patchctl.errors import OSFailureError, PatchctlError

if TYPE_CHECKING:
    from patchctl.merge import MergeResult

__all__ = ["ENV", "MergeWorker", "for_install", "prestart", "wanted"]

#: "0": ``patchctl install`` merges in its own process (as the API does), not in a child
ENV = "PATCHCTL_MERGE_PROCESS"

_FRAME = struct.Struct("<Q")

log = logging.getLogger(__name__)


def _allowed() -> bool:
    """Not turned off (:data:`ENV`), and torch not imported here yet (a process that has it gains
    nothing from a second one)."""
    return os.environ.get(ENV) != "0" and "torch" not in sys.modules


def wanted(onto: str, dtype_plan_cache: Path | None) -> bool:
    """Whether ``patchctl install --onto ONTO`` should merge in a child: a local base (an hf://
    one is merged as it arrives, by the download's threads) whose dtype plan is known (else
    this process imports torch and transformers to build it, and a second process would only
    add their memory), where :func:`_allowed`."""
    if not _allowed() or onto.startswith("hf://"):
        return False
    base = Path(onto).expanduser()
    if not base.is_dir():
        return False
    from patchctl.merge._fp32 import known

    return known(base, dtype_plan_cache)


#: the worker :func:`prestart` started, until :func:`for_install` takes it
_early: MergeWorker | None = None


def prestart() -> None:
    """Start a worker now, before the command's own imports (``patchctl install``, from the
    command line, as the process starts), unless turned off or torch is here already."""
    global _early
    if _early is None and _allowed():
        _early = _started()


def for_install(onto: str, merging: bool, dtype_plan_cache: Path | None) -> MergeWorker | None:
    """The worker for an install onto ``onto`` that will ``merge`` (not a dry run, not
    ``--format adapter``): the one :func:`prestart` started, or a new one, where
    :func:`wanted`; else None (a prestarted one is stopped)."""
    global _early
    early, _early = _early, None
    if merging and wanted(onto, dtype_plan_cache):
        return early or _started()
    if early is not None:
        early.close()
    return None


def _started() -> MergeWorker | None:
    """A new worker, or None where no process can be started (the install then merges here)."""
    try:
        return MergeWorker()
    except OSError as exc:
        log.warning("the merge process could not be started (%s); merging in this process", exc)
        return None


def _send(stream: IO[bytes], message: Any) -> None:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_FRAME.pack(len(data)) + data)
    stream.flush()


def _receive(stream: IO[bytes]) -> Any:
    """The next message, or None at the end of the stream."""
    head = stream.read(_FRAME.size)
    if len(head) < _FRAME.size:
        return None
    (n,) = _FRAME.unpack(head)
    data = stream.read(n)
    if len(data) < n:
        return None
    return pickle.loads(data)


class MergeWorker:
    """A merge child process (see the module doc); :meth:`merge` once, :meth:`close` always."""

    def __init__(self, command: list[str] | None = None) -> None:
        """``command``: the child's command line (tests), by default this interpreter running this module."""
        level = str(logging.getLogger().getEffectiveLevel())
        self._proc = subprocess.Popen(
            command or [sys.executable, "-m", "patchctl._mergeproc", level],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            close_fds=True,
        )
        self._merging = False

    @property
    def pid(self) -> int:
        return self._proc.pid

    def merge(self, plan: Any, out_dir: Path, *, progress: Any, **options: Any) -> MergeResult | None:
        """``execute_merge(plan, out_dir, progress=progress, **options)`` in the child: its result,
        or its error raised here (see the module doc). ``progress`` is driven from this thread.
        None when the child could not start (it ended before it had imported the engine: an
        interpreter that cannot run ``-m patchctl._mergeproc``, e.g. a frozen executable): the
        caller merges in its own process."""
        proc = self._proc
        assert proc.stdin is not None and proc.stdout is not None
        self._merging = True
        ready = False
        try:
            _send(proc.stdin, ("merge", plan, out_dir, options))
            proc.stdin.close()
            while (message := _receive(proc.stdout)) is not None:
                kind, *args = message
                ready = True
                if kind == "result":
                    return cast("MergeResult", args[0])
                if kind == "error":
                    raise _rebuilt(*args)
                if progress is not None and (call := getattr(progress, kind, None)) is not None:
                    call(*args)
        except BrokenPipeError:
            pass  # the child is gone: said below
        except KeyboardInterrupt:
            self._stop()
            raise
        code = proc.wait()
        how = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        if not ready:
            log.warning("the merge process could not start (%s); merging in this process", how)
            return None
        raise OSFailureError(
            f"the merge process ended without a result ({how}); nothing was installed",
            hint="a process killed for memory (see dmesg) or by hand; `patchctl gc` removes what it left",
        )

    def _stop(self) -> None:
        """Interrupted mid-merge: ask the child to stop and wait while it removes its temporary output."""
        if self._proc.poll() is None:
            self._proc.send_signal(signal.SIGTERM)
            try:
                self._proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self._proc.kill()

    def close(self) -> None:
        """End the child: after a merge it has exited; one that was given none has written
        nothing and is killed (a SIGTERM can land in an import that swallows the interruption)."""
        proc = self._proc
        if not self._merging and proc.poll() is None:
            proc.kill()
        for stream in (proc.stdin, proc.stdout):
            if stream is not None and not stream.closed:
                with contextlib.suppress(BrokenPipeError):
                    stream.close()
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _rebuilt(kind: str, *args: Any) -> BaseException:
    """The child's error as the parent raises it (see :func:`_error_message`)."""
    if kind == "patchctl":
        module, name, message, hint, exit_code = args
        cls = getattr(sys.modules.get(module), name, None)
        if not (isinstance(cls, type) and issubclass(cls, PatchctlError)):
            cls = PatchctlError
        exc = cls.__new__(cls)
        Exception.__init__(exc, message)
        exc.message, exc.hint, exc.exit_code = message, hint, exit_code
        return exc
    if kind == "os":
        number, strerror, filename, filename2 = args
        return OSError(number, strerror, filename, None, filename2)
    if kind == "interrupt":
        return KeyboardInterrupt()
    return RuntimeError(f"the merge process failed:\n{args[0]}")


def _error_message(exc: BaseException) -> tuple[Any, ...]:
    if isinstance(exc, PatchctlError):
        return ("error", "patchctl", type(exc).__module__, type(exc).__qualname__, exc.message, exc.hint, exc.exit_code)
    if isinstance(exc, OSError) and exc.errno is not None:
        return ("error", "os", exc.errno, exc.strerror, exc.filename, exc.filename2)
    if isinstance(exc, KeyboardInterrupt):
        return ("error", "interrupt")
    return ("error", "bug", "".join(traceback.format_exception(exc)))


class _Progress:
    """The child's side of the parent's progress: each call becomes a message (from any thread)."""

    def __init__(self, stream: IO[bytes]) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def send(self, message: Any) -> None:
        with self._lock:
            _send(self._stream, message)

    def start(self, total_tensors: int, total_bytes: int) -> None:
        self.send(("start", total_tensors, total_bytes))

    def begin_shard(self, name: str, index: int, count: int) -> None:
        self.send(("begin_shard", name, index, count))

    def advance(self, tensors: int, nbytes: int) -> None:
        self.send(("advance", tensors, nbytes))

    def finish(self) -> None:
        self.send(("finish",))


def _die_with_parent() -> None:
    """Die with the parent (Linux), as the merge would in the parent's process: a killed install
    leaves its temporary output, which the next install or ``patchctl gc`` removes (its owner's
    pid is gone). Elsewhere a dead parent shows as a closed pipe."""
    parent = os.getppid()
    if sys.platform.startswith("linux"):
        import ctypes

        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL, 0, 0, 0)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the call
        os._exit(1)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides (see the module doc)
    signal.signal(signal.SIGTERM, _interrupt)
    _die_with_parent()
    # the messages go on the real stdout; anything printed goes to stderr
    out = _Progress(os.fdopen(os.dup(1), "wb"))
    os.dup2(2, 1)
    log_to_stderr(int(argv[0]) if argv else logging.WARNING)
    try:
        from patchctl.merge._execute import execute_merge  # torch: the point of starting early

        out.send(("ready",))
        request = _receive(sys.stdin.buffer)
        if request is None:  # the install stopped before its merge
            return 0
        _, plan, out_dir, options = request
        out.send(("result", execute_merge(plan, out_dir, progress=out, **options)))
    except BrokenPipeError:
        return 1  # the parent is gone
    except BaseException as exc:
        try:
            out.send(_error_message(exc))
        except OSError:
            return 1
    return 0


if __name__ == "__main__":
    code = main(sys.argv[1:])
    # the parent waits for this exit: skip the teardown of torch's modules (0.4-0.8 s here); every
    # file is closed and the result sent by now
    sys.stderr.flush()
    os._exit(code)
