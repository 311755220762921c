"""The SIP table and the calls table on the synthetic REGISTER + INVITE scenario."""
from __future__ import annotations

import synth

from labkit.analysis import calls, sip_messages


def test_sip_sequence(sip_df):
    labels = [m if r else f"{c}" for m, r, c in zip(sip_df["method"], sip_df["is_request"], sip_df["status_code"])]
    assert labels == ["REGISTER", "401", "REGISTER", "200", "INVITE", "100", "180", "200", "ACK", "BYE", "200"]
    assert list(sip_df["frame"]) == sorted(sip_df["frame"])
    assert set(sip_df["transport"]) == {"UDP"}
    assert sip_df["rel_time"].iloc[0] == 0.0
    assert abs(sip_df["time"].iloc[0] - 1_700_000_000.0) < 1e-6


def test_register_auth_flags(sip_df):
    reg = sip_df[sip_df["cseq_method"] == "REGISTER"]
    assert list(reg["has_auth"]) == [False, False, True, False]
    assert list(reg["asks_auth"]) == [False, True, False, False]
    assert reg["reason"].iloc[1] == "Unauthorized"
    assert reg["call_id"].unique().tolist() == [synth.REG_CALL_ID]
    assert list(reg["cseq_num"]) == [1, 1, 2, 2]


def test_headers(sip_df):
    inv = sip_df[sip_df["method"] == "INVITE"].iloc[0]
    assert inv["from_uri"] == "sip:alice@pbx.lab" and inv["from_tag"] == "1928301774"
    assert inv["to_uri"] == "sip:bob@pbx.lab" and inv["to_tag"] == ""
    assert inv["via"].startswith("SIP/2.0/UDP 192.168.0.11:5060;branch=z9hG4bKinv1")
    assert inv["user_agent"] == "baresip v3.10.1"
    assert "sip:alice@192.168.0.11:5060" in inv["contact"]
    assert (inv["src"], inv["sport"], inv["dst"], inv["dport"]) == (synth.ALICE, 5060, synth.PBX, 5060)
    ok = sip_df[(sip_df["status_code"] == 200) & (sip_df["cseq_method"] == "INVITE")].iloc[0]
    assert ok["to_tag"] == "314159"
    assert ok["via_received"] == "203.0.113.5" and ok["via_rport"] == 5062
    assert ok["user_agent"] == "Asterisk PBX 20.5.0"  # from Server:


def test_sdp_fields(sip_df):
    inv = sip_df[sip_df["method"] == "INVITE"].iloc[0]
    assert inv["has_sdp"]
    assert (inv["sdp_c_addr"], inv["sdp_m_port"], inv["sdp_m_proto"]) == (synth.ALICE, 4000, "RTP/AVP")
    assert inv["sdp_payload_types"] == "0 8 101"
    assert "101 telephone-event/8000" in inv["sdp_rtpmap"]
    assert inv["sdp_direction"] == "sendrecv" and inv["sdp_crypto"] == ""
    ok = sip_df[(sip_df["status_code"] == 200) & (sip_df["cseq_method"] == "INVITE")].iloc[0]
    assert (ok["sdp_c_addr"], ok["sdp_m_port"], ok["sdp_payload_types"]) == (synth.PBX, 12000, "0 101")
    assert not sip_df[sip_df["method"] == "ACK"]["has_sdp"].iloc[0]


def test_sdp_crypto_and_direction(tmp_path):
    body = synth.sdp(synth.ALICE, 4002, pts=(0,), direction="sendonly", crypto="AES_CM_128_HMAC_SHA1_80",
                     proto="RTP/SAVP")
    msg = synth.sip("INVITE sip:bob@pbx.lab SIP/2.0", [
        "Via: SIP/2.0/UDP 192.168.0.11:5060;branch=z9hG4bKx", "From: <sip:alice@pbx.lab>;tag=1",
        "To: <sip:bob@pbx.lab>", "Call-ID: srtp-1", "CSeq: 1 INVITE", "Max-Forwards: 70"], body)
    p = tmp_path / "srtp.pcap"
    synth.write_pcap(p, [synth.Pkt(1.0, synth.ALICE, 5060, synth.PBX, 5060, msg)])
    row = sip_messages(p).iloc[0]
    assert row["sdp_m_proto"] == "RTP/SAVP"
    assert row["sdp_crypto"] == "AES_CM_128_HMAC_SHA1_80"
    assert row["sdp_direction"] == "sendonly"


def test_sip_on_other_port_with_ports_argument(tmp_path):
    pkts = synth.sip_dialog()
    for p in pkts:
        p.sport = 5080 if p.sport == 5060 else p.sport
        p.dport = 5080 if p.dport == 5060 else p.dport
    path = tmp_path / "port5080.pcap"
    synth.write_pcap(path, pkts)
    df = sip_messages(path, ports=[5080])
    assert len(df) == 11 and set(df["sport"]) == {5080}


def test_same_table_for_every_link_type(sip_df, sll_pcap, sll2_pcap, ng_pcap, raw_pcap):
    for p in (sll_pcap, sll2_pcap, ng_pcap, raw_pcap):
        df = sip_messages(p)
        assert list(df["call_id"]) == list(sip_df["call_id"]), p
        assert list(df["frame"]) == list(sip_df["frame"]), p
        assert list(df["src"]) == list(sip_df["src"]), p


def test_calls_table(sip_df, eth_pcap):
    c = calls(sip_df)
    assert len(c) == 1  # the REGISTER dialog is not a call
    r = c.iloc[0]
    assert r["call_id"] == synth.CALL_ID
    assert (r["caller"], r["callee"], r["caller_addr"]) == ("sip:alice@pbx.lab", "sip:bob@pbx.lab",
                                                            "192.168.0.11:5060")
    t0 = 1_700_000_000.0
    assert abs(r["start"] - (t0 + 0.1)) < 1e-6 and abs(r["answer"] - (t0 + 0.9)) < 1e-6
    assert abs(r["end"] - (t0 + 10.0)) < 1e-6
    assert abs(r["setup_time"] - 0.8) < 1e-6 and abs(r["duration"] - 9.1) < 1e-6
    assert r["final_status"] == 200 and r["state"] == "answered" and r["ended_by"] == "caller"
    assert r["offer_media"] == "192.168.0.11:4000" and r["answer_media"] == "192.168.0.10:12000"
    assert r["offer_pts"] == "0 8 101" and r["answer_pts"] == "0 101"
    assert calls(eth_pcap)["call_id"].tolist() == [synth.CALL_ID]  # a path works too


def test_failed_call(tmp_path):
    p = tmp_path / "busy.pcap"
    synth.write_pcap(p, synth.sip_dialog(final=486))
    r = calls(p).iloc[0]
    assert r["final_status"] == 486 and r["state"] == "failed"
    assert r["duration"] != r["duration"]  # NaN: never answered
    assert abs(r["setup_time"] - 0.4) < 1e-6


def test_sip_quoted_in_icmp_is_not_a_message(tmp_path):
    """An ICMP port-unreachable quoting a SIP request must not add a row."""
    import struct
    pkts = synth.sip_dialog()[:2]
    quoted, _ = synth.ip_udp(synth.ALICE, 5060, synth.PBX, 5060, pkts[0].payload)
    icmp = struct.pack("!BBHI", 3, 3, 0, 0) + quoted
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(icmp), 0, 0, 64, 1, 0,
                     bytes([192, 168, 0, 10]), bytes([192, 168, 0, 11]))
    frame = b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01\x08\x00" + ip + icmp
    path = tmp_path / "icmp.pcap"
    synth.write_pcap(path, pkts)
    with open(path, "ab") as f:
        f.write(struct.pack("<IIII", 1_700_000_001, 0, len(frame), len(frame)) + frame)
    assert len(sip_messages(path)) == 2


def test_call_without_final_answer(tmp_path):
    """The capture stopped while the phone was ringing."""
    p = tmp_path / "ringing.pcap"
    synth.write_pcap(p, synth.sip_dialog()[4:7])  # INVITE, 100, 180
    r = calls(p).iloc[0]
    assert r["state"] == "ringing" and r["final_status"] is __import__("pandas").NA
    assert r["end"] != r["end"] and r["duration"] != r["duration"]
