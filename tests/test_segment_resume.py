"""A segmenter resumed from the snapshot a sentence carries goes on exactly as the uninterrupted one, on real speech.

Every sentence of real recordings (free radio speech, far-field meetings with forced cuts, read speech) is a
resume point: a new segmenter made from its snapshot and fed the audio again from the snapshot's
`replay_from_sample` must cut the same later sentences (index, samples, audio, speech, SNR) and hand the
listener the same pieces, however the audio is chunked. A replay of other audio is refused.
"""

from __future__ import annotations

import random
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from depscreen.engine.media import decode_audio_file
from depscreen.engine.segment import (
    Piece,
    ReplayMismatchError,
    Segmenter,
    SegmenterSettings,
    SegmenterSnapshot,
    Sentence,
)
from depscreen.engine.vad import WARMUP_SAMPLES, make_vad

from .conftest import SHARED_DATA

SPEECH = SHARED_DATA / "speech"
RECORDINGS = (
    SPEECH / "codec2" / "ve9qrp.wav",
    SPEECH / "codec2" / "all.wav",
    SPEECH / "ami_train" / "trn01.wav",
    SPEECH / "ami_train" / "trn03.wav",
    SPEECH / "ami_train" / "trn07.wav",
    SPEECH / "jfk" / "jfk.flac",
)
SHORT_CUTS = SegmenterSettings(max_sentence_ms=4_000, cut_search_ms=2_000, min_piece_ms=500)
"""Forced cuts every few seconds, and short pieces: most resume points then fall inside an open sentence."""
CHUNKS = (1, 137, 320, 1_600, 8_000, 16_000)


def _audio(path: Path) -> np.ndarray:
    if not path.exists():
        pytest.skip(f"real test data {path} is absent (the shared data folder sits beside the project)")
    return decode_audio_file(path)


def _pushed(segmenter: Segmenter, pcm: np.ndarray, rng: random.Random) -> list[Sentence]:
    """Push `pcm` in random chunks, then flush."""
    closed, at = [], 0
    while at < len(pcm):
        size = rng.choice(CHUNKS)
        closed += segmenter.push(pcm[at : at + size])
        at += size
    return closed + segmenter.flush()


def _key(sentence: Sentence) -> tuple:
    s = sentence
    return (s.index, s.start_ms, s.end_ms, s.start_sample, s.end_sample, s.speech_ms, s.snr_db, s.pcm.tobytes())


def _final_pieces(pieces: list[Piece], sentence_starts: set[int]) -> dict[int, list[tuple[int, int]]]:
    """The pieces of each sentence starting at one of `sentence_starts`, a replaced piece left out."""
    final: dict[int, list[tuple[int, int]]] = {}
    for piece in pieces:
        if piece.sentence_start_sample in sentence_starts:
            kept = final.setdefault(piece.sentence_start_sample, [])
            if kept and kept[-1][0] == piece.start_sample:
                kept.pop()
            kept.append((piece.start_sample, piece.end_sample))
    return final


@pytest.mark.parametrize("path", RECORDINGS, ids=lambda p: p.name)
@pytest.mark.parametrize("settings", [SegmenterSettings(), SHORT_CUTS], ids=["default", "short-cuts"])
def test_a_segmenter_resumed_at_any_sentence_cuts_the_rest_exactly(path: Path, settings: SegmenterSettings) -> None:
    assert_resumes_exactly(path, settings)


@pytest.mark.parametrize("path", (SPEECH / "ami_train" / "trn05.wav", SPEECH / "jfk" / "jfk.flac"), ids=str)
def test_a_silero_segmenter_resumed_at_any_sentence_cuts_the_rest_exactly(path: Path) -> None:
    """Silero's recurrent state, last probability and window phase travel in the snapshot too."""
    assert_resumes_exactly(path, replace(SHORT_CUTS, vad="silero"))


def assert_resumes_exactly(path: Path, settings: SegmenterSettings) -> None:
    """Resumed from the snapshot of each sentence of `path`, a segmenter cuts the rest exactly (pieces too)."""
    pcm = _audio(path)
    rng = random.Random(path.name)
    pieces: list[Piece] = []
    uninterrupted = _pushed(Segmenter(settings, pieces.append), pcm, rng)
    assert len(uninterrupted) >= 3
    for sentence in uninterrupted:
        snapshot = SegmenterSnapshot.from_plain(sentence.resume.to_plain())
        assert snapshot == sentence.resume and snapshot.warm
        assert snapshot.resume_sample - snapshot.replay_from_sample >= min(WARMUP_SAMPLES, snapshot.resume_sample)
        resumed_pieces: list[Piece] = []
        resumed = Segmenter(settings, resumed_pieces.append, resume=snapshot)
        rest = _pushed(resumed, pcm[snapshot.replay_from_sample :], rng)
        later = [s for s in uninterrupted if s.index >= snapshot.index]
        assert [_key(s) for s in rest] == [_key(s) for s in later], f"resumed after sentence {sentence.index}"
        starts = {s.start_sample for s in later}
        assert _final_pieces(resumed_pieces, starts) == _final_pieces(pieces, starts)


def test_the_short_cuts_resume_inside_open_sentences_and_their_pieces() -> None:
    """The parametrised test above does reach the hard cases: open sentences with pieces at the resume point."""
    pcm = _audio(SPEECH / "ami_train" / "trn03.wav")
    sentences = Segmenter(SHORT_CUTS, lambda piece: None).push(pcm)
    states = {s.resume.state for s in sentences}
    assert {"speaking", "stopping"} & states and "quiet" in states
    assert any(s.resume.pieces for s in sentences)


def test_a_cold_segmenter_would_cut_differently() -> None:
    """Without the detector's saved state (a fresh webrtcvad fed the same warm-up) the frame decisions after the
    resume point differ on far-field audio: what the snapshot carries is needed."""
    pcm = _audio(SPEECH / "ami_train" / "trn05.wav")
    frame = 320
    uninterrupted = make_vad("webrtc", aggressiveness=2, threshold=0.5, frame_len=frame)
    frames = pcm[: len(pcm) // frame * frame].reshape(-1, frame)
    expected = uninterrupted.decide(frames)
    differing = 0
    for at in range(500, len(frames) - 100, 97):
        fresh = make_vad("webrtc", aggressiveness=2, threshold=0.5, frame_len=frame)
        fresh.decide(frames[at - WARMUP_SAMPLES // frame : at])
        differing += fresh.decide(frames[at:]) != expected[at:]
    assert differing > 0


def test_a_resumed_webrtc_detector_decides_as_the_uninterrupted_one() -> None:
    """A fresh webrtcvad fed the warm-up, then given the saved model state, decides every later frame alike."""
    pcm = _audio(SPEECH / "ami_train" / "trn05.wav")
    frame = 320
    frames = pcm[: len(pcm) // frame * frame].reshape(-1, frame)
    for at in range(25, len(frames) - 1, 131):
        uninterrupted = make_vad("webrtc", aggressiveness=2, threshold=0.5, frame_len=frame)
        uninterrupted.decide(frames[:at])
        state = uninterrupted.model_state()
        assert state is not None
        resumed = make_vad("webrtc", aggressiveness=2, threshold=0.5, frame_len=frame)
        resumed.decide(frames[at - WARMUP_SAMPLES // frame : at])
        resumed.restore_model_state(state, pcm[: at * frame])
        assert resumed.decide(frames[at:]) == uninterrupted.decide(frames[at:])


def test_a_replay_of_other_audio_or_too_little_is_refused() -> None:
    pcm = _audio(SPEECH / "codec2" / "ve9qrp.wav")
    sentences = Segmenter().push(pcm)
    snapshot = sentences[3].resume
    assert "pcm" not in snapshot.to_plain() and not any(
        isinstance(value, np.ndarray) for value in snapshot.to_plain().values()
    ), "no audio in a snapshot"
    other = pcm[snapshot.replay_from_sample :].copy()
    other[100] ^= 1  # one sample differs by one bit
    with pytest.raises(ReplayMismatchError, match="not the audio the session heard"):
        Segmenter(resume=snapshot).push(other)
    shifted = pcm[snapshot.replay_from_sample + 320 :]
    with pytest.raises(ReplayMismatchError, match="not the audio the session heard"):
        Segmenter(resume=snapshot).push(shifted)
    short = Segmenter(resume=snapshot)
    short.push(pcm[snapshot.replay_from_sample : snapshot.resume_sample - 1])
    with pytest.raises(ReplayMismatchError, match="before the resume point"):
        short.flush()


def test_a_cold_snapshot_starts_a_fresh_segmenter_at_its_frame() -> None:
    """A snapshot without a segmenter (written before they carried one) resumes cold at its media time, on
    the session's clock and sentence index."""
    pcm = _audio(SPEECH / "codec2" / "ve9qrp.wav")
    cold = SegmenterSnapshot.cold(60 * 16_000 + 5, 7, SegmenterSettings())
    assert not cold.warm and cold.resume_sample == cold.replay_from_sample == 60 * 16_000
    sentences = Segmenter(resume=cold).push(pcm[cold.resume_sample :])
    fresh = Segmenter().push(pcm[cold.resume_sample :])
    assert [s.index for s in sentences] == [s.index + 7 for s in fresh]
    assert [s.start_sample for s in sentences] == [s.start_sample + cold.resume_sample for s in fresh]
    with pytest.raises(ValueError, match="frame_ms"):
        Segmenter(SegmenterSettings(frame_ms=10), resume=sentences[0].resume)
