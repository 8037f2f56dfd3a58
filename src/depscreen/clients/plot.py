"""A screened session's estimate over the interview as a PNG: the estimate, each modality's, evidence, speech.

Drawn with matplotlib's Agg canvas (no display, no pyplot state). The top panel holds the screening estimate
after each sentence (a step: it holds until the next sentence), its interval as a band when the data has one,
each modality's own estimate from the first sentence it contributed to, the stretch before the session had
enough speech for an estimate shaded grey, and the final value marked and written inside the frame; the bottom
panel holds the evidence and the spans of speech the sentences cover. No transcript is drawn. Each artist
carries a `gid` (`estimate`, `interval`, `evidence`, `modality-audio`, `not-enough-speech`, `final`,
`final-label`, ...), so tests and callers can find its data on the figure.
"""

from __future__ import annotations

import io
import math

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from depscreen.v1 import screening_pb2 as pb

from .sentences import ScreenedSession

DPI = 100
DISCLAIMER = "screening aid, not a diagnosis"
MODALITY_COLOURS = {pb.AUDIO: "tab:orange", pb.VIDEO: "tab:green", pb.TEXT: "tab:purple"}
RIGHT_MARGIN = 0.04
"""Room after the interview's end, as a fraction of its length, so the final value sits inside the frame."""
NOT_ENOUGH_SPEECH_GREY = "0.82"


def parse_size(text: str) -> tuple[int, int]:
    """`WIDTHxHEIGHT` in pixels (each 200 to 10000) as a tuple; ValueError says what is expected."""
    width, separator, height = text.lower().partition("x")
    if not (separator and width.isdigit() and height.isdigit()):
        raise ValueError(f"size must be WIDTHxHEIGHT in pixels, such as 1200x700; got {text!r}")
    size = int(width), int(height)
    if not all(200 <= side <= 10_000 for side in size):
        raise ValueError(f"each side must be 200 to 10000 pixels; got {text!r}")
    return size


def draw(session: ScreenedSession, size: tuple[int, int] = (1200, 700)) -> Figure:
    """The session's figure, `size` pixels at `DPI`."""
    figure = Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI, layout="constrained")
    estimate_axes, evidence_axes = figure.subplots(2, 1, sharex=True, height_ratios=[3, 1])
    times = [point.end_ms / 1000 for point in session.sentences]
    end_s = _end_seconds(session)
    steps = [*times, end_s]

    def held(values: list[float]) -> list[float]:
        """The values with the last one held to the end of the interview (a step after each sentence)."""
        return [*values, values[-1]]

    enough_s = next((p.end_ms / 1000 for p in session.sentences if p.estimate.enough_speech), end_s)
    if enough_s > 0:
        estimate_axes.axvspan(
            0, enough_s, color=NOT_ENOUGH_SPEECH_GREY, alpha=0.6, linewidth=0, label="not enough speech yet",
            gid="not-enough-speech",
        )  # fmt: skip
    intervals = [point.interval for point in session.sentences]
    if any(interval is not None for interval in intervals):
        lows = [math.nan if i is None else i[0] for i in intervals]
        highs = [math.nan if i is None else i[1] for i in intervals]
        estimate_axes.fill_between(
            steps, held(lows), held(highs), step="post", alpha=0.2, color="tab:blue", label="interval", gid="interval"
        )
    for kind, colour in MODALITY_COLOURS.items():
        series = _modality_series(session, kind)
        if series is not None:
            name = pb.Modality.Name(kind).lower()
            estimate_axes.plot(
                steps, held(series), drawstyle="steps-post", color=colour, linewidth=1, alpha=0.8,
                label=f"{name} alone", gid=f"modality-{name}",
            )  # fmt: skip
    probabilities = [point.estimate.probability for point in session.sentences]
    estimate_axes.plot(
        steps, held(probabilities), drawstyle="steps-post", color="tab:blue", linewidth=2.5, label="estimate",
        gid="estimate",
    )  # fmt: skip
    estimate_axes.plot(times, probabilities, "o", color="tab:blue", markersize=4, gid="estimate-updates")
    final = session.final.probability
    estimate_axes.plot([end_s], [final], "D", color="tab:blue", markersize=7, gid="final")
    estimate_axes.annotate(
        f"final {final * 100:.1f}%", xy=(end_s, final), xytext=(-8, 8 if final < 0.85 else -16),
        textcoords="offset points", ha="right", color="tab:blue", fontweight="bold", gid="final-label",
    )  # fmt: skip
    estimate_axes.set_ylim(0, 1)
    estimate_axes.set_ylabel("screening probability")
    estimate_axes.grid(alpha=0.3)
    estimate_axes.legend(loc="upper left", fontsize="small", ncols=6)
    model = f"  ·  model {session.model.model_id}" if session.model is not None else ""
    estimate_axes.set_title(
        f"session {session.session_id or '(unnamed)'}{model}  ·  final {session.final.probability * 100:.1f}%"
        f"  ·  {DISCLAIMER}",
        loc="left",
    )

    evidences = [point.estimate.evidence for point in session.sentences]
    evidence_axes.broken_barh(
        [(point.start_ms / 1000, (point.end_ms - point.start_ms) / 1000) for point in session.sentences],
        (0, 0.08), color="0.6", label="sentence spans", gid="speech",
    )  # fmt: skip
    evidence_axes.plot(
        steps, held(evidences), drawstyle="steps-post", color="tab:red", linewidth=2, label="evidence", gid="evidence"
    )
    evidence_axes.set_ylim(0, 1)
    evidence_axes.set_xlim(0, end_s * (1 + RIGHT_MARGIN))
    evidence_axes.set_ylabel("evidence")
    evidence_axes.set_xlabel("interview time (s)")
    evidence_axes.grid(alpha=0.3)
    evidence_axes.legend(loc="upper left", fontsize="small", ncols=2)
    return figure


def draw_png(session: ScreenedSession, size: tuple[int, int] = (1200, 700)) -> bytes:
    """The session drawn as a PNG of exactly `size` pixels."""
    figure = draw(session, size)
    FigureCanvasAgg(figure)
    png = io.BytesIO()
    figure.savefig(png, format="png", dpi=DPI)
    return png.getvalue()


def _modality_series(session: ScreenedSession, kind: int) -> list[float] | None:
    """The modality's own estimate after each sentence, NaN before the first sentence it contributed to; None
    when it never contributed (its head then only reports its prior)."""
    series, seen = [], False
    for point in session.sentences:
        confidence = next((m for m in point.estimate.modalities if m.modality == kind), None)
        seen = seen or (confidence is not None and confidence.available)
        series.append(confidence.probability if seen and confidence is not None else math.nan)
    return series if seen else None


def _end_seconds(session: ScreenedSession) -> float:
    """Where the time axis ends: the summary's audio length, else a little after the last sentence."""
    last = session.sentences[-1].end_ms / 1000
    if session.summary is not None and session.summary.audio_seconds >= last:
        return session.summary.audio_seconds
    return last + 1.0
