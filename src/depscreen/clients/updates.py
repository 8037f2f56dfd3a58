"""What a session yields: `Accepted`, `SentenceUpdate` and `Summary`, typed views of the server's messages, and
`Reconnecting` when the client is about to resume a broken stream."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import UTC, datetime

from depscreen.v1 import screening_pb2 as pb


def _readable_repr(update: object) -> str:
    """One line: the fields a reader wants, floats to 4 significant digits, the raw protobuf left out."""
    shown = []
    for item in fields(update):  # type: ignore[arg-type]
        if not item.repr:
            continue
        value = getattr(update, item.name)
        shown.append(f"{item.name}={value:.4g}" if isinstance(value, float) else f"{item.name}={value!r}")
    return f"{type(update).__name__}({', '.join(shown)})"


class Notice(str):
    """Something the client should know about its session: the text, as a `str`, with a stable snake_case
    `code` to match on ("" from servers older than protocol 1.1; README, "Notices")."""

    code: str

    def __new__(cls, code: str, text: str) -> Notice:
        notice = super().__new__(cls, text)
        notice.code = code
        return notice

    def __repr__(self) -> str:
        return f"Notice({self.code!r}, {str(self)!r})"


@dataclass(frozen=True)
class Interval:
    """The estimate's calibrated interval, and whether the session has heard enough speech for one."""

    low: float
    high: float
    level: float
    """Nominal coverage (e.g. 0.9); 0 when the model has no interval calibration."""
    enough_speech: bool
    """False: "not enough speech yet" (the interval is then the whole range)."""

    @classmethod
    def of(cls, estimate: pb.Estimate) -> Interval:
        return cls(estimate.interval_low, estimate.interval_high, estimate.interval_level, estimate.enough_speech)

    def __repr__(self) -> str:
        return f"Interval({self.words()})"

    @property
    def calibrated(self) -> bool:
        """Whether [low, high] is a calibrated interval (enough speech, and a model with a calibration)."""
        return self.enough_speech and self.level > 0

    def words(self) -> str:
        """The interval as a reader should see it: "90% interval 0.08-0.61", or why there is none."""
        if not self.enough_speech:
            return "not enough speech yet"
        if not self.level:
            return "no interval (the model has no interval calibration)"
        return f"{self.level:.0%} interval {self.low:.2f}-{self.high:.2f}"


@dataclass(frozen=True, repr=False)
class Accepted:
    """The server opened (or, after a reconnection, resumed) the session."""

    session_id: str
    resumable: bool
    """Whether the server granted a resume token (it has a state store): breaks are then survived."""
    resumed: bool
    """Whether this `accepted` answers a reconnection of the same session."""
    resume_from_ms: int
    next_sentence_index: int
    asr_model: str
    """The speech recogniser transcribing this session ("" when its text comes from captions only)."""
    notices: tuple[Notice, ...]
    """What the client should know about this session, each a `str` with a stable `code`."""
    server_version: str
    """The server's release ("" from servers before protocol 1.1)."""
    protocol_version: str
    """The wire contract version the server speaks, "1.MINOR" ("" before 1.1; CHANGELOG.md)."""
    started_at: datetime | None
    """When the session started (the server's clock, UTC); None on a resumed stream and from servers before 1.1."""
    model: pb.ModelInfo = field(repr=False)
    """The model's facts: id, what it was trained on, intended use, model card."""
    message: pb.SessionAccepted = field(repr=False)
    """The message as it came on the wire."""

    __repr__ = _readable_repr


@dataclass(frozen=True, repr=False)
class SentenceUpdate:
    """The estimate after one more sentence; each `index` is yielded exactly once, resumes included."""

    index: int
    """0-based, in the order the sentences were spoken."""
    start_ms: int
    end_ms: int
    transcript: str
    transcript_source: str
    """"caption", "asr" or "" (none)."""
    probability: float
    """The running screening probability after this sentence (all sentences so far)."""
    evidence: float
    """0..1: how much usable evidence the estimate rests on."""
    interval: Interval
    latency_ms: float
    """Server time from the sentence closing to this update being written."""
    estimate: pb.Estimate = field(repr=False)
    """The full estimate: per-modality confidences and weights, symptom evidence."""
    message: pb.SentenceUpdate = field(repr=False)
    question: pb.Question | None = field(default=None, repr=False)
    """The clinician's question this sentence answers (a session with a clinician channel), or None."""
    answer_latency_ms: int = 0
    """From the question's end to this sentence's start, in ms (0 without a question)."""

    __repr__ = _readable_repr


@dataclass(frozen=True, repr=False)
class Summary:
    """The end of the session: the final estimate and what was processed."""

    sentences: int
    audio_seconds: float
    speech_seconds: float
    probability: float
    evidence: float
    interval: Interval
    """"not enough speech yet" when the session had no sentence (no estimate)."""
    estimate: pb.Estimate = field(repr=False)
    message: pb.SessionSummary = field(repr=False)

    __repr__ = _readable_repr


@dataclass(frozen=True, repr=False)
class Reconnecting:
    """The stream broke and the client will reconnect in `wait_s` to resume the session (`attempt` counts the
    tries since the stream last worked); an `Accepted` with `resumed` follows once it has. `error` is why the
    stream broke. Made by the client, not the server: `server_messages()` leaves it out."""

    attempt: int
    wait_s: float
    error: Exception

    __repr__ = _readable_repr


Update = Accepted | SentenceUpdate | Summary | Reconnecting


def _notices(accepted: pb.SessionAccepted) -> tuple[Notice, ...]:
    """The notices with their codes (from `coded_notices`; a server before protocol 1.1 sends the texts only)."""
    if accepted.coded_notices:
        return tuple(Notice(notice.code, notice.text) for notice in accepted.coded_notices)
    return tuple(Notice("", text) for text in accepted.notices)


def update_of(message: pb.ServerMessage, *, resumed: bool = False) -> Accepted | SentenceUpdate | Summary:
    """The typed view of one server message; `resumed` marks an `accepted` that answers a reconnection."""
    kind = message.WhichOneof("kind")
    if kind == "accepted":
        accepted = message.accepted
        return Accepted(
            session_id=accepted.session_id,
            resumable=bool(accepted.resume_token),
            resumed=resumed,
            resume_from_ms=accepted.resume_from_ms,
            next_sentence_index=accepted.next_sentence_index,
            asr_model=accepted.asr_model,
            notices=_notices(accepted),
            server_version=accepted.server_version,
            protocol_version=accepted.protocol_version,
            started_at=accepted.started_at.ToDatetime(tzinfo=UTC) if accepted.HasField("started_at") else None,
            model=accepted.model,
            message=accepted,
        )
    if kind == "sentence":
        sentence = message.sentence
        return SentenceUpdate(
            index=sentence.index,
            start_ms=sentence.start_ms,
            end_ms=sentence.end_ms,
            transcript=sentence.transcript,
            transcript_source=sentence.transcript_source,
            probability=sentence.estimate.probability,
            evidence=sentence.estimate.evidence,
            interval=Interval.of(sentence.estimate),
            latency_ms=sentence.latency_ms,
            estimate=sentence.estimate,
            message=sentence,
            question=sentence.question if sentence.HasField("question") else None,
            answer_latency_ms=sentence.answer_latency_ms,
        )
    if kind == "summary":
        summary = message.summary
        return Summary(
            sentences=summary.sentences,
            audio_seconds=summary.audio_seconds,
            speech_seconds=summary.speech_seconds,
            probability=summary.estimate.probability,
            evidence=summary.estimate.evidence,
            interval=Interval.of(summary.estimate),
            estimate=summary.estimate,
            message=summary,
        )
    raise ValueError(f"the server sent a message of unknown kind {kind!r}: upgrade the client")
