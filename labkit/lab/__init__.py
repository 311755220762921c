"""The running lab: ``with Lab.load("first-call") as lab: …``."""
from labkit.lab.cleanup import clean_record, leftovers
from labkit.lab.lab import Lab

__all__ = ["Lab", "clean_record", "leftovers"]
