"""How labkit's results show in a notebook: preformatted text, two columns, inline figures."""
from __future__ import annotations

import html
import tempfile
from pathlib import Path

import numpy as np

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
