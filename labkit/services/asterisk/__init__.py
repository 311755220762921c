"""Asterisk in a lab: its configuration, the server, its AMI."""
from labkit.services.asterisk.service import Asterisk

__all__ = ["Asterisk"]
