"""Input that is not 16 kHz mono resumes exactly too: the replay starts where a fresh resampler lines up.

The resampler's state is not carried in a snapshot; instead a resume point of such input starts the replay a
little earlier, on a sample where input and output rates share a period (`PcmResampler.restart_sample`), and
the pipeline skips what comes before the segmenter's replay. Checked here: a fresh resampler gives the
uninterrupted one's output exactly from the restart sample's warm-up on, at random points of several rates; and
a pipeline resumed at every sentence of real speech sent as 44.1 kHz stereo or 8 kHz mono cuts the same later
sentences with the same features as the uninterrupted one; the client's replay buffer re-sends from that sample.
"""

from __future__ import annotations

import random

import av
import numpy as np
import pytest

from depscreen.clients.resumable import REPLAY_CLOCK_SAMPLES_PER_MS, ReplayBuffer
from depscreen.engine.media import RESAMPLER_WARMUP_SAMPLES, SAMPLE_RATE, PcmResampler
from depscreen.engine.pipeline import Extractors, PipelineSettings, SessionPipeline
from depscreen.engine.segment import SegmenterSettings
from depscreen.v1 import screening_pb2 as pb

from .conftest import FIXTURES

CHUNK_FRAMES = (1, 441, 997, 4_410, 8_000)
SHORT_CUTS = PipelineSettings(segmenter=SegmenterSettings(max_sentence_ms=4_000, cut_search_ms=2_000, min_piece_ms=500))
"""Forced cuts every few seconds: most resume points fall inside speech."""


def resampled(pcm: np.ndarray, rate: int, channels: int) -> bytes:
    """16 kHz mono speech as `rate` Hz PCM s16le with `channels` channels (the second one a delayed copy)."""
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate = SAMPLE_RATE
    out = np.concatenate([f.to_ndarray()[0] for f in (*resampler.resample(frame), *resampler.resample(None))])
    if channels == 2:
        out = np.stack([out, np.roll(out, 7) // 2], axis=1).reshape(-1)
    return out.astype("<i2").tobytes()


def pushed(resampler: PcmResampler, data: bytes, rng: random.Random) -> np.ndarray:
    """`data` through `resampler` in random whole-frame chunks, then flushed."""
    frame, parts, at = resampler.bytes_per_frame, [], 0
    while at < len(data):
        size = rng.choice(CHUNK_FRAMES) * frame
        parts.append(resampler.push(data[at : at + size]))
        at += size
    return np.concatenate([*parts, resampler.flush()])


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    from depscreen.engine.media import decode_audio_file

    return decode_audio_file(FIXTURES / "jfk.flac")


@pytest.mark.parametrize(("rate", "channels"), [(44_100, 2), (8_000, 1), (48_000, 1), (22_050, 2), (11_025, 1)])
def test_a_fresh_resampler_from_its_restart_sample_gives_the_same_output(
    speech: np.ndarray, rate: int, channels: int
) -> None:
    data = resampled(speech, rate, channels)
    rng = random.Random(rate)
    uninterrupted = pushed(PcmResampler(rate, channels), data, rng)
    for _ in range(25):
        wanted = rng.randrange(len(uninterrupted) - SAMPLE_RATE)
        restart = PcmResampler(rate, channels).restart_sample(wanted)
        assert wanted - restart >= RESAMPLER_WARMUP_SAMPLES or restart == 0
        assert restart * rate % SAMPLE_RATE == 0, "the restart falls on a whole input sample"
        fresh = PcmResampler(rate, channels)
        frames = restart * rate // SAMPLE_RATE
        again = pushed(fresh, data[frames * fresh.bytes_per_frame :], rng)
        offset = wanted - restart
        np.testing.assert_array_equal(again[offset:], uninterrupted[wanted:], err_msg=f"{rate} Hz from {wanted}")


def key(result: object) -> tuple:
    f = result.features
    return (f.index, f.start_ms, f.end_ms, f.speech_ms, f.snr_db, f.audio.tobytes(), f.audio_integrity)


@pytest.mark.parametrize(("rate", "channels"), [(44_100, 2), (8_000, 1)])
def test_a_pipeline_resumed_at_any_sentence_of_other_rates_goes_on_exactly(
    speech: np.ndarray, rate: int, channels: int
) -> None:
    data = resampled(speech, rate, channels)
    extractors = Extractors.load(asr="none")
    rng = random.Random(channels)

    def run(pipeline: SessionPipeline, audio: bytes) -> list:
        frame, results, at = 2 * channels, [], 0
        while at < len(audio):
            size = rng.choice(CHUNK_FRAMES) * frame
            results += pipeline.push_audio(audio[at : at + size])
            at += size
        return results + pipeline.finish()

    uninterrupted = run(
        SessionPipeline(extractors, sample_rate_hz=rate, channels=channels, use_asr=False, settings=SHORT_CUTS), data
    )
    assert len(uninterrupted) >= 4
    for k, result in enumerate(uninterrupted[:-1]):
        point = result.resume
        assert point is not None and point.segmenter.warm, "a warm resume point, not a cold restart"
        assert point.first_sample * rate % SAMPLE_RATE == 0
        frames = point.first_sample * rate // SAMPLE_RATE
        resumed = SessionPipeline(
            extractors, sample_rate_hz=rate, channels=channels, use_asr=False, settings=SHORT_CUTS, resume=point
        )
        rest = run(resumed, data[frames * 2 * channels :])
        assert [key(r) for r in rest] == [key(r) for r in uninterrupted[k + 1 :]], f"resumed after sentence {k}"


def test_the_replay_buffer_of_44khz_stereo_re_sends_from_the_restart_sample() -> None:
    audio = pb.AudioFormat(sample_rate_hz=44_100, channels=2)
    buffer = ReplayBuffer(audio)
    data = np.arange(44_100 * 2 * 3, dtype=np.int16).astype("<i2").tobytes()  # 3 s, each sample its own value
    for at in range(0, len(data), 4 * 997):
        buffer.add(pb.ClientMessage(audio=pb.AudioChunk(data=data[at : at + 4 * 997])))
    sample = PcmResampler(44_100, 2).restart_sample(23_456)
    replayed = b"".join(m.audio.data for m in buffer.replay(sample / REPLAY_CLOCK_SAMPLES_PER_MS))
    assert replayed == data[sample * 44_100 // SAMPLE_RATE * 4 :]
