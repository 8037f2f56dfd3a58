"""Audio that lies: clipped speech and 8 kHz speech declared at 48 kHz lower the audio quality, the gate's
audio weight and the evidence, on real recordings against their clean originals."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from av.audio.resampler import AudioResampler

from depscreen.engine.features.audio import AudioIntegrity, audio_integrity
from depscreen.engine.features.sentence import SentenceFeatures
from depscreen.engine.pipeline import Extractors, SessionPipeline
from depscreen.engine.runtime.checkpoint import DEMO_MODEL
from depscreen.engine.runtime.screener import RunningEstimate, Screener

SPEECH = Path(__file__).resolve().parents[2] / "shared" / "data" / "speech"
CODEC2 = SPEECH / "codec2" / "ve9qrp.wav"  # 112 s of free speech recorded at 8 kHz
HONEST_16K = [
    SPEECH / "arctic" / "arctic_a0007.wav",
    SPEECH / "librivox" / "sense_and_sensibility_01_austen_64kb-0870.wav",
    SPEECH / "ljspeech" / "LJ050-0131.wav",
    SPEECH / "jfk" / "jfk.flac",
    SPEECH / "ami_train" / "trn06.wav",
]


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real test data {path} is absent (the shared data folder sits beside the project)")
    return path


def _pcm_at(path: Path, rate: int) -> np.ndarray:
    """Decode and resample to mono s16 at `rate`, as a platform would send it."""
    resampler = AudioResampler(format="s16", layout="mono", rate=rate)
    parts = []
    with av.open(str(_need(path))) as container:
        for frame in container.decode(audio=0):
            frame.pts = None
            parts.extend(out.to_ndarray()[0] for out in resampler.resample(frame))
    parts.extend(out.to_ndarray()[0] for out in resampler.resample(None))
    return np.concatenate(parts).astype(np.int16)


def _clipped(pcm: np.ndarray, gain: float = 8.0) -> np.ndarray:
    """Speech driven `gain` times louder into the int16 rails (an input gain set far too high)."""
    return np.clip(pcm.astype(np.float64) * gain, -32768, 32767).astype(np.int16)


@pytest.fixture(scope="module")
def extractors() -> Extractors:
    return Extractors.load(asr="none")


@pytest.fixture(scope="module")
def screener() -> Screener:
    return Screener.from_checkpoint(DEMO_MODEL, "cpu")


def _session(extractors: Extractors, screener: Screener, pcm: np.ndarray, rate: int) -> tuple[list, RunningEstimate]:
    pipeline = SessionPipeline(extractors, sample_rate_hz=rate, use_asr=False)
    features = [r.features for r in pipeline.push_audio(pcm.tobytes()) + pipeline.finish()]
    assert features
    track = screener.new_session()
    estimates = [screener.step(track, f) for f in features]
    return features, estimates[-1]


def _gate_audio_quality(estimate: RunningEstimate) -> float:
    """The audio quality the fusion gate was given for the last sentence."""
    return next(m.quality for m in estimate.modalities if m.modality == "audio")


def test_8khz_speech_declared_at_48khz_is_discounted(extractors: Extractors, screener: Screener) -> None:
    seconds = 45
    honest, honest_estimate = _session(extractors, screener, _pcm_at(CODEC2, 8000)[: seconds * 8000], 8000)
    lying, lying_estimate = _session(extractors, screener, _pcm_at(CODEC2, 48000)[: seconds * 48000], 48000)
    assert len(honest) >= 3
    assert [f.speech_ms for f in lying] == [f.speech_ms for f in honest]  # the same sentences
    assert all(f.audio_integrity == 1.0 for f in honest)  # declared at its true rate: nothing to discount
    for true, false in zip(honest, lying, strict=True):
        assert 0.45 <= false.audio_integrity <= 0.65  # content fills ~4.4 of the 8 kHz the rate promises
        assert false.audio_quality <= 0.65 * true.audio_quality
    assert lying_estimate.evidence < 0.75 * honest_estimate.evidence
    assert _gate_audio_quality(lying_estimate) == pytest.approx(lying[-1].audio_quality)
    assert _gate_audio_quality(lying_estimate) <= 0.65 * _gate_audio_quality(honest_estimate)


@pytest.mark.parametrize("rate", [16000, 48000])
def test_clipped_speech_is_discounted(extractors: Extractors, screener: Screener, rate: int) -> None:
    for path in HONEST_16K[:2]:
        clean, clean_estimate = _session(extractors, screener, _pcm_at(path, rate), rate)
        clipped, clipped_estimate = _session(extractors, screener, _clipped(_pcm_at(path, rate)), rate)
        assert [f.audio_integrity for f in clean] == [1.0] * len(clean)
        assert sum(f.audio_quality for f in clipped) <= 0.3 * sum(f.audio_quality for f in clean)
        assert clipped_estimate.evidence <= 0.3 * clean_estimate.evidence
        assert _gate_audio_quality(clipped_estimate) <= 0.3 * _gate_audio_quality(clean_estimate)


def test_honest_recordings_are_not_discounted() -> None:
    """Real speech at its own rate (studio, audiobook, 1961 broadcast, far-field meeting), declared as 48 kHz
    after upsampling: nothing is clipped and no band edge is found."""
    for path in HONEST_16K:
        pcm = _pcm_at(path, 16000)
        for start in range(0, len(pcm) - 48000, 48000):
            integrity = audio_integrity(pcm[start : start + 48000], 48000)
            assert integrity == AudioIntegrity(integrity.clipped_fraction, 8000.0, 8000.0), path.name
            assert integrity.factor == 1.0, path.name


def test_integrity_without_a_measure_keeps_quality() -> None:
    """Features built without a measure (training utterances, old caches) keep the SNR quality."""
    features = SentenceFeatures(
        0, 0, 1000, 1000, 15.0, np.zeros((96, 25), np.float32), np.zeros((0, 136), np.float32), 0, None, "", "", 0.0
    )
    assert features.audio_quality == 0.5
