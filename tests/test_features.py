"""Feature extractors on real recordings: eGeMAPS audio, dlib face landmarks, MiniLM text, Whisper ASR."""

from __future__ import annotations

import gc
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import dlib
import numpy as np
import opensmile
import pytest
from opensmile.core.lib import OpenSMILE

from depscreen.engine.features.asr import NoTranscriber
from depscreen.engine.features.asr_backends import make_transcriber
from depscreen.engine.features.audio import AudioFeatureExtractor
from depscreen.engine.features.face import MAX_IMAGE_SIDE, EncodedImage, FaceLandmarker, decode_image, grey_pixels
from depscreen.engine.features.text import PHQ8_ITEMS, TextEmbedder
from depscreen.engine.features.whisper import WhisperTranscriber
from depscreen.engine.media import SAMPLE_RATE, decode_audio_file, iter_video_frames
from depscreen.engine.transcript_error import transcript_error

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
JFK = DATA / "speech" / "jfk"
ASTRONAUT = DATA / "images" / "astronaut.png"
GRID_CLIP = DATA / "video" / "grid" / "bbaf2n.mpg"


def _need(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"real test data {path} is absent (the shared data folder sits beside the project)")
    return path


# ---------------------------------------------------------------- audio


@pytest.fixture(scope="module")
def audio_extractor() -> AudioFeatureExtractor:
    return AudioFeatureExtractor()


@pytest.fixture(scope="module")
def jfk_pcm() -> np.ndarray:
    return decode_audio_file(_need(JFK / "jfk.flac"))


def test_egemaps_shape_names_and_finite(audio_extractor: AudioFeatureExtractor, jfk_pcm: np.ndarray) -> None:
    features = audio_extractor.extract(jfk_pcm)
    assert len(AudioFeatureExtractor.NAMES) == AudioFeatureExtractor.DIM == 25
    assert features.dtype == np.float32
    assert features.shape == ((len(jfk_pcm) - 800) // 160 + 1, 25)
    assert 1050 <= features.shape[0] <= 1110  # 11 s at one frame per 10 ms
    assert np.isfinite(features).all()


def test_loudness_is_higher_in_speech_than_in_pauses(
    audio_extractor: AudioFeatureExtractor, jfk_pcm: np.ndarray
) -> None:
    features = audio_extractor.extract(jfk_pcm)
    loudness = features[:, AudioFeatureExtractor.NAMES.index("Loudness_sma3")]
    window = SAMPLE_RATE // 10  # 100 ms = 10 frames
    starts = range(0, len(features) * 160 - window, window)
    rms = np.array([np.sqrt(np.mean(jfk_pcm[s : s + window].astype(np.float64) ** 2)) for s in starts])
    frame_loudness = np.array([loudness[s // 160 : s // 160 + 10].mean() for s in starts])
    order = np.argsort(rms)
    assert rms[order[:10]].max() < 1000 < rms[order[-10:]].min()  # real pauses and real speech
    assert frame_loudness[order[-10:]].mean() > 5 * frame_loudness[order[:10]].mean()


def test_egemaps_empty_and_short_input(audio_extractor: AudioFeatureExtractor, jfk_pcm: np.ndarray) -> None:
    assert audio_extractor.extract(np.zeros(0, dtype=np.int16)).shape == (0, 25)
    assert audio_extractor.extract(jfk_pcm[: AudioFeatureExtractor.MIN_SAMPLES - 1]).shape == (0, 25)
    shortest = audio_extractor.extract(jfk_pcm[: AudioFeatureExtractor.MIN_SAMPLES])
    assert shortest.shape[0] >= 1 and np.isfinite(shortest).all()
    assert np.isfinite(audio_extractor.extract(np.zeros(SAMPLE_RATE, dtype=np.int16))).all()
    with pytest.raises(ValueError, match="int16"):
        audio_extractor.extract(jfk_pcm.astype(np.float32))


def test_egemaps_shared_by_threads_matches_sequential(
    audio_extractor: AudioFeatureExtractor, jfk_pcm: np.ndarray
) -> None:
    pieces = [jfk_pcm[i * SAMPLE_RATE : (i + 2) * SAMPLE_RATE] for i in range(8)]
    sequential = [audio_extractor.extract(piece) for piece in pieces]
    with ThreadPoolExecutor(4) as pool:
        threaded = list(pool.map(audio_extractor.extract, pieces * 2))
    for i, features in enumerate(threaded):
        np.testing.assert_array_equal(features, sequential[i % len(pieces)])


def test_egemaps_reused_native_instance_matches_a_fresh_one(
    audio_extractor: AudioFeatureExtractor, jfk_pcm: np.ndarray
) -> None:
    """The per-thread openSMILE instance, reset between runs, gives what a fresh `opensmile.Smile` of the
    package's own eGeMAPSv02 configuration gives (the LLD-only configuration leaves out nothing the
    descriptors read), in any order of sentences (no state carried from one sentence to the next)."""
    fresh = opensmile.Smile(
        feature_set=opensmile.FeatureSet.eGeMAPSv02, feature_level=opensmile.FeatureLevel.LowLevelDescriptors
    )
    pieces = [jfk_pcm[start : start + length] for start, length in ((0, 40_000), (30_000, 5_000), (70_000, 90_000))]
    for piece in pieces + pieces[::-1]:
        expected = np.nan_to_num(fresh(piece.astype(np.float32) / 32768.0, SAMPLE_RATE)[0].T).astype(np.float32)
        np.testing.assert_array_equal(audio_extractor.extract(piece), expected)


def test_egemaps_keeps_nothing_of_past_sentences(jfk_pcm: np.ndarray) -> None:
    """A long-lived worker thread's instance holds no sink callback, and so no rows, of the sentences it ran."""
    extractor = AudioFeatureExtractor()
    for start in range(0, 5 * SAMPLE_RATE, SAMPLE_RATE):
        assert len(extractor.extract(jfk_pcm[start : start + SAMPLE_RATE])) == 96
    assert extractor._per_thread.smile.native._callbacks == []


def test_egemaps_native_instance_freed_with_its_thread(jfk_pcm: np.ndarray, monkeypatch: pytest.MonkeyPatch) -> None:
    freed: list[OpenSMILE] = []
    free = OpenSMILE.free
    monkeypatch.setattr(OpenSMILE, "free", lambda native: (freed.append(native), free(native))[1])
    extractor = AudioFeatureExtractor()
    made: list[OpenSMILE] = []

    def sentence_on_a_worker() -> None:
        extractor.extract(jfk_pcm[: 2 * SAMPLE_RATE])
        made.append(extractor._per_thread.smile.native)

    worker = threading.Thread(target=sentence_on_a_worker)
    worker.start()
    worker.join()
    gc.collect()
    assert any(native is made[0] for native in freed), "the ended thread's instance is freed"
    extractor.extract(jfk_pcm[: 2 * SAMPLE_RATE])  # this thread's own instance, kept for the next sentence
    kept = extractor._per_thread.smile.native
    gc.collect()
    assert not any(native is kept for native in freed)


# ---------------------------------------------------------------- face


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return decode_image(_need(ASTRONAUT).read_bytes(), "png")


@pytest.fixture(scope="module")
def grid_frames() -> list[np.ndarray]:
    return [frame for _, frame in iter_video_frames(_need(GRID_CLIP), 5)]


def test_astronaut_landmarks_normalised(astronaut: np.ndarray) -> None:
    landmarks = FaceLandmarker().landmarks(astronaut)
    assert landmarks is not None
    assert landmarks.shape == (FaceLandmarker.DIM,) and landmarks.dtype == np.float32
    assert np.isfinite(landmarks).all()
    points = landmarks.reshape(68, 2)
    np.testing.assert_allclose(points.mean(axis=0), 0.0, atol=1e-5)
    assert np.sqrt((points**2).sum(axis=1).mean()) == pytest.approx(1.0, abs=1e-5)


def test_astronaut_points_lie_on_the_detected_face(astronaut: np.ndarray) -> None:
    points = FaceLandmarker().points(astronaut)
    assert points is not None and points.shape == (68, 2)
    faces = dlib.get_frontal_face_detector()(cv2.cvtColor(astronaut, cv2.COLOR_RGB2GRAY), 0)
    assert len(faces) == 1
    face = faces[0]
    margin = 0.15 * face.width()
    assert (points[:, 0] >= face.left() - margin).all() and (points[:, 0] <= face.right() + margin).all()
    assert (points[:, 1] >= face.top() - margin).all() and (points[:, 1] <= face.bottom() + margin).all()
    eyes, nose, mouth = points[36:48], points[27:36], points[48:68]
    assert eyes[:, 1].mean() < nose[:, 1].mean() < mouth[:, 1].mean()
    right_eye, left_eye = points[36:42].mean(axis=0), points[42:48].mean(axis=0)
    assert right_eye[0] < nose[:, 0].mean() < left_eye[0]  # image left to right


def test_grid_clip_face_on_every_frame_and_mouth_moves(grid_frames: list[np.ndarray]) -> None:
    landmarker = FaceLandmarker()
    found = [landmarker.landmarks(frame) for frame in grid_frames]
    assert len(grid_frames) == 15
    assert sum(landmarks is not None for landmarks in found) >= len(grid_frames) - 1
    assert landmarker.detections < len(grid_frames) / 2  # the tracker did most frames
    points = np.stack([landmarks.reshape(68, 2) for landmarks in found if landmarks is not None])
    opening = np.linalg.norm(points[:, 66] - points[:, 62], axis=1)  # inner lips, bottom - top
    assert opening.max() - opening.min() > 0.1  # "bin blue at f two now": the mouth opens and closes
    assert np.abs(np.diff(points, axis=0)).max() > 0.02


def test_no_face_gives_none(astronaut: np.ndarray, grid_frames: list[np.ndarray]) -> None:
    landmarker = FaceLandmarker()
    assert landmarker.landmarks(np.full((288, 360, 3), 128, dtype=np.uint8)) is None
    assert landmarker.landmarks(np.ascontiguousarray(astronaut[300:, 300:])) is None  # helmet and suit
    assert landmarker.landmarks(grid_frames[0]) is not None
    background = np.empty_like(grid_frames[1])
    background[:] = grid_frames[1][5, 5]  # the speaker left: only the backdrop colour remains
    assert landmarker.landmarks(background) is None  # a tracked face is not carried over


def test_tracked_landmarks_match_fresh_detection(grid_frames: list[np.ndarray]) -> None:
    tracked, fresh = FaceLandmarker(), FaceLandmarker()
    distances = []
    for frame in grid_frames:
        fresh.reset()
        by_tracking, by_detection = tracked.points(frame), fresh.points(frame)
        assert by_tracking is not None and by_detection is not None
        assert np.abs(by_tracking - by_detection).max() <= 4.0  # pixels, on a ~130 px face
        inter_ocular = np.linalg.norm(by_detection[36:42].mean(axis=0) - by_detection[42:48].mean(axis=0))
        distances.append(np.linalg.norm(by_tracking - by_detection, axis=1).mean() / inter_ocular)
    assert np.mean(distances) < 0.02  # mean point distance, as a share of the inter-ocular distance
    assert tracked.detections == 1  # 15 frames: the first is detected, the tracker did the rest
    assert fresh.detections == 1


def test_redetection_schedule_follows_the_frames_alone(grid_frames: list[np.ndarray]) -> None:
    """Re-detection every `REDETECT_EVERY` tracked frames and on a lost face, decided by the frame sequence only:
    the same frames give the same landmarks and detections, in one instance or after `reset()`."""
    frames = (grid_frames + grid_frames[::-1]) * 2  # 60 frames of one speaker, no jump between them
    landmarker = FaceLandmarker()
    first = [landmarker.points(frame) for frame in frames]
    assert landmarker.detections == 3  # frames 0, 26 and 52: every 25 tracked frames
    landmarker.reset()
    again = [landmarker.points(frame) for frame in frames]
    assert landmarker.detections == 3
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    background = np.empty_like(grid_frames[1])
    background[:] = grid_frames[1][5, 5]
    landmarker.reset()
    landmarker.points(grid_frames[0])
    assert landmarker.points(background) is None and landmarker.detections == 2  # lost: detected again
    assert landmarker.points(grid_frames[1]) is not None and landmarker.detections == 3  # found again


def test_decode_image_round_trips(grid_frames: list[np.ndarray]) -> None:
    frame = grid_frames[3]
    height, width, _ = frame.shape
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    decoded = decode_image(jpeg.tobytes(), "jpeg")
    assert decoded.shape == frame.shape and decoded.dtype == np.uint8
    assert np.abs(decoded.astype(np.int16) - frame).mean() < 4
    ok, png = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
    np.testing.assert_array_equal(decode_image(png.tobytes(), "png"), frame)
    np.testing.assert_array_equal(decode_image(frame.tobytes(), "rgb24", width, height), frame)
    assert FaceLandmarker().landmarks(decoded) is not None


def test_decode_image_rejects_bad_data(grid_frames: list[np.ndarray]) -> None:
    frame = grid_frames[3]
    height, width, _ = frame.shape
    jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))[1].tobytes()
    png = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))[1].tobytes()
    with pytest.raises(ValueError, match="empty"):
        decode_image(b"", "jpeg")
    with pytest.raises(ValueError, match="corrupt JPEG"):
        decode_image(b"this is not an image at all", "jpeg")
    with pytest.raises(ValueError, match="truncated JPEG"):
        decode_image(jpeg[: len(jpeg) // 2], "jpeg")
    with pytest.raises(ValueError, match="corrupt jpeg"):  # intact markers, scan data wiped
        decode_image(jpeg[:600] + bytes(len(jpeg) - 602) + jpeg[-2:], "jpeg")
    with pytest.raises(ValueError, match="truncated PNG"):
        decode_image(png[:-100], "png")
    with pytest.raises(ValueError, match="corrupt PNG"):
        decode_image(jpeg, "png")
    huge = png[:16] + struct.pack(">II", MAX_IMAGE_SIDE + 1, 10) + png[24:]
    with pytest.raises(ValueError, match=f"{MAX_IMAGE_SIDE + 1}x10 pixels"):
        decode_image(huge, "png")
    with pytest.raises(ValueError, match="needs 311040 bytes, got 311037"):
        decode_image(frame.tobytes()[:-3], "rgb24", width, height)
    with pytest.raises(ValueError, match="5000x2 pixels"):
        decode_image(bytes(5000 * 2 * 3), "rgb24", 5000, 2)
    with pytest.raises(ValueError, match="unknown image format 'gif'"):
        decode_image(png, "gif")


def test_a_frame_is_pixels_or_an_encoded_image(grid_frames: list[np.ndarray]) -> None:
    """What a session is given as a frame: decoded pixels are checked and turned grey; encoded bytes are
    decoded straight to grey (a JPEG's luma plane: the colour decode's grey up to rounding)."""
    frame = grid_frames[3]
    height, width, _ = frame.shape
    grey = cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY)
    np.testing.assert_array_equal(grey_pixels(frame), grey)
    np.testing.assert_array_equal(grey_pixels(EncodedImage(frame.tobytes(), "rgb24", width, height)), grey)
    png = cv2.imencode(".png", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))[1].tobytes()
    assert np.abs(grey_pixels(EncodedImage(png, "png")).astype(np.int16) - grey).max() <= 1
    jpeg = cv2.imencode(".jpg", cv2.cvtColor(frame, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 80])[1].tobytes()
    from_luma = grey_pixels(EncodedImage(jpeg, "jpeg")).astype(np.int16)
    from_colour = cv2.cvtColor(decode_image(jpeg, "jpeg"), cv2.COLOR_RGB2GRAY)
    assert from_luma.shape == (height, width)
    assert np.abs(from_luma - from_colour).mean() < 0.1 and np.abs(from_luma - from_colour).max() <= 4
    with pytest.raises(ValueError, match=r"uint8 \[height, width, 3\], got float32 \[4, 4, 3\]"):
        grey_pixels(np.zeros((4, 4, 3), dtype=np.float32))
    with pytest.raises(ValueError, match=r"got uint8 \[4, 4\]"):
        grey_pixels(np.zeros((4, 4), dtype=np.uint8))
    with pytest.raises(ValueError, match=f"RGB frame of 2x{MAX_IMAGE_SIDE + 1} pixels"):
        grey_pixels(np.zeros((MAX_IMAGE_SIDE + 1, 2, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match="corrupt JPEG"):
        grey_pixels(EncodedImage(b"this is not an image at all", "jpeg"))


def test_landmarks_read_grey(grid_frames: list[np.ndarray]) -> None:
    """The landmarker reads grey only: an RGB frame and its grey conversion give the same landmarks."""
    greys = [cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY) for frame in grid_frames]
    from_rgb, from_grey = FaceLandmarker(), FaceLandmarker()
    for frame, grey in zip(grid_frames, greys, strict=True):
        np.testing.assert_array_equal(from_rgb.points(frame), from_grey.points(grey))
    with pytest.raises(ValueError, match=r"got float32 \(4, 4\)"):
        from_grey.points(np.zeros((4, 4), dtype=np.float32))


# ---------------------------------------------------------------- text


@pytest.fixture(scope="module")
def embedder() -> TextEmbedder:
    return TextEmbedder()


def test_text_embeddings_shapes_and_norm(embedder: TextEmbedder) -> None:
    texts = ["I went for a walk with my dog this morning.", "Nothing seems worth doing anymore."]
    embeddings, similarities = embedder.embed(texts)
    assert embeddings.shape == (2, TextEmbedder.DIM) == (2, 384) and embeddings.dtype == np.float32
    assert similarities.shape == (2, TextEmbedder.ITEMS) == (2, len(PHQ8_ITEMS)) == (2, 8)
    assert similarities.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(embeddings, axis=1), 1.0, atol=1e-5)
    assert ((similarities >= -1) & (similarities <= 1)).all()


def test_phq8_items_score_their_own_symptom(embedder: TextEmbedder) -> None:
    _, similarities = embedder.embed(["I have had no energy and feel tired all day", "I can't sleep at night"])
    assert PHQ8_ITEMS[int(similarities[0].argmax())] == "fatigue"
    assert PHQ8_ITEMS[int(similarities[1].argmax())] == "sleep"


def test_empty_text_is_zero_and_batch_is_consistent(embedder: TextEmbedder) -> None:
    sentence = "I feel down and hopeless most days."
    embeddings, similarities = embedder.embed(["", sentence, "   "])
    assert not embeddings[[0, 2]].any() and not similarities[[0, 2]].any()
    alone_embedding, alone_similarities = embedder.embed([sentence])
    np.testing.assert_allclose(embeddings[1], alone_embedding[0], atol=1e-5)
    np.testing.assert_allclose(similarities[1], alone_similarities[0], atol=1e-5)
    empty_embeddings, empty_similarities = embedder.embed([])
    assert empty_embeddings.shape == (0, 384) and empty_similarities.shape == (0, 8)


# ---------------------------------------------------------------- asr


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word error rate by the project's own measure (`engine.transcript_error`: lower-cased, no punctuation)."""
    return transcript_error(reference, hypothesis, "en").rate


def test_word_error_rate_helper() -> None:
    assert word_error_rate("Ask not, what!", "ask not what") == 0.0
    assert word_error_rate("a b c d", "a x c") == 0.5  # one substitution, one deletion


@pytest.fixture(scope="module")
def whisper() -> WhisperTranscriber:
    transcriber = make_transcriber("whisper")
    assert isinstance(transcriber, WhisperTranscriber)
    return transcriber


@pytest.mark.slow
def test_whisper_transcribes_jfk(whisper: WhisperTranscriber, jfk_pcm: np.ndarray) -> None:
    reference = (JFK / "transcript.txt").read_text()
    transcript = whisper.transcribe(jfk_pcm, "en")
    assert word_error_rate(reference, transcript.text) < 0.25, transcript.text
    assert 0.0 < transcript.confidence <= 1.0


def test_whisper_skips_other_languages_and_empty_audio(whisper: WhisperTranscriber, jfk_pcm: np.ndarray) -> None:
    assert whisper.name == "whisper"
    english_only = make_transcriber("tiny.en")
    assert english_only.transcribe(jfk_pcm, "fr").text == ""
    assert english_only.transcribe(jfk_pcm, "zh-CN").confidence == 0.0
    assert whisper.transcribe(jfk_pcm, "tlh").text == "", "no Whisper model knows Klingon"
    assert whisper.transcribe(np.zeros(0, dtype=np.int16), "en").text == ""
    with pytest.raises(ValueError, match="int16"):
        whisper.transcribe(jfk_pcm.astype(np.float32), "en")


def test_no_transcriber_and_factory(jfk_pcm: np.ndarray) -> None:
    none = make_transcriber("none")
    assert isinstance(none, NoTranscriber) and none.name == "none"
    transcript = none.transcribe(jfk_pcm, "en")
    assert transcript.text == "" and transcript.confidence == 0.0
    with pytest.raises(ValueError, match=r"'bogus' is not whisper, none, or .* tiny.en, base"):
        make_transcriber("bogus")
