"""Two homes, two boxes (notebook 02): each phone behind its own NAT, Asterisk on a VPS.

:class:`TwoNatSession` is a base class of :class:`labkit.teaching.session.Session`.
"""
from __future__ import annotations


class TwoNatSession:
    """Notebook 02's two-NAT part of a session."""
