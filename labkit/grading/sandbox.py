"""The sandbox every submitted notebook's kernel runs in.

Student notebooks are untrusted code.  Each one runs in a kernel started like this, the
outermost command first; root sets everything up before the first line of student code:

1. ``prlimit --as=M --nproc=P --core=0`` (prlimit(1), setrlimit(2)): limits inherited by
   every process of the notebook (:mod:`labkit.grading.limits`).  A command and not a
   ``preexec_fn``: kernels are started from the grader's worker threads, where the
   subprocess documentation warns that ``preexec_fn`` is not safe.
2. ``bwrap`` run by root (bwrap(1)): new mount, pid, network, IPC, UTS (and cgroup)
   namespaces; ``--die-with-parent``, ``--new-session``.  The file system is built from
   nothing: ``/usr`` and ``/etc``, the Python environment, the kit (``labkit/``) and its
   ``data/`` and ``configs/``, and the ``PYTHONPATH`` entries, all bound read-only; a new
   ``/proc`` (this pid namespace's processes only) and a minimal ``/dev``; a tmpfs of the
   disk limit on ``/tmp`` and another on the student's folder (at the same path as on the
   host: the kernel's working directory), filled with a copy of that folder only; a small
   tmpfs for the kernel's sockets and results.  Anything the grader must not show (the
   ``--source`` notebooks, the submissions folder, the grades, and the exercise modules —
   ``labkit/grading/exercises`` and the ``LABKIT_EXERCISES`` modules with their bytecode:
   the truth of every check) that lies inside a bound path is covered by an empty read-only
   tmpfs (a folder) or ``/dev/null`` (a file); a bound path inside one of them is refused.
   Nothing else of the host exists in there: not /root, /home, the host's /tmp,
   /var/lib/labkit, other students' folders.  The network namespace has only a loopback.
   The pid namespace ends with its pid 1 (pid_namespaces(7)): when the kernel exits or the
   grader kills bwrap (``--die-with-parent``), no process of the notebook survives, daemon
   or not.  (The "parent" of PR_SET_PDEATHSIG is the grader's thread that started bwrap:
   that worker thread outlives the kernel it runs.)
3. Still root, inside: copy the student's folder in (it is bound read-only at
   ``/run/labkit/handin`` for that), give the writable tmpfs to the notebook's uid, the
   socket folder last: its owner tells the grader that the sandbox is ready.
4. ``setpriv --reuid=U --regid=U --clear-groups --no-new-privs --inh-caps=-all
   --bounding-set=-all`` (setpriv(1)): from here on the process is the unprivileged uid U,
   with no capability and no way to gain one (no_new_privs makes setuid bits and file
   capabilities inert: prctl(2)).
5. ``unshare --user --map-current-user --keep-caps`` (unshare(1), user_namespaces(7)): a
   user namespace created by U itself, so it can only map U to U; root and every other uid
   show as 65534.  A new user namespace comes with a full bounding set (and the capabilities
   of that namespace to its creator): ``setpriv --inh-caps=-all --ambient-caps=-all
   --bounding-set=-all`` empties them all before the kernel is executed.
6. The kernel: ``python -m ipykernel_launcher``.

Why not ``bwrap --unshare-user --uid U``, which would do 2–5 at once?

* Run by root, bwrap writes the uid map "U inside = 0 outside": every file the notebook
  writes on a bound writable path belongs to root, and root's own files are the notebook's
  (owner permission bits apply).  ``test_bwrap_as_root_maps_the_sandbox_uid_to_root``
  shows it.
* Run as U, bwrap cannot bind the Python environment: the venv's python is a link into
  ``/root/.pyenv`` and /root is mode 700; bwrap resolves every bind source by path as the
  user, even ``--ro-bind-fd`` ones ("Can't find source path /proc/self/fd/3: Permission
  denied").
So root does the binds and the privileges are dropped afterwards.  Files the notebook
creates belong to U (``test_the_notebook_runs_as_its_own_uid``); outside its tmpfs
nothing is writable.

The uid U has no passwd entry: one of 2000000000–2000001023 (systemd's UIDS-GIDS.md lists
1879048192–2147483647 as unused), one per notebook running at a time on the whole machine:
leased with flock(2) on ``/run/lock/labkit-grade/<uid>.lock`` and only if no process of
that uid is alive, given back once none is left.  RLIMIT_NPROC counts per uid, so each
notebook gets its own process limit.

How the grader talks to the kernel without a network: jupyter_client's ``ipc`` transport
(zmq over unix sockets, ``KernelManager(transport="ipc")``).  The kernel binds them in the
sandbox's ``/run/labkit/io`` tmpfs; the grader reaches that folder as
``/proc/<pid 1 of the sandbox>/root/run/labkit/io`` (proc(5)), through a link in a
root-only folder of the host.  So no folder of the host is writable from the sandbox (a
notebook could fill it).  Once the kernel answered, that folder is handed to root (the
notebook can no longer replace its sockets by links elsewhere), and the grader reads the
results file with ``O_NOFOLLOW``.  The kernel's stderr reaches the grader through a pipe
(:class:`labkit.grading.execute.KernelManager`), never a file.
"""
from __future__ import annotations

import asyncio
import fcntl
import json
import os
import shutil
import stat
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from labkit.errors import GradingError
from labkit.grading.execute import KernelManager, wait_dead
from labkit.grading.limits import Limits, MiB

__all__ = ["Sandbox", "SandboxKernelManager", "UID_FIRST", "UID_COUNT", "TOOLS"]

TOOLS = ("bwrap", "setpriv", "unshare", "prlimit")
UID_FIRST = 2_000_000_000
UID_COUNT = 1024
LOCK_DIR = Path("/run/lock/labkit-grade")

_RUN = "/run/labkit"
_IO = f"{_RUN}/io"                  # the kernel's sockets, and out/ for its results
_IO_BYTES = 4 * MiB
_HANDIN = f"{_RUN}/handin"          # the student's folder, read-only, copied from
_CONNECTION_FILE = f"{_RUN}/kernel.json"
_TOOL_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# host variables a notebook may rely on; everything else of the grader's environment stays out
_PASS = ("LANG", "LANGUAGE", "TZ", "PYTHONPATH")
_PASS_PREFIXES = ("LC_", "LABKIT_")
_NOT_COPIED = 97  # the prelude's exit status when the student's folder does not fit
# root's last words inside the sandbox: copy the folder in, give the tmpfs to the uid (the
# socket folder last: its owner tells the grader the sandbox is ready), then run the rest
_PRELUDE = ('set -e; uid=$1 scratch=$2; shift 2; '
            f'if [ -n "$scratch" ]; then cp -R -P {_HANDIN}/. "$scratch" || exit {_NOT_COPIED}; '
            'chown -R -h "$uid:$uid" "$scratch"; fi; '  # -h: a link, not what it points to
            f'chown "$uid:$uid" /tmp; chown -R "$uid:$uid" {_IO}; exec "$@"')


class Sandbox:
    """How every notebook of one grading run is confined.

    *base* is the grader's environment (only locale, ``PYTHONPATH`` and ``LABKIT_*``
    variables pass into the sandbox), *settings* the variables the kernel must have;
    *hide* the paths the notebook must not see (source notebooks, submissions, grades).
    """

    def __init__(self, limits: Limits, *, base: Mapping[str, str], settings: Mapping[str, str],
                 hide: Iterable[Path]):
        self.limits = limits
        self.tools = _find_tools()
        self.env = _inside_env(base, settings)
        self._root, self._masks = _root_args(self.env, [Path(p) for p in hide])

    def check(self) -> None:
        """Start Python in the sandbox once: a machine where it cannot is an error now."""
        probe = "import os, ipykernel, labkit.grading.checks; print(os.getuid())"
        with _Lease() as lease:
            command = self.command(lease.uid, [sys.executable, "-c", probe])
            try:
                done = subprocess.run(command, capture_output=True, timeout=120, cwd="/",
                                      env={"PATH": _TOOL_PATH})
            except subprocess.TimeoutExpired:
                done = None
            finally:
                _reap(lease.uid)
        if done is None or done.returncode != 0 or done.stdout.decode().strip() != str(lease.uid):
            said = "" if done is None else done.stderr.decode(errors="replace").strip()[-600:]
            raise GradingError(
                "a kernel cannot start in the grading sandbox on this machine",
                cause=(said or "it did not answer within 120 s") + " (the sandbox is bubblewrap "
                      "run as root with new namespaces; the kernel runs as an unprivileged uid)",
                hint="run labkit grade as root on a kernel that allows namespaces "
                     "(bwrap --unshare-pid true); for your own trusted notebooks only: --no-sandbox")

    def kernel_manager(self, folder: Path, *, output_bytes: int,
                       env: Mapping[str, str] | None = None) -> SandboxKernelManager:
        """The kernel manager of one notebook whose folder is *folder* (leases a uid);
        *env*: variables of this notebook's kernel only (e.g. ``LABKIT_STUDENT``)."""
        return SandboxKernelManager(self, Path(folder), output_bytes=output_bytes, env=env)

    def command(self, uid: int, argv: list[str], *, folder: Path | None = None,
                connection_fd: int | None = None, env: Mapping[str, str] | None = None) -> list[str]:
        """The command running *argv* in the sandbox as *uid*, in *folder* (a copy of it),
        with *env* added to the sandbox's environment."""
        lim = self.limits
        cmd = [self.tools["prlimit"], f"--as={lim.memory_bytes}", f"--nproc={lim.processes}",
               "--core=0", "--",
               self.tools["bwrap"], "--unshare-pid", "--unshare-net", "--unshare-ipc",
               "--unshare-uts", "--unshare-cgroup-try", "--hostname", "grading",
               "--die-with-parent", "--new-session"]
        # /tmp first: binds of folders under the host's /tmp (PYTHONPATH…) go on top of it
        cmd += ["--perms", "0700", "--size", str(lim.disk_bytes), "--tmpfs", "/tmp"]
        cmd += self._root
        cmd += ["--perms", "0755", "--dir", _RUN,
                "--perms", "0700", "--size", str(_IO_BYTES), "--tmpfs", _IO,
                "--perms", "0700", "--dir", f"{_IO}/out"]
        if connection_fd is not None:
            cmd += ["--perms", "0444", "--file", str(connection_fd), _CONNECTION_FILE]
        scratch = "" if folder is None else str(folder)
        if folder is not None:
            cmd += ["--ro-bind", scratch, _HANDIN]
            cmd += _parents(folder, made=set())
            cmd += ["--perms", "0700", "--size", str(lim.disk_bytes), "--tmpfs", scratch]
        for mask in self._masks:
            cmd += ["--remount-ro", mask]
        cmd += ["--remount-ro", "/", "--chdir", scratch or "/tmp", "--clearenv"]
        for name, value in sorted({**self.env, **(env or {})}.items()):
            cmd += ["--setenv", name, value]
        cmd += ["--", "/bin/sh", "-c", _PRELUDE, "sh", str(uid), scratch,
                self.tools["setpriv"], f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                "--no-new-privs", "--inh-caps=-all", "--bounding-set=-all", "--",
                self.tools["unshare"], "--user", "--map-current-user", "--keep-caps", "--",
                self.tools["setpriv"], "--inh-caps=-all", "--ambient-caps=-all",
                "--bounding-set=-all", "--", *argv]
        return cmd


class SandboxKernelManager(KernelManager):
    """jupyter_client's kernel manager, starting the kernel in the :class:`Sandbox`.

    A context manager: leaving it waits until no process of its uid is left, gives the uid
    back and removes its host folder.
    """

    def __init__(self, sandbox: Sandbox, folder: Path, *, output_bytes: int,
                 env: Mapping[str, str] | None = None) -> None:
        lease = _Lease()
        lease.acquire()
        try:
            super().__init__(output_bytes=output_bytes, transport="ipc")
        except BaseException:
            lease.release()
            raise
        self._lease = lease
        self._sandbox = sandbox
        self._folder = folder
        self._env = dict(env or {})
        self.ip = str(self._host_dir / "io" / "kernel")
        self.connection_file = str(self._host_dir / "kernel.json")

    @property
    def uid(self) -> int:
        return self._lease.uid

    @property
    def results_dir(self) -> str:
        return f"{_IO}/out"

    def _results_on_host(self) -> Path:
        return self._host_dir / "io" / "out"

    async def _async_launch_kernel(self, kernel_cmd: list[str], **kw: Any) -> None:
        host_file = os.path.realpath(self.connection_file)
        argv = [_CONNECTION_FILE if arg == host_file else arg for arg in kernel_cmd]
        info = json.loads(Path(host_file).read_text())
        info["ip"] = f"{_IO}/kernel"  # the same sockets, as the kernel sees them
        connection = os.memfd_create("kernel.json")
        os.write(connection, json.dumps(info).encode())
        os.lseek(connection, 0, os.SEEK_SET)
        command = self._sandbox.command(self.uid, argv, folder=self._folder, connection_fd=connection,
                                        env=self._env)
        # the environment is the sandbox's (bwrap --clearenv/--setenv): jupyter_client's
        # (JPY_PARENT_PID…) must not reach the kernel, whose parent poller would see pid 1
        kw.update(env={"PATH": _TOOL_PATH}, cwd=str(self._host_dir), pass_fds=(connection,))
        try:
            await super()._async_launch_kernel(command, **kw)
        finally:
            os.close(connection)
        process = self.provisioner.process
        init = await _until_ready(process, self.uid, timeout=60)
        if init is None and process.poll() == _NOT_COPIED:  # this student's files: their notebook's problem
            said = (await self.stderr_end()).split(" | ")[-1]  # cp's last complaint
            raise RuntimeError(f"the student's folder could not be copied into the sandbox: {said}")
        if init is None and process.poll() is None:
            raise RuntimeError("the sandbox was not ready within 60 s (copying the student's folder?)")
        if init is None:  # bwrap could not build the sandbox: never run the kernel some other way
            raise GradingError("the grading sandbox could not be set up",
                               cause=await self.stderr_end() or "bwrap said nothing",
                               hint="check that bwrap works here: bwrap --unshare-pid --ro-bind / / true")
        os.symlink(f"/proc/{init}/root{_IO}", self._host_dir / "io")

    def kernel_ready(self) -> None:
        """Hand the socket folder to root: the notebook cannot replace its sockets now."""
        io = self._host_dir / "io"
        os.chown(io, 0, 0)
        os.chmod(io, 0o755)

    def close(self) -> None:
        try:
            _reap(self.uid)
            self._lease.release()
        finally:
            super().close()


# ---------------------------------------------------------------- building the command


def _find_tools() -> dict[str, str]:
    if os.geteuid() != 0:
        raise GradingError("labkit grade needs root to run the notebooks in its sandbox",
                           cause="root sets up the sandbox, then each notebook runs as an "
                                 "unprivileged uid of its own",
                           hint="run it with sudo; for your own trusted notebooks only: --no-sandbox")
    path = os.pathsep.join([os.environ.get("PATH", ""), _TOOL_PATH])
    tools = {name: shutil.which(name, path=path) for name in TOOLS}
    missing = [name for name, found in tools.items() if found is None]
    if missing:
        raise GradingError(f"the grading sandbox needs {', '.join(missing)}, not found",
                           cause="bwrap comes with the bubblewrap package; setpriv, unshare and "
                                 "prlimit with util-linux",
                           hint="apt-get install bubblewrap util-linux (./kit setup does it); "
                                "for your own trusted notebooks only: --no-sandbox")
    return tools


def _inside_env(base: Mapping[str, str], settings: Mapping[str, str]) -> dict[str, str]:
    env = {name: value for name, value in base.items()
           if name in _PASS or name.startswith(_PASS_PREFIXES)}
    env.update({
        "PATH": f"{Path(sys.executable).parent}:{_TOOL_PATH}",
        "HOME": "/tmp", "TMPDIR": "/tmp",
        # thread pools sized to the machine's CPUs would run into the process limit
        "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",  # the kit is read-only in there
    })
    env.update(settings)
    return env


def _python_paths(env: Mapping[str, str]) -> list[Path]:
    """The folders the kernel's Python needs: environment, kit, data, PYTHONPATH."""
    import labkit
    from labkit import resources

    wanted = [sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
              Path(labkit.__file__).parent, resources.configs_dir(), resources.data_dir(),
              *(p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p)]
    paths = []
    for entry in wanted:
        entry = Path(os.path.abspath(entry))
        if entry.is_dir():
            paths += [entry, entry.resolve()]  # as named, and where links lead
    return paths


def _root_args(env: Mapping[str, str], hide: list[Path]) -> tuple[list[str], list[str]]:
    """bwrap arguments for the read-only part of the sandbox, the same for every notebook,
    and the folders covered by an empty tmpfs (made read-only last)."""
    args = ["--ro-bind", "/usr", "/usr", "--ro-bind", "/etc", "/etc"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    binds = _outermost(p for p in _python_paths(env) if not _within(p, [Path("/usr"), Path("/etc")]))
    hidden = [h.resolve() for h in hide if h.exists()]
    for bind in binds:
        for h in hidden:
            if _within(bind, [h]):
                raise GradingError(f"{bind} would be visible to the notebooks being graded, "
                                   f"but it is inside {h}",
                                   cause="the Python environment, the kit and PYTHONPATH are "
                                         "shown to every notebook (read-only)",
                                   hint="keep the source notebooks, submissions and grades "
                                        "apart from them")
    made: set[str] = set()
    for bind in binds:
        args += _parents(bind, made)
        args += ["--ro-bind", str(bind), str(bind)]
    masks = []
    for h in hidden:  # inside a bound path (e.g. a PYTHONPATH folder holding the sources)
        if not _within(h, binds + [Path("/usr"), Path("/etc")]):
            continue
        if h.is_dir():
            args += ["--tmpfs", str(h)]
            masks.append(str(h))
        else:
            args += ["--ro-bind", "/dev/null", str(h)]
    return args + ["--proc", "/proc", "--dev", "/dev"], masks


def _within(path: Path, roots: Iterable[Path]) -> bool:
    return any(path == root or root in path.parents for root in roots)


def _outermost(paths: Iterable[Path]) -> list[Path]:
    """The paths not inside another of them, sorted (parents first)."""
    unique = sorted(set(paths))
    return [p for p in unique if not _within(p, [q for q in unique if q != p])]


def _parents(path: Path, made: set[str]) -> list[str]:
    """``--dir`` for each missing parent, mode 0755 (bwrap copies the host's modes, and
    /root is 0700: the uid could not reach the Python environment)."""
    args = []
    for parent in reversed(path.parents[:-1]):
        if str(parent) not in made and parent != Path("/tmp"):
            made.add(str(parent))
            args += ["--perms", "0755", "--dir", str(parent)]
    return args


async def _until_ready(process: subprocess.Popen, uid: int, timeout: float) -> int | None:
    """The host pid of the sandbox's pid 1 once the sandbox is set up (its socket folder
    belongs to *uid*: the prelude's last step), None if bwrap ended before."""
    import psutil
    deadline = time.monotonic() + timeout
    while process.poll() is None and time.monotonic() < deadline:
        try:
            (init,) = psutil.Process(process.pid).children()
            if os.stat(f"/proc/{init.pid}/root{_IO}").st_uid == uid:
                return init.pid
        except (ValueError, OSError, psutil.Error):  # not cloned yet, not pivoted yet
            pass
        await asyncio.sleep(0.01)
    return None


# ---------------------------------------------------------------- uids


class _Lease:
    """One uid of UID_FIRST…UID_FIRST+UID_COUNT-1, for one notebook at a time (machine-wide)."""

    def __init__(self) -> None:
        self.uid = -1
        self._fd: int | None = None

    def acquire(self) -> None:
        _lock_dir()
        for uid in range(UID_FIRST, UID_FIRST + UID_COUNT):
            fd = os.open(LOCK_DIR / f"{uid}.lock",
                         os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            if _processes_of(uid):  # a zombie not reaped yet, or left by a killed grader
                os.close(fd)
                continue
            self.uid, self._fd = uid, fd
            return
        raise GradingError(f"all {UID_COUNT} grading uids are in use",
                           hint="wait for the other gradings to finish, or use fewer --jobs")

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the file releases the flock
            self._fd = None

    def __enter__(self) -> _Lease:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _lock_dir() -> None:
    LOCK_DIR.mkdir(mode=0o700, parents=True, exist_ok=True)
    st = os.lstat(LOCK_DIR)
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != 0 or st.st_mode & 0o022:
        raise GradingError(f"{LOCK_DIR} is not a folder that only root can write",
                           hint=f"remove it (rm -rf {LOCK_DIR}); labkit grade recreates it")


def _processes_of(uid: int) -> list:
    import psutil
    found = []
    for proc in psutil.process_iter(["uids"]):
        uids = proc.info["uids"]
        if uids is not None and uid in (uids.real, uids.effective):
            found.append(proc)
    return found


def _reap(uid: int, timeout: float = 10) -> None:
    """Kill whatever still runs as *uid* (its namespace is being torn down) and wait."""
    import psutil
    left = _processes_of(uid)
    for proc in left:
        try:
            proc.kill()
        except psutil.Error:
            pass
    wait_dead(left, timeout)
