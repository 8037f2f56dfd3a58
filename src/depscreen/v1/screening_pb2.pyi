import datetime

from google.protobuf import timestamp_pb2 as _timestamp_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Role(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    ROLE_UNSPECIFIED: _ClassVar[Role]
    PATIENT: _ClassVar[Role]
    CLINICIAN: _ClassVar[Role]

class ImageFormat(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    IMAGE_FORMAT_UNSPECIFIED: _ClassVar[ImageFormat]
    JPEG: _ClassVar[ImageFormat]
    PNG: _ClassVar[ImageFormat]
    RGB24: _ClassVar[ImageFormat]

class Modality(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    MODALITY_UNSPECIFIED: _ClassVar[Modality]
    AUDIO: _ClassVar[Modality]
    VIDEO: _ClassVar[Modality]
    TEXT: _ClassVar[Modality]

class PhqItem(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    PHQ_ITEM_UNSPECIFIED: _ClassVar[PhqItem]
    ANHEDONIA: _ClassVar[PhqItem]
    DEPRESSED_MOOD: _ClassVar[PhqItem]
    SLEEP: _ClassVar[PhqItem]
    FATIGUE: _ClassVar[PhqItem]
    APPETITE: _ClassVar[PhqItem]
    WORTHLESSNESS: _ClassVar[PhqItem]
    CONCENTRATION: _ClassVar[PhqItem]
    PSYCHOMOTOR: _ClassVar[PhqItem]
ROLE_UNSPECIFIED: Role
PATIENT: Role
CLINICIAN: Role
IMAGE_FORMAT_UNSPECIFIED: ImageFormat
JPEG: ImageFormat
PNG: ImageFormat
RGB24: ImageFormat
MODALITY_UNSPECIFIED: Modality
AUDIO: Modality
VIDEO: Modality
TEXT: Modality
PHQ_ITEM_UNSPECIFIED: PhqItem
ANHEDONIA: PhqItem
DEPRESSED_MOOD: PhqItem
SLEEP: PhqItem
FATIGUE: PhqItem
APPETITE: PhqItem
WORTHLESSNESS: PhqItem
CONCENTRATION: PhqItem
PSYCHOMOTOR: PhqItem

class ClientMessage(_message.Message):
    __slots__ = ("start", "audio", "video", "caption", "end")
    START_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    VIDEO_FIELD_NUMBER: _ClassVar[int]
    CAPTION_FIELD_NUMBER: _ClassVar[int]
    END_FIELD_NUMBER: _ClassVar[int]
    start: SessionStart
    audio: AudioChunk
    video: VideoFrame
    caption: Caption
    end: SessionEnd
    def __init__(self, start: _Optional[_Union[SessionStart, _Mapping]] = ..., audio: _Optional[_Union[AudioChunk, _Mapping]] = ..., video: _Optional[_Union[VideoFrame, _Mapping]] = ..., caption: _Optional[_Union[Caption, _Mapping]] = ..., end: _Optional[_Union[SessionEnd, _Mapping]] = ...) -> None: ...

class SessionStart(_message.Message):
    __slots__ = ("session_id", "audio", "language", "resume_token", "disable_asr", "received_sentences", "channel_roles")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    AUDIO_FIELD_NUMBER: _ClassVar[int]
    LANGUAGE_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    DISABLE_ASR_FIELD_NUMBER: _ClassVar[int]
    RECEIVED_SENTENCES_FIELD_NUMBER: _ClassVar[int]
    CHANNEL_ROLES_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    audio: AudioFormat
    language: str
    resume_token: str
    disable_asr: bool
    received_sentences: int
    channel_roles: _containers.RepeatedScalarFieldContainer[Role]
    def __init__(self, session_id: _Optional[str] = ..., audio: _Optional[_Union[AudioFormat, _Mapping]] = ..., language: _Optional[str] = ..., resume_token: _Optional[str] = ..., disable_asr: _Optional[bool] = ..., received_sentences: _Optional[int] = ..., channel_roles: _Optional[_Iterable[_Union[Role, str]]] = ...) -> None: ...

class AudioFormat(_message.Message):
    __slots__ = ("sample_rate_hz", "channels")
    SAMPLE_RATE_HZ_FIELD_NUMBER: _ClassVar[int]
    CHANNELS_FIELD_NUMBER: _ClassVar[int]
    sample_rate_hz: int
    channels: int
    def __init__(self, sample_rate_hz: _Optional[int] = ..., channels: _Optional[int] = ...) -> None: ...

class AudioChunk(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class VideoFrame(_message.Message):
    __slots__ = ("timestamp_ms", "image", "format", "width", "height")
    TIMESTAMP_MS_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    timestamp_ms: int
    image: bytes
    format: ImageFormat
    width: int
    height: int
    def __init__(self, timestamp_ms: _Optional[int] = ..., image: _Optional[bytes] = ..., format: _Optional[_Union[ImageFormat, str]] = ..., width: _Optional[int] = ..., height: _Optional[int] = ...) -> None: ...

class Caption(_message.Message):
    __slots__ = ("start_ms", "end_ms", "text", "role")
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    start_ms: int
    end_ms: int
    text: str
    role: Role
    def __init__(self, start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ..., text: _Optional[str] = ..., role: _Optional[_Union[Role, str]] = ...) -> None: ...

class SessionEnd(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ServerMessage(_message.Message):
    __slots__ = ("accepted", "sentence", "summary")
    ACCEPTED_FIELD_NUMBER: _ClassVar[int]
    SENTENCE_FIELD_NUMBER: _ClassVar[int]
    SUMMARY_FIELD_NUMBER: _ClassVar[int]
    accepted: SessionAccepted
    sentence: SentenceUpdate
    summary: SessionSummary
    def __init__(self, accepted: _Optional[_Union[SessionAccepted, _Mapping]] = ..., sentence: _Optional[_Union[SentenceUpdate, _Mapping]] = ..., summary: _Optional[_Union[SessionSummary, _Mapping]] = ...) -> None: ...

class SessionAccepted(_message.Message):
    __slots__ = ("session_id", "resume_token", "model", "resume_from_ms", "next_sentence_index", "asr_model", "notices", "replay_from_sample", "coded_notices", "server_version", "protocol_version", "started_at")
    SESSION_ID_FIELD_NUMBER: _ClassVar[int]
    RESUME_TOKEN_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    RESUME_FROM_MS_FIELD_NUMBER: _ClassVar[int]
    NEXT_SENTENCE_INDEX_FIELD_NUMBER: _ClassVar[int]
    ASR_MODEL_FIELD_NUMBER: _ClassVar[int]
    NOTICES_FIELD_NUMBER: _ClassVar[int]
    REPLAY_FROM_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    CODED_NOTICES_FIELD_NUMBER: _ClassVar[int]
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    PROTOCOL_VERSION_FIELD_NUMBER: _ClassVar[int]
    STARTED_AT_FIELD_NUMBER: _ClassVar[int]
    session_id: str
    resume_token: str
    model: ModelInfo
    resume_from_ms: int
    next_sentence_index: int
    asr_model: str
    notices: _containers.RepeatedScalarFieldContainer[str]
    replay_from_sample: int
    coded_notices: _containers.RepeatedCompositeFieldContainer[Notice]
    server_version: str
    protocol_version: str
    started_at: _timestamp_pb2.Timestamp
    def __init__(self, session_id: _Optional[str] = ..., resume_token: _Optional[str] = ..., model: _Optional[_Union[ModelInfo, _Mapping]] = ..., resume_from_ms: _Optional[int] = ..., next_sentence_index: _Optional[int] = ..., asr_model: _Optional[str] = ..., notices: _Optional[_Iterable[str]] = ..., replay_from_sample: _Optional[int] = ..., coded_notices: _Optional[_Iterable[_Union[Notice, _Mapping]]] = ..., server_version: _Optional[str] = ..., protocol_version: _Optional[str] = ..., started_at: _Optional[_Union[datetime.datetime, _timestamp_pb2.Timestamp, _Mapping]] = ...) -> None: ...

class Notice(_message.Message):
    __slots__ = ("code", "text")
    CODE_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    code: str
    text: str
    def __init__(self, code: _Optional[str] = ..., text: _Optional[str] = ...) -> None: ...

class ModelInfo(_message.Message):
    __slots__ = ("model_id", "trained_on", "intended_use", "model_card_url", "device", "kernels")
    MODEL_ID_FIELD_NUMBER: _ClassVar[int]
    TRAINED_ON_FIELD_NUMBER: _ClassVar[int]
    INTENDED_USE_FIELD_NUMBER: _ClassVar[int]
    MODEL_CARD_URL_FIELD_NUMBER: _ClassVar[int]
    DEVICE_FIELD_NUMBER: _ClassVar[int]
    KERNELS_FIELD_NUMBER: _ClassVar[int]
    model_id: str
    trained_on: str
    intended_use: str
    model_card_url: str
    device: str
    kernels: str
    def __init__(self, model_id: _Optional[str] = ..., trained_on: _Optional[str] = ..., intended_use: _Optional[str] = ..., model_card_url: _Optional[str] = ..., device: _Optional[str] = ..., kernels: _Optional[str] = ...) -> None: ...

class SentenceUpdate(_message.Message):
    __slots__ = ("index", "start_ms", "end_ms", "transcript", "transcript_source", "estimate", "latency_ms", "replay_from_sample", "question", "answer_latency_ms")
    INDEX_FIELD_NUMBER: _ClassVar[int]
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_SOURCE_FIELD_NUMBER: _ClassVar[int]
    ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    REPLAY_FROM_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    QUESTION_FIELD_NUMBER: _ClassVar[int]
    ANSWER_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    index: int
    start_ms: int
    end_ms: int
    transcript: str
    transcript_source: str
    estimate: Estimate
    latency_ms: float
    replay_from_sample: int
    question: Question
    answer_latency_ms: int
    def __init__(self, index: _Optional[int] = ..., start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ..., transcript: _Optional[str] = ..., transcript_source: _Optional[str] = ..., estimate: _Optional[_Union[Estimate, _Mapping]] = ..., latency_ms: _Optional[float] = ..., replay_from_sample: _Optional[int] = ..., question: _Optional[_Union[Question, _Mapping]] = ..., answer_latency_ms: _Optional[int] = ...) -> None: ...

class Question(_message.Message):
    __slots__ = ("start_ms", "end_ms", "transcript", "transcript_source")
    START_MS_FIELD_NUMBER: _ClassVar[int]
    END_MS_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_FIELD_NUMBER: _ClassVar[int]
    TRANSCRIPT_SOURCE_FIELD_NUMBER: _ClassVar[int]
    start_ms: int
    end_ms: int
    transcript: str
    transcript_source: str
    def __init__(self, start_ms: _Optional[int] = ..., end_ms: _Optional[int] = ..., transcript: _Optional[str] = ..., transcript_source: _Optional[str] = ...) -> None: ...

class SessionSummary(_message.Message):
    __slots__ = ("sentences", "audio_seconds", "estimate", "speech_seconds", "dropped_video_frames", "dropped_captions", "clinician_sentences")
    SENTENCES_FIELD_NUMBER: _ClassVar[int]
    AUDIO_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ESTIMATE_FIELD_NUMBER: _ClassVar[int]
    SPEECH_SECONDS_FIELD_NUMBER: _ClassVar[int]
    DROPPED_VIDEO_FRAMES_FIELD_NUMBER: _ClassVar[int]
    DROPPED_CAPTIONS_FIELD_NUMBER: _ClassVar[int]
    CLINICIAN_SENTENCES_FIELD_NUMBER: _ClassVar[int]
    sentences: int
    audio_seconds: float
    estimate: Estimate
    speech_seconds: float
    dropped_video_frames: int
    dropped_captions: int
    clinician_sentences: int
    def __init__(self, sentences: _Optional[int] = ..., audio_seconds: _Optional[float] = ..., estimate: _Optional[_Union[Estimate, _Mapping]] = ..., speech_seconds: _Optional[float] = ..., dropped_video_frames: _Optional[int] = ..., dropped_captions: _Optional[int] = ..., clinician_sentences: _Optional[int] = ...) -> None: ...

class Estimate(_message.Message):
    __slots__ = ("probability", "evidence", "modalities", "symptoms", "interval_low", "interval_high", "interval_level", "enough_speech")
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    EVIDENCE_FIELD_NUMBER: _ClassVar[int]
    MODALITIES_FIELD_NUMBER: _ClassVar[int]
    SYMPTOMS_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_LOW_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_HIGH_FIELD_NUMBER: _ClassVar[int]
    INTERVAL_LEVEL_FIELD_NUMBER: _ClassVar[int]
    ENOUGH_SPEECH_FIELD_NUMBER: _ClassVar[int]
    probability: float
    evidence: float
    modalities: _containers.RepeatedCompositeFieldContainer[ModalityConfidence]
    symptoms: _containers.RepeatedCompositeFieldContainer[SymptomEvidence]
    interval_low: float
    interval_high: float
    interval_level: float
    enough_speech: bool
    def __init__(self, probability: _Optional[float] = ..., evidence: _Optional[float] = ..., modalities: _Optional[_Iterable[_Union[ModalityConfidence, _Mapping]]] = ..., symptoms: _Optional[_Iterable[_Union[SymptomEvidence, _Mapping]]] = ..., interval_low: _Optional[float] = ..., interval_high: _Optional[float] = ..., interval_level: _Optional[float] = ..., enough_speech: _Optional[bool] = ...) -> None: ...

class ModalityConfidence(_message.Message):
    __slots__ = ("modality", "available", "quality", "weight", "probability")
    MODALITY_FIELD_NUMBER: _ClassVar[int]
    AVAILABLE_FIELD_NUMBER: _ClassVar[int]
    QUALITY_FIELD_NUMBER: _ClassVar[int]
    WEIGHT_FIELD_NUMBER: _ClassVar[int]
    PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    modality: Modality
    available: bool
    quality: float
    weight: float
    probability: float
    def __init__(self, modality: _Optional[_Union[Modality, str]] = ..., available: _Optional[bool] = ..., quality: _Optional[float] = ..., weight: _Optional[float] = ..., probability: _Optional[float] = ...) -> None: ...

class SymptomEvidence(_message.Message):
    __slots__ = ("item", "score")
    ITEM_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    item: PhqItem
    score: float
    def __init__(self, item: _Optional[_Union[PhqItem, str]] = ..., score: _Optional[float] = ...) -> None: ...
