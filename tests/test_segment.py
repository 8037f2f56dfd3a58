"""Sentence segmenter on real recordings: chunking invariance, sane sentences, noise precision, bounded memory."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from itertools import pairwise
from pathlib import Path

import av
import numpy as np
import pytest
import webrtcvad
from av.audio.resampler import AudioResampler

from depscreen.engine.media import SAMPLE_RATE, PcmResampler, decode_audio_file
from depscreen.engine.segment import (
    Piece,
    Segmenter,
    SegmenterSettings,
    Sentence,
    segment_file,
    segment_pcm,
)

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
SPEECH = DATA / "speech"
CODEC2 = SPEECH / "codec2"
GRID = DATA / "video" / "grid"
EATD = DATA / "eatd" / "train"
FRAME = 320  # 20 ms at 16 kHz: the frame of the default settings and of the reference measures below


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real test data {path} is absent (the shared data folder sits beside the project)")
    return path


def _audio(path: Path) -> np.ndarray:
    return decode_audio_file(_need(path))


def _frame_dbfs(pcm: np.ndarray) -> np.ndarray:
    frames = pcm[: len(pcm) // FRAME * FRAME].reshape(-1, FRAME).astype(np.float64)
    return 10 * np.log10(np.mean(frames**2, axis=1) / 32768.0**2 + 1e-12)


def _assert_well_formed(sentences: list[Sentence], pcm: np.ndarray, settings: SegmenterSettings) -> None:
    previous_end = 0
    for i, s in enumerate(sentences):
        assert s.index == i
        assert previous_end <= s.start_sample < s.end_sample <= len(pcm)
        assert s.start_ms == s.start_sample * 1000 // SAMPLE_RATE
        assert s.end_ms == s.end_sample * 1000 // SAMPLE_RATE
        assert s.pcm.dtype == np.int16
        assert len(s.pcm) == s.end_sample - s.start_sample
        assert np.array_equal(s.pcm, pcm[s.start_sample : s.end_sample])
        assert settings.min_sentence_ms <= s.speech_ms <= s.duration_ms <= settings.max_sentence_ms
        assert np.isfinite(s.snr_db)
        previous_end = s.end_sample


def _assert_same(a: list[Sentence], b: list[Sentence]) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b, strict=True):
        assert (x.index, x.start_sample, x.end_sample, x.speech_ms, x.snr_db) == (
            y.index,
            y.start_sample,
            y.end_sample,
            y.speech_ms,
            y.snr_db,
        )
        assert np.array_equal(x.pcm, y.pcm)


def _push_in_chunks(pcm: np.ndarray, sizes: Iterator[int]) -> list[Sentence]:
    return _pieces_in_chunks(pcm, sizes)[0]


def _fixed(size: int) -> Iterator[int]:
    while True:
        yield size


def _random_sizes(seed: int) -> Iterator[int]:
    rng = np.random.default_rng(seed)
    while True:
        yield int(rng.integers(0, 4000))


# ---------------------------------------------------------------- chunking invariance


@pytest.mark.parametrize("path", [CODEC2 / "ve9qrp.wav", SPEECH / "jfk" / "jfk.flac"], ids=["ve9qrp", "jfk"])
def test_sentences_do_not_depend_on_chunking(path: Path) -> None:
    pcm = _audio(path)
    whole = segment_pcm(pcm)
    assert len(whole) >= 3
    for sizes in (_fixed(160), _fixed(8000), _fixed(333), _random_sizes(1), _random_sizes(2)):
        _assert_same(_push_in_chunks(pcm, sizes), whole)


def test_single_sample_pushes_match_whole_push() -> None:
    pcm = _audio(SPEECH / "jfk" / "jfk.flac")
    _assert_same(_push_in_chunks(pcm, _fixed(1)), segment_pcm(pcm))


def test_segmenting_is_deterministic() -> None:
    pcm = _audio(CODEC2 / "vk5qi.wav")
    _assert_same(segment_pcm(pcm), segment_pcm(pcm.copy()))


# ---------------------------------------------------------------- pieces of open sentences


def _pieces_in_chunks(pcm: np.ndarray, sizes: Iterator[int]) -> tuple[list[Sentence], list[Piece]]:
    pieces: list[Piece] = []
    segmenter = Segmenter(SegmenterSettings(), pieces.append)
    sentences: list[Sentence] = []
    position = 0
    while position < len(pcm):
        size = next(sizes)
        sentences += segmenter.push(pcm[position : position + size])
        position += size
    assert segmenter.samples_received == len(pcm)
    return sentences + segmenter.flush(), pieces


def test_pieces_follow_the_pauses_inside_sentences_whatever_the_chunking() -> None:
    pcm = _audio(CODEC2 / "ve9qrp.wav")
    settings = SegmenterSettings()
    sentences, pieces = _pieces_in_chunks(pcm, _fixed(len(pcm)))
    _assert_same(sentences, segment_pcm(pcm))  # pieces never move a sentence
    for sizes in (_fixed(160), _fixed(333), _random_sizes(3)):
        other_sentences, other_pieces = _pieces_in_chunks(pcm, sizes)
        _assert_same(other_sentences, sentences)
        assert [(p.sentence_start_sample, p.start_sample, p.end_sample) for p in other_pieces] == [
            (p.sentence_start_sample, p.start_sample, p.end_sample) for p in pieces
        ]
    for sentence in sentences:
        mine = [p for p in pieces if p.sentence_start_sample == sentence.start_sample]
        position = previous = sentence.start_sample
        for piece in mine:
            assert piece.start_sample in (position, previous), "pieces follow each other, or redo the last one"
            if piece.end_sample - piece.start_sample < settings.min_piece_ms * SAMPLE_RATE // 1000:
                assert piece.start_sample == sentence.start_sample, "only the sentence so far may be shorter"
            assert np.array_equal(piece.pcm, pcm[piece.start_sample : piece.end_sample])
            previous, position = piece.start_sample, piece.end_sample
    inside = [
        p
        for p in pieces
        if p.end_sample < next(s.end_sample for s in sentences if s.start_sample == p.sentence_start_sample)
    ]
    assert len(inside) >= 15, "112 s of free speech pauses inside its 10 long sentences"


def test_a_sentence_without_a_pause_inside_is_one_piece_with_its_exact_audio() -> None:
    pcm = decode_audio_file(_need(GRID / "bbaf2n.mpg"))
    sentences, pieces = _pieces_in_chunks(pcm, _fixed(320))
    assert len(sentences) == len(pieces) == 1
    assert (pieces[0].start_sample, pieces[0].end_sample) == (sentences[0].start_sample, sentences[0].end_sample)
    assert np.array_equal(pieces[0].pcm, sentences[0].pcm), "the closing pause cuts it where the sentence ends"


def test_a_sentence_shorter_than_a_piece_is_one_piece_with_its_exact_audio() -> None:
    answers = sorted(_need(EATD).glob("t_1/*.flac"))
    shortest = SegmenterSettings().min_piece_ms * SAMPLE_RATE // 1000
    short = 0
    for answer in answers:
        pcm = _audio(answer)
        pieces: list[Piece] = []
        sentences = Segmenter(SegmenterSettings(), pieces.append).push(pcm)  # closed by a pause (not flushed)
        assert [(p.start_sample, p.end_sample) for p in _pieces_in_chunks(pcm, _random_sizes(5))[1]] == [
            (p.start_sample, p.end_sample) for p in pieces
        ]
        for sentence in sentences:
            if sentence.end_sample - sentence.start_sample < shortest:
                short += 1
                last = [p for p in pieces if p.sentence_start_sample == sentence.start_sample][-1]
                assert (last.start_sample, last.end_sample) == (sentence.start_sample, sentence.end_sample)
                assert np.array_equal(last.pcm, sentence.pcm), "cut in the closing pause: nothing left for the close"
    assert short >= 3, "EATD answers hold sentences of 1-1.5 s"


def test_pieces_are_off_at_zero_or_without_a_listener() -> None:
    pcm = _audio(SPEECH / "jfk" / "jfk.flac")
    pieces: list[Piece] = []
    segmenter = Segmenter(SegmenterSettings(piece_pause_ms=0), pieces.append)
    _assert_same(segmenter.push(pcm) + segmenter.flush(), segment_pcm(pcm))
    assert pieces == []


# ---------------------------------------------------------------- sentences on real speech


def test_grid_clips_give_one_sentence_covering_the_words() -> None:
    clips = sorted(_need(GRID).glob("*.mpg"))
    assert len(clips) == 11
    for clip in clips:
        pcm = decode_audio_file(clip)  # 44.1 kHz mp2 audio, resampled to 16 kHz
        sentences = segment_pcm(pcm)
        assert len(sentences) == 1, f"{clip.name}: {[(s.start_ms, s.end_ms) for s in sentences]}"
        _assert_well_formed(sentences, pcm, SegmenterSettings())
        assert sentences[0].speech_ms >= 1000, clip.name  # six words


def test_grid_sentence_span_matches_word_alignment() -> None:
    # GRID .align: "start end word" in 1/25000 s (25 fps video frames x 1000); "sil" before and after.
    units_per_s = 25_000
    words = [line.split() for line in _need(GRID / "swwp2s.align").read_text().splitlines() if line.strip()]
    spoken = [(int(a), int(b)) for a, b, word in words if word != "sil"]
    first_ms, last_ms = spoken[0][0] * 1000 // units_per_s, spoken[-1][1] * 1000 // units_per_s
    assert (first_ms, last_ms) == (490, 2210)
    (sentence,) = segment_file(GRID / "id2_vcd_swwp2s.mpg")
    settings = SegmenterSettings()
    assert first_ms - settings.pre_roll_ms - 200 <= sentence.start_ms <= first_ms
    assert last_ms <= sentence.end_ms <= last_ms + settings.post_roll_ms + 200


@pytest.mark.parametrize(
    ("path", "least", "most"),
    [
        (SPEECH / "jfk" / "jfk.flac", 2, 5),  # "And so, my fellow Americans, ask not ..., ask what ..."
        (SPEECH / "arctic" / "arctic_a0007.wav", 1, 1),
        (SPEECH / "ljspeech" / "LJ050-0131.wav", 1, 4),  # 22.05 kHz original
        (CODEC2 / "vk5qi.wav", 1, 3),  # 8 kHz radio
    ],
    ids=["jfk", "arctic", "ljspeech-22k", "vk5qi-8k"],
)
def test_sentence_counts_are_plausible(path: Path, least: int, most: int) -> None:
    pcm = _audio(path)
    sentences = segment_pcm(pcm)
    assert least <= len(sentences) <= most, [(s.start_ms, s.end_ms) for s in sentences]
    _assert_well_formed(sentences, pcm, SegmenterSettings())


@pytest.mark.parametrize("rate", [8_000, 32_000, 48_000])
def test_streams_at_other_rates_give_the_same_sentences(rate: int) -> None:
    pcm = _audio(SPEECH / "jfk" / "jfk.flac")
    to_rate = AudioResampler(format="s16", layout="mono", rate=rate)
    frame = av.AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
    frame.sample_rate, frame.pts = SAMPLE_RATE, 0
    converted = np.concatenate([out.to_ndarray()[0] for out in [*to_rate.resample(frame), *to_rate.resample(None)]])
    resampler, segmenter, sentences = PcmResampler(rate, 1), Segmenter(), []
    chunk = rate * 20 // 1000  # 20 ms packets, as a telehealth client sends them
    for start in range(0, len(converted), chunk):
        sentences += segmenter.push(resampler.push(converted[start : start + chunk].tobytes()))
    sentences += segmenter.push(resampler.flush()) + segmenter.flush()
    original = segment_pcm(pcm)
    assert len(sentences) == len(original)
    for got, want in zip(sentences, original, strict=True):
        assert abs(got.start_ms - want.start_ms) <= 20 and abs(got.end_ms - want.end_ms) <= 20


def test_librivox_read_sentences_cover_the_speech() -> None:
    clips = sorted(_need(SPEECH / "librivox").glob("*.wav"))
    assert len(clips) == 5
    for clip in clips:
        pcm = decode_audio_file(clip)
        sentences = segment_pcm(pcm)
        assert 1 <= len(sentences) <= 3, clip.name
        _assert_well_formed(sentences, pcm, SegmenterSettings())
        loud = np.flatnonzero(_frame_dbfs(pcm) > np.percentile(_frame_dbfs(pcm), 95) - 20)
        covered = np.zeros(len(pcm) // FRAME, dtype=bool)
        for s in sentences:
            covered[s.start_sample // FRAME : s.end_sample // FRAME] = True
        assert covered[loud].mean() >= 0.98, clip.name


def test_free_speech_is_cut_at_its_pauses_and_run_ons_at_quiet_points() -> None:
    # ve9qrp: one man talking freely for 112 s with very few pauses (energy envelope of the file): 1.2 s of
    # silence at 34.1-35.3 s, 0.9 s with breathing at 51.2-52.1 s, nothing else over 600 ms but the end.
    pcm = _audio(CODEC2 / "ve9qrp.wav")
    settings = SegmenterSettings()
    sentences = segment_pcm(pcm, settings)
    _assert_well_formed(sentences, pcm, settings)
    assert 7 <= len(sentences) <= 12
    for pause_start_ms, pause_end_ms in ((34_140, 35_320), (51_200, 52_120)):
        assert any(
            pause_start_ms <= s.end_ms and nxt.start_ms <= pause_end_ms and s.end_sample < nxt.start_sample
            for s, nxt in pairwise(sentences)
        ), f"no sentence break in the pause at {pause_start_ms} ms"
    forced = [s for s, nxt in pairwise(sentences) if s.end_sample == nxt.start_sample]
    assert len(forced) >= 5  # forced cuts leave no gap
    levels = _frame_dbfs(pcm)
    width = settings.cut_pause_ms // settings.frame_ms
    stretch_means = np.convolve(levels, np.full(width, 1 / width), mode="valid")  # [i] = frames i..i+width
    for s in forced:
        cut = s.end_sample // FRAME
        at_max = s.start_sample // FRAME + settings.max_sentence_ms // settings.frame_ms
        search_from = at_max - settings.cut_search_ms // settings.frame_ms
        assert search_from <= cut < at_max
        at_cut = stretch_means[cut - width // 2]
        assert at_cut == stretch_means[search_from : at_max - width + 1].min()
        assert at_cut <= np.median(levels[s.start_sample // FRAME : cut]) - 6  # a real dip, not mid-word


# ---------------------------------------------------------------- precision in real noise


def _channel_noise() -> np.ndarray:
    """Real radio-channel noise: the non-speech stretches of the codec2 recordings (frames within 4 dB of
    the file's 5th-percentile level, runs of 300 ms or more, digital silence removed), each scaled to unit
    RMS and joined with 10 ms crossfades. About 2.5 s, looped by the callers."""
    pieces = []
    for name in ("ve9qrp.wav", "vk5qi.wav", "all.wav"):
        pcm = _audio(CODEC2 / name)
        levels = _frame_dbfs(pcm)
        quiet = (levels < np.percentile(levels[levels > -90], 5) + 4) & (levels > -85)
        edges = np.flatnonzero(np.diff(np.concatenate(([0], quiet.astype(int), [0]))))
        for start, end in zip(edges[::2], edges[1::2], strict=True):
            if end - start >= 15:
                piece = pcm[start * FRAME : end * FRAME].astype(np.float64)
                pieces.append(piece / np.sqrt(np.mean(piece**2)))
    fade = 160
    ramp = np.linspace(0.0, 1.0, fade)
    noise = pieces[0]
    for piece in pieces[1:]:
        noise = np.concatenate((noise[:-fade], noise[-fade:] * (1 - ramp) + piece[:fade] * ramp, piece[fade:]))
    assert 1.5 * SAMPLE_RATE < len(noise) < 6 * SAMPLE_RATE
    return noise


def _looped(noise: np.ndarray, n: int) -> np.ndarray:
    return np.tile(noise, n // len(noise) + 1)[:n]


def _coverage(sentences: list[Sentence], frames: int) -> np.ndarray:
    covered = np.zeros(frames, dtype=bool)
    for s in sentences:
        covered[s.start_sample // FRAME : s.end_sample // FRAME] = True
    return covered


def _precision_recall(predicted: np.ndarray, reference: np.ndarray) -> tuple[float, float]:
    hits = np.count_nonzero(predicted & reference)
    return hits / max(np.count_nonzero(predicted), 1), hits / np.count_nonzero(reference)


@pytest.fixture(scope="module")
def read_speech_in_noise() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Five LibriVox clips separated by 2 s of silence, and real channel noise scaled for 10 dB SNR.

    Returns the clean PCM, its reference speech frames (energy oracle on the CLEAN signal: frames at most
    25 dB below its 95th-percentile frame level) and the noise loop, scaled so that the mean power of the
    reference frames is 10 dB above the noise power.
    """
    gap = np.zeros(2 * SAMPLE_RATE, dtype=np.int16)
    parts = [gap]
    for clip in sorted(_need(SPEECH / "librivox").glob("*.wav")):
        parts += [decode_audio_file(clip), gap]
    clean = np.concatenate(parts)
    levels = _frame_dbfs(clean)
    reference = levels >= np.percentile(levels[levels > -100], 95) - 25
    frames = clean[: len(reference) * FRAME].reshape(-1, FRAME).astype(np.float64)
    noise_rms = np.sqrt(np.mean(frames[reference] ** 2) / 10 ** (10 / 10))
    return clean, reference, _channel_noise() * noise_rms


def _noisy(clean: np.ndarray, noise: np.ndarray, phase: float) -> np.ndarray:
    """The clean signal plus the noise loop started `phase` of the way into it."""
    loop = np.roll(noise, -int(phase * len(noise)))
    return np.clip(np.round(clean + _looped(loop, len(clean))), -32768, 32767).astype(np.int16)


def test_noise_gate_earns_back_precision_in_real_noise(read_speech_in_noise) -> None:
    clean, reference, noise = read_speech_in_noise
    settings = SegmenterSettings()
    ungated_settings = SegmenterSettings(onset_margin_db=0.0, hold_margin_db=0.0)  # webrtcvad decides alone
    raw, ungated, gated = [], [], []
    for phase in (0.0, 1 / 3, 2 / 3):  # three alignments of the noise loop, pooled
        noisy = _noisy(clean, noise, phase)
        vad = webrtcvad.Vad(settings.vad_aggressiveness)
        raw.append(
            [vad.is_speech(noisy[i * FRAME : (i + 1) * FRAME].tobytes(), SAMPLE_RATE) for i in range(len(reference))]
        )
        ungated.append(_coverage(segment_pcm(noisy, ungated_settings), len(reference)))
        sentences = segment_pcm(noisy, settings)
        assert len(sentences) == 5  # one per clip: the 2 s noise gaps close each sentence
        gated.append(_coverage(sentences, len(reference)))
    pooled_reference = np.tile(reference, 3)
    raw_precision, raw_recall = _precision_recall(np.concatenate(raw), pooled_reference)
    ungated_precision, _ = _precision_recall(np.concatenate(ungated), pooled_reference)
    gated_precision, gated_recall = _precision_recall(np.concatenate(gated), pooled_reference)

    assert raw_precision < 0.85  # the noise does fool webrtcvad
    assert gated_precision >= raw_precision + 0.05
    assert gated_precision >= ungated_precision + 0.1
    assert gated_recall >= raw_recall - 0.02


def test_noise_alone_opens_no_sentence(read_speech_in_noise) -> None:
    _, _, noise = read_speech_in_noise
    noise_only = np.round(_looped(noise, 30 * SAMPLE_RATE)).astype(np.int16)
    assert len(segment_pcm(noise_only, SegmenterSettings(onset_margin_db=0.0, hold_margin_db=0.0))) >= 3
    assert segment_pcm(noise_only) == []


def test_snr_falls_when_noise_is_added(read_speech_in_noise) -> None:
    clean, _, noise = read_speech_in_noise
    clean_snr = [s.snr_db for s in segment_pcm(clean)]
    noisy_snr = [s.snr_db for s in segment_pcm(_noisy(clean, noise, 0.0))]
    assert len(clean_snr) == len(noisy_snr) == 5
    assert min(clean_snr) > 15
    assert 3 < np.median(noisy_snr) < 15  # mixed at 10 dB
    assert all(c > n for c, n in zip(clean_snr, noisy_snr, strict=True))


def test_digital_silence_does_not_drag_the_noise_floor() -> None:
    pcm = _audio(SPEECH / "jfk" / "jfk.flac")
    segmenter = Segmenter()
    assert segmenter.push(np.zeros(3 * SAMPLE_RATE, dtype=np.int16)) == []
    assert segmenter.noise_floor_dbfs is None
    shifted = segmenter.push(pcm) + segmenter.flush()
    plain = segment_pcm(pcm)
    assert [(s.start_sample - 3 * SAMPLE_RATE, s.end_sample - 3 * SAMPLE_RATE) for s in shifted] == [
        (s.start_sample, s.end_sample) for s in plain
    ]


# ---------------------------------------------------------------- settings and inputs


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("frame_ms", 25),
        ("frame_ms", "20"),
        ("vad_aggressiveness", 4),
        ("onset_ms", 0),
        ("onset_window_ms", 60),
        ("end_silence_ms", 0),
        ("min_sentence_ms", -1),
        ("max_sentence_ms", 2000),
        ("cut_search_ms", 40),
        ("cut_pause_ms", 0),
        ("pre_roll_ms", -1),
        ("post_roll_ms", -20),
        ("hold_margin_db", -1.0),
        ("onset_margin_db", 3.0),
        ("hold_range_db", 0.0),
        ("floor_rise_db_per_s", 0.0),
        ("floor_fall_db_per_s", -5.0),
        ("digital_silence_dbfs", 3.0),
        ("vad", "rnnoise"),
        ("vad_threshold", 1.0),
        ("piece_pause_ms", 600),
        ("piece_pause_ms", 10),
        ("min_piece_ms", -1),
    ],
)
def test_invalid_settings_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValueError, match=rf"SegmenterSettings\.{field}="):
        SegmenterSettings(**{field: value})


def test_push_rejects_other_than_int16_mono() -> None:
    segmenter = Segmenter()
    with pytest.raises(ValueError, match="int16"):
        segmenter.push(np.zeros(320, dtype=np.float32))
    with pytest.raises(ValueError, match="1-D"):
        segmenter.push(np.zeros((320, 2), dtype=np.int16))
    assert segmenter.push(np.zeros(0, dtype=np.int16)) == []
    assert segmenter.flush() == []
    with pytest.raises(RuntimeError, match="flushed"):
        segmenter.push(np.zeros(320, dtype=np.int16))


# ---------------------------------------------------------------- bounded memory


def _held_items(segmenter: Segmenter) -> tuple[int, int]:
    """Bytes of numpy arrays and items of lists/deques that the segmenter holds."""
    array_bytes = sum(v.nbytes for v in vars(segmenter).values() if isinstance(v, np.ndarray))
    items = max((len(v) for v in vars(segmenter).values() if isinstance(v, list | deque)), default=0)
    return array_bytes, items


def test_memory_stays_bounded_over_30_minutes() -> None:
    speech = np.concatenate(
        [_audio(SPEECH / "jfk" / "jfk.flac")]
        + [decode_audio_file(clip) for clip in sorted(_need(SPEECH / "librivox").glob("*.wav"))]
    )
    settings = SegmenterSettings()
    segmenter = Segmenter(settings)
    rng = np.random.default_rng(0)
    longest_ms = settings.max_sentence_ms + settings.onset_window_ms + settings.pre_roll_ms
    bound_samples = longest_ms * SAMPLE_RATE // 1000 + FRAME  # open sentence or pre-roll, + partial frame
    total, sentences, peak_retained, peak_bytes, peak_items = 30 * 60 * SAMPLE_RATE, 0, 0, 0, 0
    position = 0
    while position < total:
        # one minute: low noise with 1-3 s speech bursts for 15-20 s, then 40 s of run-on speech
        minute = rng.normal(0.0, 30.0, 60 * SAMPLE_RATE)
        at = 0
        while at < 15 * SAMPLE_RATE:
            burst = speech[rng.integers(0, len(speech) // 2) :][: int(rng.integers(1, 4) * SAMPLE_RATE)]
            minute[at : at + len(burst)] += burst
            at += len(burst) + int(rng.integers(1, 3) * SAMPLE_RATE)
        run_on = np.tile(speech, 3)[: 40 * SAMPLE_RATE]
        minute[20 * SAMPLE_RATE :] += run_on
        chunk_pcm = np.clip(minute, -32768, 32767).astype(np.int16)
        for start in range(0, len(chunk_pcm), 7_919):
            sentences += len(segmenter.push(chunk_pcm[start : start + 7_919]))
            peak_retained = max(peak_retained, segmenter.retained_samples)
            array_bytes, items = _held_items(segmenter)
            peak_bytes, peak_items = max(peak_bytes, array_bytes), max(peak_items, items)
        position += len(chunk_pcm)
    assert segmenter.samples_received == total
    assert sentences >= 30 * 5
    assert peak_retained <= bound_samples
    assert peak_bytes <= 2 * 2 * (bound_samples + SAMPLE_RATE)  # int16 history: twice the bound + 1 s block
    assert peak_items <= 4 * bound_samples // FRAME
