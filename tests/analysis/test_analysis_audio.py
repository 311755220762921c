"""G.711 decoding, WAV files and the correlation score."""
from __future__ import annotations

import numpy as np
import pytest
import synth

from labkit.analysis import audio, correlate, decode_stream, read_wav, rtp_packets, to_wav
from labkit.errors import CaptureError


@pytest.mark.parametrize("pt", [0, 8])
def test_roundtrip_correlates(tmp_path, pt):
    s = synth.rtp_stream(synth.ALICE, 4000, synth.PBX, 12000, n=100, pt=pt)
    path = tmp_path / f"pt{pt}.pcap"
    synth.write_pcap(path, s.pkts)
    rtp = rtp_packets(path, with_payload=True)
    pcm = decode_stream(rtp)
    assert pcm.dtype == np.int16 and len(pcm) == len(s.pcm)
    assert correlate(pcm, s.pcm) > 0.99
    wav = to_wav(rtp, tmp_path / "out.wav")
    back, rate = read_wav(wav)
    assert rate == 8000 and np.array_equal(back, pcm)


def test_gaps_become_silence_and_order_by_seq(rtp_df, streams_df, scenario):
    _, a2b, _ = scenario
    row = streams_df[streams_df["ssrc"] == a2b.ssrc].iloc[0]
    pcm = decode_stream(rtp_df, stream=row)
    assert len(pcm) == 200 * 160  # timestamps span all 200 packets
    for i in (5, 6, 50):  # dropped packets -> zeros
        assert not pcm[i * 160:(i + 1) * 160].any()
    # packet 20 arrived after 21 but sits in its place
    ref = audio.ulaw_decode(synth.ulaw_encode(a2b.pcm))
    assert np.array_equal(pcm[20 * 160:22 * 160], ref[20 * 160:22 * 160])
    assert correlate(pcm, a2b.pcm) > 0.95


def test_decoder_tables_match_g711_reference():
    codes = np.arange(256, dtype=np.uint8)
    # decode -> encode gives the same code back (except mu-law's two zeros 0x7F/0xFF)
    assert (synth.ulaw_encode(audio.ULAW[codes]) == codes).sum() == 255
    assert (synth.alaw_encode(audio.ALAW[codes]) == codes).all()
    assert audio.ULAW[0x00] == -32124 and audio.ULAW[0x80] == 32124
    assert audio.ALAW[0xD5] == 8 and audio.ALAW[0x2A] == -32256


def test_correlate_noise_and_shift():
    rng = np.random.default_rng(7)
    a, b = rng.normal(size=16000), rng.normal(size=16000)
    assert abs(correlate(a, b)) < 0.2
    assert correlate(np.concatenate([np.zeros(777), a]), a) == pytest.approx(1.0)
    assert correlate(a, a) == pytest.approx(1.0)


def test_several_streams_need_a_choice(rtp_df):
    with pytest.raises(CaptureError, match="streams"):
        decode_stream(rtp_df)


def test_no_payload_column(eth_pcap):
    with pytest.raises(CaptureError, match="with_payload"):
        decode_stream(rtp_packets(eth_pcap))


def test_read_wav_errors(tmp_path):
    bad = tmp_path / "x.wav"
    bad.write_text("not a wav")
    with pytest.raises(CaptureError):
        read_wav(bad)
    with pytest.raises(CaptureError):
        read_wav(tmp_path / "missing.wav")
