"""Recorded interviews → sentence features through the live SessionPipeline (segmenter + extractors).

A dataset recording is streamed through the same `SessionPipeline` a live session uses, and every sentence's
features come from its one factory (`SessionPipeline.featurize`), so a model trains on exactly the features
it will see live. Several answers of one volunteer become one session: they are played back to back with
`GAP_MS` of digital silence between them (never speech, so it closes a sentence and does not move the noise
floor). The stream is segmented once; with human text, each answer's untimed transcript is then spread over
the sentences found in it (`align.align_transcript`) and given to `featurize` as those sentences' captions.

Datasets with timed utterances (DAIC-WOZ, E-DAIC) skip the segmenter: each utterance is one sentence, its
audio cut from the recording by the transcript's times and featurized by the same factory with its text as
caption; its speech time is its length and its SNR is taken as full quality (the corpus does not say;
`UTTERANCE_SNR_DB`).

Text comes from the dataset's human transcripts (`text="human"`) or, as a live session without captions
would get it, from the live ASR stage in the dataset's language (`text="asr"`: the transcripts are not
read). The cache key names which, and for ASR the models and decoding code (`cache.extractor_version`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from depscreen.engine.features.sentence import SNR_FOR_FULL_QUALITY_DB, SentenceFeatures
from depscreen.engine.media import SAMPLE_RATE, decode_audio_file
from depscreen.engine.pipeline import Caption, Extractors, PipelineSettings, SessionPipeline
from depscreen.engine.segment import Sentence
from depscreen.engine.train.align import align_transcript
from depscreen.engine.train.cache import FeatureCache, content_key, extractor_version

GAP_MS = 1000
"""Silence between two answers of one session."""
UTTERANCE_SNR_DB = SNR_FOR_FULL_QUALITY_DB
UTTERANCES_VERSION = 2
"""Part of the timed-utterance cache key, bumped when that path changes (2: audio integrity measured as live
sessions measure it, captions whitespace-normalised, text embedded per sentence)."""
TEXT_SOURCES = ("human", "asr")
"""Where a dataset's sentence text comes from: its human transcripts, or the live ASR stage."""
TRAINING_ASR = "whisper"
"""The `--asr` models that transcribe with `text="asr"`: all of them, routed by language as live."""


@dataclass(frozen=True)
class Recording:
    """One answer: its audio file and its untimed transcript (None when there is none)."""

    audio: Path
    transcript: str | None = None


class InterviewFeaturizer:
    """Turns a volunteer's recorded answers into one session's sentence features, with a cache."""

    def __init__(
        self,
        text_encoder: str,
        cache: FeatureCache | None = None,
        language: str = "zh",
        settings: PipelineSettings | None = None,
        text: str = "human",
    ) -> None:
        if text not in TEXT_SOURCES:
            raise ValueError(f"unknown text source {text!r}: use one of {', '.join(TEXT_SOURCES)}")
        self.text_encoder = text_encoder
        self.language = language
        self.settings = settings or PipelineSettings()
        self.cache = cache
        self.text = text
        self._extractors: Extractors | None = None
        self.stage_cpu_s: dict[str, float] = {}
        """CPU seconds per pipeline stage (`pipeline.StageTimer`) of the features made here (not cache hits)."""
        self.sentence_audio_s = 0.0
        """Seconds of sentence audio featurized here (not cache hits)."""
        self._version = extractor_version(
            text_encoder, self.settings.segmenter, asr=TRAINING_ASR if text == "asr" else None
        )

    @property
    def transcribes(self) -> bool:
        """Whether sentence text comes from the ASR stage rather than the dataset's transcripts."""
        return self.text == "asr"

    @property
    def extractors(self) -> Extractors:
        """Loaded on first use, so a run that hits the cache everywhere loads no feature model."""
        if self._extractors is None:
            self._extractors = Extractors.load(
                asr=TRAINING_ASR if self.transcribes else "none", text_encoder=self.text_encoder
            )
        return self._extractors

    def _pipeline(self) -> SessionPipeline:
        return SessionPipeline(
            self.extractors,
            sample_rate_hz=SAMPLE_RATE,
            language=self.language,
            use_asr=self.transcribes,
            settings=self.settings,
            on_stage=self._count,
        )

    def _count(self, stage: str, _: float, cpu_s: float) -> None:
        self.stage_cpu_s[stage] = self.stage_cpu_s.get(stage, 0.0) + cpu_s

    def session(self, recordings: list[Recording]) -> list[SentenceFeatures]:
        """Sentence features of the recordings played one after another (from the cache when present)."""
        texts = [("" if self.transcribes else r.transcript or "") for r in recordings]
        key = content_key([r.audio for r in recordings], self._version + "".join(f"|{GAP_MS}|{t}" for t in texts))
        if self.cache is not None and (cached := self.cache.load(key)) is not None:
            return cached
        sentences = self._extract(recordings)
        if self.cache is not None:
            self.cache.store(key, sentences)
        return sentences

    def _extract(self, recordings: list[Recording]) -> list[SentenceFeatures]:
        gap = np.zeros(GAP_MS * SAMPLE_RATE // 1000, dtype=np.int16)
        parts, bounds, position = [], [], 0
        for recording in recordings:
            pcm = decode_audio_file(recording.audio)
            if not len(pcm):
                raise ValueError(f"{recording.audio} decodes to no audio: replace it with a readable recording")
            parts += [pcm, gap]
            bounds.append((position, position + len(pcm)))
            position += len(pcm) + len(gap)
        stream = np.concatenate(parts) if parts else np.zeros(0, dtype=np.int16)
        pipeline = self._pipeline()
        sentences = pipeline.segment(stream.tobytes(), final=True)
        captions = {} if self.transcribes else _spread_transcripts(recordings, bounds, sentences)
        self.sentence_audio_s += sum(len(s.pcm) for s in sentences) / SAMPLE_RATE
        return [pipeline.featurize(s, captions.get(s.index, "")).features for s in sentences]

    def utterances(self, audio: Path, transcript: Path, utterances: list[Caption]) -> list[SentenceFeatures]:
        """One sentence per timed utterance of `audio` (from the cache when present)."""
        key = content_key([audio, transcript], self._version + f"|utterances|{UTTERANCES_VERSION}")
        if self.cache is not None and (cached := self.cache.load(key)) is not None:
            return cached
        pcm = decode_audio_file(audio)
        if not len(pcm):
            raise ValueError(f"{audio} decodes to no audio: replace it with a readable recording")
        pipeline = self._pipeline()
        spans = [(u, u.start_ms * SAMPLE_RATE // 1000, u.end_ms * SAMPLE_RATE // 1000) for u in utterances]
        kept = [(u, start, end) for u, start, end in spans if len(pcm[start:end]) >= self.extractors.audio.MIN_SAMPLES]
        sentences = [
            pipeline.featurize(
                Sentence(
                    index=i,
                    start_ms=u.start_ms,
                    end_ms=u.end_ms,
                    start_sample=start,
                    end_sample=start + len(pcm[start:end]),
                    pcm=pcm[start:end],
                    speech_ms=u.end_ms - u.start_ms,
                    snr_db=UTTERANCE_SNR_DB,
                ),
                "" if self.transcribes else " ".join(u.text.split()),
            ).features
            for i, (u, start, end) in enumerate(kept)
        ]
        self.sentence_audio_s += sum((end - start) / SAMPLE_RATE for _, start, end in kept)
        if self.cache is not None:
            self.cache.store(key, sentences)
        return sentences


def _spread_transcripts(
    recordings: list[Recording], bounds: list[tuple[int, int]], sentences: list[Sentence]
) -> dict[int, str]:
    """Caption per sentence index: each answer's transcript spread over the sentences whose middle lies in it."""
    captions: dict[int, str] = {}
    for recording, (start, end) in zip(recordings, bounds, strict=True):
        inside = [s for s in sentences if start <= (s.start_sample + s.end_sample) // 2 < end]
        if recording.transcript and inside:
            spread = align_transcript(recording.transcript, [s.speech_ms for s in inside])
            captions.update((s.index, caption) for s, caption in zip(inside, spread, strict=True) if caption)
    return captions
