"""A host's nftables firewall from the lab file: the ruleset, its counters, lab-file errors."""
from __future__ import annotations

import json

import pytest

from labkit.errors import LabFileError, NetworkError
from labkit.net.firewall import HostFirewall, render_ruleset
from labkit.spec import load_spec
from labkit.spec.model import Firewall

SOURCES = {"alice": "203.0.113.21", "bob": "203.0.113.22", "carrier": "203.0.113.10"}


def _firewall(**kw) -> Firewall:
    return Firewall.model_validate({"allow": [
        {"proto": "udp", "ports": "5060", "source": "carrier", "comment": "SIP from the carrier"},
        {"proto": "tcp", "ports": "5061", "rate": "20/second", "comment": "SIP over TLS"},
        {"proto": "udp", "ports": "10000-20000", "comment": "RTP"}], **kw})


def test_ruleset_drops_all_but_what_is_allowed_each_rule_counted():
    text = render_ruleset(_firewall(), SOURCES)
    lines = [line.strip() for line in text.splitlines()]
    assert "type filter hook input priority filter; policy drop;" in lines
    assert 'ct state established,related accept comment "replies to what this host sent"' in lines
    assert 'ip saddr 203.0.113.10 udp dport 5060 counter accept comment "SIP from the carrier"' in lines
    assert ('tcp dport 5061 meter rule1 { ip saddr limit rate 20/second } counter accept '
            'comment "SIP over TLS"') in lines
    assert 'udp dport 10000-20000 counter accept comment "RTP"' in lines
    assert lines[-3] == 'counter drop comment "everything else"'
    # Replaced atomically: the table is created, deleted and defined in one nft -f run.
    assert lines[:3] == ["table inet labkit_firewall", "delete table inet labkit_firewall",
                         "table inet labkit_firewall {"]


def test_an_accepting_policy_counts_without_dropping():
    text = render_ruleset(_firewall(policy="accept"), SOURCES)
    assert "policy accept;" in text and "counter drop" not in text


class _FakeNamespace:
    def __init__(self, stdout="", returncode=0, stderr=""):
        self.stdout, self.returncode, self.stderr, self.calls = stdout, returncode, stderr, []

    def run(self, argv, check=True, input=None, timeout=30):
        self.calls.append((argv, input))
        return type("Done", (), {"stdout": self.stdout, "returncode": self.returncode, "stderr": self.stderr})()


def test_counters_are_read_from_nft_json():
    listing = {"nftables": [
        {"metainfo": {}}, {"table": {"family": "inet", "name": "labkit_firewall"}},
        {"rule": {"chain": "input", "handle": 4, "comment": "RTP",
                  "expr": [{"match": {}}, {"counter": {"packets": 120, "bytes": 20640}}, {"accept": None}]}},
        {"rule": {"chain": "input", "handle": 5, "comment": "everything else",
                  "expr": [{"counter": {"packets": 7, "bytes": 3011}}, {"drop": None}]}},
        {"rule": {"chain": "input", "handle": 2, "expr": [{"accept": None}]}}]}
    firewall = HostFirewall("vps", _FakeNamespace(json.dumps(listing)), _firewall(), SOURCES)
    assert firewall.counters() == {"RTP": {"packets": 120, "bytes": 20640},
                                   "everything else": {"packets": 7, "bytes": 3011}}


def test_a_refused_ruleset_is_a_network_error():
    firewall = HostFirewall("vps", _FakeNamespace(returncode=1, stderr="Error: syntax error"), _firewall(), SOURCES)
    with pytest.raises(NetworkError, match="refused by nftables: Error: syntax error"):
        firewall.apply()


@pytest.mark.parametrize("rule, words", [
    ({"proto": "udp", "ports": "70000"}, "is not a port"),
    ({"proto": "udp", "ports": "20000-10000"}, "is not a port"),
    ({"proto": "udp", "ports": "5060", "source": "mallory"}, "neither a host of the lab"),
])
def test_bad_rules_are_lab_file_errors(rule, words):
    hosts = load_spec("exposed-pbx").model_dump(mode="json")["hosts"]
    hosts[0]["firewall"] = {"allow": [rule]}
    with pytest.raises(LabFileError, match=words):
        load_spec("exposed-pbx", {"hosts": hosts})


def test_a_source_may_be_a_network():
    hosts = load_spec("exposed-pbx").model_dump(mode="json")["hosts"]
    hosts[0]["firewall"] = {"allow": [{"proto": "udp", "ports": "5060", "source": "203.0.113.0/28"}]}
    assert load_spec("exposed-pbx", {"hosts": hosts}).host("vps").firewall.allow[0].source == "203.0.113.0/28"
