"""The public phone network behind the carrier: an exchange (Asterisk 22) and its subscribers.

Why a second Asterisk rather than a SIPp answering machine: a call through the trunk must
be *heard*.  The exchange answers a call for one of its numbers the way a mobile network
does — ``183 Session Progress`` with SDP and a spoken announcement as early media, then
``180 Ringing`` — and rings the subscriber's softphone (baresip, the lab's phones), which
answers, speaks its sentence and records what it hears, so audio is measured at both ends.
Its subscribers also dial out: any number that is not theirs goes to the carrier, which
sends a call for one of its lines' numbers (a DID) to the registered PBX.

The exchange runs Asterisk 22 from the tools image whatever the lab's track: it is not the
student's PBX.  Its subscribers do not register (a fixed Contact in their AOR): nothing to
wait for at start, nothing in the PBX's captures but the trunk.
"""
from __future__ import annotations

import re
import shutil

from labkit import tracks
from labkit.errors import PhoneError
from labkit.services.asterisk import config
from labkit.services.asterisk.service import Asterisk
from labkit.services.baresip import CODEC_NAMES, Softphone, render_account
from labkit.services.base import Credentials, LabContext, Port, Service, ServiceContext
from labkit.services.speech import sentence_wav
from labkit.spec.model import LabSpec, pstn_secret_key

#: The exchange is Asterisk 22 with PJSIP, from the tools image, on every track.
EXCHANGE_TRACK = tracks.MODERN
AMI_PORT = 5038
ANNOUNCEMENT = "announcement.wav"


class PstnExchange(Asterisk):
    """The PSTN's exchange: an Asterisk that is not the lab's PBX (``lab.pstn``)."""

    #: The lab file sections its configuration is made from (see Lab.reconfigure).
    sections = ("pstn", "carrier")

    def __init__(self, context: ServiceContext, *, spec: LabSpec, credentials: Credentials):
        super().__init__(context, spec=spec, track=EXCHANGE_TRACK, credentials=credentials)

    @property
    def ami_port(self) -> int:
        return AMI_PORT

    def ports(self) -> list[Port]:
        return [Port("udp", 5060, "SIP (the PSTN exchange)"), Port("tcp", AMI_PORT, "AMI")]

    @property
    def uses_tls(self) -> bool:
        return False

    @property
    def announcement_file(self):
        """The early media it plays (8 kHz WAV): compare it with what a caller heard."""
        return self.config_dir / ANNOUNCEMENT

    def subscribers(self) -> list[dict]:
        spec = self.spec
        return [dict(number=p.number, display=p.display, address=str(spec.address_of(p.host)),
                     secret=self.credentials.secrets[pstn_secret_key(p.number)])
                for p in spec.pstn.phones]

    def render(self) -> None:
        spec, track, out = self.spec, self.track, self.config_dir
        out.mkdir(parents=True, exist_ok=True)
        env = config._environment()
        values = dict(
            lab=spec.name, track=track.name, host=self.host, module_dir=track.module_dir,
            entity_id=config.entity_id(f"{spec.name}/{self.host}"), rtp_start=10000, rtp_end=20000,
            strict_rtp=True, ami_port=AMI_PORT, ami_user=self.credentials.ami_user,
            ami_secret=self.credentials.ami_secret, modules=track.modules,
            carrier_address=str(spec.carrier_address()) if spec.carrier else "127.0.0.1",
            phones=self.subscribers(), early_media=spec.pstn.early_media,
            announcement=f"/etc/asterisk/{ANNOUNCEMENT.removesuffix('.wav')}")
        templates = {
            "asterisk.conf": "common/asterisk.conf.j2", "rtp.conf": "common/rtp.conf.j2",
            "manager.conf": "common/manager.conf.j2", "logger.conf": "common/logger.conf.j2",
            "modules.conf": f"{track.name}/modules.conf.j2",
            "pjsip.conf": "pstn/pjsip.conf.j2", "extensions.conf": "pstn/extensions.conf.j2",
        }
        for static in sorted((config.TEMPLATES / "common" / "static").glob("*.conf")):
            shutil.copyfile(static, out / static.name)
        for name, template in templates.items():
            (out / name).write_text(env.get_template(template).render(**values))
        sentence_wav(spec.pstn.announcement, self.announcement_file)


class PstnPhone(Softphone):
    """A subscriber's softphone: baresip, known to the exchange at a fixed address."""

    def render(self) -> None:
        super().render()
        account = render_account(display=self.display, extension=self.extension,
                                 registrar=self.registrar, secret=self.secret, codecs=self.codecs)
        # regint=0: no REGISTER; the exchange knows the phone's address from its AOR.
        without = re.sub(r";regint=\d+", ";regint=0", account)
        if without == account:
            raise PhoneError(f"Cannot turn registration off in {account!r}.",
                             hint="labkit.services.baresip.render_account changed: adapt PstnPhone")
        (self.config_dir / "accounts").write_text(without)


def provide(lab: LabContext) -> list[Service]:
    """The exchange and its subscribers' phones, when the lab file declares ``pstn:``."""
    spec = lab.spec
    pstn = spec.pstn
    if pstn is None:
        return []
    exchange = PstnExchange(lab.service_context(pstn.host, PstnExchange.kind, image=tracks.TOOLS_IMAGE),
                            spec=spec, credentials=lab.credentials)
    exchange_address = str(spec.address_of(pstn.host))
    phones: list[Service] = [
        PstnPhone(lab.service_context(p.host, Softphone.kind, image=tracks.TOOLS_IMAGE, directory=p.name),
                  name=p.name, extension=p.number, display=p.display,
                  address=str(spec.address_of(p.host)), registrar=exchange_address,
                  secret=lab.credentials.secrets[pstn_secret_key(p.number)],
                  codecs=[CODEC_NAMES[c] for c in ("alaw", "ulaw")])
        for p in pstn.phones]
    return [exchange, *phones]
