"""Softphones: baresip in a phone host's namespace, driven over its ``ctrl_tcp`` module.

Each phone is a real SIP user agent (baresip from the modern lab image) that registers to
the lab's Asterisk with digest authentication, answers automatically, sends a spoken
sentence from a WAV file (``aufile``) and records what it receives (``sndfile``).

``ctrl_tcp`` speaks netstrings (``<length>:<payload>,``, D. J. Bernstein's format) of JSON:
commands ``{"command": "dial", "params": "6000", "token": "t1"}`` are answered by
``{"response": true, "ok": true, "token": "t1", …}``; events arrive unasked as
``{"event": true, "type": "CALL_ESTABLISHED", "id": …, "peeruri": …}``.
"""
from __future__ import annotations

import itertools
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from labkit import tracks
from labkit.errors import PhoneError, PhoneTimeout
from labkit.services.base import LabContext, Port, Service, ServiceContext
from labkit.services.sandbox import Sandbox
from labkit.services.speech import sentence_wav

CTRL_PORT = 4444
#: Longest wait for the registrar to apply a phone's un-REGISTER before it registers again.
#: The exchange takes a few milliseconds in a lab; the binding may also never go (the
#: network swallowed the un-REGISTER, or a rewritten Contact no longer matches it).
UNREGISTER_WAIT = 0.5
MODULE_DIR = "/usr/lib/baresip/modules"
# g711: the walkthrough's codecs; aufile/sndfile: audio from and to WAV files;
# aubridge: a null sound card; srtp: SDES media encryption (later notebooks);
# menu + ctrl_tcp: remote control; account: reads the accounts file.
MODULES = ["g711", "aufile", "aubridge", "sndfile", "srtp", "account", "menu", "ctrl_tcp"]


def render_config(*, address: str, sip_port: int, audio_file: str, record_dir: str,
                  ca_file: str | None = None, verify_server: bool = True, dtls: bool = False) -> str:
    """baresip's ``config`` file for one lab phone (``ca_file``: the CA it trusts over TLS)."""
    lines = [
        "# baresip config — rendered by labkit.",
        "poll_method epoll",
        f"sip_listen {address}:{sip_port}",
        # Bind media to the lab address: without it baresip may pick another interface.
        "net_interface eth0",
        "audio_player aubridge,nil",
        f"audio_source aufile,{audio_file}",
        "audio_alert aubridge,nil",
        "audio_level no",
        f"snd_path {record_dir}",
        f"ctrl_tcp_listen 127.0.0.1:{CTRL_PORT}",
        f"module_path {MODULE_DIR}",
        "rtp_stats yes",
    ]
    if ca_file:
        # With a CA file baresip checks the server's certificate chain, and its name when
        # the account's host is a name (not an IP address).
        lines += [f"sip_cafile {ca_file}", f"sip_verify_server {'yes' if verify_server else 'no'}"]
    # dtls_srtp only where asked: loaded, it adds DTLS fingerprints to every offer.
    for module in MODULES + (["dtls_srtp"] if dtls else []):
        keyword = "module_app" if module in ("account", "menu", "ctrl_tcp") else "module"
        lines.append(f"{keyword} {module}.so")
    return "\n".join(lines) + "\n"


def render_account(*, display: str, extension: str, registrar: str, secret: str,
                   codecs: list[str], media_encryption: str | None = None, transport: str = "udp") -> str:
    """One line of baresip's ``accounts`` file: the phone's identity and credentials.

    A transport other than UDP goes into the address of record (``;transport=tls``): baresip
    then registers, and sends every request, over it (RFC 3261 §19.1.1).
    """
    params = [f"auth_pass={secret}", "answermode=auto", "regint=600",
              f"audio_codecs={','.join(codecs)}"]
    if media_encryption:
        params.append(f"mediaenc={media_encryption}")
    uri = f"sip:{extension}@{registrar}" + ("" if transport == "udp" else f";transport={transport}")
    return f'"{display}" <{uri}>;auth_user={extension};' + ";".join(params) + "\n"


class _CtrlConnection:
    """A ctrl_tcp connection: send commands, receive responses and events in a thread."""

    def __init__(self, sock: socket.socket, on_event: Callable[[dict], None]):
        self.sock = sock
        self.on_event = on_event
        self.responses: dict[str, dict] = {}
        self.cond = threading.Condition()
        self.tokens = itertools.count(1)
        self.closed = False
        self.thread = threading.Thread(target=self._reader, name="labkit-ctrl", daemon=True)
        self.thread.start()

    def _reader(self) -> None:
        buf = b""
        try:
            while True:
                data = self.sock.recv(65536)
                if not data:
                    break
                buf += data
                while True:
                    colon = buf.find(b":")
                    if colon < 0 or not buf[:colon].isdigit():
                        break
                    length = int(buf[:colon])
                    if len(buf) < colon + 1 + length + 1:
                        break
                    payload = buf[colon + 1:colon + 1 + length]
                    buf = buf[colon + 2 + length:]
                    self._dispatch(json.loads(payload))
        except (OSError, ValueError):
            pass
        finally:
            with self.cond:
                self.closed = True
                self.cond.notify_all()

    def _dispatch(self, message: dict) -> None:
        if message.get("event"):
            self.on_event(message)
        elif message.get("response"):
            with self.cond:
                self.responses[str(message.get("token"))] = message
                self.cond.notify_all()

    def command(self, command: str, params: str = "", timeout: float = 5.0) -> dict:
        token = f"t{next(self.tokens)}"
        body = json.dumps({"command": command, "params": params, "token": token}).encode()
        self.sock.sendall(str(len(body)).encode() + b":" + body + b",")
        deadline = time.monotonic() + timeout
        with self.cond:
            while token not in self.responses:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self.closed:
                    raise PhoneError(f"baresip did not answer {command!r}.",
                                     cause="the softphone stopped or is stuck")
                self.cond.wait(remaining)
            return self.responses.pop(token)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass


@dataclass
class Call:
    """One call of a phone, followed through baresip's events."""

    phone: Softphone
    peer: str
    direction: str
    id: str | None = None
    events: list[dict] = field(default_factory=list)

    def _has(self, kind: str) -> bool:
        return any(e.get("type") == kind for e in self.events)

    def wait_established(self, timeout: float = 10.0) -> Call:
        self.phone._wait(lambda: self._has("CALL_ESTABLISHED") or self._has("CALL_CLOSED"), timeout,
                         f"call to {self.peer} to be answered")
        if not self._has("CALL_ESTABLISHED"):
            closed = next(e for e in self.events if e.get("type") == "CALL_CLOSED")
            raise PhoneError(f"The call to {self.peer} was closed before being answered: "
                             f"{closed.get('param') or closed}",
                             hint="look at the SIP ladder of a capture, and the PBX log")
        return self

    def wait_closed(self, timeout: float = 30.0) -> Call:
        self.phone._wait(lambda: self._has("CALL_CLOSED"), timeout, f"call with {self.peer} to end")
        return self

    @property
    def established(self) -> bool:
        return self._has("CALL_ESTABLISHED") and not self._has("CALL_CLOSED")

    @property
    def media_encryption(self) -> str | None:
        """The SRTP suite baresip reported (``CALL_MENC``), if any."""
        for event in self.events:
            if event.get("type") == "CALL_MENC":
                return event.get("param")
        return None

    def hangup(self) -> Call:
        if not self._has("CALL_CLOSED"):
            self.phone.command("hangup", self.id or "")
            self.wait_closed(10)
        return self


class Softphone(Service):
    """A baresip softphone of the lab, known by its phone name (``alice``)."""

    kind = "baresip"
    # It registers at start: its registrar must answer (and a name must resolve).
    needs = ("asterisk", "dnsmasq")
    ready_timeout = 10.0

    def __init__(self, context: ServiceContext, *, name: str, extension: str, display: str,
                 address: str, registrar: str, secret: str, codecs: list[str], sip_port: int = 5060,
                 transport: str = "udp", verify_server: bool = True, media_encryption: str = "none",
                 registrar_holds: Callable[[], bool] | None = None, user: str | None = None):
        super().__init__(context, name=f"{name}/baresip")
        self.phone_name = name
        self.extension = extension
        self.user = user or extension  # the user it registers as (its AOR's and digest login)
        self.display = display
        self.address = address
        self.registrar = registrar
        self.secret = secret
        self.codecs = codecs
        self.sip_port = sip_port
        self.transport = transport
        self.verify_server = verify_server
        self.media_encryption = None if media_encryption == "none" else media_encryption
        self.registrar_holds = registrar_holds
        self.config_dir = context.config_dir
        self.record_dir = context.recordings_dir
        self.audio_file = context.config_dir / "say.wav"
        self.events: deque[dict] = deque(maxlen=500)
        self.calls: list[Call] = []
        self._ctrl: _CtrlConnection | None = None
        self._cond = threading.Condition()

    # -- the declaration ---------------------------------------------------------------
    def ports(self) -> list[Port]:
        return [Port("udp", self.sip_port, "SIP"), Port("tcp", CTRL_PORT, "ctrl_tcp")]

    def render(self) -> None:
        conf = self.config_dir
        conf.mkdir(parents=True, exist_ok=True)
        tls = self.transport == "tls"
        (conf / "config").write_text(render_config(
            address=self.address, sip_port=self.sip_port,
            audio_file="/srv/phone/say.wav", record_dir="/srv/phone/rec",
            ca_file="/srv/pki/ca.crt" if tls else None, verify_server=self.verify_server,
            dtls=self.media_encryption == "dtls_srtp"))
        (conf / "accounts").write_text(render_account(
            display=self.display, extension=self.user, registrar=self.registrar,
            secret=self.secret, codecs=self.codecs, transport=self.transport,
            media_encryption=self.media_encryption))
        (conf / "contacts").write_text("")
        # Each phone says something different, which tells the two directions apart.
        sentence_wav(f"Hello, this is {self.display} at extension {' '.join(self.extension)}. "
                     "The quick brown fox jumps over the lazy dog.", self.audio_file, repeat=4)

    @property
    def sandbox(self) -> Sandbox:
        tls_ro, tls_rw, env = self.context.tls_binds(self.phone_name) if self.transport == "tls" \
            else ([], [], {})
        return Sandbox(rootfs=self.context.rootfs, hostname=self.phone_name,
                       etc_dir=self.context.etc_dir,
                       ro_binds=[(self.audio_file, "/srv/phone/say.wav"), *tls_ro],
                       binds=[(self.config_dir, "/srv/phone/conf"), (self.record_dir, "/srv/phone/rec"),
                              *tls_rw], env=env)

    def program(self) -> list[str]:
        return ["baresip", "-f", "/srv/phone/conf"]

    @property
    def log_path(self) -> Path:
        return self.context.log_dir / "baresip.log"

    def start(self) -> None:
        self.record_dir.mkdir(parents=True, exist_ok=True)
        super().start()

    # -- lifecycle hooks ---------------------------------------------------------------
    def ready(self) -> bool:
        try:
            self._connect()
            return True
        except OSError:
            return False

    def request_stop(self) -> None:
        # baresip treats SIGTERM as its orderly shutdown (it de-registers, then exits);
        # the ctrl_tcp "quit" command waited 3 s for the same result.
        daemon = self.payload()
        if daemon is not None:
            daemon.terminate()

    def stop(self) -> None:
        super().stop()
        if self._ctrl is not None:
            self._ctrl.close()
            self._ctrl = None

    def _connect(self) -> _CtrlConnection:
        if self._ctrl is None or self._ctrl.closed:
            sock = self.namespace.socket()
            sock.settimeout(1)
            sock.connect(("127.0.0.1", CTRL_PORT))
            sock.settimeout(None)
            self._ctrl = _CtrlConnection(sock, self._on_event)
        return self._ctrl

    # -- commands and events -------------------------------------------------------------
    def command(self, command: str, params: str = "", timeout: float = 5.0) -> dict:
        """Send a baresip command (the ``menu`` module's: dial, hangup, reginfo, quit…)."""
        if not self.running():
            raise PhoneError(f"Softphone {self.phone_name} is not running.",
                             hint=f"read its log: {self.log_path}")
        answer = self._connect().command(command, params, timeout)
        if not answer.get("ok", False):
            raise PhoneError(f"baresip refused {command} {params}: {answer.get('data')}")
        return answer

    def _on_event(self, event: dict) -> None:
        with self._cond:
            self.events.append(event)
            call_id = event.get("id")
            if call_id and event.get("class") == "call":
                call = next((c for c in self.calls if c.id == call_id), None)
                if call is None:
                    # An outgoing call learns its id from its first event; an incoming one
                    # is new.
                    call = next((c for c in self.calls if c.id is None
                                 and c.direction == event.get("direction")), None)
                    if call is None:
                        call = Call(self, event.get("peeruri", ""), event.get("direction", "incoming"))
                        self.calls.append(call)
                    call.id = call_id
                call.events.append(event)
            self._cond.notify_all()

    def _wait(self, condition: Callable[[], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        with self._cond:
            while not condition():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise PhoneTimeout(f"{self.phone_name}: timed out after {timeout:g} s waiting for {what}.",
                                     hint=f"its log: {self.log_path}; the PBX log; a capture")
                self._cond.wait(remaining)

    @property
    def registered(self) -> bool | None:
        """What baresip last reported about its registration: True (REGISTER_OK), False
        (REGISTER_FAIL, UNREGISTERING) or None when it reported nothing since the control
        connection opened (the first registration often completes before that)."""
        with self._cond:  # the control connection's thread appends events
            events = list(self.events)
        for event in reversed(events):
            kind = event.get("type")
            if kind == "REGISTER_OK":
                return True
            if kind in ("REGISTER_FAIL", "UNREGISTERING"):
                return False
        return None

    def register_again(self, timeout: float = 5.0) -> bool:
        """Register now; True when the registrar accepted it (REGISTER_OK), False if not.

        baresip 1.1 has no re-register command, so the user agent is dropped and
        re-created.  A phone that failed to register retries only after a back-off; in a
        lab where the student just fixed the network, waiting would hide cause and effect.

        Dropping a registered agent sends an un-REGISTER (``expires=0``) for a Contact the
        new agent usually reuses: baresip names it after the agent's memory address, which
        the allocator hands out again.  A registrar that handles requests in parallel
        (PJSIP's thread pool) may apply that un-REGISTER *after* the new REGISTER and
        remove the fresh binding (RFC 3261 §10.3: each REGISTER is processed on its own).
        Given ``registrar_holds`` (the lab passes a check asking its PBX whether it holds
        this phone's binding), the new agent is created only once the old binding is gone,
        or after :data:`UNREGISTER_WAIT` seconds.
        """
        account = (self.config_dir / "accounts").read_text().strip()
        # The address of record without URI parameters (;transport=tls): baresip finds its
        # user agent by the bare AOR.
        aor = account.split("<", 1)[1].split(">", 1)[0].split(";", 1)[0]
        # A phone whose last registration failed sends no un-REGISTER: nothing to wait for,
        # even if the registrar still holds an older binding.
        holds = self.registrar_holds
        must_wait = holds is not None and self.registered is not False and holds()
        self.command("uadel", aor)
        if must_wait:
            deadline = time.monotonic() + UNREGISTER_WAIT
            while holds() and time.monotonic() < deadline:
                time.sleep(0.02)
        seen = len(self.events)
        self.command("uanew", account)
        outcome: list[str] = []

        def decided() -> bool:
            for event in list(self.events)[seen:]:
                if event.get("type") in ("REGISTER_OK", "REGISTER_FAIL"):
                    outcome.append(event["type"])
                    return True
            return False
        try:
            self._wait(decided, timeout, "the registrar's answer")
        except PhoneError:
            return False
        return outcome[0] == "REGISTER_OK"

    def call(self, target: str) -> Call:
        """Dial an extension (``"6000"``) or a SIP URI; returns the :class:`Call`."""
        call = Call(self, target, "outgoing")
        with self._cond:
            # An earlier outgoing call that never got an id (it failed before baresip
            # reported anything) must not capture this call's events.
            for earlier in self.calls:
                if earlier.id is None:
                    earlier.id = "(never identified)"
            self.calls.append(call)
        self.command("dial", target)
        return call

    def last_call(self) -> Call | None:
        return self.calls[-1] if self.calls else None

    def recordings(self) -> list[Path]:
        """The WAV files of received audio (``…-dec.wav``), oldest first."""
        return sorted(self.record_dir.glob("dump-*-dec.wav"), key=lambda p: p.stat().st_mtime)


#: The SIP names of the lab file's codecs, as baresip's ``audio_codecs`` wants them.
CODEC_NAMES = {"ulaw": "PCMU", "alaw": "PCMA", "g722": "G722"}


def provide(lab: LabContext) -> list[Service]:
    """One softphone per ``phones:`` entry, from the tools image, registering to the PBX
    (or to the address the lab file gives: a phone outside reaches the box's public one)."""
    spec = lab.spec
    pbx_address = str(spec.address_of(spec.pbx.host))
    phones: list[Service] = []
    for phone in spec.phones:
        endpoint = spec.endpoint(phone.extension)
        phones.append(Softphone(
            lab.service_context(phone.host, Softphone.kind, image=tracks.TOOLS_IMAGE,
                               directory=phone.name),
            name=phone.name, extension=endpoint.extension, display=endpoint.name,
            address=str(spec.address_of(phone.host)), registrar=phone.registrar or pbx_address,
            secret=phone.password or lab.credentials.secrets[endpoint.extension], user=phone.user,
            codecs=[CODEC_NAMES[c] for c in spec.pbx.codecs], sip_port=phone.sip_port,
            transport=phone.transport, verify_server=phone.verify_server,
            media_encryption=phone.media_encryption))
    return phones
