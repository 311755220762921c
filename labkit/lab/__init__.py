"""The running lab: ``with Lab.load("first-call") as lab: …``."""
from labkit.lab.lab import Lab, clean_record, leftovers

__all__ = ["Lab", "clean_record", "leftovers"]
