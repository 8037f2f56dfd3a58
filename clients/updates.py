"""What a session yields: `Accepted`, `SentenceUpdate` and `Summary`, typed views of the server's messages."""

from __future__ import annotations

from dataclasses import dataclass

from depscreen.v1 import screening_pb2 as pb


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


@dataclass(frozen=True)
class Accepted:
    """The server opened (or, after a reconnection, resumed) the session."""

    session_id: str
    resumable: bool
    """Whether the server granted a resume token (it has a state store): breaks are then survived."""
    resumed: bool
    """Whether this `accepted` answers a reconnection of the same session."""
    resume_from_ms: int
    next_sentence_index: int
    model: pb.ModelInfo
    asr_model: str
    notices: tuple[str, ...]
    message: pb.SessionAccepted


@dataclass(frozen=True)
class SentenceUpdate:
    """The estimate after one more sentence; each `index` is yielded exactly once, resumes included."""

    index: int
    start_ms: int
    end_ms: int
    transcript: str
    transcript_source: str
    probability: float
    evidence: float
    interval: Interval
    latency_ms: float
    estimate: pb.Estimate
    message: pb.SentenceUpdate
    question: pb.Question | None = None
    """The clinician's question this sentence answers (a session with a clinician channel), or None."""
    answer_latency_ms: int = 0
    """From the question's end to this sentence's start, in ms (0 without a question)."""


@dataclass(frozen=True)
class Summary:
    """The end of the session: the final estimate and what was processed."""

    sentences: int
    audio_seconds: float
    speech_seconds: float
    probability: float
    evidence: float
    interval: Interval
    """"not enough speech yet" when the session had no sentence (no estimate)."""
    estimate: pb.Estimate
    message: pb.SessionSummary


Update = Accepted | SentenceUpdate | Summary


def update_of(message: pb.ServerMessage, *, resumed: bool = False) -> Update:
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
            model=accepted.model,
            asr_model=accepted.asr_model,
            notices=tuple(accepted.notices),
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
