"""The grading sandbox: hostile submissions are contained, scored 0 for what they broke, and
named in their feedback; the grader's output and the other students' grades stay intact.

One grading run (module fixture ``hostile``) grades an honest student next to one student per
kind of attack, with limits smaller than the defaults (so that each limit is shown to be
configurable); each test then looks at one attack.  The sandbox's own properties (its uid,
what the kernel can see, how it fails) are tested on :class:`Sandbox` directly.  Like every
grading test, these need root (``sudo ./kit test``): they are never skipped.
"""
from __future__ import annotations

import copy
import json
import os
import re
import socket
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import nbformat
import psutil
import pytest

from labkit.errors import GradingError
from labkit.grading import sandbox as sandbox_module
from labkit.grading.grade import grade, grade_main, release
from labkit.grading.limits import Limits, MiB
from labkit.grading.sandbox import UID_COUNT, UID_FIRST, Sandbox

from .conftest import SOURCE
from .test_grading import GOOD_ANSWER, GOOD_TOTAL, _kernels_left, _rows, _sleepers, _submission, _write

# memory keeps its default: the kernel must be able to build a 100 MB message (shouter)
LIMITS = Limits(processes=48, disk_bytes=32 * MiB, output_bytes=1 * MiB)
TAG = str(os.getpid())  # file and process names unique to this test run
CHECKS = ("answer-42", "sum-list", "hidden-positive")


def _grading_uid_processes() -> list[str]:
    """Processes of a grading uid, but those in the live sandbox of another grading (another
    test run may be grading at the same time: its processes descend from its own bwrap)."""
    left = []
    for proc in psutil.process_iter(["uids", "cmdline"]):
        uids = proc.info["uids"]
        if uids is None or not UID_FIRST <= uids.real < UID_FIRST + UID_COUNT:
            continue
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:  # dead, waiting for the host's init
                continue
            ancestors = proc.parents()
            if os.getpid() not in {a.pid for a in ancestors} and any(a.name() == "bwrap" for a in ancestors):
                continue
        except psutil.Error:
            continue
        left.append(f"{proc.pid} uid {uids.real}: {proc.info['cmdline']}")
    return left


def _running(parent: psutil.Process, command: str) -> list[psutil.Process]:
    """The descendants of *parent* running *command* (not the ones exiting meanwhile)."""
    found = []
    for proc in parent.children(recursive=True):
        try:
            if proc.cmdline()[:1] == [command]:
                found.append(proc)
        except psutil.Error:
            pass
    return found


def _cell_first(nb, source: str):
    """*nb* with *source* as its very first code cell (before the imports)."""
    nb = copy.deepcopy(nb)
    nb.cells.insert(0, nbformat.v4.new_code_cell(source))
    return nb


@pytest.fixture(scope="module")
def released(tmp_path_factory) -> Path:
    (path,) = release(SOURCE / "toy.ipynb", tmp_path_factory.mktemp("release"))
    return path


@pytest.fixture(scope="module")
def hostile(released, tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    subs, grades = root / "submissions", root / "grades"
    grades.mkdir()
    (grades / "grades.csv").write_text("student,points\nmallory,SECRET-GRADES\n")  # a previous run
    tcp = socket.socket()
    tcp.bind(("127.0.0.1", 0))
    tcp.listen()
    tcp.setblocking(False)
    udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    udp.bind(("127.0.0.1", 0))
    udp.setblocking(False)
    targets = {  # where the writer tries to leave a file
        "host /tmp": Path(f"/tmp/pwned-{TAG}"),
        "/root": Path(f"/root/pwned-{TAG}"),
        "/home": Path(f"/home/pwned-{TAG}"),
        "the kit": Path(__file__).resolve().parents[2] / "labkit" / f"pwned-{TAG}",
        "the source notebooks": SOURCE / f"pwned-{TAG}",
        "another student": subs / "alice" / f"pwned-{TAG}",
        "the grades": grades / f"pwned-{TAG}",
    }
    honest = ("import os, subprocess\n"
              "from labkit.resources import data_dir\n"
              "capture = data_dir() / 'captures' / '00-orientation-legacy.pcap'\n"
              "seen = subprocess.check_output(['tshark', '-r', str(capture), '-c', '1'])\n"
              "works = os.environ['LABKIT_MODE'] == 'replay' and os.getuid() != 0 and b'1' in seen\n"
              "answer = 42 if works else 0\n"
              "# alice-secret-marker")
    _write(subs, "alice", _submission(released, honest, GOOD_TOTAL))
    first_cell = "\n".join([
        "import subprocess, pathlib",
        "pathlib.Path('pwned-here.txt').write_text('pwned')  # its own scratch folder: allowed",
        f"for target in {[str(p) for p in targets.values()]!r}:",
        "    try:",
        "        pathlib.Path(target).write_text('pwned')",
        "    except OSError:",
        "        pass",
        "raise RuntimeError('id says: ' + subprocess.check_output(['id']).decode())"])
    writer = _cell_first(_submission(released, GOOD_ANSWER, GOOD_TOTAL, extra=[
        f"open({str(p)!r}, 'w').write('pwned')" for p in targets.values()]), first_cell)
    _write(subs, "writer", writer)
    # the reader looks everywhere for the solutions, another student's work, the grades
    # (the solutions, a hidden check, the exercise modules' truths, another student, the grades)
    markers = ('["instructor" + " only", "Deep" + " Thought", "def pbx_sip" + "_port(", "REGISTER" + "_WITHIN = ",'
               ' "alice" + "-secret-marker", "SECRET" + "-GRADES"]')
    walk = (f"import os\nmarkers = {markers}\nhits = set()\n"
            "for top, dirs, files in os.walk('/'):\n"
            "    dirs[:] = [d for d in dirs if os.path.join(top, d) not in ('/proc', '/sys', '/dev', '/usr')\n"
            "               and d not in ('.venv', '.pyenv', '__pycache__')]\n"
            "    for f in files:\n"
            "        path = os.path.join(top, f)\n"
            "        try:\n"
            "            if os.path.getsize(path) < 2_000_000:\n"
            "                text = open(path, errors='replace').read()\n"
            "                hits.update(f'{m} in {path}' for m in markers if m in text)\n"
            "        except OSError:\n"
            "            pass\n"
            "raise RuntimeError(f'leaks: {sorted(hits)}')")
    _write(subs, "reader", _submission(released, GOOD_ANSWER, GOOD_TOTAL, extra=[
        f"open({str(SOURCE / 'toy.ipynb')!r}).read()",
        f"open({str(subs / 'alice' / 'toy.ipynb')!r}).read()",
        walk]))
    _write(subs, "netter", _submission(released, GOOD_ANSWER, GOOD_TOTAL, extra=[
        f"import socket\nsocket.create_connection(('127.0.0.1', {tcp.getsockname()[1]}), timeout=3)",
        "import socket\nsocket.getaddrinfo('example.com', 443)",
        "import socket\nsocket.create_connection(('192.0.2.1', 80), timeout=3)",
        "import socket\nudp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        f"udp.sendto(b'leak', ('127.0.0.1', {udp.getsockname()[1]}))"]))
    _write(subs, "forker", _submission(released, GOOD_ANSWER, GOOD_TOTAL, extra=[
        "import os\nwhile True:\n    os.fork()"]))
    _write(subs, "filler", _submission(released, GOOD_ANSWER, GOOD_TOTAL, extra=[
        "with open('fill', 'wb') as f:\n    while True:\n        f.write(b'x' * (1 << 20))",
        "with open('/tmp/fill', 'wb') as f:\n    while True:\n        f.write(b'x' * (1 << 20))"]))
    _write(subs, "hog", _submission(released, GOOD_ANSWER, GOOD_TOTAL, extra=[
        "hog = bytearray(20 * 10**9)"]))
    _write(subs, "killer", _submission(released, GOOD_ANSWER, GOOD_TOTAL, extra=[
        f"import os\nos.kill({os.getpid()}, 9)",
        "import os\nos.kill(os.getppid(), 9)",
        "import os\nos.system('kill -9 -1')"]))
    sleeper = f"4243.{TAG}"
    _write(subs, "lingerer", _submission(released, GOOD_ANSWER, GOOD_TOTAL, extra=[
        f"import subprocess\nsubprocess.Popen(['setsid', 'sh', '-c', 'sleep {sleeper} &'])\n"
        f"subprocess.Popen(['sleep', '{sleeper}'], start_new_session=True)"]))
    _write(subs, "shouter", _submission(released, GOOD_ANSWER, GOOD_TOTAL, extra=[
        "print('x' * 100_000_000)"]))
    _write(subs, "chatter", _submission(released, GOOD_ANSWER, GOOD_TOTAL, extra=[
        "for i in range(10_000):\n    print('y' * 1000)"]))

    started = time.monotonic()
    report = grade(subs, grades / "grades.csv", source=SOURCE, timeout=20, total_timeout=120,
                   jobs=4, limits=LIMITS)
    elapsed = time.monotonic() - started
    accepted = []
    try:
        accepted.append(tcp.accept())
    except BlockingIOError:
        pass
    try:
        received = udp.recv(100)
    except BlockingIOError:
        received = None
    tcp.close()
    udp.close()
    feedback = {p.stem: p.read_text() for p in (grades / "feedback").iterdir()}
    yield SimpleNamespace(report=report, rows=_rows(grades / "grades.csv"), feedback=feedback,
                          subs=subs, grades=grades, targets=targets, elapsed=elapsed,
                          accepted=accepted, received=received, sleeper=sleeper)
    for path in targets.values():
        path.unlink(missing_ok=True)


def _got(hostile, student):
    return {c: (hostile.rows[(student, c)]["points"], hostile.rows[(student, c)]["status"])
            for c in CHECKS}


def _stopped(feedback: str) -> list[str]:
    """The lines of the feedback's "What the grading sandbox stopped or refused" list."""
    lines, inside = [], False
    for line in feedback.splitlines():
        if line.startswith("What the grading sandbox stopped or refused:"):
            inside = True
        elif inside and line.startswith("- "):
            lines.append(line[2:])
        elif inside and not line.strip():
            inside = False
    return lines


ALL_PASS = {"answer-42": ("1", "pass"), "sum-list": ("2", "pass"), "hidden-positive": ("1", "pass")}
NOT_REACHED = {c: ("0", "not-reached") for c in CHECKS}


def test_the_grader_finishes_and_honest_work_is_intact(hostile):
    assert hostile.elapsed < 150
    # tshark and the kit's captures work inside, in replay mode, as an unprivileged uid
    assert _got(hostile, "alice") == ALL_PASS, hostile.feedback["alice"]
    assert "What the grading sandbox" not in hostile.feedback["alice"]
    assert (hostile.grades / "grades.csv").read_text().count("\n") == 1 + 3 * 11
    assert _kernels_left() == []
    assert _grading_uid_processes() == []


def test_first_cell_writing_files_and_running_id(hostile):
    """The issue's scenario: nothing appears outside, and the cell is not root."""
    for where, path in hostile.targets.items():
        assert not path.exists(), f"the notebook wrote in {where}: {path}"
    assert sorted(p.name for p in (hostile.subs / "writer").iterdir()) == ["toy.ipynb"]
    text = hostile.feedback["writer"]
    uid = int(re.search(r"id says: uid=(\d+)", text).group(1))
    assert UID_FIRST <= uid < UID_FIRST + UID_COUNT
    assert "uid=0" not in text
    # contained, and named: each refused write is a line of its own (writes in the
    # sandbox's own /tmp are allowed: that /tmp is not the host's)
    stopped = _stopped(text)
    for path in (hostile.targets["/root"], hostile.targets["the kit"]):
        assert any("tried to write outside its folder" in s and str(path) in s for s in stopped), \
            (path, stopped)
    assert "cell 1 (`import subprocess, pathlib`) raised" in text
    # scored 0 for nothing: the writes broke nothing the checks need
    assert _got(hostile, "writer") == ALL_PASS


def test_solutions_other_students_and_grades_are_invisible(hostile):
    text = hostile.feedback["reader"]
    assert "leaks: []" in text, text
    assert f"raised FileNotFoundError: [Errno 2] No such file or directory: '{SOURCE / 'toy.ipynb'}'" in text
    assert "No such file or directory: '" + str(hostile.subs / "alice" / "toy.ipynb") in text
    assert _got(hostile, "reader") == ALL_PASS


def test_network_is_absent(hostile):
    assert hostile.accepted == [] and hostile.received is None  # nothing reached the host
    stopped = _stopped(hostile.feedback["netter"])
    assert [s.split(":")[0] for s in stopped] == [
        f"cell {n} tried to use the network (there is none while grading)" for n in (8, 9, 10)]
    assert "Connection refused" in stopped[0] and "name resolution" in stopped[1]
    assert "Network is unreachable" in stopped[2]
    assert _got(hostile, "netter") == ALL_PASS


def test_fork_bomb_is_bounded(hostile):
    assert _stopped(hostile.feedback["forker"]) == [
        "cell 8 was stopped: it tried to run more than 48 processes and threads at once"]
    assert hostile.rows[("forker", "sum-list")]["status"] == "pass"  # before the bomb
    assert _grading_uid_processes() == []


def test_filling_the_disk_stops_at_the_scratch_size(hostile):
    assert _stopped(hostile.feedback["filler"]) == [
        f"cell {n} was stopped: it filled the 32 MiB of disk a notebook gets" for n in (8, 9)]
    assert sorted(p.name for p in (hostile.subs / "filler").iterdir()) == ["toy.ipynb"]
    assert not Path("/tmp/fill").exists()
    assert _got(hostile, "filler") == ALL_PASS


def test_allocating_20_gb_hits_the_memory_limit(hostile):
    assert _stopped(hostile.feedback["hog"]) == [
        "cell 8 was stopped: it tried to use more than 2 GiB of memory"]
    assert _got(hostile, "hog") == ALL_PASS


def test_killing_the_grader_kills_only_the_notebook(hostile):
    assert _stopped(hostile.feedback["killer"])[:2] == [
        "cell 8 tried to signal a process outside the notebook: [Errno 3] No such process",
        "cell 9 tried something the grading sandbox does not allow: [Errno 1] Operation not permitted"]
    # `kill -9 -1` killed every process of the notebook, its kernel too: what came after scores 0
    assert _got(hostile, "killer") == NOT_REACHED
    assert {hostile.rows[("killer", c)]["message"] for c in CHECKS} == {"kernel died in cell 10"}


def test_no_process_outlives_its_notebook(hostile):
    assert _sleepers(hostile.sleeper) == []
    assert _got(hostile, "lingerer") == ALL_PASS


@pytest.mark.parametrize("student", ["shouter", "chatter"])
def test_output_over_the_limit_stops_the_notebook(hostile, student):
    """One 100 MB message (refused by the socket) or many small ones (counted)."""
    assert _stopped(hostile.feedback[student]) == [
        "cell 8 was stopped: the notebook's output went over 1 MiB"], hostile.feedback[student]
    assert _got(hostile, student) == NOT_REACHED
    assert hostile.rows[(student, "sum-list")]["message"] == \
        "cell 8 was stopped: the notebook's output went over 1 MiB"


# ---------------------------------------------------------------- the sandbox itself


def _sandbox(tmp_path, **limits) -> Sandbox:
    return Sandbox(Limits(**limits), base=os.environ, settings={"LABKIT_MODE": "replay"},
                   hide=[tmp_path / "hidden"])


def test_the_notebook_runs_as_its_own_uid(tmp_path):
    """Inside: uid U (U in its user namespace), no capability, no_new_privs; outside: every
    process of the notebook is uid U, and so are the files it makes."""
    folder = tmp_path / "alice"
    folder.mkdir()
    (folder / "handed-in.txt").write_text("mine")
    box = _sandbox(tmp_path)
    script = ("touch made-here; id -u; cat /proc/self/uid_map; grep -E '^(Cap|NoNewPrivs)' "
              "/proc/self/status; stat -c '%u %n' handed-in.txt made-here; exec sleep 30")
    with sandbox_module._Lease() as lease:
        proc = subprocess.Popen(box.command(lease.uid, ["/bin/sh", "-c", script], folder=folder),
                                stdout=subprocess.PIPE, text=True)
        try:
            lines = [proc.stdout.readline().split() for _ in range(10)]
            deadline = time.monotonic() + 10
            while not (sleepers := _running(psutil.Process(proc.pid), "sleep")) \
                    and time.monotonic() < deadline:
                time.sleep(0.05)
            (sleeper,) = sleepers
            sleeper_uid = sleeper.uids().real
            made = os.stat(f"/proc/{sleeper.pid}/root{folder}/made-here")
        finally:
            proc.kill()
            proc.wait()
            sandbox_module._reap(lease.uid)
    uid = lease.uid
    assert lines[0] == [str(uid)]
    assert lines[1] == [str(uid), str(uid), "1"]  # uid_map: U is U, nothing else exists
    caps = dict((k.rstrip(":"), v) for k, v in lines[2:8])
    assert caps == {"CapInh": "0" * 16, "CapPrm": "0" * 16, "CapEff": "0" * 16,
                    "CapBnd": "0" * 16, "CapAmb": "0" * 16, "NoNewPrivs": "1"}
    assert lines[8:10] == [[str(uid), "handed-in.txt"], [str(uid), "made-here"]]
    assert sleeper_uid == uid and made.st_uid == uid  # seen from the host
    assert sorted(p.name for p in folder.iterdir()) == ["handed-in.txt"]  # a copy, not the folder


def test_bwrap_as_root_maps_the_sandbox_uid_to_root(tmp_path):
    """Why the sandbox does not use ``bwrap --unshare-user --uid U``: run by root, it maps U
    inside to root outside, and the notebook's files on a writable bind belong to root."""
    shared = tmp_path / "shared"
    shared.mkdir()
    uid = UID_FIRST + UID_COUNT - 1
    done = subprocess.run(
        ["bwrap", "--unshare-user", "--uid", str(uid), "--gid", str(uid), "--ro-bind", "/usr", "/usr",
         "--symlink", "usr/bin", "/bin", "--symlink", "usr/lib", "/lib", "--symlink", "usr/lib64", "/lib64",
         "--proc", "/proc", "--bind", str(shared), "/shared",
         "--", "/bin/sh", "-c", "id -u; touch /shared/f; cat /proc/self/uid_map"],
        capture_output=True, text=True, check=True)
    inside_uid, mapping = done.stdout.split("\n")[:2]
    assert inside_uid == str(uid) and mapping.split() == [str(uid), "0", "1"]
    assert (shared / "f").stat().st_uid == 0


def test_parallel_notebooks_get_distinct_uids_locked_machine_wide():
    with sandbox_module._Lease() as first, sandbox_module._Lease() as second:
        assert first.uid != second.uid
        assert UID_FIRST <= min(first.uid, second.uid) and max(first.uid, second.uid) < UID_FIRST + UID_COUNT
        # another process (another grading) cannot take a uid leased here
        busy = subprocess.run(["flock", "-n", str(sandbox_module.LOCK_DIR / f"{first.uid}.lock"), "true"])
        assert busy.returncode == 1
    free = subprocess.run(["flock", "-n", str(sandbox_module.LOCK_DIR / f"{first.uid}.lock"), "true"])
    assert free.returncode == 0


def test_hidden_paths_inside_bound_folders_are_covered(tmp_path, monkeypatch):
    """A PYTHONPATH folder holding the source notebooks: bound, but the sources are not shown."""
    lib = tmp_path / "lib"
    (lib / "solutions").mkdir(parents=True)
    (lib / "solutions" / "toy.ipynb").write_text("the solution")
    (lib / "helper.py").write_text("X = 1\n")
    box = Sandbox(Limits(), base={"PYTHONPATH": str(lib)}, settings={},
                  hide=[lib / "solutions"])
    with sandbox_module._Lease() as lease:
        done = subprocess.run(box.command(lease.uid, ["/bin/sh", "-c", f"ls -A {lib} {lib}/solutions; "
                                                      f"touch {lib}/solutions/x"]),
                              capture_output=True, text=True)
        sandbox_module._reap(lease.uid)
    assert done.stdout.split() == [f"{lib}:", "helper.py", "solutions", f"{lib}/solutions:"]
    assert "Read-only file system" in done.stderr
    with pytest.raises(GradingError, match="would be visible"):
        Sandbox(Limits(), base={"PYTHONPATH": str(lib / "solutions")}, settings={},
                hide=[lib / "solutions"])


def test_missing_tools_or_not_root_is_a_clear_error(released, tmp_path, monkeypatch, capsys):
    subs = tmp_path / "subs"
    _write(subs, "alice", _submission(released, GOOD_ANSWER, GOOD_TOTAL))
    real_which = sandbox_module.shutil.which
    monkeypatch.setattr(sandbox_module.shutil, "which",
                        lambda name, path=None: None if name == "bwrap" else real_which(name, path=path))
    assert grade_main([str(subs), "-o", str(tmp_path / "g.csv"), "--source", str(SOURCE)]) == 2
    err = capsys.readouterr().err
    assert "the grading sandbox needs bwrap" in err and "apt-get install bubblewrap" in err
    assert "--no-sandbox" in err and "Traceback" not in err
    monkeypatch.undo()
    monkeypatch.setattr(sandbox_module.os, "geteuid", lambda: 1000)
    with pytest.raises(GradingError, match="needs root"):
        grade(subs, tmp_path / "g.csv", source=SOURCE)
    assert not (tmp_path / "g.csv").exists()
    assert _kernels_left() == []


def test_a_sandbox_that_cannot_start_is_an_error_not_a_fallback(released, tmp_path, monkeypatch):
    fake = tmp_path / "bwrap"
    fake.write_text("#!/bin/sh\necho 'bwrap: Creating new namespace failed: Operation not permitted' >&2\nexit 1\n")
    fake.chmod(0o755)
    real = sandbox_module._find_tools
    monkeypatch.setattr(sandbox_module, "_find_tools", lambda: {**real(), "bwrap": str(fake)})
    subs = tmp_path / "subs"
    _write(subs, "alice", _submission(released, "import os\nanswer = 42 if os.getuid() == 0 else 0",
                                      GOOD_TOTAL))
    with pytest.raises(GradingError) as caught:
        grade(subs, tmp_path / "g.csv", source=SOURCE)
    text = caught.value.explain()
    assert "a kernel cannot start in the grading sandbox" in text
    assert "Creating new namespace failed" in text and "--no-sandbox" in text
    assert not (tmp_path / "g.csv").exists()  # nothing graded some other way
    assert _kernels_left() == []


def test_a_kernel_sandbox_that_fails_stops_the_grading(released, tmp_path, monkeypatch):
    """The check passed, then one notebook's sandbox cannot be set up: an error, no grades."""
    real = Sandbox.command

    def broken(self, uid, argv, **kw):
        command = real(self, uid, argv, **kw)
        if kw.get("connection_fd") is not None:  # a kernel's, not the check's
            at = command.index("--die-with-parent")
            command[at:at] = ["--ro-bind", str(tmp_path / "nowhere"), "/nowhere"]
        return command

    monkeypatch.setattr(Sandbox, "command", broken)
    subs = tmp_path / "subs"
    _write(subs, "alice", _submission(released, GOOD_ANSWER, GOOD_TOTAL))
    with pytest.raises(GradingError) as caught:
        grade(subs, tmp_path / "g.csv", source=SOURCE)
    text = caught.value.explain()
    assert "the grading sandbox could not be set up" in text
    assert f"Can't find source path {tmp_path / 'nowhere'}" in text
    assert not (tmp_path / "g.csv").exists()
    assert _kernels_left() == [] and _grading_uid_processes() == []


def test_no_sandbox_is_explicit_and_loud(released, tmp_path, capsys):
    subs = tmp_path / "subs"
    _write(subs, "alice", _submission(released, "import os\nanswer = 42 if os.getuid() == 0 else 0",
                                      GOOD_TOTAL))
    assert grade_main([str(subs), "-o", str(tmp_path / "g.csv"), "--source", str(SOURCE),
                       "--no-sandbox"]) == 0
    printed = capsys.readouterr()
    assert "WARNING: --no-sandbox" in printed.err
    assert "WITHOUT the sandbox" in printed.out
    rows = _rows(tmp_path / "g.csv")
    assert rows[("alice", "answer-42")]["status"] == "pass"  # it did run as root
    assert _kernels_left() == []


def test_limits_from_the_command_line(released, tmp_path, capsys):
    subs = tmp_path / "subs"
    _write(subs, "filler", _submission(released, GOOD_ANSWER, GOOD_TOTAL, extra=[
        "open('big', 'wb').write(b'x' * (12 << 20))"]))
    _write(subs, "bulky", _submission(released, GOOD_ANSWER, GOOD_TOTAL))
    (subs / "bulky" / "video.bin").write_bytes(b"\0" * (9 << 20))
    _write(subs, "spawner", _submission(released, GOOD_ANSWER, GOOD_TOTAL, extra=[
        "import subprocess\nkids = [subprocess.Popen(['sleep', '5']) for _ in range(40)]"]))
    _write(subs, "hog", _submission(released, GOOD_ANSWER, GOOD_TOTAL, extra=[
        "hog = bytearray(1536 << 20)"]))
    _write(subs, "chatter", _submission(released, GOOD_ANSWER, GOOD_TOTAL, extra=[
        "for i in range(3000):\n    print('y' * 1000)"]))
    _write(subs, "crowded", _submission(released, GOOD_ANSWER, GOOD_TOTAL))
    for n in range(3000):  # 6 MB of data, but a tmpfs page (4 KiB) per file: over 8 MiB
        (subs / "crowded" / f"f{n}").write_bytes(b"x" * 2000)
    (subs / "copycat").symlink_to(subs / "bulky")  # would show bulky's folder
    _write(subs, "linker", _submission(released, GOOD_ANSWER, GOOD_TOTAL, extra=[
        "import os\nassert os.readlink('pw') == '/etc/passwd' and os.stat('.').st_uid == os.getuid()"]))
    (subs / "linker" / "pw").symlink_to("/etc/passwd")  # copied as a link, not followed
    (subs / "linker" / "dangling").symlink_to("/nowhere")
    os.mkfifo(subs / "linker" / "fifo")
    out = tmp_path / "g" / "g.csv"
    assert grade_main([str(subs), "-o", str(out), "--source", str(SOURCE), "--disk-mb", "8",
                       "--processes", "32", "--memory-mb", "1024", "--output-mb", "2", "-j", "4"]) == 0
    printed = capsys.readouterr()
    assert printed.err == ""  # what went wrong is in the grades, not on the terminal
    assert "crowded" in printed.out and "copycat" in printed.out
    rows = _rows(out)
    assert "filled the 8 MiB of disk" in (out.parent / "feedback" / "filler.md").read_text()
    assert {rows[("bulky", c)]["message"] for c in CHECKS} == {
        "the student's folder holds 9 MiB of files, more than the 8 MiB a notebook gets while graded"}
    assert "more than 32 processes" in (out.parent / "feedback" / "spawner.md").read_text()
    assert "more than 1 GiB of memory" in (out.parent / "feedback" / "hog.md").read_text()
    assert rows[("chatter", "sum-list")]["message"] == \
        "cell 8 was stopped: the notebook's output went over 2 MiB"
    # a folder that does not fit costs its own notebook, not the grading
    assert rows[("crowded", "sum-list")]["status"] == "not-reached"
    assert rows[("crowded", "sum-list")]["message"].startswith(
        "the notebook could not be run (RuntimeError: the student's folder could not be copied "
        "into the sandbox: cp: ")
    assert "No space left on device" in rows[("crowded", "sum-list")]["message"]
    assert {rows[("linker", c)]["status"] for c in CHECKS} == {"pass"}
    assert "Errors in your notebook" not in (out.parent / "feedback" / "linker.md").read_text()
    assert os.stat("/etc/passwd").st_uid == 0
    assert rows[("copycat", "sum-list")]["message"] == \
        f"the student's folder is a symbolic link (to {subs / 'bulky'}): not run"
    assert grade_main([str(subs), "-o", str(out), "--processes", "0"]) == 2
    assert "processes limit must be a positive whole number" in capsys.readouterr().err
    assert _grading_uid_processes() == []


def test_no_host_folder_is_writable_from_the_sandbox(tmp_path):
    """The kernel's sockets and results live in a tmpfs of the sandbox: no host folder
    is bound writable (a notebook could fill the host's disk through it)."""
    box = _sandbox(tmp_path)
    with sandbox_module._Lease() as lease:
        done = subprocess.run(box.command(lease.uid, ["/bin/sh", "-c", "cat /proc/self/mountinfo"]),
                              capture_output=True, text=True, check=True)
        sandbox_module._reap(lease.uid)
    writable = []
    for line in done.stdout.splitlines():
        fields = line.split()
        mountpoint, options, fstype = fields[4], fields[5], fields[fields.index("-") + 1]
        if "rw" in options.split(",") and fstype not in ("tmpfs", "proc", "devpts") \
                and not mountpoint.startswith("/dev/"):  # the device nodes of bwrap --dev
            writable.append((mountpoint, fstype))
    assert writable == []


def test_report_json_written_by_the_kernel_is_read_safely(tmp_path):
    from labkit.grading.execute import read_regular_file
    (tmp_path / "r.json").write_text(json.dumps({"a": 1}))
    os.symlink("/etc/hostname", tmp_path / "link.json")
    os.mkfifo(tmp_path / "fifo.json")
    assert read_regular_file(tmp_path / "r.json", 100) == b'{"a": 1}'
    assert read_regular_file(tmp_path / "r.json", 3) == b'{"a'
    assert read_regular_file(tmp_path / "link.json", 100) is None
    assert read_regular_file(tmp_path / "fifo.json", 100) is None  # and it did not wait
    assert read_regular_file(tmp_path / "missing.json", 100) is None
