"""Whose voice is in which channel: a session's `start.channel_roles` checked, its interleaved audio split into
the patient's and the clinician's, and the clinician's channel followed as questions (`engine/questions.py`).

One stream with one channel per role (rather than a role on each audio chunk) keeps both voices on one clock,
sample-aligned by construction: a question's end and an answer's onset are measured on the same samples, and
a chunk's size, pace and limits mean what they mean for any session. The patient's channel alone is segmented
and scored (its samples exactly as sent, so the patient's sentences and estimates are those of the patient's
channel streamed alone); the clinician's is segmented by a second segmenter, never scored. Without roles a
session is as before: every channel the patient's (stereo averaged to mono).
"""

from __future__ import annotations

import numpy as np

from depscreen.engine.pipeline import Caption, Notice, SentenceResult, SessionPipeline
from depscreen.engine.questions import Question, QuestionTrack
from depscreen.streamer.interview import Opening
from depscreen.streamer.protocol import ErrorKind, ProtocolError

PATIENT = "patient"
CLINICIAN = "clinician"
ROLES = (PATIENT, CLINICIAN)
"""The roles a channel may have, as `Opening.channel_roles` names them (the wire's `Role`, lower-cased)."""

CLINICIAN_ONLY = (
    "no channel is the patient's (start.channel_roles has no PATIENT): nothing of this session is scored, only "
    "the clinician's sentences are counted"
)


def check_roles(start: Opening) -> None:
    """Refuse (INVALID_ARGUMENT, naming the fix) a role mapping the server cannot follow: a role it does not
    know, a count of roles that is not the stream's channel count, or a second patient."""
    roles = start.channel_roles
    if not roles:
        return
    for number, role in enumerate(roles):
        if role not in ROLES:
            raise ProtocolError(
                ErrorKind.INVALID_ARGUMENT,
                f"start.channel_roles[{number}]={role} is not a role this server scores or follows: use PATIENT "
                "or CLINICIAN",
            )
    if len(roles) != start.channels:
        raise ProtocolError(
            ErrorKind.INVALID_ARGUMENT,
            f"start.channel_roles has {len(roles)} roles for start.audio.channels={start.channels}: give one role "
            "per channel, in channel order (or none: every channel is the patient's)",
        )
    if roles.count(PATIENT) > 1:
        raise ProtocolError(
            ErrorKind.INVALID_ARGUMENT,
            "start.channel_roles names PATIENT for more than one channel: a session screens one patient; map the "
            "other voice to CLINICIAN, or open a session per patient",
        )
    if roles.count(CLINICIAN) > 1:
        raise ProtocolError(
            ErrorKind.INVALID_ARGUMENT,
            "start.channel_roles names CLINICIAN for more than one channel: mix the interviewers into one channel",
        )


def pipeline_channels(start: Opening) -> int:
    """The channels the patient's pipeline takes: one (the patient's, split out) when roles are mapped."""
    return 1 if start.channel_roles else start.channels


class Voices:
    """A session's channels mapped to roles: `push_audio` splits each chunk, runs the clinician's channel
    through its `QuestionTrack` first and the patient's through the pipeline; `question_for` names the
    question a patient sentence answers. With no patient channel the pipeline hears silence of the same
    length, so the session's clock, pace and limits run as for any other and no sentence is ever scored."""

    def __init__(self, roles: tuple[str, ...], pipeline: SessionPipeline, questions: QuestionTrack | None) -> None:
        self.roles = roles
        self.channels = len(roles)
        self.pipeline = pipeline
        self.questions = questions
        self._patient = roles.index(PATIENT) if PATIENT in roles else None
        self._clinician = roles.index(CLINICIAN) if CLINICIAN in roles else None

    def notices(self) -> list[Notice]:
        """What the welcome says about the mapping (a session without a patient is scored on nothing)."""
        return [Notice("clinician_only", CLINICIAN_ONLY)] if self._patient is None else []

    def split(self, data: bytes) -> tuple[bytes, bytes | None]:
        """Whole interleaved s16le frames → the patient's channel (silence when none) and the clinician's
        (None when none), each mono, exactly as sent."""
        frames = np.frombuffer(data, dtype="<i2").reshape(-1, self.channels)
        patient = frames[:, self._patient] if self._patient is not None else np.zeros(len(frames), dtype="<i2")
        clinician = frames[:, self._clinician].tobytes() if self._clinician is not None else None
        return patient.tobytes(), clinician

    def push_audio(self, data: bytes, transcribe: bool = True) -> list[SentenceResult]:
        """One chunk of the session's interleaved audio; the patient's sentences it closed."""
        patient, clinician = self.split(data)
        if clinician is not None and self.questions is not None:
            self.questions.push_audio(clinician, transcribe)
        return self.pipeline.push_audio(patient, transcribe)

    def finish(self, transcribe: bool = True) -> list[SentenceResult]:
        """End of stream: the clinician's open sentence closes first, then the patient's."""
        if self.questions is not None:
            self.questions.finish(transcribe)
        return self.pipeline.finish(transcribe)

    def push_caption(self, caption: Caption) -> bool:
        """Hold a clinician caption; False when it is not used (no clinician channel, or the clinician's words
        are not reported). ValueError for an invalid one."""
        if self.questions is None:
            return False
        return self.questions.push_caption(caption)

    def question_for(self, start_ms: int) -> Question | None:
        """The clinician's question a patient sentence beginning at `start_ms` answers, or None."""
        return self.questions.answered_by(start_ms) if self.questions is not None else None

    @property
    def clinician_sentences(self) -> int:
        return self.questions.sentences if self.questions is not None else 0
