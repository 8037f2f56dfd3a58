"""SessionPipeline: one interview's media in, the features of each closed sentence out (no networking).

The streamer drives one pipeline per live session and the trainer/evaluator drive the same class offline,
so a model sees exactly the features it will see live. Scoring is not done here: the server sends the
features through the MicroBatcher (many sessions per model step), offline code through `Screener.step`.
Calls are synchronous and CPU-bound: the server runs them in a worker thread, one call at a time per
session, in the order the messages arrived.

    push_audio ─▶ segment: resample (decode) ─▶ Segmenter (vad) ─▶ for each closed Sentence, featurize:
                     eGeMAPS (features_audio), landmarks of the sampled frames in its span (features_video,
                     computed as frames arrive), its caption or ASR (asr), embedding (text_embed)
                     ─▶ SentenceResult(features, closed_at)
                                        └─▶ for each Piece of the open sentence: ASR on a background worker
                                            (`asr_pieces`), so its close waits only for the last piece

`featurize` is the one place a sentence's features are made. A live session's caption is the text of the
platform captions overlapping the sentence (`push_caption`); offline drivers call `segment` and `featurize`
themselves and pass the caption their dataset gives (an untimed transcript can only be spread over an
answer's sentences once all of them are known, so a caption is an argument, not a callback at close).

Offline drivers get the same text as a live session: pieces are cut where the audio pauses, never where a
chunk ends, and `featurize` waits for every piece of its sentence.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Protocol

import numpy as np

from depscreen.engine.caption import Caption, checked_caption
from depscreen.engine.features.asr import DEFAULT_LANGUAGE, ONE_AT_A_TIME, AsrCapacity, AsrObserver, Transcriber
from depscreen.engine.features.asr_backends import make_transcriber
from depscreen.engine.features.asr_pieces import SentenceInPieces
from depscreen.engine.features.audio import AudioFeatureExtractor, audio_integrity
from depscreen.engine.features.face import FaceLandmarker, Image, grey_pixels
from depscreen.engine.features.language_head import LanguageTextHead
from depscreen.engine.features.sentence import SentenceFeatures
from depscreen.engine.features.text import DEFAULT_TEXT_ENCODER, TextFeaturizer, make_text_embedder
from depscreen.engine.media import DEFAULT_VIDEO_FPS, SAMPLE_RATE, PcmResampler
from depscreen.engine.segment import Piece, Segmenter, SegmenterSettings, SegmenterSnapshot, Sentence

StageTimer = Callable[[str, float, float], None]
"""Receives (stage, wall seconds, CPU seconds of the calling thread) for every timed stage: decode, vad,
features_audio, features_video, asr, text_embed."""


@dataclass(frozen=True)
class PipelineSettings:
    """Per-session media handling, with documented defaults."""

    video_fps: float = DEFAULT_VIDEO_FPS
    """Video frames analysed per second; frames arriving faster are skipped undecoded."""
    max_caption_chars: int = 2000
    """Longest caption text accepted; longer captions are rejected as invalid input."""
    max_pending_captions: int = 256
    """Captions held waiting for their sentence; the oldest are dropped beyond this."""
    segmenter: SegmenterSettings = field(default_factory=SegmenterSettings)


class AudioExtractor(Protocol):
    """Frame-level acoustic descriptors of one sentence (`features.audio.AudioFeatureExtractor`: eGeMAPS)."""

    DIM: int
    MIN_SAMPLES: int
    """Shorter input has no complete frame (its features are `[0, DIM]`)."""

    def extract(self, pcm: np.ndarray) -> np.ndarray:
        """`[T, DIM]` float32 descriptors of 16 kHz mono int16 `pcm`."""
        ...


@dataclass(frozen=True)
class Extractors:
    """The loaded-once feature models shared by all sessions of a process (each is safe to share: eGeMAPS
    builds its native state per call, the text embedder serialises its calls, the recogniser batches them on
    its replicas). `load` loads the real ones; a test brings its own (`tests/fakes.py`)."""

    text: TextFeaturizer
    transcriber: Transcriber
    """The speech recogniser (`features.asr`)."""
    audio: AudioExtractor
    asr_workers: ThreadPoolExecutor
    """Transcribe the pieces of open sentences in the background: a thread per decoding the replicas' batches
    hold, so a piece never waits for a thread while a batch has room (the threads wait for the batch; the model
    runs on the recogniser's own runner threads)."""
    asr_observer: AsrObserver | None = None
    """Hears each decoding's cost and each piece's wait for a worker (the server's metrics)."""

    @classmethod
    def load(
        cls,
        asr: str = "whisper",
        capacity: AsrCapacity = ONE_AT_A_TIME,
        text_encoder: str = DEFAULT_TEXT_ENCODER,
        asr_observer: AsrObserver | None = None,
    ) -> Extractors:
        """`asr`: the `--asr` value (the recogniser and its models; ModelFilesError when a model's package is
        missing or damaged); `capacity`: how many recogniser calls may run at once (one model replica each) and
        how many decodings of different sessions one call may batch;
        `text_encoder`: the sentence encoder the loaded checkpoint was trained with (`ModelFacts.text_encoder`);
        `asr_observer`: see the field."""
        return cls(
            text=make_text_embedder(text_encoder),
            transcriber=make_transcriber(asr, capacity, asr_observer),
            audio=AudioFeatureExtractor(),
            asr_workers=ThreadPoolExecutor(
                max_workers=capacity.parallel * capacity.max_batch, thread_name_prefix="depscreen-asr"
            ),
            asr_observer=asr_observer,
        )


@dataclass
class SessionCounts:
    """A session's running counts, kept in one place: its summary, the metrics and its resume snapshot read
    them, and a resumed session goes on from its snapshot's."""

    speech_ms: int = 0
    """Speech inside the session's scored sentences (`scored`)."""
    dropped_video_frames: int = 0
    """Video frames not used: corrupt or out of order (the pipeline), or shed under overload (the server)."""
    dropped_captions: int = 0
    """Captions not used: invalid, or pushed out by newer ones while too many waited."""

    def scored(self, features: SentenceFeatures) -> None:
        """Count a sentence that was scored."""
        self.speech_ms += features.speech_ms

    def dropped_frame(self) -> None:
        """Count a video frame not used (corrupt, out of order, or shed under overload)."""
        self.dropped_video_frames += 1

    def dropped_caption(self) -> None:
        """Count a caption not used (invalid, pushed out by newer ones, or a clinician's not taken)."""
        self.dropped_captions += 1


@dataclass(frozen=True)
class ResumePoint:
    """Where a session's media handling goes on from after a sentence, without any media: the segmenter's
    snapshot (`segment.SegmenterSnapshot`), the video sampling schedule and the face tracker's last detection.
    The client re-sends its media from `replay_from_sample` on the 16 kHz clock (its milliseconds for video and
    captions): the segmenter's replay, or earlier, from the video frame the face tracker last detected on
    (`face.FaceLandmarker` tracks from there), whose audio the pipeline skips."""

    segmenter: SegmenterSnapshot
    video_next_ms: float = 0.0
    """The first video frame re-sent at or after this time is analysed (the schedule of `video_fps`)."""
    replay_from_sample: int | None = None
    """Where the client re-sends from; None: the segmenter's `replay_from_sample`."""

    @property
    def first_sample(self) -> int:
        """The first sample the client re-sends."""
        return self.segmenter.replay_from_sample if self.replay_from_sample is None else self.replay_from_sample

    @classmethod
    def cold(cls, sample: int, index: int, settings: SegmenterSettings) -> ResumePoint:
        """A fresh start at `sample` with sentence `index` next (a snapshot that carries no resume point)."""
        return cls(SegmenterSnapshot.cold(sample, index, settings))

    def to_plain(self) -> dict[str, object]:
        return {
            "segmenter": self.segmenter.to_plain(),
            "video_next_ms": self.video_next_ms,
            "replay_from_sample": self.first_sample,
        }

    @classmethod
    def from_plain(cls, plain: dict[str, object]) -> ResumePoint:
        return cls(
            SegmenterSnapshot.from_plain(plain["segmenter"]),  # type: ignore[arg-type]
            float(plain["video_next_ms"]),  # type: ignore[arg-type]
            int(plain["replay_from_sample"]),  # type: ignore[call-overload]
        )


@dataclass(frozen=True)
class SentenceResult:
    """A closed sentence's features, ready to score."""

    features: SentenceFeatures
    closed_at: float
    """`time.perf_counter()` when the segmenter closed the sentence (for latency)."""
    resume: ResumePoint | None = None
    """Where the session goes on from after this sentence (None offline)."""


class Notice(str):
    """Something a session's client should know, in words, with a stable snake_case `code` beside the text (the
    wire's `SessionAccepted.coded_notices`; README, "Notices"). It is the text itself as a `str`."""

    code: str

    def __new__(cls, code: str, text: str) -> Notice:
        notice = super().__new__(cls, text)
        notice.code = code
        return notice


class SessionPipeline:
    """Resampler + segmenter + per-sentence features, for one session."""

    def __init__(
        self,
        extractors: Extractors,
        *,
        sample_rate_hz: int,
        channels: int = 1,
        language: str = DEFAULT_LANGUAGE,
        use_asr: bool = True,
        reads_text: bool = True,
        language_head: LanguageTextHead | None = None,
        settings: PipelineSettings = PipelineSettings(),
        on_stage: StageTimer | None = None,
        resume: ResumePoint | None = None,
        counts: SessionCounts | None = None,
    ) -> None:
        """`reads_text` False: the model does not read this session's language (`checkpoint.text_route`), so its
        sentences are transcribed (the client still gets the text) but carry no text features. `language_head`:
        the session language's own text head (`features.language_head`, for a language the model did not
        learn), whose logit each sentence with text carries.

        `resume` and `counts` continue an earlier pipeline of the same session (a resumed one): the first sample
        pushed is the resume point's `replay_from_sample` on the session's clock, and the segmenter and the
        video schedule go on from it exactly when it is warm, the counts from `counts`. Input at another rate or
        with two channels goes through a resampler whose state is not carried: its resume point starts the
        replay earlier, where a fresh resampler lines up with the old one (`PcmResampler.restart_sample`), and
        the samples before the segmenter's replay are skipped."""
        self.settings = settings
        self.language = language or DEFAULT_LANGUAGE
        self.use_asr = use_asr
        self.reads_text = reads_text
        self.language_head = language_head
        self._extractors = extractors
        self._resampler = PcmResampler(sample_rate_hz, channels)
        self._first_sample = resume.first_sample if resume else 0
        self._skip_samples = resume.segmenter.replay_from_sample - resume.first_sample if resume else 0
        """Samples re-sent before the segmenter's replay (for the face tracker's frames) that it must not get."""
        self._pieces: SentenceInPieces | None = None
        if self.asr_model:
            self._pieces = SentenceInPieces(
                extractors.transcriber,
                self.language,
                extractors.asr_workers,
                settings.segmenter.min_piece_ms,
                self._asr_timer,
                extractors.asr_observer,
            )
        self._transcribe_pieces = True
        """Whether the pieces cut during the current `segment` call may be transcribed."""
        self._segmenter = Segmenter(
            settings.segmenter, self._piece if self._pieces else None, resume.segmenter if resume else None
        )
        self._landmarker: FaceLandmarker | None = None
        self._on_stage = on_stage
        max_sentence_s = settings.segmenter.max_sentence_ms / 1000 + 1
        self._faces: deque[tuple[int, np.ndarray | None]] = deque(maxlen=int(settings.video_fps * max_sentence_s) + 1)
        self._captions: deque[Caption] = deque()
        self._first_video_ms = resume.video_next_ms if resume else 0.0
        self._next_video_ms = self._first_video_ms
        self._analysed_video: deque[tuple[int, bool, bool]] = deque(maxlen=self._faces.maxlen)
        """The latest frames analysed: time, whether the face tracker detected on it, whether it found a face
        (for the video schedule and tracker of a resume point)."""
        self._last_video_ms = -1
        self.sentences = resume.segmenter.index if resume else 0
        self.counts = counts or SessionCounts()

    @property
    def asr_model(self) -> str:
        """The speech recogniser transcribing this session's sentences without captions ("" = captions only)."""
        return self._extractors.transcriber.model_for(self.language) if self.use_asr else ""

    def notices(self) -> list[Notice]:
        """What the client should know about where this session's text comes from."""
        if self._extractors.transcriber.name == "none":
            return [
                Notice(
                    "asr_off",
                    "speech recognition is off on this server: this session's text comes from its captions only",
                )
            ]
        if not self.use_asr or self.asr_model:
            return []
        return [
            Notice(
                "asr_no_language",
                f"no speech recogniser on this server knows language {self.language!r}: this session's text comes "
                "from its captions only",
            )
        ]

    @property
    def sample_rate_hz(self) -> int:
        return self._resampler.sample_rate_hz

    @property
    def channels(self) -> int:
        return self._resampler.channels

    @property
    def first_sample(self) -> int:
        """The sample (16 kHz clock) the first audio pushed to this pipeline starts at: 0, or a resume point's."""
        return self._first_sample

    @property
    def audio_seconds(self) -> float:
        """Media time received by this pipeline (from its resume point's replay), in seconds of the 16 kHz clock."""
        return (self._segmenter.samples_received - self._first_sample - self._skip_samples) / SAMPLE_RATE

    @property
    def media_seconds(self) -> float:
        """Media time of the session so far, on the session's clock."""
        return self._segmenter.samples_received / SAMPLE_RATE

    @contextmanager
    def _stage(self, name: str) -> Iterator[None]:
        start, cpu_start = time.perf_counter(), time.thread_time()
        try:
            yield
        finally:
            if self._on_stage:
                self._on_stage(name, time.perf_counter() - start, time.thread_time() - cpu_start)

    def _asr_timer(self, seconds: float, cpu_seconds: float) -> None:
        if self._on_stage:
            self._on_stage("asr", seconds, cpu_seconds)

    def push_audio(self, data: bytes, transcribe: bool = True) -> list[SentenceResult]:
        """PCM s16le at the session's rate; returns the features of the sentences it closed. `transcribe` False
        (the server sheds ASR under load) leaves the sentences it closes, and the pieces it cuts, untranscribed."""
        results = [
            self._resumable(self.featurize(s, self._take_captions(s), transcribe), s)
            for s in self.segment(data, transcribe=transcribe)
        ]
        self._forget_before(self._segmenter.samples_received - self._segmenter.retained_samples)
        return results

    def segment(self, data: bytes, final: bool = False, transcribe: bool = True) -> list[Sentence]:
        """PCM s16le at the session's rate → the sentences it closed, on the session's clock, not yet
        featurized; `final`: the stream ends with `data` (the open sentence is closed too); `transcribe`: the
        pieces of open sentences it cuts may be transcribed in the background (a sentence's pieces are
        used by `featurize` when it is transcribed)."""
        with self._stage("decode"):
            pcm = self._resampler.push(data)
            if self._skip_samples:
                skipped = min(self._skip_samples, len(pcm))
                pcm, self._skip_samples = pcm[skipped:], self._skip_samples - skipped
            if final:
                pcm = np.concatenate([pcm, self._resampler.flush()])
        self._transcribe_pieces = transcribe
        with self._stage("vad"):
            return self._segmenter.push(pcm) + (self._segmenter.flush() if final else [])

    def _resumable(self, result: SentenceResult, sentence: Sentence) -> SentenceResult:
        """`result` with the point the session goes on from after its sentence, its replay started where a
        fresh resampler lines up with this one."""
        point = self._resume_point(sentence)
        if not self._resampler.passthrough:
            point = replace(point, replay_from_sample=self._resampler.restart_sample(point.first_sample))
        return replace(result, resume=point)

    def _resume_point(self, sentence: Sentence) -> ResumePoint:
        """Where the segmenter and the video schedule go on from after `sentence`."""
        snapshot = sentence.resume
        if snapshot is None:
            snapshot = SegmenterSnapshot.cold(sentence.end_sample, sentence.index + 1, self.settings.segmenter)
        replay_ms = snapshot.replay_from_sample * 1000 / SAMPLE_RATE
        before = [frame for frame in self._analysed_video if frame[0] < replay_ms]
        if not before:
            return ResumePoint(snapshot, self._first_video_ms)
        last_ms, _, tracking = before[-1]
        if not tracking:  # the next frame is detected afresh: the schedule is all there is to carry
            return ResumePoint(snapshot, last_ms + 1000.0 / self.settings.video_fps)
        detected_ms = next((ms for ms, detected, _ in reversed(before) if detected), before[0][0])
        return ResumePoint(snapshot, detected_ms, detected_ms * SAMPLE_RATE // 1000)

    def _forget_before(self, sample: int) -> None:
        """Drop frames and captions older than any sentence still to come (keeps memory bounded)."""
        cutoff_ms = sample * 1000 // SAMPLE_RATE
        while self._faces and self._faces[0][0] < cutoff_ms:
            self._faces.popleft()
        while self._captions and self._captions[0].end_ms <= cutoff_ms:
            self._captions.popleft()

    def finish(self, transcribe: bool = True) -> list[SentenceResult]:
        """End of stream: drain the resampler and close the open sentence."""
        closed = self.segment(b"", final=True, transcribe=transcribe)
        results = [self._resumable(self.featurize(s, self._take_captions(s), transcribe), s) for s in closed]
        if self._pieces is not None:
            self._pieces.forget(self._segmenter.samples_received)
        return results

    def _piece(self, piece: Piece) -> None:
        """A piece of the open sentence was cut: transcribe it in the background unless ASR is shed or a
        caption already covers it (the caption will be the sentence's text)."""
        assert self._pieces is not None
        start_ms, end_ms = piece.start_sample * 1000 // SAMPLE_RATE, piece.end_sample * 1000 // SAMPLE_RATE
        captioned = any(c.start_ms < end_ms and c.end_ms > start_ms for c in self._captions)
        self._pieces.add(piece, self._transcribe_pieces and not captioned)

    def push_video(self, timestamp_ms: int, image: Image) -> bool:
        """Analyse a frame if one is due at `video_fps` (an encoded one is decoded only then); returns False when
        it was skipped as surplus.

        Raises ValueError (naming the problem) for a corrupt image or a timestamp that goes backwards; such
        frames are counted in `counts.dropped_video_frames`.
        """
        try:
            return self._analyse_frame(timestamp_ms, image)
        except ValueError:
            self.counts.dropped_frame()
            raise

    def _analyse_frame(self, timestamp_ms: int, image: Image) -> bool:
        if timestamp_ms < 0:
            raise ValueError(f"video frame timestamp_ms={timestamp_ms} is negative")
        if timestamp_ms < self._last_video_ms:
            raise ValueError(
                f"video frame timestamp_ms={timestamp_ms} is earlier than the previous frame's "
                f"({self._last_video_ms}): send frames in time order"
            )
        self._last_video_ms = timestamp_ms
        if timestamp_ms < self._next_video_ms:
            return False
        with self._stage("decode"):
            grey = grey_pixels(image)
        with self._stage("features_video"):
            if self._landmarker is None:
                self._landmarker = FaceLandmarker()
            detections = self._landmarker.detections
            landmarks = self._landmarker.landmarks(grey)
        self._next_video_ms = timestamp_ms + 1000.0 / self.settings.video_fps
        self._analysed_video.append((timestamp_ms, self._landmarker.detections > detections, landmarks is not None))
        self._faces.append((timestamp_ms, landmarks))
        return True

    def push_caption(self, start_ms: int, end_ms: int, text: str) -> None:
        """Hold a caption for the sentence(s) it overlaps; an invalid one raises ValueError and is counted."""
        try:
            self._hold_caption(start_ms, end_ms, text)
        except ValueError:
            self.counts.dropped_caption()
            raise

    def _hold_caption(self, start_ms: int, end_ms: int, text: str) -> None:
        caption = checked_caption(start_ms, end_ms, text, self.settings.max_caption_chars)
        if len(self._captions) >= self.settings.max_pending_captions:
            self._captions.popleft()
            self.counts.dropped_caption()
        self._captions.append(caption)

    def _take_faces(self, sentence: Sentence) -> tuple[np.ndarray, int]:
        while self._faces and self._faces[0][0] < sentence.start_ms:
            self._faces.popleft()
        frames = [landmarks for ts, landmarks in self._faces if ts <= sentence.end_ms]
        while self._faces and self._faces[0][0] <= sentence.end_ms:
            self._faces.popleft()
        faces = [f for f in frames if f is not None]
        stacked = np.stack(faces) if faces else np.zeros((0, FaceLandmarker.DIM), dtype=np.float32)
        return stacked, len(frames)

    def _take_captions(self, sentence: Sentence) -> str:
        spans = [c for c in self._captions if c.start_ms < sentence.end_ms and c.end_ms > sentence.start_ms]
        while self._captions and self._captions[0].end_ms <= sentence.end_ms:
            self._captions.popleft()
        return " ".join(c.text for c in spans)

    def _text(
        self, sentence: Sentence, caption: str, transcribe: bool
    ) -> tuple[np.ndarray | None, str, str, float, float | None]:
        transcript, source, confidence = caption, "caption", 1.0
        if not transcript and self.use_asr and transcribe:
            if self._pieces is not None:
                heard = self._pieces.close(sentence)  # times its transcriptions as the asr stage itself
            else:
                with self._stage("asr"):
                    heard = self._extractors.transcriber.transcribe(sentence.pcm, self.language)
            transcript, source, confidence = heard.text.strip(), "asr", heard.confidence
        elif self._pieces is not None:
            self._pieces.forget(sentence.start_sample)
        if not transcript:
            return None, "", "", 0.0, None
        text, logit = None, None
        if not self.reads_text and self.language_head is None:
            return text, transcript, source, confidence, logit
        with self._stage("text_embed"):
            if self.reads_text:
                text = self._extractors.text.features([transcript])[0]
            if self.language_head is not None:
                logit = float(self.language_head.logits([transcript])[0])
        return text, transcript, source, confidence, logit

    def featurize(self, sentence: Sentence, caption: str = "", transcribe: bool = True) -> SentenceResult:
        """The features of one closed sentence (on the session's clock) whose caption is `caption` ("" = none:
        then ASR transcribes it when this session uses ASR and `transcribe` allows); the video frames pushed
        inside its span are used up."""
        closed_at = time.perf_counter()
        with self._stage("features_audio"):
            audio = self._extractors.audio.extract(sentence.pcm)
            integrity = audio_integrity(sentence.pcm, self.sample_rate_hz)
        video, video_frames = self._take_faces(sentence)
        text, transcript, source, confidence, language_text_logit = self._text(sentence, caption, transcribe)
        features = SentenceFeatures(
            index=sentence.index,
            start_ms=sentence.start_ms,
            end_ms=sentence.end_ms,
            speech_ms=sentence.speech_ms,
            snr_db=sentence.snr_db,
            audio=audio,
            video=video,
            video_frames=video_frames,
            text=text,
            transcript=transcript,
            transcript_source=source,
            text_confidence=confidence,
            audio_integrity=integrity.factor,
            language_text_logit=language_text_logit,
            language_text_head=self.language_head.language if self.language_head is not None else "",
        )
        self.sentences += 1
        return SentenceResult(features=features, closed_at=closed_at)
