"""The lab file: its schema, loading with exact error places, cross-references."""
from labkit.spec.load import (
    LABS_DIR,
    apply_overrides,
    find_lab_file,
    load_spec,
    merge_overrides,
    parse_spec,
)
from labkit.spec.model import (
    LabSpec,
    carrier_secret_key,
    draw_secrets,
    json_schema,
    pstn_secret_key,
)
from labkit.spec.references import check_references, nat_problems

__all__ = ["LABS_DIR", "LabSpec", "apply_overrides", "carrier_secret_key", "check_references",
           "draw_secrets", "find_lab_file", "json_schema", "load_spec", "merge_overrides",
           "nat_problems", "parse_spec", "pstn_secret_key"]
