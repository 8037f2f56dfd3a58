"""The gRPC wire and the session core, both ways: `ClientMessage` → the core's opening and inputs
(`interview.py`), its welcome and updates → `ServerMessage`, and engine results (RunningEstimate, model facts) → their
`depscreen.v1` messages."""

from __future__ import annotations

from typing import TYPE_CHECKING

from depscreen import PROTOCOL_VERSION, __version__
from depscreen.engine.features.image import EncodedImage
from depscreen.engine.features.text import PHQ8_ITEMS
from depscreen.engine.modalities import MODALITY_NAMES
from depscreen.streamer.interview import (
    Audio,
    Caption,
    ClinicianCaption,
    End,
    Input,
    Opening,
    ScoredSentence,
    Update,
    Video,
    Welcome,
)
from depscreen.streamer.protocol import ErrorKind, ProtocolError
from depscreen.v1 import screening_pb2 as pb

if TYPE_CHECKING:  # annotations only: the typed core loads no model library (tests/test_imports.py)
    from depscreen.engine.runtime.screener import RunningEstimate, Screener

MODALITY_ENUM = {name: pb.Modality.Value(name.upper()) for name in MODALITY_NAMES}
"""Each engine modality's wire value: the `depscreen.v1.Modality` named like it, upper-cased."""
PHQ_ENUM = {item: pb.PhqItem.Value(item.upper()) for item in PHQ8_ITEMS}
IMAGE_FORMATS = {pb.JPEG: "jpeg", pb.PNG: "png", pb.RGB24: "rgb24"}
"""Wire image formats to the names `decode_image` takes; others are rejected there, naming the format."""
ROLE_NAMES = {pb.PATIENT: "patient", pb.CLINICIAN: "clinician"}
"""Wire roles to the names `roles.py` takes; any other value keeps its wire name and is refused there."""


def opening(message: pb.ClientMessage) -> Opening:
    """A stream's first message as the session's opening; ProtocolError when it is not a `start`."""
    kind = message.WhichOneof("kind")
    if kind != "start":
        raise ProtocolError(
            ErrorKind.FAILED_PRECONDITION,
            f"the first message must be `start` (SessionStart with the audio format), got `{kind}`",
        )
    start = message.start
    return Opening(
        sample_rate_hz=start.audio.sample_rate_hz,
        channels=start.audio.channels,
        language=start.language,
        disable_asr=start.disable_asr,
        session_id=start.session_id,
        resume_token=start.resume_token,
        received_sentences=start.received_sentences if start.HasField("received_sentences") else None,
        channel_roles=tuple(_role_name(role) for role in start.channel_roles),
    )


def _role_name(role: int) -> str:
    """A wire role as `roles.py` names it; an unknown one as its enum name, or its number."""
    if role in ROLE_NAMES:
        return ROLE_NAMES[role]
    return pb.Role.Name(role) if role in pb.Role.values() else str(role)


def client_input(message: pb.ClientMessage) -> Input:
    """A later message of the stream as the session's input; ProtocolError for a second `start` or an empty one."""
    kind = message.WhichOneof("kind")
    if kind == "audio":
        return Audio(message.audio.data)
    if kind == "video":
        frame = message.video
        image = EncodedImage(frame.image, IMAGE_FORMATS.get(frame.format, "unspecified"), frame.width, frame.height)
        return Video(frame.timestamp_ms, image)
    if kind == "caption":
        caption = message.caption
        said = Caption(caption.start_ms, caption.end_ms, caption.text)
        if caption.role in (pb.ROLE_UNSPECIFIED, pb.PATIENT):
            return said
        if caption.role == pb.CLINICIAN:
            return ClinicianCaption(said)
        raise ProtocolError(
            ErrorKind.INVALID_ARGUMENT,
            f"caption.role={_role_name(caption.role)} is not a role this server knows: use PATIENT or CLINICIAN",
        )
    if kind == "end":
        return End()
    if kind == "start":
        raise ProtocolError(ErrorKind.FAILED_PRECONDITION, "a second `start` on the same stream")
    raise ProtocolError(ErrorKind.INVALID_ARGUMENT, "empty ClientMessage (no field set)")


def model_info_message(screener: Screener) -> pb.ModelInfo:
    facts = screener.facts
    return pb.ModelInfo(
        model_id=facts.model_id,
        trained_on=facts.trained_on,
        intended_use=facts.intended_use,
        model_card_url=facts.model_card_url,
        device=screener.device.type,
        kernels=screener.kernels,
    )


def accepted_message(welcome: Welcome, model: pb.ModelInfo) -> pb.ServerMessage:
    accepted = pb.SessionAccepted(
        session_id=welcome.session_id,
        model=model,
        resume_token=welcome.resume_token,
        resume_from_ms=welcome.resume_from_ms,
        next_sentence_index=welcome.next_sentence_index,
        asr_model=welcome.asr_model,
        notices=welcome.notices,
        coded_notices=[pb.Notice(code=notice.code, text=notice) for notice in welcome.notices],
        server_version=__version__,
        protocol_version=PROTOCOL_VERSION,
        replay_from_sample=welcome.replay_from_sample,
    )
    if welcome.started is not None:
        accepted.started_at.FromDatetime(welcome.started)
    return pb.ServerMessage(accepted=accepted)


def server_message(update: Update) -> pb.ServerMessage:
    if isinstance(update, ScoredSentence):
        return pb.ServerMessage(sentence=sentence_update(update))
    summary = pb.SessionSummary(
        sentences=update.sentences,
        audio_seconds=update.audio_seconds,
        speech_seconds=update.speech_seconds,
        dropped_video_frames=update.dropped_video_frames,
        dropped_captions=update.dropped_captions,
        clinician_sentences=update.clinician_sentences,
    )
    if update.estimate is not None:
        summary.estimate.CopyFrom(estimate_message(update.estimate))
    return pb.ServerMessage(summary=summary)


def estimate_message(estimate: RunningEstimate) -> pb.Estimate:
    return pb.Estimate(
        probability=estimate.probability,
        evidence=estimate.evidence,
        modalities=[
            pb.ModalityConfidence(
                modality=MODALITY_ENUM[m.modality],
                available=m.available,
                quality=m.quality,
                weight=m.weight,
                probability=m.probability,
            )
            for m in estimate.modalities
        ],
        symptoms=[
            pb.SymptomEvidence(item=PHQ_ENUM[item], score=score)
            for item, score in zip(PHQ8_ITEMS, estimate.symptoms, strict=True)
        ],
        interval_low=estimate.interval_low,
        interval_high=estimate.interval_high,
        interval_level=estimate.interval_level,
        enough_speech=estimate.enough_speech,
    )


def sentence_update(sentence: ScoredSentence) -> pb.SentenceUpdate:
    f = sentence.features
    update = pb.SentenceUpdate(
        index=f.index,
        start_ms=f.start_ms,
        end_ms=f.end_ms,
        transcript=f.transcript,
        transcript_source=f.transcript_source,
        estimate=estimate_message(sentence.estimate),
        latency_ms=sentence.latency_s * 1000.0,
        replay_from_sample=sentence.resume.first_sample if sentence.resume is not None else None,
    )
    question = sentence.question
    if question is not None:
        update.question.CopyFrom(
            pb.Question(
                start_ms=question.start_ms,
                end_ms=question.end_ms,
                transcript=question.transcript,
                transcript_source=question.transcript_source,
            )
        )
        update.answer_latency_ms = f.start_ms - question.end_ms
    return update
