"""What both NAT notebooks (02a, 02b) read on the wire of a lab with an ISP box: the SIP of
the box's Internet side, the box's public address, what each measured conversation heard."""
from __future__ import annotations

from labkit.addresses import is_rfc1918


# -- truths, from the captures and the conversations ----------------------------------------------
def wan(session):
    """The SIP table of the Internet side of the box."""
    return session.table("sip", "internet")

def public_address(session) -> str:
    """The box's address on the Internet side, as the lab file gives it."""
    box = next(h for h in session.spec.hosts if h.nat is not None)
    return str(next(i.address for i in box.interfaces if i.network == box.nat.outside))

def talks(session) -> list[dict]:
    """What each measured conversation of a session gave: listener -> summary."""
    return [talk["heard"] for talk in session.recorder.results("talk")]

def heard(session, index: int = -1) -> dict[str, bool]:
    """Listener -> whether it heard the other, for one conversation (the last by default)."""
    done = talks(session)
    if not done:
        raise AssertionError("this lab has not measured a call yet: run the notebook's talk() cell")
    return {phone: bool(v["heard_the_other"]) for phone, v in done[index].items()}

def private_sdp_count(sip) -> int:
    return int(sip.sdp_c_addr.fillna("").map(is_rfc1918).sum())
