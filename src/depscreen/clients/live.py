"""Live terminal view of a screening stream: `LiveState.apply` takes server messages, `render` draws them."""

from __future__ import annotations

from dataclasses import dataclass, field

from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from depscreen.clients.updates import Interval
from depscreen.v1 import screening_pb2

DISCLAIMER = "screening aid, not a diagnosis"
MODALITIES = (screening_pb2.AUDIO, screening_pb2.VIDEO, screening_pb2.TEXT)
TOP_SYMPTOMS = 4
HISTORY_WIDTH = 60
BAR_WIDTH = 30
_SPARKS = "▁▂▃▄▅▆▇█"
_DIGITS = {
    "0": (" _ ", "| |", "|_|"),
    "1": ("   ", "  |", "  |"),
    "2": (" _ ", " _|", "|_ "),
    "3": (" _ ", " _|", " _|"),
    "4": ("   ", "|_|", "  |"),
    "5": (" _ ", "|_ ", " _|"),
    "6": (" _ ", "|_ ", "|_|"),
    "7": (" _ ", "  |", "  |"),
    "8": (" _ ", "|_|", "|_|"),
    "9": (" _ ", "|_|", " _|"),
    "%": ("o /", " / ", "/ o"),
}


@dataclass
class LiveState:
    """Everything the view shows, updated one server message at a time."""

    session_id: str = ""
    model: screening_pb2.ModelInfo | None = None
    sentence: screening_pb2.SentenceUpdate | None = None
    estimate: screening_pb2.Estimate | None = None
    history: list[float] = field(default_factory=list)
    round_trip_ms: float | None = None
    summary: screening_pb2.SessionSummary | None = None

    def apply(self, message: screening_pb2.ServerMessage, *, round_trip_ms: float | None = None) -> None:
        """Take one server message; `round_trip_ms` is the client-measured round trip of a sentence update."""
        match message.WhichOneof("kind"):
            case "accepted":
                self.session_id = message.accepted.session_id
                self.model = message.accepted.model
            case "sentence":
                self.sentence = message.sentence
                self.estimate = message.sentence.estimate
                self.history.append(message.sentence.estimate.probability)
                self.round_trip_ms = round_trip_ms
            case "summary":
                self.summary = message.summary
                if message.summary.HasField("estimate"):  # none when no sentence was heard
                    self.estimate = message.summary.estimate


def render(state: LiveState) -> RenderableType:
    """The whole view as one panel."""
    parts: list[RenderableType] = [_header(state)]
    if state.estimate is None:
        parts.append(Text("waiting for the first sentence…", style="italic"))
    else:
        parts += [_estimate(state.estimate), _history(state.history), _modalities(state.estimate)]
        if state.estimate.symptoms:
            parts.append(_symptoms(state.estimate))
    if state.sentence is not None:
        parts += [_transcript(state.sentence), _latency(state.sentence, state.round_trip_ms)]
    if state.summary is not None:
        parts.append(_summary(state.summary))
    return Panel(Group(*parts), title="depscreen", border_style="blue")


def big_digits(text: str) -> list[str]:
    """`text` (digits and %) drawn three lines tall with seven-segment glyphs."""
    return [" ".join(_DIGITS[char][row] for char in text) for row in range(3)]


def sparkline(values: list[float], width: int = HISTORY_WIDTH) -> str:
    """The last `width` values in 0..1 as block characters, low to high."""
    return "".join(_SPARKS[min(len(_SPARKS) - 1, max(0, int(value * len(_SPARKS))))] for value in values[-width:])


def _bar(fraction: float, width: int = BAR_WIDTH) -> str:
    filled = round(min(1.0, max(0.0, fraction)) * width)
    return "█" * filled + "░" * (width - filled)


def _span(low: float, high: float, width: int = BAR_WIDTH) -> str:
    """[low, high] of 0..1 drawn on a bar `width` long."""
    start, end = round(min(1.0, max(0.0, low)) * width), round(min(1.0, max(0.0, high)) * width)
    return "·" * start + "█" * max(1, end - start) + "·" * max(0, width - max(end, start + 1))


def _header(state: LiveState) -> Text:
    header = Text()
    header.append(f"session {state.session_id or '…'}", style="bold")
    if state.model is not None:
        model = state.model
        header.append(f"  ·  model {model.model_id}", style="cyan")
        if model.device or model.kernels:
            header.append(f" ({'/'.join(part for part in (model.device, model.kernels) if part)})")
        header.append(f"\ntrained on {model.trained_on or 'unknown data'}", style="dim")
        if model.intended_use:
            header.append(f"  ·  {model.intended_use}", style="dim")
    header.append(f"\n{DISCLAIMER}", style="bold yellow")
    return header


def _estimate(estimate: screening_pb2.Estimate) -> Table:
    percent = round(estimate.probability * 100)
    style = "bold red" if estimate.probability >= 0.5 else "bold green"
    grid = Table.grid(padding=(0, 3))
    grid.add_column()
    grid.add_column()
    words = Text()
    words.append(f"screening probability {estimate.probability * 100:.1f}%\n", style=style)
    words.append(f"evidence {estimate.evidence:.2f} ")
    words.append(_bar(estimate.evidence, 20), style="magenta")
    interval = Interval.of(estimate)
    words.append(f"\n{interval.words()} ", style="" if interval.calibrated else "italic")
    if interval.calibrated:
        words.append(_span(interval.low, interval.high), style="cyan")
    grid.add_row(Text("\n".join(big_digits(f"{percent}%")), style=style), words)
    return grid


def _history(history: list[float]) -> Text:
    line = Text(f"history ({len(history)} sentences) ", style="dim")
    line.append(sparkline(history), style="cyan")
    return line


def _modalities(estimate: screening_pb2.Estimate) -> Table:
    table = Table(box=None, padding=(0, 1), show_edge=False)
    for column in ("modality", "weight", "", "quality", "probability"):
        table.add_column(column, justify="left" if column in ("modality", "") else "right")
    by_kind = {confidence.modality: confidence for confidence in estimate.modalities}
    for kind in MODALITIES:
        name = screening_pb2.Modality.Name(kind)
        confidence = by_kind.get(kind)
        if confidence is None or not confidence.available:
            table.add_row(name, "", _bar(0.0), "unavailable", "", style="dim")
            continue
        table.add_row(
            name,
            f"{confidence.weight:.2f}",
            Text(_bar(confidence.weight), style="green"),
            f"{confidence.quality:.2f}",
            f"{confidence.probability * 100:.1f}%",
        )
    return table


def _symptoms(estimate: screening_pb2.Estimate) -> Table:
    table = Table(box=None, padding=(0, 1), show_edge=False, title="PHQ-8 symptom evidence", title_justify="left")
    table.add_column("item")
    table.add_column("score", justify="right")
    table.add_column("")
    for symptom in sorted(estimate.symptoms, key=lambda symptom: -symptom.score)[:TOP_SYMPTOMS]:
        name = screening_pb2.PhqItem.Name(symptom.item).lower().replace("_", " ")
        table.add_row(name, f"{symptom.score:.2f}", Text(_bar(symptom.score, 20), style="yellow"))
    return table


def _transcript(sentence: screening_pb2.SentenceUpdate) -> Text:
    line = Text(
        f"sentence #{sentence.index}  {sentence.start_ms / 1000:.1f}–{sentence.end_ms / 1000:.1f} s  "
        f"({sentence.transcript_source or 'no text'})  ",
        style="dim",
    )
    line.append(sentence.transcript or "(no transcript)", style="bold" if sentence.transcript else "dim")
    if sentence.HasField("question"):
        question = sentence.question
        line.append(
            f"\n  answers the question at {question.start_ms / 1000:.1f}–{question.end_ms / 1000:.1f} s after "
            f"{sentence.answer_latency_ms / 1000:.1f} s",
            style="dim",
        )
        if question.transcript:
            line.append(f": {question.transcript}", style="italic")
    return line


def _latency(sentence: screening_pb2.SentenceUpdate, round_trip_ms: float | None) -> Text:
    round_trip = "n/a" if round_trip_ms is None else f"{round_trip_ms:.0f} ms"
    return Text(f"server latency {sentence.latency_ms:.0f} ms  ·  round trip {round_trip}", style="dim")


def _summary(summary: screening_pb2.SessionSummary) -> Text:
    return Text(
        f"done: {summary.sentences} sentences, {summary.speech_seconds:.1f} s speech in "
        f"{summary.audio_seconds:.1f} s audio, dropped {summary.dropped_video_frames} video frames and "
        f"{summary.dropped_captions} captions; final estimate: {_final(summary)}",
        style="bold",
    )


def _final(summary: screening_pb2.SessionSummary) -> str:
    if not summary.HasField("estimate"):
        return "none (no sentence heard): not enough speech yet"
    return f"{summary.estimate.probability * 100:.1f}%, {Interval.of(summary.estimate).words()}"
