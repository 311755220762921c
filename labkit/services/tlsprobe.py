"""``openssl s_client`` from a lab host: what a TLS client sees of a server.

The report checked "that 5061 listens"; a TLS client checks much more: the chain up to a CA
it trusts, the name it dialled against the certificate (RFC 6125), the dates, the protocol
version and the cipher both sides agree on.  One probe runs ``openssl s_client`` from the
tools image in a host's namespace, trusting the lab CA only, and reads its answer into a
:class:`TlsProbeResult`: the verify code and text (OpenSSL's ``X509_V_ERR_*`` numbers), the
TLS alert a refusing side sent (RFC 8446 §6.2), the version and cipher when it connected.
"""
from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from labkit.pki import TLS_ALERTS
from labkit.services.base import Service, ServiceContext
from labkit.services.processes import log_tail
from labkit.services.sandbox import Sandbox

#: ``openssl s_client`` version flags for each TLS version.
VERSION_FLAGS = {"1.0": "-tls1", "1.1": "-tls1_1", "1.2": "-tls1_2", "1.3": "-tls1_3"}
#: TLS alert descriptions (RFC 8446 §6.2, RFC 5246 §7.2), for the ones a lab meets.
ALERTS = {40: "handshake_failure", 42: "bad_certificate", 43: "unsupported_certificate",
          45: "certificate_expired", 46: "certificate_unknown", 48: "unknown_ca",
          70: "protocol_version", 71: "insufficient_security", 80: "internal_error"}


@dataclass
class TlsProbeResult:
    """What ``openssl s_client`` said."""

    connected: bool
    #: 0 when the certificate was verified; OpenSSL's X509_V_ERR number otherwise.
    verify_code: int | None
    verify_error: str
    protocol: str
    cipher: str
    #: The TLS alert number in play (sent or received), if the handshake was refused.
    alert: int | None
    output: str = field(repr=False)

    @property
    def alert_name(self) -> str:
        return ALERTS.get(self.alert, "") if self.alert is not None else ""

    def summary(self) -> dict:
        return {"connected": self.connected, "verify_code": self.verify_code,
                "verify_error": self.verify_error, "protocol": self.protocol, "cipher": self.cipher,
                "alert": self.alert, "alert_name": self.alert_name}


def parse(output: str) -> TlsProbeResult:
    """Read ``openssl s_client -brief`` output (OpenSSL 1.1.1 to 3.x)."""
    verify = re.search(r"verify error:num=(\d+):([^\n]+)", output)
    code = int(verify.group(1)) if verify else None
    if code is None and re.search(r"Verification: OK|Verify return code: 0", output):
        code = 0
    alert = re.search(r"alert number (\d+)", output)
    # A client that refuses the certificate sends the alert OpenSSL maps its verify error to
    # (ssl/statem: ssl_x509err2alert) but does not print it: name it from the code.
    sent = TLS_ALERTS.get(code) if code else None
    protocol = re.search(r"Protocol version: (\S+)", output)
    cipher = re.search(r"Ciphersuite: (\S+)", output)
    connected = bool(re.search(r"^CONNECTION ESTABLISHED", output, re.MULTILINE))
    return TlsProbeResult(connected=connected, verify_code=code,
                          verify_error=verify.group(2).strip() if verify else "",
                          protocol=protocol.group(1) if protocol else "",
                          cipher=cipher.group(1) if cipher else "",
                          alert=int(alert.group(1)) if alert else sent, output=output)


class TlsProbe(Service):
    """One ``openssl s_client`` run against ``address:port``."""

    kind = "openssl"

    def __init__(self, context: ServiceContext, *, address: str, port: int, name: str | None,
                 version: str | None = None, cipher: str | None = None, send: str | None = None,
                 timeout: float = 10.0):
        super().__init__(context, name=f"{context.host}/openssl")
        self.address, self.port, self.server_name = address, port, name
        self.version, self.cipher, self.timeout = version, cipher, timeout
        #: Application data sent once the handshake is done (e.g. a SIP OPTIONS request).
        self.stdin_data = send.encode() if send else None

    @property
    def sandbox(self) -> Sandbox:
        ca = [(self.context.pki_dir / "ca.crt", "/srv/pki/ca.crt")] if self.context.pki_dir else []
        return Sandbox(rootfs=self.context.rootfs, hostname=self.context.host,
                       etc_dir=self.context.etc_dir, own_pids=False, ro_binds=ca)

    def program(self) -> list[str]:
        argv = ["openssl", "s_client", "-connect", f"{self.address}:{self.port}", "-brief",
                "-verify_return_error"]
        if self.context.pki_dir:
            argv += ["-CAfile", "/srv/pki/ca.crt"]
        if self.server_name:
            argv += ["-servername", self.server_name, "-verify_hostname", self.server_name]
        if self.version:
            argv.append(VERSION_FLAGS[self.version])
        if self.cipher:
            argv += ["-cipher", self.cipher]
        return argv

    @property
    def log_path(self) -> Path:
        return self.context.log_dir / "openssl-probe.log"

    def run(self) -> TlsProbeResult:
        """Connect, let the handshake finish (stdin is empty: s_client then closes), read."""
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self.log_path.write_text("")
        self.start()
        try:
            self.popen.wait(self.timeout)
        except subprocess.TimeoutExpired:
            pass  # stop() below escalates
        self.stop()
        return parse(log_tail(self.log_path, 200))
