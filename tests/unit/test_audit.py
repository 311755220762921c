"""Unit tests of labkit.audit (``labkit audit``): each rule on a weak and a strong config.

Golden findings: tests/golden/audit/<set>.txt for the configurations of tests/data/audit/
and for the kit's own renders (tests/golden/render/*); regenerate with
LABKIT_UPDATE_GOLDEN=1, then read the diff.  Each rule also has a small test of its own
that fails without it.  Fast, no root, no network.
"""
from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import pytest
from golden import assert_golden

from labkit import tracks
from labkit.audit import audit, audit_with_notes, report
from labkit.audit.dialplan import classify, pattern_regex
from labkit.audit.model import secret_weakness
from labkit.audit.parse import parse
from labkit.cli.main import main
from labkit.errors import AuditError, LabkitError
from labkit.pki import LabCA
from labkit.services.asterisk.config import render_pbx
from labkit.services.base import Credentials
from labkit.spec import load_spec
from labkit.spec.model import draw_secrets

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "audit"
RENDERS = ROOT / "tests" / "golden" / "render"
GOLDEN = ROOT / "tests" / "golden" / "audit"
SETS = sorted(p.name for p in DATA.iterdir() if p.is_dir())
#: The kit's rendered PBX folders (the carrier's kamailio.cfg is not an Asterisk file).
KIT = sorted(p.name for p in RENDERS.iterdir() if p.is_dir() and not p.name.startswith("carrier"))


def rules(findings, severity=None) -> set[str]:
    return {f.rule for f in findings if severity is None or f.severity == severity}


def sip(text: str, extensions: str | None = None):
    items = [("sip.conf", text)] + ([("extensions.conf", extensions)] if extensions else [])
    return audit(items)


def pjsip(text: str, extensions: str | None = None):
    items = [("pjsip.conf", text)] + ([("extensions.conf", extensions)] if extensions else [])
    return audit(items)


# -- golden findings --------------------------------------------------------------------------
@pytest.mark.parametrize("name", SETS)
def test_golden_findings_of_the_test_configs(name, monkeypatch):
    monkeypatch.chdir(DATA)
    findings, notes = audit_with_notes(name)
    assert_golden(report.text(findings, notes), GOLDEN / f"{name}.txt")


@pytest.mark.parametrize("name", KIT)
def test_golden_findings_of_the_kit_renders(name, monkeypatch):
    monkeypatch.chdir(RENDERS)
    findings, notes = audit_with_notes(name)
    assert_golden(report.text(findings, notes), GOLDEN / f"render-{name}.txt")
    # The kit's renders are the strong baseline: nothing exploitable as written.  (Their
    # fixture secrets, "alice-secret-0", are medium: words; a lab run draws random ones.)
    assert rules(findings, "high") == set()


def test_the_report_settings_give_each_expected_finding():
    findings = audit(DATA / "report-weak")
    assert {"sip.weak-secret", "secret-reused", "sip.tls-version", "sip.tls-cipher"} \
        <= rules(findings, "high")
    assert {"sip.tls-old-versions", "sip.directmedia-nat"} <= rules(findings, "medium")
    # What the walkthrough already did right gives nothing.
    assert not {"sip.allowguest", "sip.alwaysauthreject"} & rules(findings)
    # Its dialplan lets only 01-07 and 09 out: no fraud finding.
    assert not any(f.rule.startswith("dialplan.") for f in findings)


@pytest.mark.parametrize("name", ["report-fixed", "pjsip-strong"])
def test_the_fixed_configs_have_no_high_or_medium_finding(name):
    assert rules(audit(DATA / name)) <= {"sip.secret-in-clear", "pjsip.secret-in-clear"}


# -- the kit's random secrets against secret=test ---------------------------------------------------
@pytest.mark.parametrize("track", tracks.NAMES)
def test_a_rendered_lab_with_its_random_secrets_has_no_secret_finding(track, tmp_path):
    spec = load_spec("trunk-office")
    credentials = Credentials(secrets=draw_secrets(spec), ami_user="labkit", ami_secret="x" * 16)
    render_pbx(spec, track, credentials, tmp_path)
    findings = audit(tmp_path)
    assert not {f for f in findings if "secret" in f.rule and f.severity != "low"}
    assert rules(findings, "high") == set()
    # … where the walkthrough's secret=test is found on every phone, and reused.
    weak = [f for f in audit(DATA / "report-weak") if f.rule == "sip.weak-secret"
            and f.severity == "high"]
    assert {f.section for f in weak} == {"6000", "6001", "330", "520"}


def test_the_trunk_lab_lets_premium_numbers_out(monkeypatch):
    """A real finding on the kit's own render: _0[1-9]XXXXXXXX includes 08 9x numbers."""
    findings = audit(RENDERS / "legacy-trunk")
    premium = [f for f in findings if f.rule == "dialplan.premium"]
    assert [(f.section, f.severity) for f in premium] == [("work", "medium")]


# -- chan_sip rules -------------------------------------------------------------------------------
def test_allowguest_missing_is_its_default_yes():
    assert "sip.allowguest" in rules(sip("[general]\ncontext=public\n"))
    assert "sip.allowguest" in rules(sip("[general]\nallowguest=yes\n"))
    assert "sip.allowguest" not in rules(sip("[general]\nallowguest=no\n"))


def test_alwaysauthreject_default_is_yes_so_only_no_is_reported():
    assert "sip.alwaysauthreject" not in rules(sip("[general]\nallowguest=no\n"))
    assert "sip.alwaysauthreject" in rules(sip("[general]\nallowguest=no\nalwaysauthreject=no\n"))


PEERS = "[general]\nallowguest=no\n[6000]\ntype=friend\nhost=dynamic\nsecret={a}\n" \
        "[6001]\ntype=friend\nhost=dynamic\nsecret={b}\n"


def test_weak_and_reused_secrets():
    findings = sip(PEERS.format(a="test", b="test"))
    assert {(f.rule, f.section) for f in findings if f.severity == "high"} == {
        ("sip.weak-secret", "6000"), ("sip.weak-secret", "6001"), ("secret-reused", "6000")}
    findings = sip(PEERS.format(a="6000", b="Vb3-Xk9qLw2Zr8Tn"))
    assert [f.section for f in findings if f.rule == "sip.weak-secret"] == ["6000"]
    assert rules(sip(PEERS.format(a="Hq2_Wn7cYt5Pk4Md", b="Vb3-Xk9qLw2Zr8Tn")), "high") == set()


def test_secret_weakness_ranks():
    assert secret_weakness("test")[0] == "high"
    assert secret_weakness("alice", names=("alice",))[0] == "high"
    assert secret_weakness("123456")[0] == "high"
    assert secret_weakness("alice-secret-0", names=("alice",))[0] == "medium"
    assert secret_weakness("Xy3-pq9Lm2")[0] == "medium"            # 10 characters
    assert secret_weakness("aaaaaaaaaaaaaaaa")[0] == "medium"       # no variety
    assert secret_weakness("Hq2_Wn7cYt5Pk4Md") is None
    # a drawn token that happens to contain a word is as strong as its random rest
    assert secret_weakness("Hq2_sipcYt5Pk4Md") is None
    assert secret_weakness("Password2024!")[0] == "medium"


def test_tls_version_cipher_and_disable_switches():
    base = "[general]\nallowguest=no\ntlsenable=yes\n"
    found = rules(sip(base + "tlsclientmethod=tlsv1\ntlscipher=ALL\n"))
    assert {"sip.tls-version", "sip.tls-cipher", "sip.tls-old-versions"} <= found
    good = base + "tlscipher=ECDHE+AESGCM:!aNULL\ntlsdisablev1=yes\ntlsdisablev11=yes\n"
    assert not {"sip.tls-version", "sip.tls-cipher", "sip.tls-old-versions"} & rules(sip(good))


def test_directmedia_default_yes_behind_nat():
    phone = "[6000]\ntype=friend\nhost=dynamic\nsecret=Hq2_Wn7cYt5Pk4Md\n"
    assert "sip.directmedia-nat" in rules(sip("[general]\nallowguest=no\nnat=yes\n" + phone))
    assert "sip.directmedia-nat" in rules(sip("[general]\nallowguest=no\nlocalnet=192.168.0.0/24\n"
                                              + phone))
    assert "sip.directmedia-nat" not in rules(sip("[general]\nallowguest=no\nnat=yes\n"
                                                  "directmedia=no\n" + phone))
    assert "sip.directmedia-nat" not in rules(sip("[general]\nallowguest=no\n" + phone))


def test_insecure_invite_only_on_phones():
    phone = "[general]\nallowguest=no\n[6000]\ntype=friend\nhost=dynamic\n" \
            "secret=Hq2_Wn7cYt5Pk4Md\ninsecure=invite\n"
    trunk = phone.replace("host=dynamic", "host=sip.carrier.example")
    assert "sip.insecure-invite" in rules(sip(phone))
    assert "sip.insecure-invite" not in rules(sip(trunk))


def test_template_settings_are_inherited_and_reported_where_written():
    findings = audit(DATA / "templates")
    weak = [f for f in findings if f.rule == "sip.weak-secret"]
    assert [(f.section, f.line) for f in weak] == [("6000", 11)]    # the template's line
    conf = parse((DATA / "templates" / "sip.conf").read_text(), "sip.conf", "sip")
    bob = conf.section("6001")
    assert bob.get("callerid") == '"Bob" <6001>'                    # (+) appended
    assert conf.section("proxy").get("outboundproxy") == "sip:proxy.carrier.example;lr"
    assert conf.section("weak-phone") is None                      # a template, not a peer
    assert "secret" not in {s.key for s in conf.sections[0].own} - {"allowguest"} or \
        conf.sections[0].get("secret") is None                      # block comment skipped
    _, notes = audit_with_notes(DATA / "templates")
    assert any("#include sip_custom.conf not followed" in n for n in notes)


# -- PJSIP rules ------------------------------------------------------------------------------------
def test_pjsip_weak_set():
    findings = audit(DATA / "pjsip-weak")
    assert {"pjsip.anonymous", "pjsip.no-auth", "pjsip.tls-version", "pjsip.tls-cipher",
            "pjsip.weak-secret", "secret-reused", "dialplan.unauthenticated-dialout"} \
        <= rules(findings, "high")
    assert "pjsip.direct-media-nat" in rules(findings, "medium")
    assert "pjsip.tls-noverify" in rules(findings, "low")


def test_pjsip_method_is_one_version():
    tls = "[t]\ntype=transport\nprotocol=tls\nverify_server=yes\nmethod={}\n"
    assert "pjsip.tls-version" in rules(pjsip(tls.format("tlsv1_1")))
    assert "pjsip.tls-version" not in rules(pjsip(tls.format("sslv23")))
    assert "pjsip.tls-version" not in rules(pjsip(tls.format("tlsv1_2")))


def test_rewrite_contact_alone_is_not_nat():
    """The kit sets rewrite_contact for TLS: not enough to call a phone 'behind NAT'."""
    endpoint = "[6000]\ntype=endpoint\nauth=a\n{}\n[a]\ntype=auth\npassword=Hq2_Wn7cYt5Pk4Md\n"
    assert "pjsip.direct-media-nat" not in rules(pjsip(endpoint.format("rewrite_contact=yes")))
    assert "pjsip.direct-media-nat" in rules(pjsip(endpoint.format("rtp_symmetric=yes")))


# -- dialplan rules -----------------------------------------------------------------------------------
def test_patterns():
    assert pattern_regex("_0[1-7]XXXXXXXX").match("0199000123")
    assert not pattern_regex("_0[1-7]XXXXXXXX").match("0899000000")
    assert pattern_regex("_+.").match("+442079460000")
    assert pattern_regex("_6XXX").match("6000") and not pattern_regex("_6XXX").match("60000")
    assert classify("_X.")[0] == "catch-all" and classify("_.")[0] == "catch-all"
    assert classify("_00.")[0] == "international" and classify("_+.")[0] == "international"
    assert classify("_0033.")[0] == "premium" and classify("_08.")[0] == "premium"
    assert classify("_0[1-7]XXXXXXXX") is None and classify("_09XXXXXXXX") is None


def test_guests_reaching_the_trunk_through_an_include_and_a_goto():
    findings = audit(DATA / "tollfraud")
    dialout = [f for f in findings if f.rule == "dialplan.unauthenticated-dialout"]
    assert {(f.section, f.line) for f in dialout} == {("office", 7), ("office", 8)}
    assert all("guests" in f.what for f in dialout)


def test_authenticated_catch_all_international_premium():
    conf = "[general]\nallowguest=no\n[6000]\ntype=friend\nhost=dynamic\n" \
           "secret=Hq2_Wn7cYt5Pk4Md\ncontext=work\n[carrier]\ntype=peer\nhost=sip.carrier.example\n"
    plan = "[work]\nexten => _X.,1,Dial(SIP/${EXTEN}@carrier)\nexten => _00.,1,Dial(SIP/carrier/${EXTEN})\n" \
           "exten => _08.,1,Dial(SIP/${EXTEN}@carrier)\nexten => _0[1-7]XXXXXXXX,1,Dial(SIP/${EXTEN}@carrier)\n" \
           "exten => _6XXX,1,Dial(SIP/${EXTEN})\n"
    found = {(f.rule, f.line) for f in sip(conf, plan) if f.rule.startswith("dialplan.")}
    assert found == {("dialplan.catch-all", 2), ("dialplan.international", 3),
                     ("dialplan.premium", 4)}
    # Without the allowguest line, the same dialplan in [general]'s context is open to all.
    open_conf = conf.replace("allowguest=no", "context=work")
    assert "dialplan.unauthenticated-dialout" in rules(sip(open_conf, plan), "high")


# -- certificates and keys ------------------------------------------------------------------------------
def _cert_folder(tmp_path: Path, issued, mode_dir=0o755, mode_key=0o644) -> Path:
    folder = tmp_path / "ssl"
    issued.write(folder, "asterisk")
    os.chmod(folder / "asterisk.key", mode_key)
    os.chmod(folder, mode_dir)
    return folder


def test_the_walkthrough_certificate_folder(tmp_path):
    ca = LabCA.create("Audit Test CA")
    issued = ca.self_signed(["pbx.home.example"], days=3655)
    findings = audit(_cert_folder(tmp_path, issued))
    assert {"files.cert-lifetime", "files.cert-self-signed"} <= rules(findings, "medium")
    assert "files.key-readable" in rules(findings, "high")
    assert "files.key-folder-open" in rules(findings, "low")


def test_a_good_certificate_folder(tmp_path):
    ca = LabCA.create("Audit Test CA")
    findings = audit(_cert_folder(tmp_path, ca.issue_server(["pbx.home.example"]), 0o700, 0o600))
    assert findings == []        # ca.crt is a CA: its lifetime is not a server's


def test_expired_and_ten_year_certificates(tmp_path):
    ca = LabCA.create("Audit Test CA")
    expired = audit(_cert_folder(tmp_path / "a", ca.expired(["pbx.home.example"]), 0o700, 0o600))
    assert "files.cert-expired" in rules(expired, "high")
    ten = audit(_cert_folder(tmp_path / "b", ca.ten_year(["pbx.home.example"]), 0o700, 0o600))
    assert [f.rule for f in ten] == ["files.cert-lifetime"]
    assert "3655 days" in ten[0].what or "365" in ten[0].what


# -- bad input --------------------------------------------------------------------------------------------
def test_missing_file(tmp_path):
    with pytest.raises(AuditError, match="does not exist") as info:
        audit(tmp_path / "sip.conf")
    assert info.value.hint and info.value.cause


def test_binary_file(tmp_path):
    path = tmp_path / "sip.conf"
    path.write_bytes(b"\xd4\xc3\xb2\xa1\x02\x00\x04\x00" + bytes(64))
    with pytest.raises(AuditError, match="binary file"):
        audit(path)


def test_unknown_kind(tmp_path):
    path = tmp_path / "rtp.conf"
    path.write_text("[general]\nrtpstart=10000\n")
    with pytest.raises(AuditError, match="not a file the audit reads"):
        audit(path)


def test_unreadable_key(tmp_path, monkeypatch):
    folder = tmp_path / "ssl"
    folder.mkdir()
    key = folder / "asterisk.key"
    key.write_text("-----BEGIN PRIVATE KEY-----\n")
    real = Path.read_bytes

    def refuse(self):
        if self.name == "asterisk.key":
            raise PermissionError(13, "Permission denied")
        return real(self)
    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(AuditError, match="permission denied") as info:
        audit(folder)
    assert "sudo -u asterisk" in info.value.hint
    assert isinstance(info.value, LabkitError)


def test_key_that_is_no_key(tmp_path):
    folder = tmp_path / "ssl"
    folder.mkdir()
    (folder / "asterisk.key").write_bytes(b"\x30\x82\x01\x02")
    with pytest.raises(AuditError, match="holds no PEM key"):
        audit(folder)


# -- the command line and JSON ------------------------------------------------------------------------------
def test_cli_text_json_and_exit_status(capsys, monkeypatch):
    monkeypatch.chdir(DATA)
    assert main(["audit", "report-weak"]) == 1                  # high findings
    out = capsys.readouterr().out
    assert "sip.tls-cipher" in out and "tlscipher = ECDHE+AESGCM:ECDHE+CHACHA20" in out
    assert main(["audit", "report-fixed"]) == 0
    capsys.readouterr()
    assert main(["audit", "--json", "--fail-on", "never", "report-weak"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["counts"]["high"] == sum(f["severity"] == "high" for f in data["findings"])
    assert {"rule", "severity", "where", "file", "line", "section", "what", "why", "source",
            "fix"} <= set(data["findings"][0])
    assert main(["audit", "no-such-file.conf"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_text_is_accepted_directly():
    findings = audit("[general]\nallowguest=yes\n")
    assert rules(findings) == {"sip.allowguest"}
    assert findings[0].file == "<text 1>"


def test_findings_are_dated_nowhere():
    """Golden files must not change with the date: no finding text carries today."""
    today = dt.date.today().isoformat()
    for name in SETS:
        assert today not in report.text(audit(DATA / name))
