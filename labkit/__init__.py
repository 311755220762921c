"""labkit: drive real VoIP labs (Asterisk, SIPp, baresip, tshark) in network namespaces."""
from __future__ import annotations

__version__ = "0.1.0"
