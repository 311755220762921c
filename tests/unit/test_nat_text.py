"""The NAT fixes a student writes in notebook 02a are read as data (labkit.teaching.nat): the box's
forwards as lab-file YAML, Asterisk's NAT lines as sip.conf / pjsip.conf — right texts become
the lab file's settings, wrong ones are refused with the line and the reason (no lab, no root)."""
from __future__ import annotations

import pytest

from labkit.spec import load_spec
from labkit.teaching.nat import (
    NatTextError,
    forward_overrides,
    forward_rules,
    nat_lines,
    nat_overrides,
    nat_settings,
    walkthrough_forwards,
)

FORWARDS = """
- {proto: udp, ports: 5060, to: 192.168.0.10}
- {proto: udp, ports: [10000, 20000], to: 192.168.0.10}
- {proto: tcp, ports: 5061, to: 192.168.0.10}
"""


def _box(overrides: dict):
    spec = load_spec("home-pbx", overrides)
    return next(h for h in spec.hosts if h.nat is not None)


def test_the_report_table_as_forwards_becomes_the_box_s_rules():
    box = _box(forward_overrides(FORWARDS))
    assert [(f.proto, f.range, str(f.to)) for f in box.nat.forwards] == [
        ("udp", (5060, 5060), "192.168.0.10"), ("udp", (10000, 20000), "192.168.0.10"),
        ("tcp", (5061, 5061), "192.168.0.10")]
    # The same rules under a forwards: key, and the kit's own walkthrough, read alike.
    assert forward_rules("forwards:" + FORWARDS.replace("\n-", "\n  -")) == forward_rules(FORWARDS)
    assert _box(forward_overrides(FORWARDS)).nat.forwards == _box(
        {"hosts": [{**h, "nat": {**h["nat"], "forwards": walkthrough_forwards("192.168.0.10")}} if h["name"] == "box"
                   else h for h in forward_overrides(FORWARDS)["hosts"]]}).nat.forwards


@pytest.mark.parametrize("text, why", [
    ("- {proto: udp, ports: 5060, to: 203.0.113.1}", "rule 1 to: 203.0.113.1 is not on the box's LAN"),
    ("- {proto: icmp, ports: 1, to: 192.168.0.10}", "rule 1 proto"),
    ("- {proto: udp, ports: [20000, 10000], to: 192.168.0.10}", "rule 1 ports"),
    ("- {proto: udp, port: 5060, to: 192.168.0.10}", "port is not a key of a forward"),
    ("- {proto: udp, ports: 5060, to: 192.168.0.10}\n- {proto: udp, ports: 5060, to: 192.168.0.11}", "overlap"),
    ("proto: udp", "should be a list"),
    ("- [udp, 5060", "not valid YAML at line"),
    ("", "should be text"),
    ("- !!python/object/apply:os.system ['true']", "not valid YAML"),
])
def test_wrong_forwards_are_refused_with_the_reason(text, why):
    with pytest.raises(NatTextError, match=why):
        forward_overrides(text)


def test_chan_sip_lines_become_the_lab_s_nat_settings():
    assert nat_settings("[general]\nexternip = 203.0.113.1\nlocalnet = 192.168.0.0/255.255.255.0\n", "sip.conf") == {
        "external_address": "203.0.113.1", "local_nets": ["192.168.0.0/24"], "symmetric": False}
    # externaddr is externip's newer name; externhost a DNS name; nat=yes the older force_rport,comedia
    assert nat_settings("[general]\nexternhost = voip.home.example\nexternrefresh = 10\nlocalnet = 192.168.0.0/24\n"
                        "nat = yes ; the report's spelling\n", "sip.conf") == {
        "external_address": "voip.home.example", "local_nets": ["192.168.0.0/24"], "symmetric": True}
    assert nat_settings("[general]\nexternaddr = 203.0.113.1\nnat = force_rport,comedia\n", "sip.conf")["symmetric"]
    assert not nat_settings("[general]\nnat = force_rport\n", "sip.conf")["symmetric"]


def test_pjsip_transport_lines_become_the_same_settings():
    text = ("[transport-udp]\ntype = transport\nprotocol = udp\nbind = 0.0.0.0\n"
            "external_media_address = 203.0.113.1\nexternal_signaling_address = 203.0.113.1\n"
            "local_net = 192.168.0.0/24\nlocal_net = 10.0.0.0/8\n")
    assert nat_settings(text, "pjsip.conf") == {
        "external_address": "203.0.113.1", "local_nets": ["192.168.0.0/24", "10.0.0.0/8"], "symmetric": False}


@pytest.mark.parametrize("text, config, why", [
    ("externip = 203.0.113.1", "sip.conf", "start with the section header \\[general\\]"),
    ("[carrier]\nexternip = 203.0.113.1", "sip.conf", "in \\[general\\]"),
    ("[general]\nexternip = 203.0.113.1\nexternip = 203.0.113.2", "sip.conf", "two public addresses"),
    ("[general]\nlocalnet = 192.168.0.10/24", "sip.conf", "not a network"),
    ("[general]\nnat = sometimes", "sip.conf", "chan_sip knows"),
    ("[general]\nsecret = x", "sip.conf", "not one of the options"),
    ("[general]\n#exec /bin/true", "sip.conf", "directives"),
    ("[t]\nexternal_media_address = 203.0.113.1\nexternal_signaling_address = 203.0.113.2", "pjsip.conf", "differ"),
    ("[t]\ntype = endpoint\nlocal_net = 192.168.0.0/24", "pjsip.conf", "belong to a transport"),
    ("[a]\nlocal_net = 192.168.0.0/24\n[b]\nlocal_net = 10.0.0.0/8", "pjsip.conf", "one transport section"),
    ("[general]\nexternip = 203.0.113.1", "extensions.conf", "No NAT lines"),
])
def test_wrong_nat_lines_are_refused_with_the_reason(text, config, why):
    with pytest.raises(NatTextError, match=why):
        nat_settings(text, config)


def test_nat_overrides_add_the_report_s_forwards_and_pass_the_lab_model():
    overrides = nat_overrides("[general]\nexternip = 203.0.113.1\nlocalnet = 192.168.0.0/24\n", "sip.conf")
    spec = load_spec("home-pbx", overrides)
    assert spec.pbx.nat.external_address == "203.0.113.1"
    assert [str(n) for n in spec.pbx.nat.local_nets] == ["192.168.0.0/24"]
    assert len(_box(overrides).nat.forwards) == 3


def test_nat_lines_keep_only_what_the_student_s_text_changed():
    rendered = "[general]\nudpbindaddr = 0.0.0.0\nexternip = 203.0.113.1\nlocalnet = 192.168.0.0/24\nnat = no\n"
    assert nat_lines(rendered) == "externip = 203.0.113.1\nlocalnet = 192.168.0.0/24\nnat = no"


# -- the diagnosis lab: one fault per student, fixed with a forward or a NAT line ------------------
def test_each_nat_fault_is_one_wrong_setting_of_a_valid_lab():
    from labkit.teaching.nat import NAT_FAULTS, nat_fault_overrides
    made = {}
    for fault in NAT_FAULTS:
        spec = load_spec("home-pbx", nat_fault_overrides(fault))
        box = next(h for h in spec.hosts if h.nat is not None)
        made[fault] = ({(f.proto, f.range, str(f.to)) for f in box.nat.forwards},
                       spec.pbx.nat.external_address if spec.pbx.nat else None)
    right_forwards = {("udp", (5060, 5060), "192.168.0.10"), ("udp", (10000, 20000), "192.168.0.10"),
                      ("tcp", (5061, 5061), "192.168.0.10")}
    assert made["sip-forward-to-phone"] == (
        right_forwards - {("udp", (5060, 5060), "192.168.0.10")} | {("udp", (5060, 5060), "192.168.0.11")},
        "203.0.113.1")
    assert made["private-address-announced"] == (right_forwards, None)
    assert made["wrong-public-address"] == (right_forwards, "203.0.113.2")
    with pytest.raises(NatTextError, match="not one of the faults"):
        nat_fault_overrides("no-such-fault")


def test_the_fault_drawn_depends_on_the_student_and_every_fault_is_drawn():
    from labkit.teaching.nat import NAT_FAULTS, pick_nat_fault
    assert pick_nat_fault("alice-2026") == pick_nat_fault("alice-2026")
    assert {pick_nat_fault(f"s{i}")[1] for i in range(40)} == set(NAT_FAULTS)
    number, fault = pick_nat_fault("s1")
    assert list(NAT_FAULTS)[number - 1] == fault


@pytest.mark.parametrize("fix, expected", [
    (FORWARDS, "forwards"),
    ("[general]\nexternip = 203.0.113.1\nlocalnet = 192.168.0.0/24\n", "nat"),
    ("[transport-udp]\nexternal_media_address = 203.0.113.1\nlocal_net = 192.168.0.0/24\n", "nat"),
])
def test_a_fix_is_forwards_or_nat_lines_and_replaces_only_its_part(fix, expected):
    from labkit.teaching.nat import nat_fault_overrides, nat_fix_overrides, read_fix
    assert read_fix(fix)[0] == expected
    for fault in ("sip-forward-to-phone", "wrong-public-address"):
        spec = load_spec("home-pbx", nat_fix_overrides(fix, fault))
        before = load_spec("home-pbx", nat_fault_overrides(fault))
        forwards = {str(f.to) for f in next(h for h in spec.hosts if h.nat is not None).nat.forwards}
        if expected == "forwards":
            assert forwards == {"192.168.0.10"}
            assert spec.pbx.nat == before.pbx.nat          # Asterisk's lines untouched
        else:
            assert spec.pbx.nat.external_address == "203.0.113.1"
            assert spec.pbx.nat.local_nets == before.pbx.nat.local_nets
            assert forwards == {str(f.to) for f in next(h for h in before.hosts if h.nat is not None).nat.forwards}


@pytest.mark.parametrize("fix, why", [
    ("", "should be text"),
    ("- {proto: udp, ports: 5060, to: 10.0.0.1}", "not on the box's LAN"),
    ("[general]\nexternip = 203.0.113.1\n#exec /bin/sh\n", "directives"),
    ("[transport-udp]\nexternal_media_address = 203.0.113.1\nexternal_signaling_address = 203.0.113.9\n", "differ"),
])
def test_a_wrong_fix_is_refused_with_the_reason(fix, why):
    from labkit.teaching.nat import nat_fix_overrides
    with pytest.raises(NatTextError, match=why):
        nat_fix_overrides(fix, "private-address-announced")
