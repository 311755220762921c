"""A listening-quality *estimate* from the ITU-T G.107 E-model, simplified for VoIP labs.

This is an estimate for teaching, not a measurement: it only knows what the network
did to the packets (loss, jitter) and assumes everything else is at the G.107 defaults.

    R      = Ro − Is − Id − Ie_eff + A       with Ro − Is = 93.2 (G.107 defaults), A = 0
    Ie_eff = Ie + (95 − Ie) · Ppl / (Ppl / BurstR + Bpl)            (G.107 §7.6)
    Id     ≈ 0.024·Ta + 0.11·(Ta − 177.3)·H(Ta − 177.3)
             (the usual simplification of G.107's delay terms, Cole & Rosenbluth 2001)
    MOS    = 1 + 0.035·R + 7·10⁻⁶·R·(R − 60)·(100 − R)   for 0 < R < 100  (G.107 Annex B)

Inputs and assumptions, all visible in ``mos_inputs`` and :func:`explain`:

* Ppl: packet loss in % from RFC 3550 counting (``lost / expected``); BurstR = 1
  (random loss — bursty loss would score lower).
* Ie, Bpl per codec from ITU-T G.113 Appendix I: G.711 (PCMU/PCMA) Ie = 0 with
  Bpl = 4.3 **without** packet-loss concealment (the default here, like a bare G.711
  receiver) or Bpl = 25.1 with PLC (``plc=True``, G.711 Appendix I); G.729(A) Ie = 11,
  Bpl = 19.  Other codecs (wideband G.722, Opus …) are not modelled: R and MOS are NaN.
* Ta, one-way mouth-to-ear delay: the capture cannot see it, so the network delay is
  assumed 0 ms (``delay_ms``) and a jitter buffer of 2 × the mean RFC 3550 jitter is added.
"""
from __future__ import annotations

# codec -> (Ie, Bpl without PLC, Bpl with PLC), ITU-T G.113 Appendix I
CODEC_IMPAIRMENT = {
    "PCMU": (0.0, 4.3, 25.1),
    "PCMA": (0.0, 4.3, 25.1),
    "G729": (11.0, 19.0, 19.0),
}


def delay_impairment(ta_ms: float) -> float:
    """Id for a one-way delay Ta (ms), simplified G.107."""
    return 0.024 * ta_ms + (0.11 * (ta_ms - 177.3) if ta_ms > 177.3 else 0.0)


def r_to_mos(r: float) -> float:
    """G.107 Annex B: R-factor to estimated MOS-CQE (1 … 4.5)."""
    if r != r:
        return float("nan")
    if r <= 0:
        return 1.0
    if r >= 100:
        return 4.5
    return 1 + 0.035 * r + 7e-6 * r * (r - 60) * (100 - r)


def emodel(codec: str, loss_pct: float, jitter_ms: float, *, plc: bool = False,
           delay_ms: float = 0.0, burst_r: float = 1.0) -> dict:
    """Estimate R and MOS for one stream.  Returns {"r_factor", "mos", "mos_inputs"}."""
    key = (codec or "").upper().split("/")[0]
    key = "G729" if key.startswith("G729") else key
    ppl = max(0.0, float(loss_pct) if loss_pct == loss_pct else 0.0)
    jit = float(jitter_ms) if jitter_ms == jitter_ms else 0.0
    ta = delay_ms + 2.0 * jit
    if key not in CODEC_IMPAIRMENT:
        return {"r_factor": float("nan"), "mos": float("nan"),
                "mos_inputs": f"codec {codec or '?'} not modelled (E-model here knows G.711, G.729)"}
    ie, bpl_raw, bpl_plc = CODEC_IMPAIRMENT[key]
    bpl = bpl_plc if plc else bpl_raw
    ie_eff = ie + (95 - ie) * ppl / (ppl / burst_r + bpl)
    idd = delay_impairment(ta)
    r = 93.2 - idd - ie_eff
    mos = r_to_mos(r)
    note = (f"estimate: {key} Ie={ie:g} Bpl={bpl:g} ({'with' if plc else 'no'} PLC), Ppl={ppl:.2f}% "
            f"BurstR={burst_r:g} -> Ie_eff={ie_eff:.2f}; Ta={delay_ms:g} ms assumed + 2x jitter "
            f"{jit:.2f} ms = {ta:.2f} ms -> Id={idd:.2f}; R=93.2-Id-Ie_eff={r:.1f}")
    return {"r_factor": round(r, 2), "mos": round(mos, 2), "mos_inputs": note}


def explain(row) -> str:
    """A few lines telling how the ``mos`` of one streams-table row was estimated."""
    get = row.get if hasattr(row, "get") else (lambda k, d=None: getattr(row, k, d))
    lines = [f"Stream {get('direction', '?')} SSRC {get('ssrc_hex', get('ssrc', '?'))} "
             f"codec {get('codec', '?')}",
             f"  packets {get('packets')} expected {get('expected')} lost {get('lost')} "
             f"({get('loss_pct', float('nan')):.2f} %), mean jitter {get('jitter_mean_ms', float('nan')):.2f} ms",
             f"  E-model (ITU-T G.107, simplified): {get('mos_inputs', '')}",
             f"  => R = {get('r_factor')}  MOS = {get('mos')}  (an ESTIMATE of listening quality, "
             f"not a measurement; delay and echo are not seen in a capture)"]
    return "\n".join(lines)
