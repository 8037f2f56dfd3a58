"""SessionPipeline on real media: chunking invariance, prefix parity, determinism, captions, bad frames."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import pytest
from av.audio.resampler import AudioResampler

from depscreen.clients.media import MediaSource
from depscreen.clients.resumable import ReplayBuffer
from depscreen.engine.features.face import EncodedImage
from depscreen.engine.features.sentence import SentenceFeatures
from depscreen.engine.media import decode_audio_file
from depscreen.engine.pipeline import Extractors, ResumePoint, SentenceResult, SessionPipeline
from depscreen.engine.runtime.checkpoint import DEMO_MODEL
from depscreen.engine.runtime.screener import RunningEstimate, Screener
from depscreen.engine.segment import SegmenterSettings
from depscreen.v1 import screening_pb2 as pb

from .conftest import FIXTURES, SAMPLE, with_speaker_normalisation


@pytest.fixture(scope="module")
def screener() -> Screener:
    return Screener.from_checkpoint(DEMO_MODEL, "cpu")


@pytest.fixture(scope="module")
def screeners(screener: Screener) -> tuple[Screener, Screener]:
    """The demo model as shipped and with speaker normalisation (state-dependent audio encoding)."""
    return screener, Screener(with_speaker_normalisation(screener.model), screener.facts, screener.device)


@pytest.fixture(scope="module")
def extractors() -> Extractors:
    return Extractors.load(asr="none")


def pcm_at(path: Path, rate: int, channels: int) -> bytes:
    """Decode a file to interleaved s16le at `rate` and `channels`, as a platform would send it."""
    layout = "mono" if channels == 1 else "stereo"
    resampler = AudioResampler(format="s16", layout=layout, rate=rate)
    parts = []
    with av.open(str(path)) as container:
        for frame in container.decode(audio=0):
            frame.pts = None
            parts.extend(out.to_ndarray().tobytes() for out in resampler.resample(frame))
    parts.extend(out.to_ndarray().tobytes() for out in resampler.resample(None))
    return b"".join(parts)


@dataclass(frozen=True)
class Scored:
    features: SentenceFeatures
    estimate: RunningEstimate


def scored(screener: Screener, results: list[SentenceResult]) -> list[Scored]:
    """One model step per closed sentence, in order, as the server does for one session."""
    track = screener.new_session()
    return [Scored(r.features, screener.step(track, r.features)) for r in results]


def run_audio(pipeline: SessionPipeline, data: bytes, chunk_bytes: int) -> list[SentenceResult]:
    results = []
    for start in range(0, len(data), chunk_bytes):
        results.extend(pipeline.push_audio(data[start : start + chunk_bytes]))
    return results + pipeline.finish()


def run_media(pipeline: SessionPipeline, path: Path, chunk_ms: int) -> list[SentenceResult]:
    """Feed a media file's audio and JPEG frames in time order, as a client sends them."""
    results: list[SentenceResult] = []
    with MediaSource(path) as source:
        for timed in source.messages(chunk_ms=chunk_ms):
            message = timed.message
            kind = message.WhichOneof("kind")
            if kind == "audio":
                results.extend(pipeline.push_audio(message.audio.data))
            elif kind == "video":
                pipeline.push_video(message.video.timestamp_ms, EncodedImage(message.video.image, "jpeg"))
    return results + pipeline.finish()


def summary(results: list[Scored]) -> list[tuple]:
    """Everything a client sees of the results, for exact comparison."""
    return [
        (
            r.features.index,
            r.features.start_ms,
            r.features.end_ms,
            r.features.transcript,
            r.features.video_frames,
            len(r.features.video),
            r.estimate,
        )
        for r in results
    ]


@pytest.mark.parametrize(("rate", "channels"), [(16_000, 1), (48_000, 2), (8_000, 1)])
def test_chunking_invariance_audio(
    screeners: tuple[Screener, Screener], extractors: Extractors, rate: int, channels: int
) -> None:
    data = pcm_at(FIXTURES / "jfk.flac", rate, channels)
    ten_ms = rate * channels * 2 // 100
    results = [
        run_audio(SessionPipeline(extractors, sample_rate_hz=rate, channels=channels), data, size)
        for size in (ten_ms, 50 * ten_ms, 7 * ten_ms + 2 * channels)
    ]
    for screener in screeners:
        runs = [scored(screener, sentences) for sentences in results]
        assert len(runs[0]) >= 2, "JFK's excerpt has several sentences"
        assert summary(runs[0]) == summary(runs[1]) == summary(runs[2])


def test_chunking_invariance_with_video(screeners: tuple[Screener, Screener], extractors: Extractors) -> None:
    results = [
        run_media(SessionPipeline(extractors, sample_rate_hz=16_000), SAMPLE, chunk_ms) for chunk_ms in (10, 500)
    ]
    for screener in screeners:
        assert summary(scored(screener, results[0])) == summary(scored(screener, results[1]))
    assert len(results[0]) >= 8, "the sample joins 11 spoken clips"
    with_faces = [r for r in results[0] if r.features.available[1]]
    assert len(with_faces) >= 0.8 * len(results[0])
    assert all(r.features.video_quality > 0.5 for r in with_faces)


def test_prefix_parity_on_real_features(screeners: tuple[Screener, Screener], extractors: Extractors) -> None:
    sentences = run_media(SessionPipeline(extractors, sample_rate_hz=16_000), SAMPLE, 100)
    for screener in screeners:
        results = scored(screener, sentences)
        offline = screener.offline([r.features for r in results])
        for streamed, reference in zip(results, offline, strict=True):
            assert streamed.estimate.probability == pytest.approx(reference.probability, abs=1e-5)
            for a, b in zip(streamed.estimate.modalities, reference.modalities, strict=True):
                assert (a.available, a.quality) == (b.available, b.quality)
                assert a.weight == pytest.approx(b.weight, abs=1e-5)
                assert a.probability == pytest.approx(b.probability, abs=1e-5)


def test_same_input_twice_gives_the_same_output(screener: Screener, extractors: Extractors) -> None:
    data = pcm_at(FIXTURES / "jfk.flac", 16_000, 1)
    first = scored(screener, run_audio(SessionPipeline(extractors, sample_rate_hz=16_000), data, 3200))
    second = scored(screener, run_audio(SessionPipeline(extractors, sample_rate_hz=16_000), data, 3200))
    assert summary(first) == summary(second)


def test_captions_become_the_transcript(screener: Screener, extractors: Extractors) -> None:
    pipeline = SessionPipeline(extractors, sample_rate_hz=16_000)
    pcm = decode_audio_file(FIXTURES / "jfk.flac")
    pipeline.push_caption(0, 11_000, "And so, my fellow Americans, ask not what your country can do for you")
    results = run_audio(pipeline, pcm.tobytes(), 3200)
    assert results[0].features.transcript_source == "caption"
    assert "fellow Americans" in results[0].features.transcript
    assert results[0].features.available[2]
    assert results[0].features.text_confidence == 1.0


def test_invalid_captions_and_frames_are_counted_not_fatal(screener: Screener, extractors: Extractors) -> None:
    pipeline = SessionPipeline(extractors, sample_rate_hz=16_000)
    with pytest.raises(ValueError, match="empty or negative"):
        pipeline.push_caption(500, 100, "backwards")
    with pytest.raises(ValueError, match="exceeds"):
        pipeline.push_caption(0, 100, "x" * 5000)
    with pytest.raises(ValueError, match=r"corrupt|JPEG"):
        pipeline.push_video(0, EncodedImage(b"\xff\xd8 not really a jpeg \xff\xd9", "jpeg"))
    grey = np.full((48, 64, 3), 128, dtype=np.uint8)
    assert pipeline.push_video(1000, EncodedImage(grey.tobytes(), "rgb24", 64, 48))
    with pytest.raises(ValueError, match="earlier"):
        pipeline.push_video(500, grey)
    with pytest.raises(ValueError, match=r"uint8 \[height, width, 3\]"):
        pipeline.push_video(2000, grey[:, :, 0])
    assert pipeline.push_video(3000, grey), "pixels are analysed as they are"
    assert pipeline.counts.dropped_captions == 2
    assert pipeline.counts.dropped_video_frames == 3
    results = run_audio(pipeline, decode_audio_file(FIXTURES / "jfk.flac").tobytes(), 3200)
    assert results, "the interview goes on after bad input"


def test_frame_buffer_stays_bounded_without_sentences(screener: Screener, extractors: Extractors) -> None:
    pipeline = SessionPipeline(extractors, sample_rate_hz=16_000)
    rgb = np.zeros((48, 64, 3), dtype=np.uint8)
    for k in range(2000):
        pipeline.push_video(k * 200, rgb)
        if k % 10 == 0:
            pipeline.push_audio(np.zeros(32_000, dtype=np.int16).tobytes())
    assert len(pipeline._faces) <= pipeline._faces.maxlen
    assert pipeline._faces.maxlen < 200


def test_a_cold_resumed_pipeline_continues_the_session_clock(extractors: Extractors) -> None:
    """A pipeline resumed cold at 60 s (a snapshot without a resume point) numbers and times its sentences on
    the session's clock, and matches captions and frames sent on that clock."""
    pcm = decode_audio_file(FIXTURES / "jfk.flac").tobytes()
    fresh = run_audio(SessionPipeline(extractors, sample_rate_hz=16_000), pcm, 3200)
    cold = ResumePoint.cold(60 * 16_000, 7, SegmenterSettings())
    resumed = SessionPipeline(extractors, sample_rate_hz=16_000, resume=cold)
    resumed.push_caption(60_000, 71_000, "ask not what your country can do for you")
    moved = run_audio(resumed, pcm, 3200)
    assert [r.features.index for r in moved] == [7 + r.features.index for r in fresh]
    assert [(r.features.start_ms, r.features.end_ms) for r in moved] == [
        (60_000 + r.features.start_ms, 60_000 + r.features.end_ms) for r in fresh
    ]
    assert moved[0].features.transcript_source == "caption"
    assert resumed.sentences == 7 + len(fresh)
    assert resumed.media_seconds == pytest.approx(60 + len(pcm) / 32_000)
    assert resumed.audio_seconds == pytest.approx(len(pcm) / 32_000)


def features_of(result: SentenceResult) -> tuple:
    f = result.features
    return (f.index, f.start_ms, f.end_ms, f.speech_ms, f.snr_db, f.audio.tobytes(), f.video_frames, f.video.tobytes())


def test_a_pipeline_resumed_after_any_sentence_gives_the_same_features(extractors: Extractors) -> None:
    """Resumed from the resume point of each sentence of the sample (audio and video), fed what the client's
    replay buffer re-sends from its `first_sample`, a new pipeline gives the uninterrupted run's later
    sentences with identical features (spans, audio descriptors, the same video frames analysed)."""
    messages = []
    with MediaSource(SAMPLE) as source:
        messages = [timed.message for timed in source.messages(chunk_ms=100)]

    def feed(pipeline: SessionPipeline, sent: list[pb.ClientMessage]) -> list[SentenceResult]:
        results: list[SentenceResult] = []
        for message in sent:
            if message.WhichOneof("kind") == "audio":
                results.extend(pipeline.push_audio(message.audio.data))
            elif message.WhichOneof("kind") == "video":
                pipeline.push_video(message.video.timestamp_ms, EncodedImage(message.video.image, "jpeg"))
        return results + pipeline.finish()

    uninterrupted = feed(SessionPipeline(extractors, sample_rate_hz=16_000), messages)
    assert len(uninterrupted) >= 3 and uninterrupted[0].features.video_frames
    buffer = ReplayBuffer()
    for message in messages:
        buffer.add(message)
    for result in uninterrupted[:-1]:
        point = result.resume
        assert point is not None and point.segmenter.warm
        replayed = buffer.replay(point.first_sample / 16)
        resumed = feed(SessionPipeline(extractors, sample_rate_hz=16_000, resume=point), replayed)
        later = [r for r in uninterrupted if r.features.index > result.features.index]
        assert [features_of(r) for r in resumed] == [features_of(r) for r in later]
