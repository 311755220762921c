"""Unit tests of labkit.model: loading, validation messages, secrets, the JSON schema.

Fast, no root, no network.  Every invalid lab file in tests/data/labs/bad-*.yaml shows
one class of mistake; its full message (what, where, what to do) is compared with
tests/golden/errors/<name>.txt.  Regenerate goldens with LABKIT_UPDATE_GOLDEN=1 and read
the diff before committing.
"""
from __future__ import annotations

import ipaddress
import json
from pathlib import Path

import pytest
import yaml
from golden import assert_golden
from pydantic import ValidationError

from labkit import spec as model
from labkit.errors import LabFileError, LabkitError
from labkit.spec import (
    LABS_DIR,
    LabSpec,
    draw_secrets,
    find_lab_file,
    json_schema,
    load_spec,
    parse_spec,
)

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "labs"
GOLDEN = ROOT / "tests" / "golden"
SCHEMA_FILE = ROOT / "configs" / "lab.schema.json"
SHIPPED_LABS = sorted(LABS_DIR.glob("*.yaml"))


def _explain(exc: LabFileError, path: Path) -> str:
    """The message a person reads, with the machine-specific path cut to its basename."""
    return exc.explain().replace(str(path), path.name) + "\n"


# ---------------------------------------------------------------------------------------
# Valid lab files
# ---------------------------------------------------------------------------------------

def test_first_call_loads_by_name():
    spec = load_spec("first-call")
    assert isinstance(spec, LabSpec)
    assert spec.name == "first-call"
    assert [n.name for n in spec.networks] == ["lan"]
    assert spec.network("lan").subnet == ipaddress.ip_network("192.168.0.0/24")
    assert [h.name for h in spec.hosts] == ["pbx", "alice", "bob"]
    assert {h.name: str(spec.address_of(h.name)) for h in spec.hosts} == {
        "pbx": "192.168.0.10", "alice": "192.168.0.11", "bob": "192.168.0.12"}
    assert all(h.gateway is None and not h.forwarding for h in spec.hosts)

    pbx = spec.pbx
    assert pbx.host == "pbx"
    assert pbx.transports == ["udp"]
    assert pbx.sip_port == 5060 and pbx.ami_port == 5038
    assert pbx.rtp_ports == (10000, 20000)
    assert pbx.codecs == ["ulaw", "alaw"]
    assert pbx.direct_media is False and pbx.strict_rtp is True
    assert [(e.extension, e.name, e.context) for e in pbx.endpoints] == [
        ("6000", "Alice", "work"), ("6001", "Bob", "work")]
    assert all(e.secret is None for e in pbx.endpoints)  # drawn per run, never in the file
    assert spec.endpoint("6001").auth_user == "6001"
    assert list(pbx.dialplan) == ["work"]
    assert pbx.dialplan["work"][0] == "exten => _6XXX,1,Dial({{ tech }}/${EXTEN},20)"

    assert [(p.name, p.host, p.extension, p.sip_port) for p in spec.phones] == [
        ("alice", "alice", "6000", 5060), ("bob", "bob", "6001", 5060)]


def test_first_call_loads_by_path_and_by_text_alike():
    path = LABS_DIR / "first-call.yaml"
    by_name = load_spec("first-call")
    assert load_spec(path) == by_name
    assert load_spec(str(path)) == by_name
    assert parse_spec(path.read_text(encoding="utf-8")) == by_name


def test_the_labs_directory_is_not_empty():
    assert SHIPPED_LABS, f"no lab files in {LABS_DIR}"


@pytest.mark.parametrize("path", SHIPPED_LABS, ids=lambda p: p.stem)
def test_every_shipped_lab_loads(path):
    spec = load_spec(path)
    assert spec.name == path.stem, "a lab's name: is the file name it is loaded by"
    assert model.check_references(spec) == []
    assert spec.phones, "a lab without phones teaches little"


def test_a_lab_using_every_feature_loads():
    spec = load_spec(DATA / "good-routed.yaml")
    assert [n.name for n in spec.networks] == ["lan", "wan"]
    router = spec.host("router")
    assert router.forwarding is True and len(router.interfaces) == 2
    assert str(spec.host("alice").gateway) == "10.0.1.1"
    assert spec.pbx.transports == ["udp", "tcp"] and spec.pbx.sip_port == 5070
    assert spec.pbx.direct_media is True and spec.pbx.strict_rtp is False
    assert spec.endpoint("100").secret == "correct-horse-battery"
    assert spec.endpoint("101").context == "office"
    # A phone may share the PBX's host when its port is free there.
    assert [(p.host, p.sip_port) for p in spec.phones] == [("alice", 5060), ("pbx", 5062)]


def test_spec_is_frozen():
    spec = load_spec("first-call")
    with pytest.raises(ValidationError):
        spec.name = "other"  # type: ignore[misc]


# ---------------------------------------------------------------------------------------
# Invalid lab files: one per class of mistake, each message checked against a golden
# ---------------------------------------------------------------------------------------

# name -> the (place, line) pairs the message must list, in order; () for whole-file errors
BAD = {
    "yaml-indent": [("not valid YAML", 30)],
    "yaml-bracket": [("not valid YAML", 19)],
    "not-mapping": [],
    "unknown-key": [("phones[1].host", 29), ("phones[1].hots", 30)],
    "missing-key": [("networks[0].subnet", 4)],
    "wrong-type": [("pbx.rtp_ports", 18)],
    "rtp-range": [("pbx.rtp_ports", 18)],
    "duplicate-extension": [("pbx.endpoints[1].extension", 21)],
    "duplicate-host": [("hosts[2].name", 13)],
    "address-outside": [("hosts[2].interfaces[0].address", 15)],
    "network-broadcast": [("hosts[1].interfaces[0].address", 13),
                          ("hosts[2].interfaces[0].address", 16)],
    "duplicate-address": [("hosts[2].interfaces[0].address", 15)],
    "unknown-network": [("hosts[2].interfaces[0].network", 15)],
    "gateway": [("hosts[1].gateway", 13)],
    "phone-host": [("phones[1].host", 30)],
    "phone-extension": [("phones[1].extension", 31)],
    "endpoint-context": [("pbx.endpoints[1].context", 21)],
    "port-collision": [("phones[1].sip_port", 32)],
    "port-in-rtp-range": [("phones[1].sip_port", 32)],
    "name-uppercase": [("hosts[1].name", 10)],
    "name-too-long": [("hosts[1].name", 10)],
    "several": [("hosts[2].interfaces[0].address", 15), ("pbx.endpoints[1].context", 21),
                ("phones[1].host", 30), ("phones[1].extension", 31)],
    # The carrier and its trunk (issue 12).
    "trunk-account": [("pbx.trunk.account", 15)],
    "trunk-no-carrier": [("pbx.trunk.account", 15)],
    "proxy-outside": [("carrier.proxy.address", 28), ("pbx.trunk.proxy", 17)],
    "domain-host": [("carrier.domain", 27)],
    "domain-proxy": [("carrier.domain", 27)],
    # The dialplan (issue 13).
    "dialplan-pattern": [("pbx.dialplan.outgoing[1]", 16)],
    "dialplan-context": [("pbx.dialplan.outgoing[0]", 15)],
    "trunk-did": [("pbx.dialplan.from-carrier[1]", 23)],
}

# Words each message must contain besides the place: what would be valid, or what clashed.
MUST_SAY = {
    "yaml-indent": ["line 30", "indentation"],
    "yaml-bracket": ["line 19", "bracket"],
    "not-mapping": ["must be a mapping", "first-call.yaml"],
    "unknown-key": ["unknown key", "lab.schema.json", "required key is missing"],
    "missing-key": ["required key is missing"],
    "wrong-type": ["'ten'"],
    "rtp-range": ["1024 <= low < high <= 65535", "[20000, 10000]"],
    "duplicate-extension": ["duplicate extension '6000'", "pbx.endpoints[0]"],
    "duplicate-host": ["duplicate name 'alice'", "hosts[1]"],
    "address-outside": ["192.168.1.12", "192.168.0.0/24", "192.168.0.1 … 192.168.0.254"],
    "network-broadcast": ["192.168.0.0 is not a host address", "192.168.0.255 is not a host",
                          "192.168.0.1 … 192.168.0.254"],
    "duplicate-address": ["192.168.0.11 is already used by hosts[1].interfaces[0]"],
    "unknown-network": ["unknown network 'wan'", "declared networks: lan"],
    "gateway": ["10.0.0.1", "192.168.0.0/24"],
    "phone-host": ["unknown host 'carol'", "pbx, alice, bob"],
    "phone-extension": ["'6002'", "declared: 6000, 6001"],
    "endpoint-context": ["no dialplan context 'home'", "contexts: work"],
    "port-collision": ["udp port 5060 on host 'pbx'", "already taken by pbx.sip_port"],
    "port-in-rtp-range": ["15060", "RTP range 10000-20000"],
    "name-uppercase": ["'Alice'", "^[a-z][a-z0-9-]{0,11}$"],
    "name-too-long": ["'alice-laptop1'", "^[a-z][a-z0-9-]{0,11}$"],
    "several": ["4 problems"],
    "trunk-account": ["no account '0033199001299'", "(0033199001234)"],
    "trunk-no-carrier": ["the lab has no carrier", "declare a carrier: section"],
    "proxy-outside": ["198.51.100.10 is outside every network", "203.0.113.0/24", "2 problems"],
    "domain-host": ["'telco.bad-domain-host.test'", "lab host 'telco'"],
    "domain-proxy": ["also the proxy's name", "404 Domain not bound", "sip.carrier.example"],
    "dialplan-pattern": ["'Y' is no pattern character", "X (any digit)"],
    "dialplan-context": ["context 'trunk_out'", "contexts: outgoing, trunk-out"],
    "trunk-did": ["0199009999 is not a number of the trunk's account", "0033199001235"],
}


def test_every_bad_file_is_tested():
    on_disk = {p.stem.removeprefix("bad-") for p in DATA.glob("bad-*.yaml")}
    assert on_disk == set(BAD) == set(MUST_SAY)


def _load_bad(name: str) -> tuple[LabFileError, Path]:
    path = DATA / f"bad-{name}.yaml"
    with pytest.raises(LabFileError) as info:
        load_spec(path)
    return info.value, path


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_file_message_matches_golden(name):
    exc, path = _load_bad(name)
    assert_golden(_explain(exc, path), GOLDEN / "errors" / f"{name}.txt")


@pytest.mark.parametrize("name", sorted(BAD))
def test_bad_file_is_a_lab_file_error_with_places_and_lines(name):
    exc, path = _load_bad(name)
    # The precise class, and no pydantic/YAML exception chained to it: the CLI prints
    # the message alone, and a notebook traceback must not bury it.
    assert type(exc) is LabFileError and isinstance(exc, LabkitError)
    assert not isinstance(exc, (ValidationError, yaml.YAMLError))
    assert exc.__cause__ is None
    assert exc.__suppress_context__ or exc.__context__ is None
    text = str(exc)
    assert text == exc.explain()
    assert "Traceback" not in text and "pydantic" not in text.lower()
    assert "For further information visit" not in text  # pydantic's URL footer
    assert exc.hint, "every lab-file error says what to do"
    assert f"What to do: {exc.hint}" in text
    # The file is named, as given, at the start.
    assert text.startswith(f"{path}: ")

    expected = BAD[name]
    if expected and expected[0][0] != "not valid YAML":
        count = len(expected)
        first = text.splitlines()[0]
        assert first.endswith(f"{count} problem{'s' if count > 1 else ''} in the lab file:")
        listed = [line for line in text.splitlines() if line.startswith("  - ")]
        assert len(listed) == count, listed
        source = path.read_text(encoding="utf-8").splitlines()
        for line, (place, lineno) in zip(listed, expected):
            assert line.startswith(f"  - {place} (line {lineno}): "), line
            # The line named is where that key is written (for a missing key: where the
            # mapping that lacks it starts).
            if place.endswith("]") and "." in place.rsplit("[", 1)[0]:
                # An item of a list (a dialplan line): the line is that item's.
                assert source[lineno - 1].lstrip().startswith("- "), (place, source[lineno - 1])
            elif "required key is missing" not in line:
                key = place.rsplit(".", 1)[-1]
                assert f"{key}:" in source[lineno - 1], (place, source[lineno - 1])
    for place, lineno in expected:
        assert place in text
        assert f"line {lineno}" in text
    for words in MUST_SAY[name]:
        assert words in text, f"{words!r} missing from:\n{text}"


def test_several_problems_are_all_listed_in_file_order():
    exc, _ = _load_bad("several")
    lines = str(exc).splitlines()
    assert lines[0].endswith("4 problems in the lab file:")
    numbers = [int(line.split("(line ")[1].split(")")[0]) for line in lines if line.startswith("  - ")]
    assert numbers == sorted(numbers)


def test_parse_spec_names_its_source():
    with pytest.raises(LabFileError) as info:
        parse_spec("- a list\n", source="my-lab.yaml")
    assert str(info.value).startswith("my-lab.yaml: ")
    with pytest.raises(LabFileError) as info:
        parse_spec("[unclosed\n")
    assert str(info.value).startswith("<lab>: not valid YAML")


@pytest.mark.parametrize("text", ["", "# only a comment\n", "just a string\n", "42\n"])
def test_empty_or_scalar_file_is_not_a_mapping(text):
    with pytest.raises(LabFileError, match="must be a mapping") as info:
        parse_spec(text, source="x.yaml")
    assert info.value.hint


def _first_call_error(old: str, new: str) -> str:
    """The error that first-call.yaml gives with ``old`` replaced by ``new``."""
    text = (LABS_DIR / "first-call.yaml").read_text()
    assert old in text, f"the edit does not apply to first-call.yaml: {old!r}"
    with pytest.raises(LabFileError) as info:
        parse_spec(text.replace(old, new), source="x.yaml")
    return str(info.value)


def test_unquoted_extension_is_reported_not_coerced():
    """`extension: 6000` is an int in YAML; it must be an error, not a silent '6000'."""
    error = _first_call_error('{extension: "6000", name: Alice', "{extension: 6000, name: Alice")
    assert "pbx.endpoints[0].extension (line " in error


def test_short_explicit_secret_is_rejected():
    error = _first_call_error("name: Bob, context: work", "name: Bob, context: work, secret: test")
    assert "pbx.endpoints[1].secret (line " in error
    assert "at least 8 characters" in error


@pytest.mark.parametrize("subnet", ["192.168.0.10/32", "192.168.0.10/31"])
def test_tiny_network_is_a_lab_file_error(subnet):
    assert "prefix of /30 or shorter" in _first_call_error("192.168.0.0/24", subnet)


def test_repeated_key_is_an_error():
    error = _first_call_error("  transports: [udp]\n", "  transports: [udp]\n  transports: [tcp]\n")
    assert "appears twice" in error


@pytest.mark.parametrize("line, message", [
    ("exten => _6XXX,1,Dial({{ exten }}/${EXTEN})", "unknown placeholder exten"),
    ("exten => _6XXX,1,Dial({{ tech )", "template error"),
])
def test_bad_dialplan_line_is_reported_at_load(line, message):
    error = _first_call_error("      - same => n,Hangup()", f"      - \"{line}\"")
    assert message in error and "pbx.dialplan.work[1]" in error


@pytest.mark.parametrize("field, edit", [
    ("secret", "name: Bob, context: work, secret: \"abc;def\\nx\""),
    ("name", "name: \"Bob]\\n[evil\", context: work"),
])
def test_config_injection_is_refused(field, edit):
    assert f"pbx.endpoints[1].{field}" in _first_call_error("name: Bob, context: work", edit)


def test_two_phones_on_one_extension_is_an_error():
    error = _first_call_error('{name: bob, host: bob, extension: "6001"}',
                              '{name: bob, host: bob, extension: "6000"}')
    assert "phones[1].extension" in error


# ---------------------------------------------------------------------------------------
# find_lab_file
# ---------------------------------------------------------------------------------------

def test_find_lab_file_by_name_and_path():
    assert find_lab_file("first-call") == LABS_DIR / "first-call.yaml"
    good = DATA / "good-routed.yaml"
    assert find_lab_file(good) == good
    assert find_lab_file(str(good)) == good


def test_unknown_lab_name_lists_shipped_labs():
    with pytest.raises(LabFileError) as info:
        load_spec("frist-call")
    exc = info.value
    assert type(exc) is LabFileError
    text = str(exc)
    assert "frist-call" in text
    assert exc.hint and exc.cause
    for lab in SHIPPED_LABS:
        assert lab.stem in exc.hint
    assert str(LABS_DIR) in exc.hint


def test_missing_yaml_path_is_a_lab_file_error(tmp_path):
    missing = tmp_path / "nowhere.yaml"
    with pytest.raises(LabFileError) as info:
        find_lab_file(missing)
    assert str(missing) in str(info.value)


def test_a_directory_is_not_a_lab_file(tmp_path):
    with pytest.raises(LabFileError):
        find_lab_file(tmp_path)


# ---------------------------------------------------------------------------------------
# draw_secrets
# ---------------------------------------------------------------------------------------

def test_explicit_secret_is_kept_and_omitted_ones_are_drawn():
    spec = load_spec(DATA / "good-routed.yaml")
    drawn = draw_secrets(spec)
    assert set(drawn) == {"100", "101"}
    assert drawn["100"] == "correct-horse-battery"
    assert draw_secrets(spec)["100"] == "correct-horse-battery"
    assert len(drawn["101"]) >= 16


def test_omitted_secrets_are_random_long_and_distinct():
    spec = load_spec("first-call")
    first, second = draw_secrets(spec), draw_secrets(spec)
    assert set(first) == set(second) == {"6000", "6001"}
    for secrets in (first, second):
        for value in secrets.values():
            assert len(value) >= 16
            # Safe in an Asterisk config line: no ';' comment, no spaces, no quotes.
            assert all(c.isalnum() or c in "-_" for c in value), value
        assert secrets["6000"] != secrets["6001"], "each extension gets its own secret"
    assert first["6000"] != second["6000"] and first["6001"] != second["6001"], \
        "each draw gives new secrets"


# ---------------------------------------------------------------------------------------
# JSON schema
# ---------------------------------------------------------------------------------------

def _objects(node, path="#"):
    """Every sub-schema describing an object with declared properties."""
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            yield path, node
        for key, value in node.items():
            yield from _objects(value, f"{path}/{key}")
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _objects(value, f"{path}/{i}")


def test_schema_rejects_unknown_keys_everywhere():
    schema = json_schema()
    assert schema["additionalProperties"] is False
    objects = dict(_objects(schema))
    assert {"#", "#/$defs/Network", "#/$defs/Host", "#/$defs/Interface", "#/$defs/Pbx",
            "#/$defs/Endpoint", "#/$defs/Phone", "#/$defs/Carrier", "#/$defs/CarrierAccount",
            "#/$defs/Trunk", "#/$defs/Pstn", "#/$defs/SrvRecord", "#/$defs/NaptrRecord",
            "#/$defs/Variant"} <= set(objects)
    for path, obj in objects.items():
        assert obj.get("additionalProperties") is False, f"{path} accepts unknown keys"


def test_schema_header_and_required_keys():
    schema = json_schema()
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["title"] == "labkit lab file"
    assert set(schema["required"]) == {"name", "networks", "hosts", "pbx"}
    assert set(schema["properties"]) == {"name", "description", "networks", "hosts", "pbx",
                                          "phones", "dns", "carrier", "pstn", "etc_hosts", "variants"}
    json.dumps(schema)  # serialisable as is


def test_committed_schema_is_up_to_date():
    """configs/lab.schema.json is what json_schema() generates (LABKIT_UPDATE_GOLDEN=1
    regenerates it)."""
    generated = json.dumps(json_schema(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert_golden(generated, SCHEMA_FILE)


def _validate_with_schema(instance) -> list[str]:
    """Errors of ``instance`` against the committed schema: jsonschema if importable,
    else a structural walk of the parts of JSON Schema the generated schema uses."""
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    try:
        import jsonschema
    except ImportError:
        return _structural_errors(schema, schema, instance, "#")
    validator_cls = jsonschema.validators.validator_for(schema)
    validator_cls.check_schema(schema)
    return [f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator_cls(schema).iter_errors(instance)]


def _structural_errors(root, schema, value, where) -> list[str]:
    import re

    if "$ref" in schema:
        target = root
        for part in schema["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        return _structural_errors(root, target, value, where)
    if "anyOf" in schema:
        options = [_structural_errors(root, s, value, where) for s in schema["anyOf"]]
        return [] if any(not o for o in options) else [f"{where}: no anyOf option fits"]
    errors = []
    kind = schema.get("type")
    checks = {"object": dict, "array": list, "string": str, "boolean": bool, "null": type(None)}
    if kind == "integer":
        if not isinstance(value, int) or isinstance(value, bool):
            return [f"{where}: not an integer"]
        if not schema.get("minimum", value) <= value <= schema.get("maximum", value):
            errors.append(f"{where}: out of range")
    elif kind in checks and not isinstance(value, checks[kind]):
        return [f"{where}: not a {kind}"]
    if "enum" in schema and value not in schema["enum"]:
        errors.append(f"{where}: not one of {schema['enum']}")
    if kind == "string" and "pattern" in schema and not re.search(schema["pattern"], value):
        errors.append(f"{where}: does not match {schema['pattern']}")
    if kind == "string" and len(value) < schema.get("minLength", 0):
        errors.append(f"{where}: too short")
    if kind == "object":
        props = schema.get("properties", {})
        for key in schema.get("required", []):
            if key not in value:
                errors.append(f"{where}: missing {key}")
        for key, item in value.items():
            if key in props:
                errors += _structural_errors(root, props[key], item, f"{where}/{key}")
            elif schema.get("additionalProperties") is False:
                errors.append(f"{where}: unknown key {key}")
            elif isinstance(schema.get("additionalProperties"), dict):
                errors += _structural_errors(root, schema["additionalProperties"], item,
                                             f"{where}/{key}")
    if kind == "array":
        if not schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value)):
            errors.append(f"{where}: wrong number of items")
        prefix = schema.get("prefixItems", [])
        for i, item in enumerate(value):
            sub = prefix[i] if i < len(prefix) else schema.get("items")
            if sub is not None:
                errors += _structural_errors(root, sub, item, f"{where}/{i}")
    return errors


@pytest.mark.parametrize("path", SHIPPED_LABS + [DATA / "good-routed.yaml"],
                         ids=lambda p: p.stem)
def test_valid_labs_validate_against_the_schema(path):
    instance = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert _validate_with_schema(instance) == []


@pytest.mark.parametrize("name, needle", [
    ("unknown-key", "hots"),
    ("missing-key", "subnet"),
    ("wrong-type", "ten"),
    ("name-uppercase", "Alice"),
])
def test_schema_flags_shape_errors_too(name, needle):
    """What pydantic rejects for its shape, an editor using the schema rejects as well."""
    instance = yaml.safe_load((DATA / f"bad-{name}.yaml").read_text(encoding="utf-8"))
    errors = _validate_with_schema(instance)
    assert errors and any(needle in e for e in errors), errors


def test_schema_check_works_without_jsonschema(monkeypatch):
    """jsonschema is not pinned: with it absent the check falls back, and still bites."""
    import sys

    monkeypatch.setitem(sys.modules, "jsonschema", None)  # `import jsonschema` fails
    good = yaml.safe_load((LABS_DIR / "first-call.yaml").read_text(encoding="utf-8"))
    assert _validate_with_schema(good) == []
    bad = yaml.safe_load((DATA / "bad-unknown-key.yaml").read_text(encoding="utf-8"))
    assert any("hots" in e for e in _validate_with_schema(bad))


def test_structural_fallback_agrees_on_the_shipped_lab_and_a_typo():
    """The no-jsonschema fallback must not pass everything: exercise it directly."""
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    good = yaml.safe_load((LABS_DIR / "first-call.yaml").read_text(encoding="utf-8"))
    assert _structural_errors(schema, schema, good, "#") == []
    bad = yaml.safe_load((DATA / "bad-unknown-key.yaml").read_text(encoding="utf-8"))
    errors = _structural_errors(schema, schema, bad, "#")
    assert any("hots" in e for e in errors) and any("missing host" in e for e in errors)
    wrong = yaml.safe_load((DATA / "bad-wrong-type.yaml").read_text(encoding="utf-8"))
    assert _structural_errors(schema, schema, wrong, "#")


def test_host_named_like_a_network_is_an_error():
    text = (LABS_DIR / "first-call.yaml").read_text().replace("name: pbx\n", "name: lan\n").replace(
        "host: pbx", "host: lan")
    with pytest.raises(LabFileError, match=r"hosts\[0\]\.name \(line \d+\): 'lan' is also a network"):
        parse_spec(text, source="x.yaml")


# -- regressions found when the kit was tried as a new user would -----------------------------------
def test_error_with_overrides_gives_the_line_of_the_users_file(tmp_path):
    """A problem in the file keeps the file's line even when overrides were merged in; a problem
    in an overridden value says so (it has no line in the file)."""
    text = (LABS_DIR / "first-call.yaml").read_text()
    bad = text.replace("extension: \"6001\"}\n", "extension: \"6009\"}\n", 1)  # phones[1]
    assert bad != text
    path = tmp_path / "lab.yaml"
    path.write_text(bad)
    line = next(i for i, text in enumerate(bad.splitlines(), 1) if '"6009"' in text)
    with pytest.raises(LabFileError) as caught:
        load_spec(path, overrides={"pbx": {"direct_media": True}})
    assert f"phones[1].extension (line {line}):" in caught.value.message, caught.value.message
    with pytest.raises(LabFileError) as caught:
        load_spec("first-call", overrides={"pbx": {"rtp_ports": [30000, 20000]}})
    assert "pbx.rtp_ports (set by the overrides, not the file)" in caught.value.message


def test_unknown_names_are_lab_file_errors_not_stopiteration():
    spec = load_spec("first-call")
    for lookup, name in ((spec.host, "pbx2"), (spec.network, "wan"), (spec.endpoint, "7000"),
                         (spec.phone, "carol")):
        with pytest.raises(LabFileError) as caught:
            lookup(name)
        assert repr(name) in caught.value.message and caught.value.hint
    with pytest.raises(LabFileError) as caught:
        spec.host("x")
    assert "pbx, alice, bob" in caught.value.hint
