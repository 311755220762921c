"""Carol's account as a student writes it (notebook 00, labkit.teaching.orientation): a sip.conf
peer or a pjsip.conf endpoint + auth + aor, read as data into the lab model; what Asterisk would
refuse is refused with the reason (no lab, no root)."""
from __future__ import annotations

import pytest

from labkit.spec import load_spec
from labkit.teaching.orientation import AccountTextError, account_overrides, account_settings

PEER = '[6002]\ntype = friend\nhost = dynamic\nsecret = Carol-lab-2026.pw\ncontext = work\ncallerid = "Carol" <6002>\n'
ENDPOINT = ("[6002]\ntype = endpoint\ncontext = work\nauth = 6002-auth\naors = 6002\nallow = ulaw\n\n"
            "[6002-auth]\ntype = auth\nauth_type = userpass\nusername = 6002\npassword = Carol-lab-2026.pw\n\n"
            "[6002]\ntype = aor\nmax_contacts = 1\n")
RIGHT = {"extension": "6002", "secret": "Carol-lab-2026.pw", "context": "work"}


@pytest.mark.parametrize("text, config", [(PEER, "sip.conf"), (ENDPOINT, "pjsip.conf")])
def test_the_account_is_read_into_the_lab_model(text, config):
    assert account_settings(text, config).items() >= RIGHT.items()
    spec = load_spec("first-call", account_overrides(text, config))
    assert spec.endpoint("6002").secret == "Carol-lab-2026.pw" and spec.endpoint("6002").name == "Carol"
    assert spec.phone("carol").extension == "6002" and str(spec.address_of("carol")) == "192.168.0.13"
    assert spec.phone("bob") == load_spec("first-call").phone("bob")


def test_the_aor_may_come_first_and_the_endpoint_directly_after_it():
    text = ("[6002]\ntype = aor\nmax_contacts = 1\n[6002]\ntype = endpoint\ncontext = work\nauth = a6002\n"
            "aors = 6002\n[a6002]\ntype = auth\nusername = 6002\npassword = Carol-lab-2026.pw\n")
    assert account_settings(text, "pjsip.conf").items() >= RIGHT.items()


@pytest.mark.parametrize("text, config, reason", [
    ("", "sip.conf", "should be text"),
    (PEER + "nat = yes\n", "sip.conf", "'nat' is not one of the options"),
    (PEER + "#exec /bin/sh\n", "sip.conf", "directives"),
    (PEER.replace("host = dynamic\n", ""), "sip.conf", "host = dynamic"),
    (PEER.replace("friend", "user"), "sip.conf", "a user cannot register"),
    (PEER.replace("[6002]", "[carol]"), "sip.conf", "2 to 8 digits"),
    (PEER.replace("[6002]", "[6001]"), "sip.conf", "Bob's extension already"),
    (PEER.replace("Carol-lab-2026.pw", "test"), "sip.conf", "at least 8 characters"),
    (PEER.replace("context = work", "context = home"), "sip.conf", "home"),
    (PEER + "[6003]\ntype = friend\n", "sip.conf", "one peer section"),
    (PEER.replace('"Carol" <6002>', "Carol"), "sip.conf", "callerid"),
    (ENDPOINT.replace("max_contacts = 1\n", ""), "pjsip.conf", "max_contacts"),
    (ENDPOINT.replace("username = 6002", "username = carol"), "pjsip.conf", "logs in with its"),
    (ENDPOINT.replace("auth = 6002-auth", "auth = carol-auth"), "pjsip.conf", "names the auth"),
    (ENDPOINT.replace("type = aor", "type = aors"), "pjsip.conf", "type = aors"),
    (ENDPOINT.replace("allow = ulaw", "allow = opus"), "pjsip.conf", "opus"),
    (ENDPOINT.replace("[6002]\ntype = aor", "[carol]\ntype = aor").replace("aors = 6002", "aors = carol"),
     "pjsip.conf", "name the aor like the endpoint"),
    (PEER, "extensions.conf", "sip.conf or pjsip.conf"),
])
def test_wrong_accounts_are_refused_with_the_reason(text, config, reason):
    with pytest.raises(AccountTextError, match=reason):
        account_overrides(text, config)


def test_before_her_account_carols_phone_has_a_password_of_nobody():
    from labkit.teaching.orientation import UNSET_PASSWORD, office_overrides
    spec = load_spec("first-call", office_overrides())
    assert spec.phone("carol").password == UNSET_PASSWORD and spec.endpoint("6002").secret is None


@pytest.mark.parametrize("track, lines", [("legacy", "qualify = yes\nqualifyfreq = 2\n"),
                                          ("modern", "qualify_frequency = 2\n")])
def test_an_endpoints_qualify_is_rendered_for_it_alone(track, lines, tmp_path):
    from labkit.services.asterisk.config import render_pbx
    from labkit.services.base import Credentials
    endpoints = [e.model_dump(mode="json", exclude_defaults=True) for e in load_spec("first-call").pbx.endpoints]
    endpoints[0]["qualify"] = 2
    spec = load_spec("first-call", {"pbx": {"endpoints": endpoints}})
    files = render_pbx(spec, track, Credentials(secrets={"6000": "a" * 12, "6001": "b" * 12}, ami_user="u",
                                                ami_secret="s" * 12), tmp_path)
    text = files["sip.conf" if track == "legacy" else "pjsip.conf"].read_text()
    assert text.count(lines) == 1
    alice, bob = text.index("[6000]"), text.index("[6001]")
    assert alice < text.index(lines) < bob or track == "modern"
