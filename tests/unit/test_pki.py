"""Unit tests of labkit.pki: every certificate it makes is checked by the real ``openssl``
of the host (Debian 12: OpenSSL 3.0) — ``openssl verify``, and a real TLS handshake between
``openssl s_server`` and ``openssl s_client`` on 127.0.0.1 — and by the module's own
verifier, which must give the same error number.  No root, no lab image; ~10 s.
"""
from __future__ import annotations

import datetime as dt
import os
import re
import stat
import subprocess
import threading
from contextlib import contextmanager
from pathlib import Path

import pytest

from labkit import pki
from labkit.errors import LabkitError

NAME = "pbx.home.example"
ADDRESS = "192.0.2.10"

#: variant → (openssl verify code with -verify_hostname, alert the client sends or None)
EXPECTED = {
    "good": (0, None),
    "expired": (10, 45),
    "not_yet_valid": (9, 42),
    "wrong_name": (62, 42),
    "other_ca": (20, 48),
    "self_signed": (18, 48),
    "key_mismatch": (0, None),   # the certificate is fine; the *server* refuses the pair
    "weak": (0, None),           # plain `openssl verify` checks no security level
    "ten_year": (0, None),
}


def openssl(*args: str, check: bool = False) -> subprocess.CompletedProcess:
    return subprocess.run(["openssl", *args], capture_output=True, text=True, timeout=30,
                          check=check)


def verify_code(*args: str) -> int:
    """The first error number ``openssl verify`` prints, 0 for OK."""
    result = openssl("verify", *args)
    text = result.stdout + result.stderr
    errors = re.findall(r"^error (\d+) at (\d+) depth lookup", text, re.M)
    if not errors:
        assert result.returncode == 0 and text.rstrip().endswith(": OK"), text
        return 0
    assert result.returncode != 0, text
    return int(errors[0][0])


@pytest.fixture(scope="module")
def ca():
    return pki.LabCA.create("Test Lab CA")


@pytest.fixture(scope="module")
def made(ca, tmp_path_factory):
    """Every variant, written to its own directory: name → (Issued, CertFiles)."""
    root = tmp_path_factory.mktemp("pki")
    out = {}
    for variant in pki.VARIANTS:
        issued = ca.variant(variant, NAME, ADDRESS)
        out[variant] = issued, issued.write(root / variant, "pbx")
    return out


# -- the CA ---------------------------------------------------------------------------------
def test_ca_is_a_short_lived_path_len_zero_ca(ca, tmp_path):
    crt, key = ca.write(tmp_path / "ca")
    text = openssl("x509", "-in", str(crt), "-noout", "-text", check=True).stdout
    assert re.search(r"Basic Constraints: critical\s+CA:TRUE, pathlen:0", text)
    assert re.search(r"Key Usage: critical\s+Certificate Sign, CRL Sign", text)
    assert "Signature Algorithm: ecdsa-with-SHA256" in text
    assert "Public-Key: (256 bit)" in text
    lifetime = ca.cert.not_valid_after_utc - ca.cert.not_valid_before_utc
    assert lifetime <= dt.timedelta(days=pki.CA_MAX_DAYS) + pki.BACKDATE
    assert verify_code("-CAfile", str(crt), str(crt)) == 0
    assert pki.LabCA.load(tmp_path / "ca").cert == ca.cert


def test_rsa_ca_signs_with_sha256_and_issues_verifiable_certificates(tmp_path):
    rsa_ca = pki.LabCA.create("RSA Lab CA", key_type="rsa", bits=3072, days=30)
    files = rsa_ca.issue_server(NAME, days=10, key_type="rsa").write(tmp_path / "s", "pbx")
    text = openssl("x509", "-in", str(files.ca), "-noout", "-text", check=True).stdout
    assert "sha256WithRSAEncryption" in text and "(3072 bit)" in text
    assert verify_code("-CAfile", str(files.ca), "-verify_hostname", NAME, str(files.cert)) == 0


@pytest.mark.parametrize("days", [0, 366, 3655])
def test_ca_lifetime_is_at_most_a_year(days):
    with pytest.raises(pki.PkiError, match="lives 1 to 365 days"):
        pki.LabCA.create(days=days)


# -- every variant against `openssl verify` and the module's verifier ----------------------
@pytest.mark.parametrize("variant", pki.VARIANTS)
def test_openssl_verify_and_module_agree(made, variant):
    issued, files = made[variant]
    code, _alert = EXPECTED[variant]
    assert verify_code("-CAfile", str(files.ca), "-verify_hostname", NAME, str(files.cert)) == code
    # The module's verifier, at level 0 like plain `openssl verify`.
    verdict = pki.verify(issued.cert, files.ca, NAME, security_level=0)
    assert verdict.code == code, verdict
    if code:
        assert verdict.openssl_line == f"error {code} at 0 depth lookup: " \
                                       f"{pki.OPENSSL_ERRORS[code]}"


@pytest.mark.parametrize("variant, level, code", [
    ("weak", 0, 0), ("weak", 1, 68), ("weak", 2, 66), ("good", 2, 0), ("ten_year", 2, 0),
])
def test_security_levels_like_openssl_auth_level(made, variant, level, code):
    issued, files = made[variant]
    assert verify_code("-auth_level", str(level), "-CAfile", str(files.ca),
                       "-verify_hostname", NAME, str(files.cert)) == code
    assert pki.verify(issued.cert, files.ca, NAME, security_level=level).code == code


def test_ip_address_subject(made):
    for variant, code in (("good", 0), ("wrong_name", 64)):
        issued, files = made[variant]
        assert verify_code("-CAfile", str(files.ca), "-verify_ip", ADDRESS,
                           str(files.cert)) == code
        assert pki.verify(issued.cert, files.ca, ADDRESS).code == code


def test_other_ca_sent_as_chain_gives_19(made, tmp_path):
    issued, files = made["other_ca"]
    other = tmp_path / "other-ca.crt"
    other.write_bytes(pki.cert_pem(issued.issuer_chain[0]))
    assert verify_code("-CAfile", str(files.ca), "-untrusted", str(other),
                       "-verify_hostname", NAME, str(files.cert)) == 19
    verdict = pki.verify(issued.cert, files.ca, NAME, intermediates=[other])
    assert (verdict.code, verdict.depth) == (19, 1)


def test_client_certificate_purpose(ca, tmp_path):
    client = ca.issue_client("alice.home.example", sip_uris="sip:alice@pbx.home.example")
    files = client.write(tmp_path / "alice", "alice")
    assert verify_code("-purpose", "sslclient", "-CAfile", str(files.ca), str(files.cert)) == 0
    assert verify_code("-purpose", "sslserver", "-CAfile", str(files.ca), str(files.cert)) == 26
    assert pki.verify(client.cert, files.ca, purpose="client").ok
    assert pki.verify(client.cert, files.ca, "alice.home.example").code == 26
    assert pki.describe(client.cert)["san_uri"] == ["sip:alice@pbx.home.example"]


def test_verdict_at_another_time(made):
    issued, files = made["good"]
    later = issued.cert.not_valid_after_utc + dt.timedelta(days=1)
    assert pki.verify(issued.cert, files.ca, NAME, at=later).code == 10
    # The ten-year certificate dies with its one-year CA: error 10 at depth 1.
    issued, files = made["ten_year"]
    in_two_years = pki._now() + dt.timedelta(days=730)
    verdict = pki.verify(issued.cert, files.ca, NAME, at=in_two_years)
    assert (verdict.code, verdict.depth) == (10, 1)
    assert verify_code("-attime", str(int(in_two_years.timestamp())), "-CAfile", str(files.ca),
                       "-verify_hostname", NAME, str(files.cert)) == 10


def test_strict_verifier_is_reported(made):
    verdict = pki.verify(made["ten_year"][0].cert, made["ten_year"][1].ca, NAME)
    assert verdict.ok and any("3655 days" in w for w in verdict.warnings)
    verdict = pki.verify(made["expired"][0].cert, made["expired"][1].ca, NAME)
    assert "not valid at validation time" in verdict.strict_error
    assert verdict.alert == 45 and verdict.reason == "expired"


# -- real TLS handshakes: s_server with the certificate, s_client verifying -----------------
@contextmanager
def s_server(cert: Path, key: Path | None = None, *extra: str):
    """``openssl s_server`` on 127.0.0.1 (a free port); yields (port or None, output())."""
    argv = ["openssl", "s_server", "-accept", "127.0.0.1:0", "-naccept", "1", "-rev",
            "-cert", str(cert), *(["-key", str(key)] if key else []), *extra]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    listening = threading.Event()

    def read():   # a thread, so that a silent server cannot block the test
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("ACCEPT"):
                listening.set()
        listening.set()   # it exited (refused the certificate or key)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    listening.wait(timeout=10)
    match = re.search(r"^ACCEPT 127\.0\.0\.1:(\d+)", "".join(lines), re.M)
    try:
        yield (int(match.group(1)) if match else None), lambda: "".join(lines)
    finally:
        if proc.poll() is None:
            proc.terminate()
        proc.wait(timeout=10)
        reader.join(timeout=10)


def s_client(port: int, ca: Path, *extra: str) -> str:
    result = subprocess.run(
        ["openssl", "s_client", "-connect", f"127.0.0.1:{port}", "-CAfile", str(ca),
         "-verify_hostname", NAME, "-verify_return_error", "-ign_eof", *extra],
        # s_server -rev echoes each line reversed and hangs up on "CLOSE".
        input="hello\nCLOSE\n", capture_output=True, text=True, timeout=20)
    return result.stdout + result.stderr


@pytest.mark.parametrize("variant", [v for v in pki.VARIANTS
                                     if v not in ("key_mismatch", "weak")])
def test_tls_handshake_verdicts(made, variant):
    _issued, files = made[variant]
    code, alert = EXPECTED[variant]
    with s_server(files.cert, files.key) as (port, output):
        assert port, output()
        client = s_client(port, files.ca)
    assert f"Verify return code: {code} ({pki.OPENSSL_ERRORS[code]})" in client, client
    if alert is None:
        assert "olleh" in client   # -rev echoed our line reversed: application data flowed
    else:
        assert f"SSL alert number {alert}" in output(), output()


def test_combined_pem_is_enough_for_a_server(made):
    """chan_sip's "same pem" / baresip's sip_certificate: one file, certificate then key."""
    _issued, files = made["good"]
    text = files.combined.read_text()
    assert text.index("BEGIN CERTIFICATE") < text.index("BEGIN PRIVATE KEY")
    with s_server(files.combined) as (port, output):
        assert port, output()
        assert "Verify return code: 0 (ok)" in s_client(port, files.ca)


def test_key_mismatch_detected(made):
    issued, files = made["key_mismatch"]
    assert not issued.key_matches and made["good"][0].key_matches
    cert_pub = openssl("x509", "-noout", "-pubkey", "-in", str(files.cert), check=True).stdout
    key_pub = openssl("pkey", "-pubout", "-in", str(files.key), check=True).stdout
    assert cert_pub != key_pub
    good = made["good"][1]
    assert openssl("x509", "-noout", "-pubkey", "-in", str(good.cert)).stdout == \
        openssl("pkey", "-pubout", "-in", str(good.key)).stdout
    with s_server(files.cert, files.key) as (port, output):
        assert port is None
    assert "key values mismatch" in output()


def test_weak_refused_at_default_security_level(made):
    _issued, files = made["weak"]
    text = openssl("x509", "-in", str(files.cert), "-noout", "-text", check=True).stdout
    assert "Public-Key: (1024 bit)" in text and "ecdsa-with-SHA1" in text
    # The server refuses to load it: Debian builds OpenSSL with security level 2.
    with s_server(files.cert, files.key) as (port, output):
        assert port is None
    assert "ee key too small" in output()
    with s_server(files.cert, files.key, "-cipher", "DEFAULT@SECLEVEL=1") as (port, output):
        assert port is None
    assert "ca md too weak" in output()
    # Forced onto the wire (level 0), a default client refuses it: 66 then alert 42.
    with s_server(files.cert, files.key, "-cipher", "DEFAULT@SECLEVEL=0") as (port, output):
        assert port, output()
        client = s_client(port, files.ca)
    assert "Verify return code: 66 (EE certificate key too weak)" in client
    assert "SSL alert number 42" in output()


# -- files and permissions -------------------------------------------------------------------
def test_file_modes(made):
    _issued, files = made["good"]
    assert stat.S_IMODE(files.key.parent.stat().st_mode) == 0o700
    for path, mode in ((files.key, 0o600), (files.combined, 0o600), (files.cert, 0o644),
                       (files.chain, 0o644), (files.ca, 0o644)):
        assert stat.S_IMODE(path.stat().st_mode) == mode, path
    assert files.chain.read_text().count("BEGIN CERTIFICATE") == 2


def test_key_mode_ignores_umask(ca, tmp_path):
    old = os.umask(0)
    try:
        files = ca.issue_server(NAME).write(tmp_path / "loose", "pbx")
    finally:
        os.umask(old)
    assert stat.S_IMODE(files.key.stat().st_mode) == 0o600
    assert stat.S_IMODE(files.key.parent.stat().st_mode) == 0o700


def test_open_directory_is_refused(ca, tmp_path):
    open_dir = tmp_path / "ssl"
    open_dir.mkdir()
    open_dir.chmod(0o755)                      # the walkthrough's chmod 755
    with pytest.raises(pki.PkiError, match="open to other users") as info:
        ca.issue_server(NAME).write(open_dir, "pbx")
    assert "chmod 700" in info.value.hint
    assert not list(open_dir.iterdir())


def test_unwritable_directory(ca, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(pki.PkiError, match="Cannot create the directory"):
        ca.issue_server(NAME).write(blocker / "tls", "pbx")


def test_rewrite_replaces_files(ca, tmp_path):
    first = ca.issue_server(NAME).write(tmp_path / "tls", "pbx")
    second = ca.issue_server(NAME).write(tmp_path / "tls", "pbx")
    assert first.key == second.key and pki.key_matches(pki.load_certificate(second.cert),
                                                       pki.load_key(second.key))


# -- errors that teach -----------------------------------------------------------------------
@pytest.mark.parametrize("call, match", [
    (lambda ca: ca.variant("expird", NAME), "Unknown certificate variant"),
    (lambda ca: ca.issue_server("intranet.lan"), "not a reserved test or example name"),
    (lambda ca: ca.issue_server(NAME, "8.8.8.8"), "public address"),
    (lambda ca: ca.issue_server("192.0.2.10"), "is an address, not a name"),
    (lambda ca: ca.issue_server(), "at least one name or address"),
    (lambda ca: ca.issue_server(NAME, days=400), "outlive its CA"),
    (lambda ca: ca.wrong_name(NAME, actual=NAME), "a name other than"),
    (lambda ca: ca.issue_client("alice.home.example", sip_uris="alice"), "Not a SIP URI"),
    (lambda ca: pki.new_key("rsa", 1024), "too weak"),
    (lambda ca: pki.verify(ca.cert, ca.cert, None), "verified for a name"),
])
def test_bad_input_raises_labkit_errors(ca, call, match):
    with pytest.raises(pki.PkiError, match=match) as info:
        call(ca)
    assert isinstance(info.value, LabkitError)
    assert info.value.hint


def test_hyphenated_variant_names_and_reserved_names(ca):
    assert ca.variant("not-yet-valid", "voip.lab.test").variant == "not_yet_valid"
    for name in ("pbx.home.example", "voip.lab.test", "*.lab.test", "localhost",
                 "phone.home.arpa", "www.example.org"):
        assert pki.check_name(name)
    for address in ("192.0.2.1", "198.51.100.7", "203.0.113.1", "192.168.0.10", "10.1.2.3",
                    "127.0.0.1", "2001:db8::1"):
        assert pki.check_address(address)


def test_unreadable_files(tmp_path):
    with pytest.raises(pki.PkiError, match="Cannot read"):
        pki.load_key(tmp_path / "missing.key")
    (tmp_path / "junk.crt").write_text("junk")
    with pytest.raises(pki.PkiError, match="Not a certificate"):
        pki.load_certificate(tmp_path / "junk.crt")


# -- describe ----------------------------------------------------------------------------------
def test_describe_matches_openssl(made):
    issued, files = made["good"]
    info = pki.describe(issued.cert)
    fingerprint = openssl("x509", "-in", str(files.cert), "-noout", "-fingerprint", "-sha256",
                          check=True).stdout.strip().split("=", 1)[1]
    assert info["sha256_fingerprint"] == fingerprint
    assert info["san_dns"] == [NAME] and info["san_ip"] == [ADDRESS]
    assert (info["key_type"], info["key_bits"]) == ("EC P-256", 256)
    assert info["signature_algorithm"] == "ecdsa-with-SHA256"
    assert info["extended_key_usage"] == ["serverAuth"]
    assert info["valid_now"] and not info["is_ca"] and not info["self_signed"]
    assert "CN=Test Lab CA" in info["issuer"]
    weak = pki.describe(made["weak"][0].cert)
    assert (weak["key_type"], weak["key_bits"], weak["signature_algorithm"]) == \
        ("RSA", 1024, "ecdsa-with-SHA1")
    selfie = pki.describe(made["self_signed"][0].cert)
    assert selfie["self_signed"] and selfie["subject"] == selfie["issuer"]
    assert pki.describe(made["ten_year"][0].cert)["days_total"] >= pki.TEN_YEAR_DAYS
    assert not pki.describe(made["expired"][0].cert)["valid_now"]
