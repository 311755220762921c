"""The daemons of a lab, one module each, on one lifecycle (:mod:`labkit.services.base`).

Each module that a lab file can call for has ``provide(lab) -> list[Service]``; the running
lab asks every one of :data:`PROVIDERS` and starts what they return, in the order their
``needs`` give.  A new daemon is a new module here and one line below.  Captures (dumpcap)
and SIPp runs are services too, made on demand rather than from the lab file.
"""
from __future__ import annotations

from labkit.services import baresip, dnsmasq, fail2ban, kamailio, pstn
from labkit.services.asterisk import service as asterisk

#: The modules whose ``provide`` turns a lab file into services (the lab's PBX first: the
#: PSTN's exchange is an Asterisk too).
PROVIDERS = (dnsmasq, asterisk, baresip, kamailio, pstn, fail2ban)
