"""SentenceFeatures: everything the model needs about one closed sentence, and what its update reports."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from depscreen.engine.modalities import MODALITIES

SNR_FOR_FULL_QUALITY_DB = 30.0
"""Speech this far above the noise floor counts as perfect audio quality; 0 dB counts as none."""


@dataclass(frozen=True)
class SentenceFeatures:
    """Features of one sentence; a modality is available when it has at least one usable frame or text.

    Each modality of `engine.modalities` is the field of its name (audio, video, text)."""

    index: int
    start_ms: int
    end_ms: int
    speech_ms: int
    """Milliseconds the segmenter judged speech inside the sentence."""
    snr_db: float
    audio: np.ndarray
    """`[frames, audio dim]` eGeMAPS LLDs at 10 ms."""
    video: np.ndarray
    """`[faces, video dim]` normalised landmarks of the sampled frames in which a face was found."""
    video_frames: int
    """Sampled video frames inside the sentence, with or without a face."""
    text: np.ndarray | None
    """`[text dim]` sentence embedding + PHQ-8 similarities, or None when there was no text."""
    transcript: str
    transcript_source: str
    """"caption", "asr" or "" (no text)."""
    text_confidence: float
    """1 for the platform's captions; the ASR confidence otherwise."""
    audio_integrity: float = 1.0
    """0..1 factor on the audio quality for samples that cannot be trusted: clipping, and content narrower than
    the declared sample rate carries (`features.audio.AudioIntegrity.factor`); 1 when not measured."""
    language_text_logit: float | None = None
    """The logit of the transcript under its language's own text head (`features.language_head`), for a session
    whose language the model's text pathway did not learn or whose estimate stacks it; None otherwise or without
    text."""
    language_text_head: str = ""
    """The language of the head that made `language_text_logit` ("" with none)."""

    @property
    def audio_quality(self) -> float:
        """Speech level above the noise floor, scaled so that 30 dB or more is 1, times the audio integrity."""
        return float(np.clip(self.snr_db / SNR_FOR_FULL_QUALITY_DB, 0.0, 1.0)) * self.audio_integrity

    @property
    def video_quality(self) -> float:
        """Fraction of the sampled frames in which a face was found."""
        return len(self.video) / self.video_frames if self.video_frames else 0.0

    @property
    def symptom_similarity(self) -> np.ndarray | None:
        """The 8 PHQ-8 item similarities of the text, or None without text."""
        return None if self.text is None else self.text[-8:]

    @property
    def available(self) -> tuple[bool, ...]:
        """Per modality, in `MODALITIES` order."""
        return tuple(m.present(self) for m in MODALITIES)

    @property
    def quality(self) -> tuple[float, ...]:
        """Per modality, in `MODALITIES` order."""
        return tuple(m.quality(self) for m in MODALITIES)
