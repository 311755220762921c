"""Benchmark: grading with and without the sandbox (labkit.grading.sandbox), the notebooks
of the kit, and live probes of a configure exercise.

    sudo .venv/bin/python benchmarks/bench_grading.py [--students 10] [--jobs 2] [--repeat 3]
          [--notebooks 00-orientation,01-first-call,02a-nat-home,02b-nat-vps]
          [--probes 2]

1. Builds STUDENTS submissions of the test suite's toy notebook (tests/grading/fixtures: the
   released copy, answered right; its checks come from LABKIT_EXERCISES=toy_exercises) and
   grades them, JOBS notebooks at a time, with the sandbox and with ``sandbox=False``
   (``--no-sandbox``), the two alternately.  Prints, best of REPEAT runs, seconds per grading
   run and per notebook, and the sandbox's overhead; the sandbox's start-up check.
2. Grades STUDENTS copies of each of NOTEBOOKS (the instructor notebooks themselves, full
   marks expected), in the sandbox, replay mode, JOBS at a time: seconds per notebook, and
   how long the grader took to judge the answers (its truth: recordings opened and read
   once per grading run, in the grader, then shared by every student).
3. Grades PROBES submissions of the toy ``toy-tls`` configure exercise (right TLS lines), JOBS
   at a time: each answer is applied to a fresh tls-office lab by a live probe — seconds per
   notebook, of which the probe.
4. Memory: one kernel whose notebook sleeps, its process tree polled every 50 ms: peak RSS and
   PSS (proportional set size: shared pages divided among their users) of the tree, and of
   the sandbox's own processes (prlimit → bwrap outside, bwrap as pid 1 inside).

Needs root (the sandbox and the labs do).
"""
from __future__ import annotations

import argparse
import copy
import importlib
import os
import shutil
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
FIXTURES = ROOT / "tests" / "grading" / "fixtures"
SOURCE = FIXTURES / "source"
NOTEBOOKS = ROOT / "notebooks"
RIGHT_TLS = ("[transport-tls]\ntype = transport\nprotocol = tls\nbind = 0.0.0.0:5061\n"
             "cert_file = /etc/asterisk/tls/pbx.crt\npriv_key_file = /etc/asterisk/tls/pbx.key\nmethod = sslv23\n")


def setup_checks() -> None:
    os.environ["LABKIT_EXERCISES"] = "toy_exercises"
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(FIXTURES / "exercises"), os.environ.get("PYTHONPATH", "")) if p)
    sys.path.insert(0, str(FIXTURES / "exercises"))
    import toy_exercises  # noqa: F401  (the checks, in this process too)


def answered(released: Path, extra: str = ""):
    import nbformat
    nb = copy.deepcopy(nbformat.read(str(released), as_version=4))
    for cell in nb.cells:
        if "# YOUR CODE HERE" in cell.source:
            cell.source = ("def add_all(xs):\n    return sum(xs)\n\ntotal = add_all(numbers)"
                           if "def add_all" in cell.source else "answer = 42\n" + extra)
    return nb


def grade_time(subs: Path, out: Path, jobs: int, sandbox: bool, source: Path = SOURCE) -> float:
    from labkit.grading import grade
    started = time.perf_counter()
    report = grade(subs, out, source=source, jobs=jobs, sandbox=sandbox)
    elapsed = time.perf_counter() - started
    wrong = [s["student"] for s in report.summary if s["points"] != s["max_points"]]
    if wrong:
        raise SystemExit(f"benchmark broken: not full marks for {wrong}: "
                         + "; ".join(f"{r.student}/{r.check}: {r.message}" for r in report.rows if r.status != "pass"))
    return elapsed


class Timed:
    """Seconds spent in a function of a module while it is replaced (summed over threads)."""

    def __init__(self, module, name: str):
        self.module, self.name, self.seconds, self.calls = module, name, 0.0, 0
        self.real = getattr(module, name)
        self.lock = threading.Lock()

    def __enter__(self):
        def timed(*args, **kwargs):
            started = time.perf_counter()
            try:
                return self.real(*args, **kwargs)
            finally:
                with self.lock:
                    self.seconds += time.perf_counter() - started
                    self.calls += 1
        setattr(self.module, self.name, timed)
        return self

    def __exit__(self, *exc):
        setattr(self.module, self.name, self.real)


def tree_memory(subs: Path, out: Path, sandbox: bool) -> dict[str, float]:
    """Peak RSS/PSS (MiB) of the kernel's process tree while its notebook sleeps."""
    import psutil

    from labkit.grading import grade

    peaks = {"rss": 0.0, "pss": 0.0, "sandbox_rss": 0.0, "sandbox_pss": 0.0}
    done = threading.Event()

    def poll() -> None:
        me = psutil.Process()
        while not done.is_set():
            total = {"rss": 0, "pss": 0, "sandbox_rss": 0, "sandbox_pss": 0}
            for proc in me.children(recursive=True):
                try:
                    info = proc.memory_full_info()
                    own = proc.name() in ("bwrap", "prlimit")
                except psutil.Error:
                    continue
                total["rss"] += info.rss
                total["pss"] += info.pss
                if own:
                    total["sandbox_rss"] += info.rss
                    total["sandbox_pss"] += info.pss
            for key, value in total.items():
                peaks[key] = max(peaks[key], value / 2**20)
            time.sleep(0.05)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        grade(subs, out, source=SOURCE, sandbox=sandbox)
    finally:
        done.set()
        poller.join()
    return peaks


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--students", type=int, default=10)
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--notebooks", default="00-orientation,01-first-call,02a-nat-home,02b-nat-vps",
                        help="the kit's notebooks to grade (comma-separated; empty: none)")
    parser.add_argument("--probes", type=int, default=2, help="toy-tls submissions (one live probe each)")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("bench_grading: the sandbox needs root (sudo)", file=sys.stderr)
        return 2
    setup_checks()
    import nbformat

    from labkit.grading import release
    from labkit.grading.limits import Limits
    from labkit.grading.sandbox import Sandbox
    grading = importlib.import_module("labkit.grading.grade")  # the module (the package exports grade())
    with tempfile.TemporaryDirectory(prefix="bench-grading-") as tmp:
        tmp = Path(tmp)
        (released,) = release(SOURCE / "toy.ipynb", tmp / "release")
        subs = tmp / "subs"
        for n in range(args.students):
            (subs / f"student{n:02d}").mkdir(parents=True)
            nbformat.write(answered(released), str(subs / f"student{n:02d}" / "toy.ipynb"))
        sleeper = tmp / "sleeper"
        (sleeper / "alice").mkdir(parents=True)
        nbformat.write(answered(released, "import time\ntime.sleep(3)"), str(sleeper / "alice" / "toy.ipynb"))

        check = Sandbox(Limits(), base=os.environ, settings={"LABKIT_MODE": "replay"},
                        hide=[subs, SOURCE])
        checks = []
        for _ in range(args.repeat):
            started = time.perf_counter()
            check.check()
            checks.append(time.perf_counter() - started)

        runs: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.repeat):  # interleaved: a busy machine slows both alike
            for sandbox in (False, True):
                runs[sandbox].append(grade_time(subs, tmp / "grades" / "g.csv", args.jobs, sandbox))
        times = {sandbox: min(values) for sandbox, values in runs.items()}
        memory = {sandbox: tree_memory(sleeper, tmp / "grades-mem" / "g.csv", sandbox)
                  for sandbox in (False, True)}

        kit: dict[str, tuple[float, float]] = {}
        for name in [n for n in args.notebooks.split(",") if n]:
            folder = tmp / f"subs-{name}"
            for n in range(args.students):
                (folder / f"student{n:02d}").mkdir(parents=True)
                shutil.copy(NOTEBOOKS / f"{name}.ipynb", folder / f"student{n:02d}" / f"{name}.ipynb")
            with Timed(grading, "_judge") as judging:
                seconds = grade_time(folder, tmp / f"grades-{name}" / "g.csv", args.jobs, True, NOTEBOOKS)
            kit[name] = (seconds, judging.seconds)

        probe_times = None
        if args.probes:
            import labkit.grading.probes as probes
            (tls,) = release(SOURCE / "toy-tls.ipynb", tmp / "release-tls")
            folder = tmp / "subs-tls"
            for n in range(args.probes):
                (folder / f"student{n:02d}").mkdir(parents=True)
                nb = nbformat.read(str(tls), as_version=4)
                for cell in nb.cells:
                    if "raise NotImplementedError()" in cell.source:
                        cell.source = f"pjsip_tls = {RIGHT_TLS!r}"
                nbformat.write(nb, str(folder / f"student{n:02d}" / "toy-tls.ipynb"))
            with Timed(probes, "run") as probing:
                seconds = grade_time(folder, tmp / "grades-tls" / "g.csv", args.jobs, True)
            probe_times = (seconds, probing.seconds / max(1, probing.calls), probing.calls)

    n = args.students
    print(f"grading {n} toy notebooks, -j {args.jobs}, best of {args.repeat} "
          f"(python {sys.version.split()[0]}, {os.cpu_count()} CPUs)")
    print(f"{'':22}{'run s':>9}{'s/notebook':>12}")
    for sandbox, label in ((False, "--no-sandbox"), (True, "sandbox")):
        print(f"{label:22}{times[sandbox]:9.2f}{times[sandbox] / n:12.3f}")
    extra = times[True] - times[False]
    print(f"{'sandbox overhead':22}{extra:9.2f}{extra / n:12.3f}   "
          f"(+{100 * extra / times[False]:.0f} %; includes the start-up check once)")
    print(f"{'start-up check':22}{min(checks):9.2f}")
    if kit:
        print()
        print(f"the kit's notebooks, {n} students each, sandbox, -j {args.jobs} (instructor copies: full marks)")
        print(f"{'':22}{'run s':>9}{'s/notebook':>12}{'judging s':>11}")
        for name, (seconds, judged) in kit.items():
            print(f"{name:22}{seconds:9.2f}{seconds / n:12.3f}{judged:11.2f}")
        print("judging: the grader's own truth (recordings opened once, then shared), summed over threads")
    if probe_times is not None:
        seconds, per_probe, count = probe_times
        print()
        print(f"configure exercise (toy-tls), {count} submissions, one live probe each (tls-office), -j {args.jobs}")
        print(f"{'':22}{'run s':>9}{'s/notebook':>12}{'s/probe':>9}")
        print(f"{'sandbox + probe':22}{seconds:9.2f}{seconds / count:12.2f}{per_probe:9.2f}")
    print()
    print("memory of one kernel's process tree while its notebook runs (peak, MiB)")
    print(f"{'':22}{'RSS':>9}{'PSS':>9}")
    for sandbox, label in ((False, "--no-sandbox"), (True, "sandbox")):
        print(f"{label:22}{memory[sandbox]['rss']:9.1f}{memory[sandbox]['pss']:9.1f}")
    print(f"{'  of which bwrap':22}{memory[True]['sandbox_rss']:9.1f}{memory[True]['sandbox_pss']:9.1f}")
    print("the sandbox's tmpfs hold only what the notebook writes (RAM, up to the disk limit each)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
