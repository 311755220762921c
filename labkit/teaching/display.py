"""How labkit's results show in a notebook: preformatted text, two columns, inline figures."""
from __future__ import annotations

import html
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from labkit import tracks
from labkit.services.asterisk.config import render_pbx
from labkit.services.base import Credentials
from labkit.spec import load_spec


class Text(str):
    """CLI output: shown preformatted in a notebook, a plain ``str`` everywhere else."""

    def _repr_html_(self) -> str:
        return f"<pre style='font-size:85%'>{html.escape(self)}</pre>"


def show_figures_inline() -> None:
    """In a Jupyter kernel, draw labkit's figures as images (the inline backend), at a
    resolution that keeps notebooks small; elsewhere do nothing."""
    try:
        from IPython import get_ipython
    except ImportError:
        return
    shell = get_ipython()
    if shell is None or not hasattr(shell, "kernel"):
        return
    shell.run_line_magic("matplotlib", "inline")
    shell.run_line_magic("config", 'InlineBackend.print_figure_kwargs = {"dpi": 90, "bbox_inches": "tight"}')


def side_by_side(lab: str = "first-call", files: tuple[str, ...] | None = None,
                 overrides: dict | None = None) -> dict[str, dict[str, Text]]:
    """The lab's Asterisk configuration rendered for both tracks (no lab needed).

    Secrets are shown as a placeholder: a real run draws them at random.
    """
    spec = load_spec(lab, overrides)
    placeholder = {e.extension: "<random-per-run>" for e in spec.pbx.endpoints}
    credentials = Credentials(secrets=placeholder, ami_user="labkit", ami_secret="<random-per-run>")
    out: dict[str, dict[str, Text]] = {}
    with tempfile.TemporaryDirectory(prefix="labkit-render-") as tmp:
        for track in tracks.TRACKS.values():
            written = render_pbx(spec, track, credentials, Path(tmp) / track.name)
            wanted = files or (track.sip_config, "extensions.conf", "rtp.conf")
            out[track.name] = {name: Text(written[name].read_text()) for name in wanted if name in written}
    return out


def compare(left: str, right: str, titles: tuple[str, str] = (tracks.LEGACY.name, tracks.MODERN.name)):
    """Two texts in two columns (HTML), e.g. a sip.conf peer next to its pjsip.conf objects."""
    from IPython.display import HTML
    cells = "".join(f"<td style='vertical-align:top'><b>{html.escape(t)}</b>"
                    f"<pre style='font-size:80%'>{html.escape(x)}</pre></td>"
                    for t, x in zip(titles, (left, right)))
    return HTML(f"<table><tr>{cells}</tr></table>")


def listen(samples: np.ndarray):
    """A player for 8 kHz audio in the notebook."""
    from IPython.display import Audio
    return Audio(samples.astype(np.float32) / 32768.0, rate=8000, normalize=False)


# -- TLS ----------------------------------------------------------------------------------------
def tls_lines(text: str, sip_config: str) -> str:
    """The TLS part of a rendered SIP configuration: the ``[general]`` TLS lines of ``sip.conf``
    (up to ``transport =``), or the ``protocol = tls`` transport section of ``pjsip.conf``."""
    lines = text.splitlines()
    if sip_config == "sip.conf":
        start = next((i for i, line in enumerate(lines) if "SIP over TLS" in line), None)
        if start is None:
            return ""
        end = next((i for i in range(start, len(lines)) if lines[i].startswith("srvlookup")), len(lines))
        return "\n".join(lines[start:end]).rstrip() + "\n"
    headers = [i for i, line in enumerate(lines) if line.startswith("[")] + [len(lines)]
    for begin, end in zip(headers, headers[1:]):
        section = lines[begin:end]
        if any(line.replace(" ", "") == "protocol=tls" for line in section):
            while begin > 0 and lines[begin - 1].startswith(";") and "SIP over TLS" in lines[begin - 1]:
                begin -= 1
            # comments after the section's last option introduce the next section
            while end > begin and (not lines[end - 1].strip() or lines[end - 1].startswith(";")):
                end -= 1
            return "\n".join(lines[begin:end]) + "\n"
    return ""


def tls_side_by_side(lab: str = "tls-office", overrides: dict | None = None):
    """The TLS lines the kit renders for both generations, in two columns (no lab needed)."""
    cfg = side_by_side(lab, files=(tracks.LEGACY.sip_config, tracks.MODERN.sip_config), overrides=overrides)
    return compare(tls_lines(cfg[tracks.LEGACY.name][tracks.LEGACY.sip_config], tracks.LEGACY.sip_config),
                   tls_lines(cfg[tracks.MODERN.name][tracks.MODERN.sip_config], tracks.MODERN.sip_config),
                   titles=(f"{tracks.LEGACY.name}: {tracks.LEGACY.sip_config}",
                           f"{tracks.MODERN.name}: {tracks.MODERN.sip_config}"))


_PROBE_ROWS = (("connected", "connected"), ("verify_code", "verify code"), ("verify_error", "verify error"),
               ("protocol", "protocol"), ("cipher", "cipher"), ("alert", "alert"),
               ("alert_name", "alert name"), ("error", "socket error"))


class TlsProbeView(dict):
    """What ``openssl s_client`` saw (a dict: ``connected``, ``verify_code``, ``alert``,
    ``protocol``, ``cipher``, ``error``…), shown as a small table above its raw output."""

    @property
    def output(self) -> str:
        return self.get("output", "")

    def rows(self) -> list[tuple[str, str]]:
        out = []
        for key, label in _PROBE_ROWS:
            value = self.get(key)
            if value in (None, ""):
                continue
            out.append((label, str(value)))
        return out

    def __repr__(self) -> str:
        summary = "; ".join(f"{label}: {value}" for label, value in self.rows())
        return f"{summary}\n--- openssl s_client ---\n{self.output.rstrip()}"

    def _repr_html_(self) -> str:
        cells = "".join(f"<tr><th style='text-align:left'>{html.escape(k)}</th><td style='text-align:left'>"
                        f"{html.escape(v)}</td></tr>" for k, v in self.rows())
        return (f"<table>{cells}</table><details open><summary>openssl s_client output</summary>"
                f"<pre style='font-size:80%'>{html.escape(self.output)}</pre></details>")


class WideTable(pd.DataFrame):
    """A table whose cells are sentences (log lines, error messages): shown whole, not cut at
    pandas' 50 characters."""

    @property
    def _constructor(self):
        return WideTable

    def _repr_html_(self) -> str:
        with pd.option_context("display.max_colwidth", None):
            return super()._repr_html_()

    def __repr__(self) -> str:
        with pd.option_context("display.max_colwidth", None, "display.width", 200):
            return super().__repr__()
