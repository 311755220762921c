"""Notebook 00 (orientation): what its exercises need beyond the common session.

:class:`OrientationSession` is a base class of :class:`labkit.teaching.session.Session`.
"""
from __future__ import annotations


class OrientationSession:
    """Notebook 00's part of a session (registration, the peers' state, its diagnosis lab)."""
