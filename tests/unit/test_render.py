"""Unit tests of labkit.render: Asterisk configuration for both tracks from one lab model.

Every rendered file of first-call is compared with tests/golden/render/<track>/<file>
(regenerate with LABKIT_UPDATE_GOLDEN=1, then read the diff).  The semantic tests below
say *why* a golden matters, so that a failure names the broken property and not only
a diff.  Fast, no root, no network.
"""
from __future__ import annotations

import re
from pathlib import Path

import pytest
from golden import assert_golden, updating

from labkit import tracks
from labkit.services.asterisk.config import TEMPLATES, entity_id, render_pbx
from labkit.services.base import Credentials as PbxCredentials
from labkit.spec import LabSpec, load_spec

ROOT = Path(__file__).resolve().parents[2]
GOLDEN = ROOT / "tests" / "golden" / "render"
DATA = ROOT / "tests" / "data" / "labs"
TRACKS = ("modern", "legacy")
SECRETS = {"6000": "alice-secret-0", "6001": "bob-secret-01"}
CREDENTIALS = PbxCredentials(secrets=SECRETS, ami_user="labkit", ami_secret="ami-secret-000")
COMMON = {"asterisk.conf", "extensions.conf", "rtp.conf", "manager.conf", "logger.conf",
          "modules.conf"}
STATIC = {p.name for p in (TEMPLATES / "common" / "static").glob("*.conf")}


@pytest.fixture(scope="module")
def first_call() -> LabSpec:
    return load_spec("first-call")


def _render(spec: LabSpec, track: str, out: Path, credentials: PbxCredentials = CREDENTIALS
            ) -> dict[str, str]:
    written = render_pbx(spec, track, credentials, out)
    return {name: path.read_text(encoding="utf-8") for name, path in written.items()}


def _settings(text: str) -> list[tuple[str, str, str]]:
    """(section, key, value) of every ``key = value`` / ``key => value`` line."""
    section, out = "", []
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        out.append((section, key.strip(), value.lstrip(">").strip()))
    return out


def _sections(text: str) -> list[tuple[str, dict[str, list[str]]]]:
    """The config's sections in order, each with its keys -> values."""
    out: list[tuple[str, dict[str, list[str]]]] = []
    for section, key, value in _settings(text):
        if not out or out[-1][0] != section or key == "type" and "type" in out[-1][1]:
            out.append((section, {}))
        out[-1][1].setdefault(key, []).append(value)
    return out


def _one(sections, name, kind=None) -> dict[str, list[str]]:
    found = [body for sec, body in sections
             if sec == name and (kind is None or body.get("type") == [kind])]
    assert len(found) == 1, f"expected one [{name}] {kind or ''}, found {len(found)}"
    return found[0]


# ---------------------------------------------------------------------------------------
# Goldens
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("track", TRACKS)
def test_rendered_files_match_goldens(first_call, track, tmp_path):
    files = _render(first_call, track, tmp_path / track)
    golden_dir = GOLDEN / track
    assert set(files) == COMMON | STATIC | {tracks.get(track).sip_config}
    # Nothing else is written to the directory than what render_pbx reports.
    assert {p.name for p in (tmp_path / track).iterdir()} == set(files)
    for name, text in sorted(files.items()):
        assert_golden(text, golden_dir / name)
    stale = {p.name for p in golden_dir.iterdir()} - set(files)
    if updating():
        for name in stale:
            (golden_dir / name).unlink()
    else:
        assert not stale, f"golden files no longer rendered: {sorted(stale)}"


@pytest.mark.parametrize("track", TRACKS)
def test_rendering_is_deterministic(first_call, track, tmp_path):
    assert _render(first_call, track, tmp_path / "a") == _render(first_call, track, tmp_path / "b")


def test_render_creates_missing_directories_and_returns_paths_inside(first_call, tmp_path):
    out = tmp_path / "config" / "pbx"
    written = render_pbx(first_call, "modern", CREDENTIALS, out)
    assert all(path == out / name and path.is_file() for name, path in written.items())


@pytest.mark.parametrize("track", TRACKS)
def test_static_files_are_copied_verbatim(first_call, track, tmp_path):
    files = _render(first_call, track, tmp_path)
    for name in STATIC:
        assert files[name] == (TEMPLATES / "common" / "static" / name).read_text()


# ---------------------------------------------------------------------------------------
# Semantics: the properties the goldens are there to keep
# ---------------------------------------------------------------------------------------

def test_each_track_renders_only_its_sip_config(first_call, tmp_path):
    modern = _render(first_call, "modern", tmp_path / "modern")
    legacy = _render(first_call, "legacy", tmp_path / "legacy")
    assert "pjsip.conf" in modern and "sip.conf" not in modern
    assert "sip.conf" in legacy and "pjsip.conf" not in legacy
    assert not (tmp_path / "modern" / "sip.conf").exists()
    assert not (tmp_path / "legacy" / "pjsip.conf").exists()


def test_legacy_sip_conf_declares_one_friend_per_extension(first_call, tmp_path):
    text = _render(first_call, "legacy", tmp_path)["sip.conf"]
    sections = _sections(text)
    general = _one(sections, "general")
    assert general["allowguest"] == ["no"] and general["alwaysauthreject"] == ["yes"]
    assert general["udpbindaddr"] == ["0.0.0.0:5060"]
    assert general["tcpenable"] == ["no"] and general["transport"] == ["udp"]
    assert general["allow"] == ["ulaw", "alaw"] and general["disallow"] == ["all"]
    assert general["directmedia"] == ["no"]
    for extension, name in (("6000", "Alice"), ("6001", "Bob")):
        peer = _one(sections, extension)
        assert peer == {
            "type": ["friend"], "host": ["dynamic"], "secret": [SECRETS[extension]],
            "context": ["work"], "callerid": [f'"{name}" <{extension}>'],
            "directmedia": ["no"],
        }


def test_modern_pjsip_conf_has_endpoint_auth_and_aor_per_extension(first_call, tmp_path):
    text = _render(first_call, "modern", tmp_path)["pjsip.conf"]
    sections = _sections(text)
    transport = _one(sections, "transport-udp", "transport")
    assert transport == {"type": ["transport"], "protocol": ["udp"], "bind": ["0.0.0.0:5060"]}
    assert [s for s, body in sections if body.get("type") == ["transport"]] == ["transport-udp"]
    for extension, name in (("6000", "Alice"), ("6001", "Bob")):
        endpoint = _one(sections, extension, "endpoint")
        assert endpoint["context"] == ["work"]
        assert endpoint["auth"] == [f"{extension}-auth"] and endpoint["aors"] == [extension]
        assert endpoint["disallow"] == ["all"] and endpoint["allow"] == ["ulaw,alaw"]
        assert endpoint["direct_media"] == ["no"]
        assert endpoint["callerid"] == [f'"{name}" <{extension}>']
        auth = _one(sections, f"{extension}-auth", "auth")
        assert auth == {"type": ["auth"], "auth_type": ["userpass"], "username": [extension],
                        "password": [SECRETS[extension]]}
        aor = _one(sections, extension, "aor")
        assert aor["max_contacts"] == ["1"] and aor["remove_existing"] == ["yes"]
    kinds = sorted(body["type"][0] for _, body in sections)
    assert kinds == sorted(["global", "transport"] + ["endpoint", "auth", "aor"] * 2)


@pytest.mark.parametrize("track", TRACKS)
def test_each_secret_appears_once_per_extension_and_nowhere_else(first_call, track, tmp_path):
    files = _render(first_call, track, tmp_path)
    sip = tracks.get(track).sip_config
    for secret in SECRETS.values():
        assert files[sip].count(secret) == 1, f"{secret} in {sip}"
        assert all(secret not in text for name, text in files.items() if name != sip)
    assert files["manager.conf"].count("ami-secret-000") == 1
    assert all("ami-secret-000" not in t for n, t in files.items() if n != "manager.conf")


@pytest.mark.parametrize("track, dial", [("modern", "PJSIP"), ("legacy", "SIP")])
def test_dialplan_tech_becomes_the_track_driver(first_call, track, dial, tmp_path):
    text = _render(first_call, track, tmp_path)["extensions.conf"]
    assert tracks.get(track).channel_tech == dial
    assert f"exten => _6XXX,1,Dial({dial}/${{EXTEN}},20)\n" in text
    assert "same => n,Hangup()\n" in text
    other = {"PJSIP": "SIP", "SIP": "PJSIP"}[dial]
    code = [line for line in text.splitlines() if not line.startswith(";")]
    assert not any("{{" in line or "}}" in line for line in code), "template left unrendered"
    assert not any(f"({other}/" in line for line in code)
    settings = _settings(text)
    assert ("general", "static", "yes") in settings
    assert ("general", "writeprotect", "yes") in settings
    assert [s for s, _, _ in settings if s not in ("general",)] == ["work", "work"]


@pytest.mark.parametrize("track", TRACKS)
def test_rtp_manager_logger_and_asterisk_conf(first_call, track, tmp_path):
    files = _render(first_call, track, tmp_path)
    rtp = _settings(files["rtp.conf"])
    assert rtp == [("general", "rtpstart", "10000"), ("general", "rtpend", "20000"),
                   ("general", "strictrtp", "yes")]
    manager = dict(((s, k), v) for s, k, v in _settings(files["manager.conf"]))
    assert manager[("general", "enabled")] == "yes"
    assert manager[("general", "bindaddr")] == "127.0.0.1"
    assert manager[("general", "port")] == "5038"
    assert manager[("labkit", "secret")] == "ami-secret-000"
    assert manager[("labkit", "permit")] == "127.0.0.1/255.255.255.255"
    assert manager[("labkit", "deny")] == "0.0.0.0/0.0.0.0"
    asterisk = dict(((s, k), v) for s, k, v in _settings(files["asterisk.conf"]))
    assert asterisk[("options", "entityid")] == entity_id("first-call")
    assert asterisk[("options", "systemname")] == "pbx"
    assert asterisk[("directories", "astrundir")] == "/srv/lab/run"
    expected_modules = {"modern": "/usr/lib/x86_64-linux-gnu/asterisk/modules",
                        "legacy": "/usr/lib/asterisk/modules"}[track]
    assert asterisk[("directories", "astmoddir")] == expected_modules
    # verbose up to level 4: Strict RTP's learning/locking lines and the native RTP bridge's
    # "Locally/Remotely bridged" are ast_verb(4) (res_rtp_asterisk.c, bridge_native_rtp.c); notebook 01
    # reads them from the lab's own log.
    assert ("logfiles", "messages", "notice,warning,error,verbose(4)") in _settings(
        files["logger.conf"])


def test_module_dir_can_be_overridden(first_call, tmp_path):
    written = render_pbx(first_call, "modern", CREDENTIALS, tmp_path, module_dir="/opt/mods")
    assert "astmoddir => /opt/mods\n" in written["asterisk.conf"].read_text()


@pytest.mark.parametrize("track, driver, other", [
    ("modern", "chan_pjsip", "chan_sip"), ("legacy", "chan_sip", "chan_pjsip")])
def test_modules_conf_loads_exactly_the_track_driver(first_call, track, driver, other, tmp_path):
    settings = _settings(_render(first_call, track, tmp_path)["modules.conf"])
    assert ("modules", "autoload", "no") in settings
    loaded = [v for s, k, v in settings if k == "load"]
    assert loaded == [f"{m}.so" for m in tracks.get(track).modules]
    assert len(loaded) == len(set(loaded)), "a module listed twice"
    assert f"{driver}.so" in loaded and f"{other}.so" not in loaded
    for common in ("res_rtp_asterisk.so", "pbx_config.so", "app_dial.so", "codec_ulaw.so"):
        assert common in loaded
    if track == "legacy":
        # No PJSIP stack on the legacy track: chan_sip alone answers SIP there.
        assert not any(m.startswith("res_pjsip") for m in loaded)
    else:
        assert {"res_pjsip.so", "res_pjsip_session.so", "res_pjsip_registrar.so",
                "res_pjsip_authenticator_digest.so"} <= set(loaded)
        assert loaded.index("res_pjsip.so") < loaded.index("chan_pjsip.so")


def _with_pbx(spec: LabSpec, **changes) -> LabSpec:
    return spec.model_copy(update={"pbx": spec.pbx.model_copy(update=changes)})


def test_direct_media_flips_both_tracks(first_call, tmp_path):
    on = _with_pbx(first_call, direct_media=True)
    legacy = _sections(_render(on, "legacy", tmp_path / "legacy")["sip.conf"])
    modern = _sections(_render(on, "modern", tmp_path / "modern")["pjsip.conf"])
    assert _one(legacy, "general")["directmedia"] == ["yes"]
    for extension in SECRETS:
        assert _one(legacy, extension)["directmedia"] == ["yes"]
        assert _one(modern, extension, "endpoint")["direct_media"] == ["yes"]
    # And off by default (first-call keeps media on Asterisk, as the walkthrough did).
    off_legacy = _render(first_call, "legacy", tmp_path / "off-legacy")["sip.conf"]
    off_modern = _render(first_call, "modern", tmp_path / "off-modern")["pjsip.conf"]
    assert "directmedia = yes" not in off_legacy and "direct_media = yes" not in off_modern


def test_strict_rtp_and_rtp_range_follow_the_spec(first_call, tmp_path):
    spec = _with_pbx(first_call, strict_rtp=False, rtp_ports=(30000, 30100))
    rtp = _settings(_render(spec, "modern", tmp_path)["rtp.conf"])
    assert rtp == [("general", "rtpstart", "30000"), ("general", "rtpend", "30100"),
                   ("general", "strictrtp", "no")]


def test_tcp_transport_renders_on_both_tracks(first_call, tmp_path):
    spec = _with_pbx(first_call, transports=["udp", "tcp"])
    modern = _sections(_render(spec, "modern", tmp_path / "modern")["pjsip.conf"])
    assert _one(modern, "transport-tcp", "transport") == {
        "type": ["transport"], "protocol": ["tcp"], "bind": ["0.0.0.0:5060"]}
    assert _one(modern, "transport-udp", "transport")["protocol"] == ["udp"]
    legacy = _one(_sections(_render(spec, "legacy", tmp_path / "legacy")["sip.conf"]), "general")
    assert legacy["tcpenable"] == ["yes"] and legacy["tcpbindaddr"] == ["0.0.0.0:5060"]
    assert legacy["transport"] == ["udp,tcp"]


def test_a_lab_with_other_settings_renders_them(tmp_path):
    """good-routed: tcp, port 5070, g722 first, direct media, an explicit secret, two
    contexts."""
    spec = load_spec(DATA / "good-routed.yaml")
    creds = PbxCredentials({"100": "correct-horse-battery", "101": "operator-secret"},
                           "admin", "ami-secret-111")
    modern = _render(spec, "modern", tmp_path / "modern", creds)
    legacy = _render(spec, "legacy", tmp_path / "legacy", creds)
    pjsip = _sections(modern["pjsip.conf"])
    assert _one(pjsip, "transport-tcp", "transport")["bind"] == ["0.0.0.0:5070"]
    assert _one(pjsip, "transport-udp", "transport")["bind"] == ["0.0.0.0:5070"]
    assert _one(pjsip, "100", "endpoint")["allow"] == ["g722,ulaw"]
    assert _one(pjsip, "101", "endpoint")["context"] == ["office"]
    assert _one(pjsip, "100", "endpoint")["direct_media"] == ["yes"]
    sip = _sections(legacy["sip.conf"])
    general = _one(sip, "general")
    assert general["udpbindaddr"] == ["0.0.0.0:5070"] and general["tcpenable"] == ["yes"]
    assert general["allow"] == ["g722", "ulaw"]
    assert _one(sip, "100")["secret"] == ["correct-horse-battery"]
    for files, tech in ((modern, "PJSIP"), (legacy, "SIP")):
        dialplan = _settings(files["extensions.conf"])
        assert ("work", "exten", f"101,1,Dial({tech}/101,20)") in dialplan
        assert ("office", "exten", f"100,1,Dial({tech}/100,20)") in dialplan
        assert ("office", "exten", "600,1,Echo()") in dialplan
        assert ("general", "strictrtp", "no") in _settings(files["rtp.conf"])
        manager = _settings(files["manager.conf"])
        assert ("admin", "secret", "ami-secret-111") in manager


def test_entity_id_is_stable_and_locally_administered():
    first = entity_id("first-call")
    assert first == entity_id("first-call")
    assert re.fullmatch(r"[0-9a-f]{2}(:[0-9a-f]{2}){5}", first), first
    octet = int(first.split(":")[0], 16)
    assert octet & 0x02, "locally administered bit set"
    assert not octet & 0x01, "unicast, not a multicast address"
    others = {entity_id(name) for name in ("first-call", "second-call", "nat", "a", "b")}
    assert len(others) == 5, "different labs get different ids"


def test_entity_id_does_not_depend_on_track_or_credentials(first_call, tmp_path):
    other = PbxCredentials({"6000": "x" * 16, "6001": "y" * 16}, "u", "v" * 12)
    ids = set()
    for track in TRACKS:
        for i, creds in enumerate((CREDENTIALS, other)):
            text = _render(first_call, track, tmp_path / f"{track}{i}", creds)["asterisk.conf"]
            ids.add(dict(((s, k), v) for s, k, v in _settings(text))[("options", "entityid")])
    assert ids == {entity_id("first-call")}


# ---------------------------------------------------------------------------------------
# SIP over TLS
# ---------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tls_office() -> LabSpec:
    return load_spec("tls-office")


@pytest.mark.parametrize("track", TRACKS)
def test_tls_configuration_matches_goldens(tls_office, track, tmp_path):
    name = tracks.get(track).sip_config
    text = _render(tls_office, track, tmp_path / track)[name]
    assert_golden(text, GOLDEN / f"{track}-tls" / name)


def test_chan_sip_tls_settings(tls_office, tmp_path):
    general = dict((k, v) for s, k, v in _settings(_render(tls_office, "legacy", tmp_path)["sip.conf"])
                   if s == "general")
    assert general["tlsenable"] == "yes" and general["tlsbindaddr"] == "0.0.0.0:5061"
    assert general["tlscertfile"] == "/etc/asterisk/tls/pbx.crt"
    assert general["tlsprivatekey"] == "/etc/asterisk/tls/pbx.key"
    assert general["tlscafile"] == "/etc/asterisk/tls/ca.crt"
    assert general["tlscipher"] == "ECDHE+AESGCM:ECDHE+CHACHA20"
    assert (general["tlsdisablev1"], general["tlsdisablev11"], general["tlsdisablev12"]) == ("yes", "yes", "no")
    assert general["transport"] == "udp,tls" and "tlsclientmethod" not in general
    # Each phone's peer lists TLS first: sip show peer says Prim.Transp. : TLS.
    peer = _one(_sections(_render(tls_office, "legacy", tmp_path / "2")["sip.conf"]), "6000", None)
    assert peer["transport"] == ["tls,udp"]


def test_the_reports_tls_choices_render_as_written(tmp_path):
    """tlsclientmethod=tlsv1, tlscipher=ALL, TLS 1.0 allowed, cert and key in one file."""
    spec = load_spec("tls-office", overrides={"pbx": {"tls": {
        "client_method": "tlsv1", "ciphers": "ALL", "versions": ["1.0", "1.1", "1.2"],
        "certificate": {"combined": True}}}})
    general = dict((k, v) for s, k, v in _settings(_render(spec, "legacy", tmp_path / "l")["sip.conf"])
                   if s == "general")
    assert general["tlsclientmethod"] == "tlsv1" and general["tlscipher"] == "ALL"
    assert (general["tlsdisablev1"], general["tlsdisablev11"]) == ("no", "no")
    assert general["tlscertfile"] == "/etc/asterisk/tls/pbx.pem" and "tlsprivatekey" not in general
    pjsip = _one(_sections(_render(spec, "modern", tmp_path / "m")["pjsip.conf"]), "transport-tls")
    assert pjsip["method"] == ["sslv23"] and "cipher" not in pjsip
    assert pjsip["cert_file"] == pjsip["priv_key_file"] == ["/etc/asterisk/tls/pbx.pem"]


@pytest.mark.parametrize("versions, method", [(["1.2"], "tlsv1_2"), (["1.3"], "tlsv1_3"),
                                              (["1.2", "1.3"], "sslv23")])
def test_pjsip_method_is_one_version_or_all(versions, method, tmp_path):
    spec = load_spec("tls-office", overrides={"pbx": {"tls": {"versions": versions}}})
    transport = _one(_sections(_render(spec, "modern", tmp_path)["pjsip.conf"]), "transport-tls")
    assert transport["method"] == [method] and transport["bind"] == ["0.0.0.0:5061"]
    assert transport["protocol"] == ["tls"] and transport["verify_client"] == ["no"]
    names = transport["cipher"][0].split(",")
    assert names and all(n.startswith("ECDHE-") and ("GCM" in n or "CHACHA20" in n) for n in names)


# ---------------------------------------------------------------------------------------
# The SIP trunk to the carrier (issue 12)
# ---------------------------------------------------------------------------------------

TRUNK_SECRETS = {**SECRETS, "carrier/0033199001234": "line-password-0", "pstn/0639980001": "carol-pw-00"}
TRUNK_CREDENTIALS = PbxCredentials(secrets=TRUNK_SECRETS, ami_user="labkit", ami_secret="ami-secret-000")
LINE = "0033199001234"


def _trunk(track: str, tmp_path: Path, variant: str | None = None, **overrides) -> str:
    spec = load_spec("trunk-office", overrides={**(load_spec("trunk-office").variant(variant)
                                                   if variant else {}), **overrides})
    return _render(spec, track, tmp_path / track, TRUNK_CREDENTIALS)[tracks.get(track).sip_config]


@pytest.mark.parametrize("track", TRACKS)
def test_trunk_configuration_matches_goldens(track, tmp_path):
    spec = load_spec("trunk-office")
    files = _render(spec, track, tmp_path / track, TRUNK_CREDENTIALS)
    for name in (tracks.get(track).sip_config, "extensions.conf"):
        assert_golden(files[name], GOLDEN / f"{track}-trunk" / name)


def test_chan_sip_trunk_is_a_register_line_and_a_peer(tmp_path):
    text = _trunk("legacy", tmp_path)
    general = _one(_sections(text), "general")
    # register => user@domain:secret:authuser@host/contact~expiry — the full syntax.
    assert general["register"] == [f"{LINE}@sip.carrier.example:line-password-0:{LINE}"
                                   f"@proxy.carrier.example/{LINE}~600"]
    assert general["registertimeout"] == ["20"] and general["registerattempts"] == ["0"]
    assert "register_retry_403" not in general
    peer = _one(_sections(text), "carrier")
    assert peer == {
        "type": ["peer"], "host": ["sip.carrier.example"], "outboundproxy": ["proxy.carrier.example"],
        "fromdomain": ["sip.carrier.example"], "fromuser": [LINE], "defaultuser": [LINE],
        "secret": ["line-password-0"], "insecure": ["invite,port"], "sendrpid": ["pai"],
        "context": ["from-carrier"], "qualify": ["yes"], "qualifyfreq": ["60"], "nat": ["no"],
        "disallow": ["all"], "allow": ["alaw", "ulaw"], "directmedia": ["no"]}


def test_pjsip_trunk_is_registration_auth_aor_endpoint_identify(tmp_path):
    sections = _sections(_trunk("modern", tmp_path))
    assert _one(sections, "carrier-auth", "auth") == {
        "type": ["auth"], "auth_type": ["userpass"], "username": [LINE], "password": ["line-password-0"]}
    registration = _one(sections, "carrier-reg", "registration")
    assert registration["server_uri"] == ["sip:sip.carrier.example"]
    assert registration["client_uri"] == [f"sip:{LINE}@sip.carrier.example"]
    assert registration["contact_user"] == [LINE]
    # ';' starts a comment in Asterisk's files: the loose-routing parameter is escaped.
    assert registration["outbound_proxy"] == ["sip:proxy.carrier.example\\"]
    assert "outbound_proxy = sip:proxy.carrier.example\\;lr" in _trunk("modern", tmp_path / "x")
    assert registration["max_random_initial_delay"] == ["0"]
    assert "forbidden_retry_interval" not in registration  # Asterisk's default: never after a 403
    aor = _one(sections, "carrier", "aor")
    assert aor["contact"] == ["sip:sip.carrier.example"] and aor["qualify_frequency"] == ["60"]
    endpoint = _one(sections, "carrier", "endpoint")
    assert endpoint["from_domain"] == ["sip.carrier.example"] and endpoint["from_user"] == [LINE]
    assert endpoint["outbound_auth"] == ["carrier-auth"] and endpoint["aors"] == ["carrier"]
    assert endpoint["send_pai"] == ["yes"] and endpoint["context"] == ["from-carrier"]
    assert endpoint["allow"] == ["alaw,ulaw"] and "rtp_symmetric" not in endpoint
    identify = _one(sections, "carrier-identify", "identify")
    assert identify["match"] == ["203.0.113.10"] and identify["endpoint"] == ["carrier"]


@pytest.mark.parametrize("track", TRACKS)
def test_trunk_variants_change_what_the_report_changed(track, tmp_path):
    """Each variant of trunk-office changes one line of the trunk, on both generations."""
    sip = track == "legacy"
    no_proxy = _trunk(track, tmp_path / "a", "unresolvable-domain")
    assert "proxy.carrier.example" not in no_proxy.split("trunk's registration")[-1]
    assert (f"@sip.carrier.example/{LINE}~600" in no_proxy) if sip else \
        ("outbound_proxy" not in no_proxy)
    to_proxy = _trunk(track, tmp_path / "b", "register-to-proxy")
    assert (f"register => {LINE}@proxy.carrier.example:" in to_proxy) if sip else \
        ("server_uri = sip:proxy.carrier.example" in to_proxy)
    wrong = _trunk(track, tmp_path / "c", "wrong-password")
    assert "not-the-password" in wrong and "line-password-0" not in wrong
    calls = _trunk(track, tmp_path / "d", "wrong-domain-calls")
    assert ("host = proxy.carrier.example" in calls) if sip else ("contact = sip:proxy.carrier.example" in calls)
    retry = _trunk(track, tmp_path / "e", pbx={"trunk": {"forbidden_retry_interval": 5}})
    assert ("register_retry_403 = yes" in retry) if sip else ("forbidden_retry_interval = 5" in retry)
    behind_nat = _trunk(track, tmp_path / "f", pbx={"trunk": {"nat": True, "register": False}})
    assert ("nat = force_rport,comedia" in behind_nat) if sip else ("rtp_symmetric = yes" in behind_nat)
    settings = _settings(behind_nat)
    assert not [k for _, k, _ in settings if k == "register"]  # no register => line
    assert ("", "type", "registration") not in settings and not any(
        v == "registration" for _, k, v in settings if k == "type")


@pytest.mark.parametrize("track", TRACKS)
def test_the_trunk_password_is_the_carrier_accounts_of_the_run(track, tmp_path):
    text = _trunk(track, tmp_path)
    # chan_sip: in register => and the peer's secret; PJSIP: in the auth object only.
    assert text.count("line-password-0") == (2 if track == "legacy" else 1)
    assert "carol-pw-00" not in text


def test_a_lab_without_trunk_renders_none(first_call, tmp_path):
    for track in TRACKS:
        text = _render(first_call, track, tmp_path / track)[tracks.get(track).sip_config]
        assert "register" not in text.replace("registrar", "") and "carrier" not in text
