"""The lab file: its schema, loading with exact error places, cross-references."""
from labkit.spec.model import (LabSpec, draw_secrets, find_lab_file, json_schema, load_spec,
                               merge_overrides, parse_spec)

__all__ = ["LabSpec", "draw_secrets", "find_lab_file", "json_schema", "load_spec",
           "merge_overrides", "parse_spec"]
