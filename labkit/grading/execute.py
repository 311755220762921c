"""Running one notebook top to bottom in a fresh kernel, within its time and output limits.

:func:`execute` runs the code cells of a notebook with nbclient (errors allowed), each cell
within the per-cell timeout and the whole within the notebook's deadline, and tells why it
stopped early, if it did: a timeout, the kernel dying, the output limit.  Nothing of what
the notebook prints is kept but its errors (for the feedback): grades never come from
outputs, and a cell printing in a loop must not fill the grader's memory.

The kernel comes from a :class:`KernelManager` (jupyter_client's ``AsyncKernelManager``):
this one runs it as the grading user, for ``--no-sandbox``;
:class:`labkit.grading.sandbox.SandboxKernelManager` runs it in the sandbox.  Both keep the
kernel's stderr in memory (its last lines explain a kernel that would not start), cap the
size of one zmq message the grader accepts, and give the notebook a results folder that
the grader reads (:meth:`KernelManager.fetch`) before the kernel is stopped.
"""
from __future__ import annotations

import asyncio
import atexit
import logging
import os
import shutil
import stat
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import zmq
import zmq.asyncio
from jupyter_client import AsyncKernelManager
from jupyter_client.asynchronous import AsyncKernelClient
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError, DeadKernelError
from traitlets import Integer, Type, default

from labkit.errors import GradingError
from labkit.grading.limits import KiB, cell_time_line, notebook_time_line, output_line, size

__all__ = ["Execution", "KernelManager", "Session", "execute", "read_regular_file", "wait_dead"]

# nbclient's and jupyter_client's complaints: they end up in our reasons, not on the terminal
_jupyter_log = logging.getLogger(__name__ + ".jupyter")
_jupyter_log.addHandler(logging.NullHandler())
_jupyter_log.propagate = False

#: room for a message's headers above the output limit: one message larger than limit +
#: this is over the limit by itself, and the socket refuses it
_HEADER_ROOM = 64 * KiB
_STDERR_KEPT = 8 * KiB
#: iopub messages that are output of a cell (jupyter messaging protocol)
_OUTPUT_TYPES = frozenset({"stream", "display_data", "execute_result", "error", "update_display_data"})


def read_regular_file(path: Path | str, limit: int) -> bytes | None:
    """The first *limit* bytes of *path* if it is a regular file, else None.

    The notebook may have put anything under that name: a symbolic link (``O_NOFOLLOW``
    refuses it), a FIFO (``O_NONBLOCK`` keeps open(2) from waiting for a writer), a device.
    """
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        chunks, left = [], limit
        while left > 0:
            chunk = os.read(fd, min(left, 1 << 20))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        return b"".join(chunks)
    finally:
        os.close(fd)


def _capped_context(max_bytes: int) -> zmq.asyncio.Context:
    """A zmq context whose sockets refuse any message larger than *max_bytes*.

    zmq_setsockopt(3), ``ZMQ_MAXMSGSIZE``: "if a peer sends a message larger than
    ZMQ_MAXMSGSIZE it is disconnected"; so a kernel cannot make the grader hold one huge
    message in memory (the kernel's disconnection is seen: :meth:`_Notebook.watch_iopub`).
    """
    context = zmq.asyncio.Context()
    context.setsockopt(zmq.MAXMSGSIZE, max_bytes)
    return context


class _Client(AsyncKernelClient):
    """jupyter_client's async kernel client, on a context with a message size cap."""

    max_message_bytes = Integer(-1)

    @default("context")
    def _capped(self) -> zmq.asyncio.Context:
        self._created_context = True  # so that stop_channels() destroys it
        return _capped_context(self.max_message_bytes)


class KernelManager(AsyncKernelManager):
    """The kernel of one graded notebook, run as the grading user (``--no-sandbox``).

    A context manager: leaving it removes the notebook's results folder.
    """

    client_factory = Type(_Client, klass=AsyncKernelClient)
    max_message_bytes = Integer(-1)

    def __init__(self, *, output_bytes: int, **kwargs: Any) -> None:
        super().__init__(kernel_name="python3", max_message_bytes=output_bytes + _HEADER_ROOM,
                         log=_jupyter_log, **kwargs)
        self._host_dir = Path(tempfile.mkdtemp(prefix="labkit-grade-"))
        self._stderr = bytearray()
        self._stderr_lock = threading.Lock()
        self._drainer: threading.Thread | None = None

    @default("context")
    def _capped(self) -> zmq.asyncio.Context:
        self._created_context = True  # so that cleanup_resources() destroys it
        return _capped_context(self.max_message_bytes)

    def client(self, **kwargs: Any) -> AsyncKernelClient:
        return super().client(max_message_bytes=self.max_message_bytes, **kwargs)

    @property
    def results_dir(self) -> str:
        """Where the notebook's kernel writes its results (as the kernel sees it)."""
        return str(self._host_dir)

    def _results_on_host(self) -> Path:
        return self._host_dir

    def fetch(self, name: str, limit: int = 4 << 20) -> bytes | None:
        """The file *name* of the results folder (None if there is no such regular file)."""
        return read_regular_file(self._results_on_host() / name, limit)

    def kernel_ready(self) -> None:
        """Called once the kernel answers, before any cell of the notebook runs."""

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        # jupyter_client: "override in a subclass to launch kernel subprocesses differently"
        kw["stderr"] = subprocess.PIPE
        await super()._async_launch_kernel(kernel_cmd, **kw)
        self._drainer = threading.Thread(target=self._drain, args=(self.provisioner.process.stderr,),
                                         daemon=True, name="labkit-grade-stderr")
        self._drainer.start()

    def _drain(self, pipe) -> None:
        """Read the kernel's stderr to its end, keeping the last bytes (never a file: the
        notebook could write to it without limit)."""
        try:
            while chunk := pipe.read1(1 << 16):
                with self._stderr_lock:
                    self._stderr += chunk
                    del self._stderr[:-_STDERR_KEPT]
        except (OSError, ValueError):  # closed by the provisioner once the kernel is reaped
            pass

    async def stderr_end(self, timeout: float = 10) -> str:
        """:meth:`stderr_tail` once the kernel's process and its stderr have ended."""
        process = self.provisioner.process if self.provisioner is not None else None
        deadline = time.monotonic() + timeout
        while process is not None and process.poll() is None and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self._drainer is not None:
            await asyncio.to_thread(self._drainer.join, max(0.0, deadline - time.monotonic()))
        return self.stderr_tail()

    def stderr_tail(self, limit: int = 300) -> str:
        """The last lines the kernel wrote to stderr, on one line."""
        with self._stderr_lock:
            text = self._stderr.decode(errors="replace")
        lines = [ln for ln in text.splitlines() if ln.strip() and "without encryption" not in ln]
        return " | ".join(lines[-3:])[-limit:]

    def close(self) -> None:
        shutil.rmtree(self._host_dir, ignore_errors=True)

    def __enter__(self) -> KernelManager:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class Execution:
    """How a notebook's run ended."""
    reason: str = ""                 # why it stopped early ("" if it ran to the end)
    stopped: str = ""                # the feedback line when a time or output limit stopped it
    files: dict[str, bytes | None] = field(default_factory=dict)  # fetched before the stop


class Session:
    """One grading run: the kernels alive now, and whether to stop."""

    def __init__(self) -> None:
        self.abort = threading.Event()
        self._lock = threading.Lock()
        self._kernels: list[dict[str, Any]] = []

    def add(self, kernel: dict[str, Any]) -> None:
        with self._lock:
            self._kernels.append(kernel)

    def remove(self, kernel: dict[str, Any]) -> None:
        with self._lock:
            if kernel in self._kernels:
                self._kernels.remove(kernel)

    def kill_all(self) -> None:
        with self._lock:
            kernels = list(self._kernels)
        for kernel in kernels:
            _kill(_descendants(kernel), kernel)


def execute(nb, km: KernelManager, *, cwd: Path, env: dict[str, str], timeout: float,
            total_timeout: float, output_bytes: int, labels: list[str], session: Session,
            fetch: tuple[str, ...] = ()) -> Execution:
    """Run *nb* in a fresh kernel of *km*; fetch the results files named in *fetch*."""
    return asyncio.run(_execute(nb, km, cwd, env, timeout, total_timeout, output_bytes,
                                labels, session, fetch))


def _size(value: Any) -> int:
    """The size of a message's content: the characters of its text (what the grader holds)."""
    if isinstance(value, str):
        return len(value)
    if isinstance(value, dict):
        return sum(_size(v) for v in value.values())
    if isinstance(value, list):
        return sum(_size(v) for v in value)
    return 8


class _Notebook(NotebookClient):
    """nbclient, keeping only errors and stopping the kernel past the output limit."""

    output_bytes = Integer(0)

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.output_seen = 0
        self.over_limit = False

    def output(self, outs, msg, display_id, cell_index):
        if msg.get("msg_type") != "error":
            return None
        return super().output(outs, msg, display_id, cell_index)

    def process_message(self, msg, cell, cell_index):
        if msg["msg_type"] in _OUTPUT_TYPES:
            self.output_seen += _size(msg["content"])
            if self.output_seen > self.output_bytes:
                self.stop_for_output()
        return super().process_message(msg, cell, cell_index)

    def stop_for_output(self) -> None:
        """Kill the kernel: the cell ends as "kernel died", read as the output limit."""
        if not self.over_limit:
            self.over_limit = True
            process = getattr(self.km.provisioner, "process", None) if self.km else None
            if process is not None and process.poll() is None:
                process.kill()

    async def watch_iopub(self) -> None:
        """The kernel sent one message over the size cap: its socket dropped it and
        disconnected (zmq_socket_monitor(3): ``ZMQ_EVENT_DISCONNECTED``)."""
        monitor = self.kc.iopub_channel.socket.get_monitor_socket(zmq.EVENT_DISCONNECTED)
        try:
            await monitor.recv_multipart()
            await asyncio.sleep(0.5)  # a kernel that died disconnects too: let it be seen
            if self.km is not None and await self.km.is_alive():
                self.stop_for_output()
        finally:
            self.kc.iopub_channel.socket.disable_monitor()
            monitor.close(linger=0)


async def _execute(nb, km: KernelManager, cwd: Path, env: dict[str, str], timeout: float,
                   total_timeout: float, output_bytes: int, labels: list[str], session: Session,
                   fetch: tuple[str, ...]) -> Execution:
    client = _Notebook(
        nb, km=km, kernel_name="python3", allow_errors=True, shutdown_kernel="immediate",
        interrupt_on_timeout=False, startup_timeout=int(max(10, min(60, total_timeout))),
        resources={"metadata": {"path": str(cwd)}}, log=_jupyter_log, output_bytes=output_bytes)
    limit = {"seconds": float(timeout)}
    client.timeout_func = lambda cell: limit["seconds"]
    procs: dict[int, Any] = {}
    kernel: dict[str, Any] = {}
    deadline = time.monotonic() + total_timeout
    run = Execution()
    client.reset_execution_trackers()

    def stop(reason: str, line: str) -> None:
        run.reason, run.stopped = reason, line

    try:
        # Start the kernel ourselves, so that its process is known (and killed in the end)
        # even if starting fails half-way; async_setup_kernel then uses it.
        try:
            await client.async_start_new_kernel(env=env, cwd=str(cwd), stdout=subprocess.DEVNULL)
        finally:
            kernel.update(_kernel_process(km))
            session.add(kernel)
        async with client.async_setup_kernel(cleanup_kc=True):
            km.kernel_ready()
            watcher = asyncio.ensure_future(client.watch_iopub())
            try:
                for index, cell in enumerate(nb.cells):
                    if cell.cell_type != "code" or not cell.source.strip():
                        continue
                    label = labels[index]
                    if session.abort.is_set():
                        run.reason = "grading was interrupted"
                        break
                    remaining = deadline - time.monotonic()
                    if remaining <= 0:
                        stop(f"the notebook ran out of time (total limit {total_timeout:g} s) "
                             f"before {label}",
                             notebook_time_line(label, total_timeout, before=True))
                        break
                    limit["seconds"] = min(float(timeout), remaining)
                    try:
                        await client.async_execute_cell(
                            cell, index, execution_count=client.code_cells_executed + 1)
                    except CellTimeoutError:
                        if limit["seconds"] < timeout:
                            stop(f"the notebook ran out of time (total limit {total_timeout:g} s) "
                                 f"in {label}",
                                 notebook_time_line(label, total_timeout, before=False))
                        else:
                            stop(f"{label} timed out after {timeout:g} s",
                                 cell_time_line(label, timeout))
                        break
                    except DeadKernelError:
                        if not client.over_limit:
                            run.reason = f"kernel died in {label}"
                            break
                    finally:
                        procs.update(_descendants(kernel))
                    if client.over_limit:
                        stop(f"{label} was stopped: the notebook's output went over "
                             f"{size(output_bytes)}", output_line(label, output_bytes))
                        break
                run.files = {name: km.fetch(name) for name in fetch}
            finally:
                watcher.cancel()
                await asyncio.gather(watcher, return_exceptions=True)
    except GradingError:  # the sandbox itself failed: never run the notebook some other way
        raise
    except Exception as exc:  # the kernel would not start, the connection broke…
        run.reason = run.reason or f"the notebook could not be run ({type(exc).__name__}: {exc})"
        tail = await km.stderr_end(timeout=2)
        if tail:
            run.reason += f"; kernel said: {tail}"
    finally:
        procs.update(_descendants(kernel))
        if client.km is not None:  # nbclient did not clean up: the kernel failed to start
            try:
                await km.shutdown_kernel(now=True)
            except Exception:
                pass
            if not km.context.closed:
                await km.cleanup_resources()
        _kill(procs, kernel)
        session.remove(kernel)
        atexit.unregister(client._cleanup_kernel)  # left registered when the kernel failed to start
    return run


def _kernel_process(km: KernelManager) -> dict[str, Any]:
    import psutil
    try:
        pid = km.provisioner.process.pid
        proc = psutil.Process(pid)
        return {"proc": proc, "pid": pid, "created": proc.create_time()}
    except Exception:
        return {}


def _descendants(kernel: dict[str, Any]) -> dict[int, Any]:
    import psutil
    proc = kernel.get("proc")
    if proc is None:
        return {}
    found = {}
    try:
        if proc.is_running():
            found[proc.pid] = proc
            for child in proc.children(recursive=True):
                found[child.pid] = child
    except psutil.Error:
        pass
    return found


def _kill(procs: dict[int, Any], kernel: dict[str, Any]) -> None:
    """Kill what is left of the kernel: its processes and its process group."""
    import psutil
    pid, created = kernel.get("pid"), kernel.get("created")
    if pid is not None:  # the kernel leads its own session: catch children it spawned late
        for proc in psutil.process_iter(["pid"]):
            try:
                if proc.pid != os.getpid() and os.getpgid(proc.pid) == pid \
                        and proc.create_time() >= created - 1:
                    procs[proc.pid] = proc
            except (OSError, psutil.Error):
                pass
    alive = []
    for proc in procs.values():
        try:
            if proc.is_running():
                proc.kill()
                alive.append(proc)
        except psutil.Error:
            pass
    wait_dead(alive, timeout=5)


def wait_dead(procs: list, timeout: float) -> None:
    """Wait until *procs* are dead: gone, or zombies (a process of a sandbox whose pid 1
    died is reaped by the host's init, which may take its time)."""
    import psutil
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        living = []
        for proc in procs:
            try:
                if proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE:
                    living.append(proc)
            except psutil.Error:
                pass
        if not living:
            return
        psutil.wait_procs(living, timeout=0.05)
