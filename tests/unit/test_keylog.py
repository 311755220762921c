"""The TLS key log library (labkit.services.keylog) compiled once per machine, even when the
first labs of a fresh machine ask for it at the same time (parallel probes of a grading run)."""
from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from labkit.services import keylog


def test_parallel_first_uses_all_get_a_whole_library(tmp_path, monkeypatch):
    monkeypatch.setenv("LABKIT_CACHE", str(tmp_path))
    with ThreadPoolExecutor(max_workers=4) as pool:
        built = list(pool.map(lambda _: keylog.library(), range(4)))
    assert len(set(built)) == 1 and built[0].parent == tmp_path / "tls"
    assert built[0].read_bytes()[:4] == b"\x7fELF"
    assert [p.name for p in (tmp_path / "tls").iterdir()] == [built[0].name]  # no partial file left
    assert keylog.library() == built[0]
