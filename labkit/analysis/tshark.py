"""Run ``tshark -T fields`` once per file and stream its output into a DataFrame.

Every call has a timeout (tshark killed when it expires), stderr goes to a temporary
file so a chatty tshark can never block on a full pipe, and the known failure modes are
turned into :class:`~labkit.errors.CaptureError` with a hint.
"""
from __future__ import annotations

import csv
import os
import shutil
import subprocess
import tempfile
import threading

import pandas as pd

from labkit.errors import CaptureError

AGG = "\x1f"  # ASCII unit separator joins repeated occurrences of a field (never in SIP text)
DEFAULT_TIMEOUT = 300.0


def tshark_path() -> str:
    path = shutil.which("tshark")
    if not path:
        raise CaptureError("tshark is not installed, so SIP cannot be decoded.",
                           hint="apt-get install tshark (answer 'no' to non-root capture)")
    return path


def fields_frame(path, fields: list[str], *, display_filter: str | None = None,
                 decode_as: list[str] = (), extra: list[str] = (),
                 timeout: float = DEFAULT_TIMEOUT, stderr_warnings: bool = False) -> tuple[pd.DataFrame, list[str]]:
    """Return (DataFrame of string columns named after ``fields``, warnings).

    All occurrences of a field are kept, joined by :data:`AGG`.  ``stderr_warnings``: also
    turn what tshark prints on stderr when it succeeds into warnings — it reports a bad
    ``-o`` preference value (e.g. an RSA key it cannot load) there and still exits 0.
    """
    cmd = [tshark_path(), "-n", "-r", os.fspath(path), "-T", "fields", "-E", "separator=/t",
           "-E", "occurrence=a", "-E", f"aggregator={AGG}", "-E", "quote=n", "-E", "header=n"]
    for d in decode_as:
        cmd += ["-d", d]
    cmd += list(extra)
    if display_filter:
        cmd += ["-Y", display_filter]
    for f in fields:
        cmd += ["-e", f]
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, stdin=subprocess.DEVNULL,
                                env={**os.environ, "LC_ALL": "C"})
        killed = []
        timer = threading.Timer(timeout, lambda: (killed.append(1), proc.kill()))
        timer.start()
        try:
            df = pd.read_csv(proc.stdout, sep="\t", header=None, names=fields, dtype=str,
                             keep_default_na=False, na_filter=False, quoting=csv.QUOTE_NONE,
                             engine="c", encoding="utf-8", encoding_errors="replace")
        except pd.errors.EmptyDataError:
            df = pd.DataFrame({f: pd.Series(dtype=str) for f in fields})
        finally:
            proc.stdout.close()
            rc = proc.wait()
            timer.cancel()
        err.seek(0)
        stderr = err.read().decode("utf-8", "replace")
    stderr = "\n".join(line for line in stderr.splitlines() if "dangerous" not in line and line.strip())
    if killed:
        raise CaptureError(f"tshark took longer than {timeout:.0f} s on {path} and was stopped.",
                           cause="a very large capture or a stuck tshark",
                           hint="pass a larger timeout= or cut the file with editcap -r")
    warnings = []
    if rc == 0 and stderr_warnings and stderr.strip():
        warnings.append(f"tshark: {' '.join(stderr.split())}")
    if rc != 0:
        if "cut short" in stderr or "truncated" in stderr:
            warnings.append(f"tshark: {stderr.strip()}")
        elif len(df):
            warnings.append(f"tshark exited with {rc}: {stderr.strip()}")
        else:
            raise CaptureError(f"tshark could not read {path}: {stderr.strip() or f'exit code {rc}'}",
                               hint="open it in Wireshark to see what is wrong with it")
    return df, warnings
