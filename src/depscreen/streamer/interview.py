"""What a live interview takes in and gives out, with no transport in it: the opening request, the inputs
(audio, video, captions, the end) and the updates (a scored sentence, the summary).

Transports convert their wire types to these and back (`convert.py` for gRPC messages, `webrtc.py` hands over
decoded frames as they are); `LiveSession` (`session.py`) speaks only these.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from depscreen.engine.caption import Caption

if TYPE_CHECKING:  # annotations only: the typed core loads no model library (tests/test_imports.py)
    from depscreen.engine.features.image import Image
    from depscreen.engine.features.sentence import SentenceFeatures
    from depscreen.engine.pipeline import Notice, ResumePoint
    from depscreen.engine.questions import Question
    from depscreen.engine.runtime.screener import RunningEstimate


@dataclass(frozen=True)
class Opening:
    """What a client asks for when it opens a session (the wire's `SessionStart`)."""

    sample_rate_hz: int
    channels: int
    language: str = ""
    """BCP-47 tag of the spoken language; empty: the server's default (`language.DEFAULT_LANGUAGE`)."""
    disable_asr: bool = False
    """The client opts out of server-side transcription: only its captions give text."""
    session_id: str = ""
    """The caller's id for the session; empty: the server makes one."""
    resume_token: str = ""
    """A token from an earlier `accepted`: continue that session from its last snapshot."""
    received_sentences: int | None = None
    """On a resume: the sentence updates the client holds (0..n-1); None: it does not say."""
    channel_roles: tuple[str, ...] = ()
    """Whose voice each channel carries ("patient", "clinician"; `roles.py` checks them); empty: every channel
    is the patient's."""


@dataclass(frozen=True)
class Welcome:
    """What an admitted session tells its client first (the wire's `accepted`, less the model's facts)."""

    session_id: str
    asr_model: str
    """The speech recogniser transcribing this session; empty when none does."""
    notices: tuple[Notice, ...]
    """What the client should know about this session (not resumable and why, a language without ASR...)."""
    resume_token: str = ""
    """Continues this session on another stream; empty when it is not resumable."""
    resume_from_ms: int = 0
    """On a resume: the media time to re-send from."""
    next_sentence_index: int = 0
    """On a resume: the index the next sentence gets."""
    started: datetime | None = None
    """When the session started (UTC); None on a resumed stream."""
    replay_from_sample: int | None = None
    """On a resume: the sample (16 kHz clock) to re-send the media from."""


@dataclass(frozen=True)
class Audio:
    """A chunk of s16le PCM at the session's rate and channels."""

    pcm: bytes


@dataclass(frozen=True)
class Video:
    """A video frame on the audio clock: pixels, or bytes decoded only if the frame is analysed."""

    timestamp_ms: int
    image: Image


@dataclass(frozen=True)
class ClinicianCaption:
    """The clinician's words over a span of the audio clock (the wire's `Caption` with role CLINICIAN): text for
    the clinician's questions, never the patient's."""

    caption: Caption


@dataclass(frozen=True)
class End:
    """The interview is over: close the open sentence and send the summary."""


Input = Audio | Video | Caption | ClinicianCaption | End


@dataclass(frozen=True)
class ScoredSentence:
    """A closed sentence, the estimate after it, and how long after its close the estimate was ready."""

    features: SentenceFeatures
    estimate: RunningEstimate
    latency_s: float
    question: Question | None = None
    """The clinician's question the sentence answers (a session with a clinician channel), or None."""
    resume: ResumePoint | None = None
    """Where the session goes on from after this sentence (`pipeline.ResumePoint`)."""


@dataclass(frozen=True)
class InterviewSummary:
    """The end of a session: what it heard, what it dropped, and its last estimate (None before any sentence)."""

    sentences: int
    audio_seconds: float
    speech_seconds: float
    dropped_video_frames: int
    dropped_captions: int
    estimate: RunningEstimate | None
    clinician_sentences: int = 0
    """Sentences of the clinician's channel (a session with one), never scored."""


Update = ScoredSentence | InterviewSummary
