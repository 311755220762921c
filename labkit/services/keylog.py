"""TLS key logs of the lab's programs, so that a capture of SIP over TLS can be read.

Asterisk (chan_sip and PJSIP), baresip and SIPp use OpenSSL but none of them can write the
TLS secrets it derives (no SSLKEYLOGFILE).  ``configs/tls/keylog.c``, preloaded into them,
asks OpenSSL for each secret (``SSL_CTX_set_keylog_callback``, OpenSSL ≥ 1.1.1) and appends
it, in the NSS key log format Wireshark reads, to the file ``SSLKEYLOGFILE`` names.  The
library is compiled once per machine into the image cache (``gcc``; no OpenSSL headers),
keyed by the hash of its source.  Only a lab does this: a production server must never
write its session keys anywhere.
"""
from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from labkit import resources
from labkit.errors import EnvironmentProblem
from labkit.images import cache_dir

SOURCE = resources.configs_dir() / "tls" / "keylog.c"
#: Where the library is bound inside a sandbox (the images' /opt is empty).
IN_SANDBOX = "/opt/labkit/keylog.so"
#: Where each program's key log goes inside its sandbox.
KEYS_IN_SANDBOX = "/srv/keylog"


def library() -> Path:
    """The compiled preload library (built on first use, then cached)."""
    source = SOURCE.read_bytes()
    target = cache_dir() / "tls" / f"keylog-{hashlib.sha256(source).hexdigest()[:12]}.so"
    if target.is_file():
        return target
    gcc = shutil.which("gcc")
    if gcc is None:
        raise EnvironmentProblem("gcc is missing: the TLS key log library is compiled on this machine.",
                                 cause="labs with SIP over TLS decrypt their captures with it",
                                 hint="apt-get install gcc libc6-dev (or `sudo ./kit setup`), or set "
                                      "pbx.tls.keylog: false in the lab file")
    target.parent.mkdir(parents=True, exist_ok=True)
    # A partial file of its own: probes run in parallel threads and may all compile on a fresh
    # machine at once; the last os.replace wins, each leaves a whole library.
    fd, name = tempfile.mkstemp(dir=target.parent, prefix=f"{target.stem}.", suffix=".tmp")
    os.close(fd)
    partial = Path(name)
    # -l:libdl.so.2 records libdl as NEEDED, so the library also loads into programs of
    # the bullseye image (glibc 2.31, where dlsym lives in libdl) — see keylog.c.
    result = subprocess.run([gcc, "-shared", "-fPIC", "-O2", "-Wall", "-o", str(partial), str(SOURCE),
                             "-Wl,--no-as-needed", "-l:libdl.so.2"],
                            capture_output=True, text=True, timeout=120)
    if result.returncode != 0:
        partial.unlink(missing_ok=True)
        raise EnvironmentProblem(f"Compiling {SOURCE.name} failed: {result.stderr.strip()[-400:]}",
                                 hint="apt-get install gcc libc6-dev")
    partial.chmod(0o755)
    os.replace(partial, target)
    return target


def environment(log_name: str) -> dict[str, str]:
    """The variables that make a sandboxed program write its key log as ``log_name``."""
    return {"LD_PRELOAD": IN_SANDBOX, "SSLKEYLOGFILE": f"{KEYS_IN_SANDBOX}/{log_name}.keys"}
