"""Fixtures: synthetic captures written once per test session (see synth.py)."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import synth  # noqa: E402

os.environ.setdefault("MPLBACKEND", "Agg")

# The scenario every table test looks at:
#   alice -> pbx  (a2b): packets 5, 6, 50 dropped, 20 delivered after 21, 8 ms random jitter
#   pbx -> alice  (b2a): packets 30 and 31 delivered twice, seq starts at 65500 (wraps to 0)
A2B = dict(a2b_drop=[5, 6, 50], a2b_swap=[20], a2b_jitter_ms=8.0)
B2A = dict(b2a_dup=[30, 31], b2a_first_seq=65500)


@pytest.fixture(scope="session")
def scenario():
    return synth.call_capture(**A2B, **B2A)


@pytest.fixture(scope="session")
def capdir(tmp_path_factory):
    return tmp_path_factory.mktemp("caps")


def _written(scenario, capdir, name: str, linktype: int) -> str:
    """The synthetic call written as a pcap with one link-layer type (1 Ethernet,
    113 Linux cooked SLL, 276 SLL2, 101 raw IP)."""
    path = capdir / name
    synth.write_pcap(path, scenario[0], linktype)
    return str(path)


@pytest.fixture(scope="session")
def eth_pcap(scenario, capdir):
    return _written(scenario, capdir, "call_eth.pcap", 1)


@pytest.fixture(scope="session")
def sll_pcap(scenario, capdir):
    return _written(scenario, capdir, "call_sll.pcap", 113)


@pytest.fixture(scope="session")
def sll2_pcap(scenario, capdir):
    return _written(scenario, capdir, "call_sll2.pcap", 276)


@pytest.fixture(scope="session")
def raw_pcap(scenario, capdir):
    return _written(scenario, capdir, "call_raw.pcap", 101)


@pytest.fixture(scope="session")
def ng_pcap(scenario, capdir):
    """pcapng, interface 0 Ethernet (us timestamps), interface 1 SLL2 (ns timestamps);
    everything the PBX sends goes out on interface 1."""
    import copy
    pkts = [copy.copy(p) for p in scenario[0]]
    for p in pkts:
        p.iface = 1 if p.src == synth.PBX else 0
    path = capdir / "call_2if.pcapng"
    synth.write_pcapng(path, pkts, [1, 276])
    return str(path)


@pytest.fixture(scope="session")
def sip_df(eth_pcap):
    from labkit.analysis import sip_messages
    return sip_messages(eth_pcap)


@pytest.fixture(scope="session")
def rtp_df(eth_pcap, sip_df):
    from labkit.analysis import rtp_packets
    return rtp_packets(eth_pcap, sip=sip_df, with_payload=True)


@pytest.fixture(scope="session")
def streams_df(rtp_df, sip_df):
    from labkit.analysis import rtp_streams
    return rtp_streams(rtp_df, sip=sip_df)
