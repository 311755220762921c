"""SIP over TLS: the sessions table, decryption by key log / embedded secrets / RSA key, and replay.

Fixtures are real captures of the kit's Asterisk 22 (TLS 1.2) and Asterisk 16 (TLS 1.3) images
and two small ones made by tests/data/tls/make_rsa_vs_ecdhe.py (see its README.txt).  Counts
are cross-checked with tshark run directly, not only through labkit.
"""
from __future__ import annotations

import shutil
import subprocess
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from labkit.analysis import calls, replay, rtp_packets, rtp_streams, sip_messages, tls_sessions
from labkit.analysis import tls as tlsmod
from labkit.errors import CaptureError

TLS = Path(__file__).resolve().parents[1] / "data" / "tls"
A22, A22_KEYS, A22_SIPP_KEYS = TLS / "a22-tls12.pcapng", TLS / "a22-tls12.keys", TLS / "a22-tls12.sipp.keys"
A16, A16_KEYS = TLS / "a16-tls13.pcapng", TLS / "a16-tls13.keys"
RSA_KX = TLS / "a16-rsa-kx.pcapng"
RSA_VS_ECDHE, RSA_VS_ECDHE_KEYS = TLS / "rsa-vs-ecdhe.pcapng", TLS / "rsa-vs-ecdhe.keys"
PORT5062, PORT5062_KEYS = TLS / "tls13-port5062.pcapng", TLS / "tls13-port5062.keys"
SERVER_KEY = TLS / "pbx-rsa.key"

# The ladder each capture must show once decrypted (method for requests, status for responses).
A22_LADDER = ["REGISTER", 401, "REGISTER", 200,                           # SIPp, session 0
              "REGISTER", 401, "INVITE", 401, "REGISTER", "ACK", "INVITE", 200, 100, 200, "ACK",
              "BYE", 200, "REGISTER", 200]                                # baresip, session 1
A16_LADDER = ["REGISTER", 401, "REGISTER", 200,
              "REGISTER", "INVITE", 401, "REGISTER", 401, "ACK", 200, "INVITE", 100, 200, "ACK",
              "BYE", 200, "REGISTER", 401, "REGISTER", 200]
FS = "ECDHE: the server key cannot decrypt it (forward secrecy)"
RSA_OK = "RSA key exchange decrypted with the server key"
# A throwaway P-256 key (openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256)
EC_KEY = """-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQggRkvLU4/N06mArZ7
QSXFyY1xuOyC8m9Q6JLaxdf2BxqhRANCAAR0ebl+rCEEWAFKYkWGLYikc/tiV5AM
2nYhWa4OVgiZjcidRPURq5cCBJpld4Sj+yp9nBkge+Ao/PC2125u6hF5
-----END PRIVATE KEY-----
"""


def ladder(sip: pd.DataFrame) -> list:
    return [r.method if r.is_request else int(r.status_code) for r in sip.itertuples()]


def tshark(*args) -> list[str]:
    """tshark run directly: one line per frame."""
    out = subprocess.run(["tshark", "-n", *map(str, args)], capture_output=True, text=True, check=True).stdout
    return [x for x in out.splitlines() if x.strip()]


def sip_cseq_methods(pcap, *opts) -> list[str]:
    """CSeq methods of every SIP message, straight from tshark (one per message)."""
    return [m for line in tshark("-r", pcap, *opts, "-Y", "sip", "-T", "fields", "-e", "sip.CSeq.method")
            for m in line.split(",")]


@pytest.fixture(scope="module")
def injected(tmp_path_factory):
    """The two Asterisk captures with their key logs embedded, made the way the report says."""
    if not shutil.which("editcap"):
        pytest.skip("editcap (Wireshark's) is not installed")
    d = tmp_path_factory.mktemp("injected")
    out = {}
    for name, pcap, keys in (("a22", A22, A22_KEYS), ("a16", A16, A16_KEYS)):
        out[name] = d / f"{pcap.stem}.with-keys.pcapng"
        subprocess.run(["editcap", "--inject-secrets", f"tls,{keys}", str(pcap), str(out[name])], check=True)
    return out


# ----------------------------------------------------------------------------- without keys

@pytest.mark.parametrize("pcap", [A22, A16, RSA_KX, RSA_VS_ECDHE, PORT5062])
def test_no_sip_without_keys(pcap):
    assert len(sip_messages(pcap)) == 0
    assert tshark("-r", pcap, "-Y", "sip") == []          # tshark agrees: nothing readable


@pytest.mark.parametrize("pcap, version, suite, records, app_bytes", [
    (A22, "TLS 1.2", "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384", [(7, 10), (15, 14)], [(1033, 922), (5915, 3394)]),
    (A16, "TLS 1.3", "TLS_AES_256_GCM_SHA384", [(5, 11), (13, 17)], [(975, 2704), (6043, 6250)]),
])
def test_sessions_table_without_keys(pcap, version, suite, records, app_bytes):
    t = tls_sessions(pcap)
    assert len(t) == 2 == len(tshark("-r", pcap, "-Y", "tls.handshake.type == 1"))  # one ClientHello each
    assert list(t["client"]) == ["192.0.2.22", "192.0.2.21"] and set(t["server"]) == {"192.0.2.10"}
    assert list(t["client_port"])[0] == 5071 and set(t["server_port"]) == {5061}
    assert set(t["version"]) == {version} and set(t["cipher_suite"]) == {suite}
    assert set(t["key_exchange"]) == {"ECDHE"} and t["forward_secrecy"].all()
    assert list(t["sni"]) == ["", "pbx.home.example"]  # SIPp connects by address, baresip by name
    assert list(zip(t["records_c2s"], t["records_s2c"])) == records
    assert list(zip(t["app_bytes_c2s"], t["app_bytes_s2c"])) == app_bytes
    # every record tshark sees is counted, once
    total = sum(len(x.split(",")) for x in tshark("-r", pcap, "-Y", "tls", "-T", "fields", "-e", "tls.record.length"))
    assert t["records_c2s"].sum() + t["records_s2c"].sum() == total
    assert not t["decrypted"].any() and set(t["why"]) == {"no key log"}
    assert t["client_random"].str.fullmatch("[0-9a-f]{64}").all()


def test_rsa_session_without_key_says_the_server_key_would_do():
    t = tls_sessions(RSA_VS_ECDHE)
    assert list(t["key_exchange"]) == ["RSA", "ECDHE"] and list(t["forward_secrecy"]) == [False, True]
    assert t["why"][0].startswith("no key log (RSA key exchange") and t["why"][1] == "no key log"


# ----------------------------------------------------------------------------- key log

@pytest.mark.parametrize("pcap, keys, expected", [(A22, A22_KEYS, A22_LADDER), (A16, A16_KEYS, A16_LADDER)])
def test_keylog_decrypts_the_exact_ladder(pcap, keys, expected):
    sip = sip_messages(pcap, tls_keylog=keys)
    assert ladder(sip) == expected
    assert (sip["transport"] == "TLS").all()
    assert list(sip["cseq_method"]) == sip_cseq_methods(pcap, "-o", f"tls.keylog_file:{keys}")
    sipp = sip[(sip["sport"] == 5071) | (sip["dport"] == 5071)]   # the SIPp registration, session 0
    assert ladder(sipp) == ["REGISTER", 401, "REGISTER", 200]
    assert list(sipp["has_auth"]) == [False, False, True, False]
    assert list(sipp["asks_auth"]) == [False, True, False, False]
    t = tls_sessions(pcap, keys)
    assert t["decrypted"].all() and t["in_keylog"].all() and set(t["why"]) == {"decrypted with the key log"}
    assert set(t["inner_protocol"]) == {"sip"}
    # the wire does not change with keys: same records and bytes as without
    assert t[["records_c2s", "records_s2c", "app_bytes_c2s", "app_bytes_s2c"]].equals(
        tls_sessions(pcap)[["records_c2s", "records_s2c", "app_bytes_c2s", "app_bytes_s2c"]])


@pytest.mark.parametrize("pcap, keys", [(A22, A22_KEYS), (A16, A16_KEYS)])
def test_rtp_found_through_the_decrypted_sdp(pcap, keys):
    plain = rtp_streams(pcap)
    assert len(plain) == 2 and plain["call_id"].isna().all()       # plain RTP, but nobody announced it
    sip = sip_messages(pcap, tls_keylog=keys)
    rtp = rtp_packets(pcap, sip=sip)
    assert len(rtp) == 300 and set(rtp["found_by"]) == {"sdp"}
    st = rtp_streams(rtp, sip=sip)
    c = calls(sip)
    assert len(c) == 1 and c["state"][0] == "answered" and c["final_status"][0] == 200 and c["auth_challenged"][0]
    assert list(st["packets"]) == [150, 150] and set(st["call_id"]) == {c["call_id"][0]}
    # the same through the capture path with the key log passed along
    assert rtp_streams(pcap, tls_keylog=keys)[["call_id", "packets"]].equals(st[["call_id", "packets"]])
    assert len(rtp_packets(pcap, tls_keylog=keys).query("found_by == 'sdp'")) == 300
    assert calls(pcap, tls_keylog=keys)["call_id"].tolist() == c["call_id"].tolist()


def test_one_endpoints_keylog_decrypts_only_its_connection():
    sip = sip_messages(A22, tls_keylog=A22_SIPP_KEYS)
    assert ladder(sip) == ["REGISTER", 401, "REGISTER", 200]
    t = tls_sessions(A22, A22_SIPP_KEYS)
    assert list(t["decrypted"]) == [True, False]
    assert "client random is not in it" in t["why"][1]


def test_keylog_of_another_capture_decrypts_nothing(tmp_path, capsys):
    t = tls_sessions(A16, A22_KEYS)
    assert not t["decrypted"].any() and not t["in_keylog"].any()
    assert len(sip_messages(A16, tls_keylog=A22_KEYS)) == 0
    rep = replay(A16, tmp_path / "o", tls_keylog=A22_KEYS)
    assert any("0 of 2 TLS sessions decrypted with this key log" in x for x in rep.tls_notes)
    assert any("decrypts 0 of 2 TLS sessions" in w for w in rep.warnings)
    assert "0 of 2 TLS sessions decrypted with this key log" in (tmp_path / "o" / "report.md").read_text()


# ----------------------------------------------------------------------------- embedded secrets

def test_injected_secrets_decrypt_with_no_option(injected):
    for name, expected in (("a22", A22_LADDER), ("a16", A16_LADDER)):
        pcap = injected[name]
        assert ladder(sip_messages(pcap)) == expected
        assert len(sip_cseq_methods(pcap)) == len(expected)        # tshark alone, no option either
        emb = tlsmod.embedded_secrets(pcap)
        assert emb is not None and emb.lines == (2 if name == "a22" else 10)
        t = tls_sessions(pcap)
        assert t["decrypted"].all() and set(t["why"]) == {"decrypted with the secrets embedded in the capture"}
    assert tlsmod.embedded_secrets(A22) is None


# ----------------------------------------------------------------------------- RSA key vs forward secrecy

def test_rsa_key_exchange_decrypts_with_the_server_key():
    sip = sip_messages(RSA_KX, tls_rsa_key=SERVER_KEY)
    assert ladder(sip) == ["OPTIONS", 404] and (sip["transport"] == "TLS").all()
    assert len(sip_cseq_methods(RSA_KX, "-o", f'uat:rsa_keys:"{SERVER_KEY}",""')) == 2
    t = tls_sessions(RSA_KX, rsa_key=SERVER_KEY)
    assert list(t["cipher_suite"]) == ["TLS_RSA_WITH_AES_256_CBC_SHA256"] and list(t["why"]) == [RSA_OK]


def test_same_server_key_opens_rsa_but_not_ecdhe():
    t = tls_sessions(RSA_VS_ECDHE, rsa_key=SERVER_KEY)
    assert list(t["cipher_suite"]) == ["TLS_RSA_WITH_AES_256_CBC_SHA256", "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384"]
    assert list(t["decrypted"]) == [True, False]
    assert list(t["why"]) == [RSA_OK, FS]
    sip = sip_messages(RSA_VS_ECDHE, tls_rsa_key=SERVER_KEY)
    assert ladder(sip) == ["OPTIONS", 200] and set(sip["call_id"]) == {"kt-rsa@192.0.2.22"}
    # the key log opens both: it holds the session secrets, not the server's key
    both = sip_messages(RSA_VS_ECDHE, tls_keylog=RSA_VS_ECDHE_KEYS)
    assert ladder(both) == ["OPTIONS", 200, "OPTIONS", 200]
    assert set(both["call_id"]) == {"kt-rsa@192.0.2.22", "kt-ecdhe@192.0.2.22"}


def test_tls13_is_never_opened_by_the_server_key():
    t = tls_sessions(A16, rsa_key=SERVER_KEY)
    assert not t["decrypted"].any() and set(t["why"]) == {FS}


def test_key_exchange_from_suite_names():
    kx = tlsmod.key_exchange
    assert kx("TLS_RSA_WITH_AES_256_CBC_SHA256") == "RSA"
    assert kx("TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384") == "ECDHE"
    assert kx("TLS_DHE_RSA_WITH_AES_128_GCM_SHA256") == "DHE"
    assert kx("TLS_ECDH_RSA_WITH_AES_128_CBC_SHA") == "ECDH"
    assert kx("TLS_AES_128_GCM_SHA256", "x25519") == "ECDHE"
    assert kx("TLS_AES_128_GCM_SHA256", "ffdhe2048") == "DHE"
    assert kx("TLS_CHACHA20_POLY1305_SHA256") == "(EC)DHE"


def test_partial_captures_say_why_nothing_decrypts(tmp_path):
    if not shutil.which("editcap"):
        pytest.skip("editcap (Wireshark's) is not installed")
    late, early = tmp_path / "late.pcapng", tmp_path / "early.pcapng"
    subprocess.run(["editcap", "-r", str(A22), str(late), "10-20"], check=True)   # after the SIPp handshake
    subprocess.run(["editcap", "-r", str(A22), str(early), "1-5"], check=True)    # ClientHello only
    t = tls_sessions(late, A22_KEYS)
    assert len(t) == 1 and not t["decrypted"][0] and t["why"][0].startswith("handshake not in the capture")
    assert (t["client"][0], t["client_port"][0], t["server_port"][0]) == ("192.0.2.22", 5071, 5061)
    assert (t["records_c2s"][0], t["records_s2c"][0]) == (2, 3)    # REGISTER ×2 / 401, 200, close_notify
    assert len(sip_messages(late, tls_keylog=A22_KEYS)) == 0
    t = tls_sessions(early, A22_KEYS)
    assert t["in_keylog"][0] and not t["decrypted"][0] and t["why"][0].startswith("the handshake did not complete")


# ----------------------------------------------------------------------------- another port

def test_sip_over_tls_on_another_port():
    t = tls_sessions(PORT5062, PORT5062_KEYS)
    assert list(t["server_port"]) == [5062] and t["decrypted"].all() and list(t["version"]) == ["TLS 1.3"]
    assert list(t["inner_protocol"]) == ["data"]          # decrypted, but tshark does not know it is SIP
    assert len(sip_messages(PORT5062, tls_keylog=PORT5062_KEYS)) == 0
    sip = sip_messages(PORT5062, tls_keylog=PORT5062_KEYS, tls_ports=[5062])
    assert ladder(sip) == ["OPTIONS", 200] and (sip["transport"] == "TLS").all()
    assert len(sip_cseq_methods(PORT5062, "-o", f"tls.keylog_file:{PORT5062_KEYS}", "-d", "tls.port==5062,sip")) == 2


# ----------------------------------------------------------------------------- replay

def test_replay_without_keys_explains(tmp_path, capsys):
    assert replay.main([str(A22), "-o", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("0 SIP messages (+ the SIP inside 2 TLS sessions not decrypted)")
    assert "TLS: 2 sessions, 46 records, server port 5061 (2 sessions)." in out
    assert "0 of 2 TLS sessions decrypted" in out and "NOT readable" in out
    assert f"labkit replay {A22} --tls-keylog KEYS" in out
    assert f"editcap --inject-secrets tls,KEYS {A22} {TLS / 'a22-tls12.with-keys.pcapng'}" in out
    md = (tmp_path / "o" / "report.md").read_text()
    assert "## TLS" in md and "SIP inside 2 TLS sessions that could not be decrypted" in md
    assert "`labkit replay" in md and "--tls-keylog KEYS" in md and "editcap --inject-secrets tls,KEYS" in md
    assert md.count("| no | no key log |") == 2
    assert "the SIP that announced it is inside TLS" in md             # the plain RTP is still there
    tls_csv = pd.read_csv(tmp_path / "o" / "tls.csv")
    assert len(tls_csv) == 2 and not tls_csv["decrypted"].any()


def test_replay_with_keylog(tmp_path, capsys):
    assert replay.main([str(A22), "-o", str(tmp_path / "o"), "--tls-keylog", str(A22_KEYS)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("19 SIP messages, 1 calls, 2 RTP streams")
    assert "2 of 2 TLS sessions decrypted with this key log (a22-tls12.keys" in out and "NOT readable" not in out
    o = tmp_path / "o"
    assert (o / "ladder-1.png").exists() and (o / "ladder-1.svg").exists()
    md = (o / "report.md").read_text()
    assert "answered (200)" in md and md.count("| yes | decrypted with the key log |") == 2
    assert "matches no SDP" not in md
    sip = pd.read_csv(o / "sip.csv")
    assert len(sip) == 19 and set(sip["transport"]) == {"TLS"}


def test_replay_of_injected_capture_needs_no_option(injected, tmp_path, capsys):
    assert replay.main([str(injected["a16"]), "-o", str(tmp_path / "o")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("21 SIP messages, 1 calls, 2 RTP streams")
    assert "2 of 2 TLS sessions decrypted with the secrets embedded in the capture (10 key log lines)" in out


def test_replay_rsa_key_contrast(tmp_path, capsys):
    assert replay.main([str(RSA_VS_ECDHE), "-o", str(tmp_path / "o"), "--tls-rsa-key", str(SERVER_KEY)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("2 SIP messages (+ the SIP inside 1 TLS session not decrypted)")
    assert "1 of 2 TLS sessions decrypted with the server key pbx-rsa.key" in out
    assert f"1 × {FS}" in out
    md = (tmp_path / "o" / "report.md").read_text()
    assert f"| yes | {RSA_OK} |" in md and f"| no | {FS} |" in md


def test_replay_finds_sip_over_tls_on_any_port(tmp_path):
    rep = replay(PORT5062, tmp_path / "o", tls_keylog=PORT5062_KEYS)
    assert ladder(rep.sip) == ["OPTIONS", 200]


def test_replay_plain_capture_has_no_tls_section(eth_pcap, tmp_path):
    rep = replay(eth_pcap, tmp_path / "o")
    assert rep.tls.empty and rep.tls_notes == []
    assert "## TLS" not in (tmp_path / "o" / "report.md").read_text()
    assert not (tmp_path / "o" / "tls.csv").exists()


# ----------------------------------------------------------------------------- bad input

def _err(fn, *a, **kw) -> CaptureError:
    with pytest.raises(CaptureError) as e:
        fn(*a, **kw)
    assert e.value.hint, "every error says what to do"
    return e.value


def test_bad_keylog_files(tmp_path):
    e = _err(sip_messages, A22, tls_keylog=tmp_path / "nope.keys")
    assert "does not exist" in e.message and "SSLKEYLOGFILE" in e.explain()
    assert "directory" in _err(tls_sessions, A22, tmp_path).message
    (tmp_path / "empty").write_text("")
    assert "empty" in _err(sip_messages, A22, tls_keylog=tmp_path / "empty").message
    sip_log = tmp_path / "sipp-messages.log"
    sip_log.write_text("TLS message sent [360] bytes:\n\nREGISTER sip:pbx.home.example SIP/2.0\nCSeq: 1 REGISTER\n")
    e = _err(sip_messages, A22, tls_keylog=sip_log)
    assert "is not a key log" in e.message and "TLS message sent" in e.message and "CLIENT_RANDOM" in e.explain()
    e = _err(sip_messages, A22, tls_keylog=SERVER_KEY)
    assert "PEM file" in e.message and "--tls-rsa-key" in e.hint
    assert "capture file" in _err(sip_messages, A22, tls_keylog=A16).message


def test_keylog_with_some_junk_lines_is_accepted(tmp_path):
    k = tmp_path / "keys"
    k.write_text("# written by keylog.so\n\ngarbage line\n" + A22_KEYS.read_text())
    log = tlsmod.read_keylog(k)
    assert log.lines == 2 and log.bad_lines == 1 and log.kinds == "TLS 1.2"
    assert len(sip_messages(A22, tls_keylog=k)) == 19


def test_bad_rsa_keys(tmp_path):
    ec = tmp_path / "ec.key"
    ec.write_text(EC_KEY)
    e = _err(sip_messages, RSA_KX, tls_rsa_key=ec)
    assert "EC key, not an RSA key" in e.message and "forward secrecy" in e.cause
    assert "does not exist" in _err(tls_sessions, RSA_KX, rsa_key=tmp_path / "none.key").message
    e = _err(sip_messages, RSA_KX, tls_rsa_key=TLS / "pbx-rsa.crt")
    assert "no PEM private key" in e.message
    enc = tmp_path / "enc.key"
    enc.write_text("-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n")
    assert "password-protected" in _err(sip_messages, RSA_KX, tls_rsa_key=enc).message


def test_rsa_key_of_another_server(tmp_path):
    if not shutil.which("openssl"):
        pytest.skip("openssl is not installed")
    other = tmp_path / "other.key"
    subprocess.run(["openssl", "genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048", "-out",
                    str(other)], check=True, capture_output=True)
    t = tls_sessions(RSA_VS_ECDHE, rsa_key=other)
    assert not t["decrypted"].any()
    assert list(t["why"]) == ["RSA key exchange, but the key given is not this server's key", FS]


def test_replay_cli_bad_keylog(tmp_path, capsys):
    assert replay.main([str(A22), "-o", str(tmp_path / "o"), "--tls-keylog", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "the TLS key log" in err and "does not exist" in err and "What to do:" in err
    assert not (tmp_path / "o").exists()          # refused before anything is written


def test_counts_of_a_keylog():
    log = tlsmod.read_keylog(A16_KEYS)
    assert log.lines == 10 and log.kinds == "TLS 1.3" and len(log.client_randoms) == 2
    assert Counter(log.labels) == Counter({k: 2 for k in ("CLIENT_HANDSHAKE_TRAFFIC_SECRET",
                                                        "SERVER_HANDSHAKE_TRAFFIC_SECRET", "CLIENT_TRAFFIC_SECRET_0",
                                                        "SERVER_TRAFFIC_SECRET_0", "EXPORTER_SECRET")})
    assert set(tls_sessions(A16)["client_random"]) == set(log.client_randoms)
