"""Recorded interviews → sentence features through the live SessionPipeline (segmenter + extractors).

A dataset recording is streamed through the same `SessionPipeline` a live session uses, so a model trains
on exactly the features it will see live. Several answers of one volunteer become one session: they are
played back to back with `GAP_MS` of digital silence between them (never speech, so it closes a sentence
and does not move the noise floor). Untimed transcripts are spread over the sentences found
(`align.align_transcript`) and pushed as platform captions with each sentence's span.

Datasets with timed utterances (DAIC-WOZ, E-DAIC) skip the segmenter: each utterance is one sentence, its
audio cut from the recording by the transcript's times and run through the same extractors; its speech time
is its length and its audio quality is taken as full (the corpus does not say; `UTTERANCE_SNR_DB`).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from depscreen.engine.features.sentence import SNR_FOR_FULL_QUALITY_DB, SentenceFeatures
from depscreen.engine.media import SAMPLE_RATE, decode_audio_file
from depscreen.engine.modalities import modality
from depscreen.engine.pipeline import Extractors, PipelineSettings, SessionPipeline
from depscreen.engine.segment import segment_pcm
from depscreen.engine.train.align import align_transcript
from depscreen.engine.train.cache import FeatureCache, content_key, extractor_version

GAP_MS = 1000
"""Silence between two answers of one session."""
UTTERANCE_SNR_DB = SNR_FOR_FULL_QUALITY_DB


@dataclass(frozen=True)
class Utterance:
    """One timed utterance of a transcript."""

    start_ms: int
    end_ms: int
    text: str


@dataclass(frozen=True)
class Recording:
    """One answer: its audio file and its untimed transcript (None when there is none)."""

    audio: Path
    transcript: str | None = None
    transcript_file: Path | None = None


class InterviewFeaturizer:
    """Turns a volunteer's recorded answers into one session's sentence features, with a cache."""

    def __init__(
        self,
        text_encoder: str,
        cache: FeatureCache | None = None,
        language: str = "zh",
        settings: PipelineSettings | None = None,
    ) -> None:
        self.text_encoder = text_encoder
        self.language = language
        self.settings = settings or PipelineSettings()
        self.cache = cache
        self._extractors: Extractors | None = None
        self._version = extractor_version(text_encoder, self.settings.segmenter)

    @property
    def extractors(self) -> Extractors:
        """Loaded on first use, so a run that hits the cache everywhere loads no feature model."""
        if self._extractors is None:
            self._extractors = Extractors(asr="none", text_encoder=self.text_encoder)
        return self._extractors

    def session(self, recordings: list[Recording]) -> list[SentenceFeatures]:
        """Sentence features of the recordings played one after another (from the cache when present)."""
        key = content_key(
            [r.audio for r in recordings],
            self._version + "".join(f"|{GAP_MS}|{r.transcript or ''}" for r in recordings),
        )
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
        spans = segment_pcm(stream, self.settings.segmenter)
        pipeline = SessionPipeline(
            self.extractors, sample_rate_hz=SAMPLE_RATE, language=self.language, use_asr=False, settings=self.settings
        )
        for recording, (start, end) in zip(recordings, bounds, strict=True):
            inside = [s for s in spans if start <= (s.start_sample + s.end_sample) // 2 < end]
            if not recording.transcript or not inside:
                continue
            captions = align_transcript(recording.transcript, [s.speech_ms for s in inside])
            for sentence, caption in zip(inside, captions, strict=True):
                if caption:
                    pipeline.push_caption(sentence.start_ms, sentence.end_ms, caption)
        results = pipeline.push_audio(stream.tobytes()) + pipeline.finish()
        return [r.features for r in results]

    def utterances(self, audio: Path, transcript: Path, utterances: list[Utterance]) -> list[SentenceFeatures]:
        """One sentence per timed utterance of `audio` (from the cache when present)."""
        key = content_key([audio, transcript], self._version + "|utterances")
        if self.cache is not None and (cached := self.cache.load(key)) is not None:
            return cached
        pcm = decode_audio_file(audio)
        if not len(pcm):
            raise ValueError(f"{audio} decodes to no audio: replace it with a readable recording")
        kept = [
            u
            for u in utterances
            if len(pcm[u.start_ms * SAMPLE_RATE // 1000 : u.end_ms * SAMPLE_RATE // 1000])
            >= self.extractors.audio.MIN_SAMPLES
        ]
        texts = self.extractors.text.features([u.text for u in kept]) if kept else []
        sentences = [
            SentenceFeatures(
                index=i,
                start_ms=u.start_ms,
                end_ms=u.end_ms,
                speech_ms=u.end_ms - u.start_ms,
                snr_db=UTTERANCE_SNR_DB,
                audio=self.extractors.audio.extract(
                    pcm[u.start_ms * SAMPLE_RATE // 1000 : u.end_ms * SAMPLE_RATE // 1000]
                ),
                video=modality("video").absent(modality("video").dim),
                video_frames=0,
                text=texts[i] if u.text.strip() else None,
                transcript=u.text,
                transcript_source="caption" if u.text.strip() else "",
                text_confidence=1.0 if u.text.strip() else 0.0,
            )
            for i, u in enumerate(kept)
        ]
        if self.cache is not None:
            self.cache.store(key, sentences)
        return sentences
