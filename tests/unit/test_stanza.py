"""A student's configuration lines are data: parsed, checked against the exercise, never run."""
from __future__ import annotations

import pytest

from labkit.errors import LabFileError
from labkit.services.asterisk.config import render_pbx
from labkit.services.base import Credentials
from labkit.spec import load_spec, stanza

GOOD_PJSIP = """; my TLS transport
[transport-tls]
type = transport
protocol = tls
bind = 0.0.0.0:5061
cert_file = /etc/asterisk/tls/pbx.crt
priv_key_file = /etc/asterisk/tls/pbx.key
method = tlsv1_2
"""
GOOD_SIP = """tlsenable = yes
tlsbindaddr = 0.0.0.0:5061
tlscertfile=/etc/asterisk/tls/pbx.pem
tlscipher => ECDHE+AESGCM
"""


def test_a_good_stanza_parses_in_order():
    parsed, problems = stanza.parse(GOOD_PJSIP, stanza.PJSIP_TLS)
    assert problems == []
    assert parsed.sections() == ["transport-tls"]
    assert parsed.options("transport-tls")["method"] == "tlsv1_2"
    assert parsed.text().splitlines()[:2] == ["[transport-tls]", "type = transport"]
    parsed, problems = stanza.parse(GOOD_SIP, stanza.CHAN_SIP_TLS)
    assert problems == [] and parsed.options()["tlscipher"] == "ECDHE+AESGCM"


@pytest.mark.parametrize("text, rules, line, words", [
    ("#exec /bin/sh -c id\n", stanza.CHAN_SIP_TLS, 1, "not allowed"),
    ('#include "/etc/shadow"\n', stanza.CHAN_SIP_TLS, 1, "not allowed"),
    ("tlsenable = yes\nexternip = 1.2.3.4\n", stanza.CHAN_SIP_TLS, 2, "not one of the options"),
    ("tlscertfile = /etc/shadow\n", stanza.CHAN_SIP_TLS, 1, "under /etc/asterisk/tls/"),
    ("tlscertfile = /etc/asterisk/tls/../../shadow\n", stanza.CHAN_SIP_TLS, 1, "under /etc/asterisk/tls/"),
    ("tlscipher = ALL;${SHELL}\n", stanza.CHAN_SIP_TLS, 0, ""),  # ';' starts a comment: harmless
    ("tlscipher = $(id)\n", stanza.CHAN_SIP_TLS, 1, "a value of"),
    ("[general]\ntlsenable = yes\n", stanza.CHAN_SIP_TLS, 1, "no section header"),
    ("type = transport\n", stanza.PJSIP_TLS, 1, "start with a section header"),
    ("tlsenable yes\n", stanza.CHAN_SIP_TLS, 1, "not an option line"),
    ("tlsenable = \x1b[31myes\n", stanza.CHAN_SIP_TLS, 1, "printable"),
    ("", stanza.CHAN_SIP_TLS, 1, "empty"),
    ("tlsenable = yes\n" * 61, stanza.CHAN_SIP_TLS, 61, "at most 60 lines"),
])
def test_bad_stanzas_are_refused_with_their_line(text, rules, line, words):
    _, problems = stanza.parse(text, rules)
    if not words:
        assert problems == []
        return
    assert any(n == line and words in message for n, message in problems), problems


def test_a_stanza_in_a_lab_file_replaces_the_kits_tls_lines(tmp_path):
    credentials = Credentials({"6000": "a" * 12, "6001": "b" * 12}, "labkit", "x" * 12)
    spec = load_spec("tls-office", overrides={"pbx": {"tls": {"pjsip_conf": GOOD_PJSIP, "sip_conf": GOOD_SIP}}})
    pjsip = render_pbx(spec, "modern", credentials, tmp_path / "m")["pjsip.conf"].read_text()
    assert "as the student wrote it" in pjsip and "method = tlsv1_2" in pjsip
    assert pjsip.count("[transport-tls]") == 1 and "method = sslv23" not in pjsip
    sip = render_pbx(spec, "legacy", credentials, tmp_path / "l")["sip.conf"].read_text()
    assert "tlscertfile = /etc/asterisk/tls/pbx.pem" in sip and "tlsprivatekey" not in sip
    assert sip.count("tlsenable") == 1


def test_a_bad_stanza_is_a_lab_file_error_with_its_place():
    with pytest.raises(LabFileError) as caught:
        load_spec("tls-office", overrides={"pbx": {"tls": {"sip_conf": "tlsenable = yes\n#exec id\n"}}})
    assert "pbx.tls.sip_conf (stanza line 2)" in caught.value.message
    assert "directives" in caught.value.message
