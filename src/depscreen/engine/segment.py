"""Streaming sentence segmenter: cuts 16 kHz mono speech into sentences as it arrives (VAD + noise gate).

Each frame is decided by a voice-activity detector (`engine/vad.py`). With webrtcvad, the default, a frame is
speech only when webrtcvad says so AND its level stands a margin above an adaptive noise floor (webrtcvad
alone calls far-field noise speech). Inside a sentence the gate's margin is lower (hysteresis), but a frame
must also stay within range of the sentence's own speech level, so that breath and background in a pause
after loud speech let the sentence close. Silero VAD needs no gate and decides alone. A four-state machine
turns the frame decisions into sentences:

    QUIET     no speech in the onset window
    STARTING  some speech in the onset window, not yet `onset_ms` of it
    SPEAKING  inside a sentence, last frame speech
    STOPPING  inside a sentence, a pause is running; `end_silence_ms` of it closes the sentence

While a sentence is open, a pause of `piece_pause_ms` inside it cuts a piece (`Piece`, handed to the
`on_piece` listener as soon as its end is decided): the speech recogniser can transcribe the sentence while
the patient is still talking, so that closing it costs only its last piece. Pieces never change where
sentences start or end.

The stream is framed on absolute sample positions, so the sentences and pieces are bit-identical however the
audio is chunked. Memory is bounded: only the open sentence, the pre-roll and a short window are kept.

A resumed stream goes on exactly: each sentence carries a `SegmenterSnapshot` of the segmenter right after it
closed (noise floor, state machine, onset window, hangover, the detector's model state, and the decisions and
floor of the frames still held; never audio). A segmenter made from a snapshot is fed the stream again from
the snapshot's `replay_from_sample` (the held frames plus a warm-up for the detector, `vad.WARMUP_SAMPLES`):
it takes those frames without deciding them, checks that they are the audio the snapshot was taken on (a
SHA-256 of their samples), and from the resume point on cuts exactly the sentences the first segmenter would
have cut.
"""

from __future__ import annotations

import hashlib
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, fields, replace
from enum import Enum
from pathlib import Path

import numpy as np

from depscreen.engine.media import SAMPLE_RATE, decode_audio_file
from depscreen.engine.vad import VAD_NAMES, WARMUP_SAMPLES, make_vad

VAD_FRAME_MS = (10, 20, 30)
"""Frame lengths webrtcvad accepts (Silero takes any: it decides its own 32 ms windows)."""

FULL_SCALE_POWER = 32768.0**2
"""Mean square of a full-scale int16 signal: frame powers are divided by it to give dBFS."""

ZERO_POWER = 1e-12
"""Power floor of an all-zero frame (-120 dBFS), so that its level stays finite."""

NO_SAMPLES = np.zeros(0, dtype=np.int16)
"""The empty partial frame."""

BLOCK_FRAMES = 50
"""Frames handled per numpy pass: a pushed chunk of any size is worked through in blocks of this many."""


class SegmenterState(Enum):
    """Where the segmenter is between sentences (see the module docstring)."""

    QUIET = "quiet"
    STARTING = "starting"
    SPEAKING = "speaking"
    STOPPING = "stopping"


IN_SENTENCE = (SegmenterState.SPEAKING, SegmenterState.STOPPING)


@dataclass(frozen=True)
class SegmenterSettings:
    """Tuning of the segmenter; every duration is rounded up to whole frames."""

    frame_ms: int = 20
    """Analysis frame: 10, 20 or 30 ms (what webrtcvad accepts). 20 ms resolves word gaps at half the cost
    of 10 ms."""

    vad: str = "webrtc"
    """Voice-activity detector: "webrtc" (webrtcvad behind the noise gate below, ~0.3 CPU ms per second of
    audio) or "silero" (Silero VAD alone, a small neural network: on far-field meeting audio it takes far
    fewer noises for speech, frame F1 0.95 vs 0.82 on the AMI clips, at ~9 CPU ms per second of audio)."""

    vad_aggressiveness: int = 2
    """webrtcvad mode 0 (least aggressive) to 3. The energy gate supplies most of the precision (behind it,
    modes 2 and 3 did equally well on read speech in real channel noise), and mode 3 alone misses more soft
    speech."""

    vad_threshold: float = 0.3
    """Silero only: speech probability from which a frame is speech. 0.3 was chosen on the AMI clips (chosen
    on 8, it scored the ninth at pooled F1 0.946); Silero's own 0.5 misses more soft far speech."""

    onset_ms: int = 100
    """Speech (gated frames) needed within `onset_window_ms` to open a sentence: shorter clicks never open
    one."""

    onset_window_ms: int = 200
    """Window in which `onset_ms` of speech must fall; the gaps allowed in it let a soft word start open a
    sentence."""

    end_silence_ms: int = 600
    """A pause this long closes the sentence: longer than a gap between words (100-300 ms), as long as a
    pause between sentences."""

    min_sentence_ms: int = 250
    """Sentences with less speech than this are dropped (coughs, clicks, noise bursts); a bare "no" still
    passes."""

    max_sentence_ms: int = 15_000
    """A sentence reaching this length is cut at the quietest point of its last `cut_search_ms`, so that
    features and the model keep a bounded latency and input on run-on speech."""

    cut_search_ms: int = 3_000
    """Stretch at the end of an over-long sentence in which its forced cut is placed."""

    cut_pause_ms: int = 100
    """Stretch whose mean level is compared when looking for the quietest point of a forced cut: a pause
    between words, not a stop consonant's closure."""

    pre_roll_ms: int = 200
    """Audio kept before the first speech frame, so that soft onsets (fricatives, breath) are inside. It
    never reaches back into the previous sentence."""

    post_roll_ms: int = 200
    """Audio kept after the last speech frame, so that trailing sounds are inside; the rest of the closing
    pause is left out."""

    piece_pause_ms: int = 120
    """A pause this long inside an open sentence cuts it into a piece for the speech recogniser (0: no pieces,
    each sentence is transcribed whole when it closes). A pause that ends sooner than `post_roll_ms` is cut
    in its middle when the speech resumes; one that lasts `post_roll_ms` is cut there at once, where the
    sentence would end if the pause closed it. So the pause that closes a sentence first ends its last piece
    (transcribed while the sentence waits to close), and a sentence without a pause of this length inside is
    one piece with exactly the sentence's audio. Free speech pauses 100-300 ms between phrases."""

    min_piece_ms: int = 1_500
    """A piece is cut only when it spans at least this long: Whisper transcribes very short windows worse
    (a shorter stretch joins the next piece). One exception: a sentence shorter than this is still cut as one
    piece in the pause that may close it (its whole audio, so its close decodes nothing); if the speech goes
    on, the next piece starts where that one did."""

    onset_margin_db: float = 9.0
    """Outside a sentence, a frame must be this far above the noise floor to count as speech (this gate and
    the two settings below apply to webrtcvad only)."""

    hold_margin_db: float = 6.0
    """Inside a sentence, this lower margin suffices (hysteresis): soft word ends and quiet words keep the
    sentence open."""

    hold_range_db: float = 15.0
    """Inside a sentence, a frame more than this below the mean level of the sentence's speech frames so far
    does not hold it open either: breathing and background in a pause after loud speech (webrtcvad accepts
    both) then let the sentence close. Soft syllables inside words sit closer than that to the mean, or
    last far less than `end_silence_ms`."""

    floor_rise_db_per_s: float = 3.0
    """Speed at which the noise floor climbs towards louder frames. Slow enough that a 10 s phrase cannot
    lift it far, fast enough to follow a fan switching on within seconds."""

    floor_fall_db_per_s: float = 50.0
    """Speed at which the noise floor drops towards quieter frames (never below them). Fast, so that it
    finds the noise in the first pause, yet one unusually quiet frame only pulls it down by a frame's
    worth (1 dB at 20 ms) instead of dragging it to the bottom."""

    digital_silence_dbfs: float = -80.0
    """Frames below this level are digital silence (muted microphone, lost packets): never speech, and left
    out of the noise floor so that they cannot drag it down."""

    def __post_init__(self) -> None:
        self._check_types()
        self._check_vad()
        self._check_durations()
        self._check_levels()

    def _check_types(self) -> None:
        """Every int field an int and every float field a number (ValueError naming the field)."""
        for field in fields(self):
            value = getattr(self, field.name)
            if field.type == "int" and (isinstance(value, bool) or not isinstance(value, int)):
                raise ValueError(f"SegmenterSettings.{field.name}={value!r} is invalid: give an int")
            if field.type == "float" and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise ValueError(f"SegmenterSettings.{field.name}={value!r} is invalid: give a number")

    def _check_vad(self) -> None:
        """The VAD, its frame length and its thresholds."""
        _require(self.frame_ms in VAD_FRAME_MS, "frame_ms", self.frame_ms, "webrtcvad takes 10, 20 or 30 ms")
        _require(self.vad in VAD_NAMES, "vad", self.vad, f"choose one of {', '.join(VAD_NAMES)}")
        _require(0 < self.vad_threshold < 1, "vad_threshold", self.vad_threshold, "give a probability in (0, 1)")
        _require(
            0 <= self.vad_aggressiveness <= 3,
            "vad_aggressiveness",
            self.vad_aggressiveness,
            "webrtcvad modes are 0 (least aggressive) to 3 (most)",
        )

    def _check_durations(self) -> None:
        """Onset, end silence, sentence, cut, piece and roll lengths, each against the ones it depends on."""
        _require(self.onset_ms > 0, "onset_ms", self.onset_ms, "give a positive duration")
        _require(
            self.onset_window_ms >= self.onset_ms,
            "onset_window_ms",
            self.onset_window_ms,
            f"the window must be at least onset_ms={self.onset_ms}",
        )
        _require(
            self.end_silence_ms >= self.frame_ms,
            "end_silence_ms",
            self.end_silence_ms,
            f"give at least one frame ({self.frame_ms} ms)",
        )
        _require(self.min_sentence_ms >= 0, "min_sentence_ms", self.min_sentence_ms, "give 0 or more")
        _require(
            self.cut_pause_ms >= self.frame_ms,
            "cut_pause_ms",
            self.cut_pause_ms,
            f"give at least one frame ({self.frame_ms} ms)",
        )
        _require(
            self.cut_search_ms >= self.cut_pause_ms,
            "cut_search_ms",
            self.cut_search_ms,
            f"the search must span at least cut_pause_ms={self.cut_pause_ms}",
        )
        _require(
            self.max_sentence_ms > self.cut_search_ms,
            "max_sentence_ms",
            self.max_sentence_ms,
            f"must exceed cut_search_ms={self.cut_search_ms}",
        )
        _require(
            self.max_sentence_ms > self.min_sentence_ms,
            "max_sentence_ms",
            self.max_sentence_ms,
            f"must exceed min_sentence_ms={self.min_sentence_ms}",
        )
        _require(
            self.piece_pause_ms == 0 or self.frame_ms <= self.piece_pause_ms < self.end_silence_ms,
            "piece_pause_ms",
            self.piece_pause_ms,
            f"give 0 (no pieces) or a pause from one frame ({self.frame_ms} ms) to below end_silence_ms="
            f"{self.end_silence_ms}",
        )
        _require(self.min_piece_ms >= 0, "min_piece_ms", self.min_piece_ms, "give 0 or more")
        _require(self.pre_roll_ms >= 0, "pre_roll_ms", self.pre_roll_ms, "give 0 or more")
        _require(
            self.onset_window_ms + self.pre_roll_ms < self.max_sentence_ms,
            "onset_window_ms",
            self.onset_window_ms,
            f"onset_window_ms + pre_roll_ms must stay below max_sentence_ms={self.max_sentence_ms}",
        )
        _require(self.post_roll_ms >= 0, "post_roll_ms", self.post_roll_ms, "give 0 or more")

    def _check_levels(self) -> None:
        """The noise-floor gate's margins, range, rates and digital-silence level."""
        _require(self.hold_margin_db >= 0, "hold_margin_db", self.hold_margin_db, "give 0 dB or more")
        _require(
            self.onset_margin_db >= self.hold_margin_db,
            "onset_margin_db",
            self.onset_margin_db,
            f"must be at least hold_margin_db={self.hold_margin_db} (the hysteresis runs that way)",
        )
        _require(
            self.hold_range_db > 0,
            "hold_range_db",
            self.hold_range_db,
            "give a positive range (a large one, e.g. 100, turns this check off)",
        )
        _require(
            self.floor_rise_db_per_s > 0,
            "floor_rise_db_per_s",
            self.floor_rise_db_per_s,
            "give a positive rate, or the floor could never follow louder noise",
        )
        _require(
            self.floor_fall_db_per_s > 0,
            "floor_fall_db_per_s",
            self.floor_fall_db_per_s,
            "give a positive rate, or the floor could never follow quieter noise",
        )
        _require(
            self.digital_silence_dbfs < 0,
            "digital_silence_dbfs",
            self.digital_silence_dbfs,
            "give a level below full scale (0 dBFS), e.g. -80",
        )

    def frames(self, duration_ms: int) -> int:
        """Whole frames covering `duration_ms` (rounded up)."""
        return -(-duration_ms // self.frame_ms)


def _require(ok: bool, name: str, value: object, advice: str) -> None:
    if not ok:
        raise ValueError(f"SegmenterSettings.{name}={value!r} is invalid: {advice}")


@dataclass(frozen=True)
class Sentence:
    """One closed sentence and its audio.

    Positions are on the 16 kHz clock of the samples pushed: sample indices from the first sample pushed,
    and milliseconds = sample index * 1000 // 16000.
    """

    index: int
    """0-based, in order of closing (which is also the order in time)."""
    start_ms: int
    end_ms: int
    start_sample: int
    end_sample: int
    pcm: np.ndarray
    """int16, 16 kHz mono: exactly samples [start_sample, end_sample) of the stream."""
    speech_ms: int
    """Milliseconds of frames judged speech inside the sentence."""
    snr_db: float
    """Mean power of the speech frames over the noise floor under them, in dB (an audio quality signal)."""
    resume: SegmenterSnapshot | None = None
    """The segmenter right after this sentence closed: where a resumed stream goes on from."""

    @property
    def duration_ms(self) -> int:
        """end_ms - start_ms."""
        return self.end_ms - self.start_ms


@dataclass(frozen=True)
class Piece:
    """A stretch of the open sentence that ended at a pause inside it; positions as in `Sentence`.

    The pieces of a sentence follow each other without gaps from its start, except that a piece may start
    where the one before it started: it replaces that one (a short stretch before a pause that may close the
    sentence joins the last piece). The sentence that closes may end before the last piece (a forced cut at
    `max_sentence_ms`), and a sentence with too little speech is dropped with its pieces."""

    sentence_start_sample: int
    """Start of the open sentence the piece belongs to (its `Sentence.start_sample` if it closes)."""
    start_sample: int
    end_sample: int
    pcm: np.ndarray
    """int16, 16 kHz mono: exactly samples [start_sample, end_sample) of the stream."""


PieceListener = Callable[[Piece], None]
"""Called with each piece as soon as it is cut (during `Segmenter.push`, before any later sentence)."""


class ReplayMismatchError(ValueError):
    """The audio fed to a resumed segmenter before its resume point is not the audio its snapshot was taken on."""


@dataclass(frozen=True)
class SegmenterSnapshot:
    """A segmenter's state between two frames, without audio: what a new segmenter fed the same stream again from
    `replay_from_sample` needs to go on exactly. Frame positions count `frame_len`-sample frames of the stream."""

    frame_len: int
    frame: int
    """The next frame to decide: the resume point is sample `frame * frame_len`."""
    replay_from: int
    """First frame to feed again (the frames still held, and the detector's warm-up)."""
    index: int
    """Index of the next sentence."""
    state: str
    floor_dbfs: float | None
    onset_frames: tuple[int, ...]
    sentence_start: int
    piece_start: int
    last_piece_start: int | None
    pieces: tuple[tuple[int, int], ...]
    """The open sentence's pieces [start, end) so far: handed to the listener again when the warm-up ends."""
    speech_level_sum: float
    speech_level_count: int
    last_speech: int
    silence_run: int
    earliest_start: int
    speech: bytes
    """Decisions of the frames [replay_from, frame), one bit each (numpy.packbits)."""
    floor_db: tuple[float, ...]
    """Noise floor under each frame [replay_from, frame)."""
    vad_state: bytes | None
    """The detector's model state (`VoiceActivityDetector.model_state`); None: it restarts cold."""
    fingerprint: str
    """SHA-256 of the samples [replay_from, frame) as int16 little-endian ("" for a cold start: nothing to check)."""

    @property
    def resume_sample(self) -> int:
        return self.frame * self.frame_len

    @property
    def replay_from_sample(self) -> int:
        return self.replay_from * self.frame_len

    @property
    def warm(self) -> bool:
        """Whether the stream goes on exactly (False: a cold start at the resume point)."""
        return self.vad_state is not None

    @classmethod
    def cold(cls, sample: int, index: int, settings: SegmenterSettings) -> SegmenterSnapshot:
        """A fresh segmenter starting at `sample` (rounded down to a frame) whose first sentence is `index`: what a
        resume without a saved segmenter goes on from."""
        frame_len = SAMPLE_RATE * settings.frame_ms // 1000
        frame = sample // frame_len
        return cls(
            frame_len, frame, frame, index, SegmenterState.QUIET.value, None, (), 0, 0, None, (), 0.0, 0, 0, 0,
            frame, b"", (), None, "",
        )  # fmt: skip

    def to_plain(self) -> dict[str, object]:
        """Plain values (ints, floats, strings, bytes, lists) for a snapshot."""
        plain = {field.name: getattr(self, field.name) for field in fields(self)}
        plain["onset_frames"], plain["floor_db"] = list(self.onset_frames), list(self.floor_db)
        plain["pieces"] = [list(piece) for piece in self.pieces]
        return plain

    @classmethod
    def from_plain(cls, plain: dict[str, object]) -> SegmenterSnapshot:
        values = dict(plain)
        values["onset_frames"] = tuple(values["onset_frames"])  # type: ignore[arg-type]
        values["floor_db"] = tuple(values["floor_db"])  # type: ignore[arg-type]
        values["pieces"] = tuple(tuple(piece) for piece in values["pieces"])  # type: ignore[attr-defined]
        return cls(**values)  # type: ignore[arg-type]


class NoiseFloor:
    """Background level in dBFS, following frame levels slowly upwards and quickly downwards."""

    def __init__(self, rise_db_per_frame: float, fall_db_per_frame: float) -> None:
        self.rise_db_per_frame = rise_db_per_frame
        self.fall_db_per_frame = fall_db_per_frame
        self.dbfs: float | None = None
        """None until the first frame above digital silence, which then sets it."""

    def follow(self, frame_dbfs: float) -> float:
        """Move towards one frame's level, never past it, at the limited speed; return the new floor."""
        floor = self.dbfs
        if floor is None:
            floor = frame_dbfs
        elif frame_dbfs > floor:
            floor = min(frame_dbfs, floor + self.rise_db_per_frame)
        else:
            floor = max(frame_dbfs, floor - self.fall_db_per_frame)
        self.dbfs = floor
        return floor


class Segmenter:
    """Push 16 kHz mono int16 audio of any chunk size; get back the sentences that closed."""

    def __init__(
        self,
        settings: SegmenterSettings = SegmenterSettings(),
        on_piece: PieceListener | None = None,
        resume: SegmenterSnapshot | None = None,
    ) -> None:
        """`on_piece`: receives the pieces of open sentences (none are cut without it, or with
        `settings.piece_pause_ms` 0). `resume`: go on from a snapshot; the first sample pushed is then its
        `replay_from_sample` (ValueError when the snapshot was taken with another frame length)."""
        self.settings = settings
        self._on_piece = on_piece if settings.piece_pause_ms else None
        self._piece_pause_frames = settings.frames(settings.piece_pause_ms)
        self._min_piece_frames = settings.frames(settings.min_piece_ms)
        self._closing_piece_frames = max(self._piece_pause_frames, settings.frames(settings.post_roll_ms))
        """Pause after which a piece ends where the sentence would end if the pause closed it."""
        self._frame_len = SAMPLE_RATE * settings.frame_ms // 1000
        self._onset_frames = settings.frames(settings.onset_ms)
        self._onset_window = settings.frames(settings.onset_window_ms)
        self._end_silence_frames = settings.frames(settings.end_silence_ms)
        self._min_speech_frames = settings.frames(settings.min_sentence_ms)
        self._max_frames = settings.frames(settings.max_sentence_ms)
        self._cut_search_frames = settings.frames(settings.cut_search_ms)
        self._cut_pause_frames = settings.frames(settings.cut_pause_ms)
        self._pre_roll_frames = settings.frames(settings.pre_roll_ms)
        self._post_roll_frames = settings.frames(settings.post_roll_ms)
        self._vad = make_vad(
            settings.vad,
            aggressiveness=settings.vad_aggressiveness,
            threshold=settings.vad_threshold,
            frame_len=self._frame_len,
        )

        self._gated = settings.vad == "webrtc"
        self._power_to_fs = 1.0 / (self._frame_len * FULL_SCALE_POWER)

        self._warmup_frames = -(-WARMUP_SAMPLES // self._frame_len)
        # History of the frames still needed (open sentence, or pre-roll + onset window, and the detector's
        # warm-up), compacted in place when the audio buffer fills: audio slot i and list item i hold frame
        # self._first_frame + i.
        lookback = max(self._max_frames, self._onset_window + self._pre_roll_frames, self._warmup_frames)
        self._capacity = 2 * (lookback + BLOCK_FRAMES)
        self._audio = np.zeros(self._capacity * self._frame_len, dtype=np.int16)
        self._level_db: list[float] = []
        self._floor_db: list[float] = []
        self._speech: list[bool] = []
        self._first_frame = 0
        self._next_frame = 0
        self._partial = NO_SAMPLES
        self._samples_received = 0

        self._state = SegmenterState.QUIET
        self._floor = NoiseFloor(
            settings.floor_rise_db_per_s * settings.frame_ms / 1000,
            settings.floor_fall_db_per_s * settings.frame_ms / 1000,
        )
        self._onset_speech: deque[int] = deque()
        self._sentence_start = 0
        self._piece_start = 0
        self._last_piece_start: int | None = None
        """Start of the open sentence's last piece (None before its first)."""
        self._open_pieces: list[tuple[int, int]] = []
        """The open sentence's pieces [start, end) so far (for a snapshot)."""
        self._speech_level_sum = 0.0
        self._speech_level_count = 0
        self._last_speech = 0
        self._silence_run = 0
        self._earliest_start = 0
        self._index = 0
        self._flushed = False
        self._resume: SegmenterSnapshot | None = None
        """The snapshot being resumed from, until its warm-up frames have all been taken."""
        self._replayed_speech = np.zeros(0, dtype=np.uint8)
        """The snapshot's decisions of its warm-up frames, one per frame."""
        if resume is not None and resume.frame > resume.replay_from:
            self._restore(resume)
        elif resume is not None:
            self._start_at(resume)

    def _start_at(self, snapshot: SegmenterSnapshot) -> None:
        """Set the stream position and the state machine from `snapshot` (the history comes with the warm-up)."""
        if snapshot.frame_len != self._frame_len:
            raise ValueError(
                f"the segmenter snapshot has {snapshot.frame_len}-sample frames, this segmenter "
                f"{self._frame_len}: resume with the frame_ms it was taken with"
            )
        self._first_frame = self._next_frame = snapshot.replay_from
        self._samples_received = snapshot.replay_from_sample
        self._index = snapshot.index
        self._state = SegmenterState(snapshot.state)
        self._floor.dbfs = snapshot.floor_dbfs
        self._onset_speech = deque(snapshot.onset_frames)
        self._sentence_start, self._piece_start = snapshot.sentence_start, snapshot.piece_start
        self._last_piece_start = snapshot.last_piece_start
        self._open_pieces = list(snapshot.pieces)
        self._speech_level_sum, self._speech_level_count = snapshot.speech_level_sum, snapshot.speech_level_count
        self._last_speech, self._silence_run = snapshot.last_speech, snapshot.silence_run
        self._earliest_start = snapshot.earliest_start

    def _restore(self, snapshot: SegmenterSnapshot) -> None:
        """Go on from `snapshot` once its warm-up frames [replay_from, frame) have been pushed again."""
        self._start_at(snapshot)
        self._resume = snapshot
        count = snapshot.frame - snapshot.replay_from
        self._replayed_speech = np.unpackbits(np.frombuffer(snapshot.speech, dtype=np.uint8), count=count)

    def snapshot(self) -> SegmenterSnapshot:
        """The segmenter now (between frames; a partial frame is not part of it): see `SegmenterSnapshot`."""
        n, frame = self._frame_len, self._next_frame
        replay_from = self._retain_from()
        lo, hi = replay_from - self._first_frame, frame - self._first_frame
        vad_state = self._vad.model_state()
        return SegmenterSnapshot(
            frame_len=n,
            frame=frame,
            replay_from=replay_from,
            index=self._index,
            state=self._state.value,
            floor_dbfs=self._floor.dbfs,
            onset_frames=tuple(self._onset_speech),
            sentence_start=self._sentence_start,
            piece_start=self._piece_start,
            last_piece_start=self._last_piece_start,
            pieces=tuple(self._open_pieces),
            speech_level_sum=self._speech_level_sum,
            speech_level_count=self._speech_level_count,
            last_speech=self._last_speech,
            silence_run=self._silence_run,
            earliest_start=self._earliest_start,
            speech=np.packbits(np.array(self._speech[lo:hi], dtype=bool)).tobytes(),
            floor_db=tuple(self._floor_db[lo:hi]),
            vad_state=vad_state,
            fingerprint=hashlib.sha256(self._audio[lo * n : hi * n].astype("<i2").tobytes()).hexdigest()
            if vad_state is not None
            else "",
        )

    @property
    def samples_received(self) -> int:
        """Samples pushed so far (the 16 kHz clock of the sentences)."""
        return self._samples_received

    @property
    def noise_floor_dbfs(self) -> float | None:
        """Current noise floor estimate, None before the first frame above digital silence."""
        return self._floor.dbfs

    @property
    def retained_samples(self) -> int:
        """Samples of the stream held for a sentence to come: open sentence, pre-roll, partial frame."""
        return (self._next_frame - self._retain_from()) * self._frame_len + len(self._partial)

    def push(self, pcm: np.ndarray) -> list[Sentence]:
        """Add int16 16 kHz mono samples (any length, 0 allowed); return the sentences that closed."""
        if self._flushed:
            raise RuntimeError("this Segmenter was flushed at the end of its stream: create a new one")
        if not isinstance(pcm, np.ndarray) or pcm.dtype != np.int16 or pcm.ndim != 1:
            kind = f"{pcm.dtype} array of shape {pcm.shape}" if isinstance(pcm, np.ndarray) else type(pcm)
            raise ValueError(
                f"push() takes a 1-D int16 numpy array of 16 kHz mono samples, got {kind}: convert the "
                "audio with depscreen.engine.media.PcmResampler first"
            )
        self._samples_received += len(pcm)
        n = self._frame_len
        samples = np.concatenate((self._partial, pcm)) if len(self._partial) else pcm
        whole_frames = len(samples) // n
        closed: list[Sentence] = []
        for first in range(0, whole_frames, BLOCK_FRAMES):
            closed.extend(self._process_block(samples[first * n : min(whole_frames, first + BLOCK_FRAMES) * n]))
        self._partial = samples[whole_frames * n :].copy() if len(samples) > whole_frames * n else NO_SAMPLES
        return closed

    def flush(self) -> list[Sentence]:
        """End of stream: close the open sentence (kept if it has enough speech); a partial frame is dropped."""
        if self._flushed:
            return []
        if self._resume is not None:
            raise ReplayMismatchError(
                f"the stream ended at sample {self._samples_received}, before the resume point "
                f"{self._resume.resume_sample}: the audio re-sent on the resume is shorter than what the session "
                "had heard; start a new session"
            )
        self._flushed = True
        if self._state in IN_SENTENCE:
            sentence = self._close(min(self._last_speech + 1 + self._post_roll_frames, self._next_frame))
            if sentence is not None:
                return [replace(sentence, resume=self.snapshot())]
        return []

    def _retain_from(self) -> int:
        """First frame still needed: the open sentence's start, or the reach of pre-roll + onset window; and
        the detector's warm-up before the current frame (a resume feeds these frames again)."""
        warmup_from = self._next_frame - self._warmup_frames
        if self._state in IN_SENTENCE:
            return max(0, min(self._sentence_start, warmup_from))
        return max(0, min(self._next_frame - self._onset_window - self._pre_roll_frames, warmup_from))

    def _make_room(self, frames: int) -> None:
        """Drop the history no longer needed when the next `frames` would not fit."""
        used = self._next_frame - self._first_frame
        if used + frames <= self._capacity:
            return
        keep = self._retain_from()
        src, count = keep - self._first_frame, self._next_frame - keep
        n = self._frame_len
        self._audio[: count * n] = self._audio[src * n : (src + count) * n]
        del self._level_db[:src], self._floor_db[:src], self._speech[:src]
        self._first_frame = keep

    def _process_block(self, block: np.ndarray) -> list[Sentence]:
        """Decide and step through up to BLOCK_FRAMES whole frames; return the sentences that closed."""
        n = self._frame_len
        count = len(block) // n
        self._make_room(count)
        slot = self._next_frame - self._first_frame
        self._audio[slot * n : (slot + count) * n] = block
        frames = block.reshape(count, n)
        wide = frames.astype(np.float64)
        powers = np.vecdot(wide, wide).tolist()  # sums of integer squares below 2**53: exact, order-free
        closed: list[Sentence] = []
        for i, power in enumerate(powers):
            level = 10.0 * math.log10(max(power * self._power_to_fs, ZERO_POWER))
            # one frame at a time: a snapshot taken when a sentence closes holds the detector as of that frame
            (vad_says,) = self._vad.decide(frames[i : i + 1])
            if self._resume is not None:
                self._take_replayed(level)
                continue
            speech = self._gate(level, vad_says)
            floor = self._floor.dbfs
            self._level_db.append(level)
            self._floor_db.append(level if floor is None else floor)
            self._speech.append(speech)
            self._next_frame += 1
            sentence = self._step(self._next_frame - 1, speech)
            if sentence is not None:
                closed.append(replace(sentence, resume=self.snapshot()))
        return closed

    def _take_replayed(self, level: float) -> None:
        """Take a warm-up frame of a resumed stream (its audio is in the buffer, the detector heard it): its
        decision and floor are the snapshot's. After the last one, check the replay and restore the detector."""
        snapshot = self._resume
        assert snapshot is not None
        held = self._next_frame - snapshot.replay_from
        self._level_db.append(level)
        self._floor_db.append(snapshot.floor_db[held])
        self._speech.append(bool(self._replayed_speech[held]))
        self._next_frame += 1
        if self._next_frame < snapshot.frame:
            return
        n = self._frame_len
        lo, hi = snapshot.replay_from - self._first_frame, snapshot.frame - self._first_frame
        fingerprint = hashlib.sha256(self._audio[lo * n : hi * n].astype("<i2").tobytes()).hexdigest()
        if snapshot.fingerprint and fingerprint != snapshot.fingerprint:
            raise ReplayMismatchError(
                f"the audio re-sent from sample {snapshot.replay_from_sample} to the resume point "
                f"{snapshot.resume_sample} is not the audio the session heard there (the client lost its buffer or "
                "sent another recording): the session cannot go on from its snapshot; start a new session"
            )
        if snapshot.vad_state is not None:
            self._vad.restore_model_state(snapshot.vad_state, self._audio[lo * n : hi * n])
        self._resume = None
        if self._on_piece:
            for start, end in snapshot.pieces:
                self._hand_piece(start, end)

    def _gate(self, level: float, vad_says: bool) -> bool:
        """Whether a frame is speech: it is above digital silence and the detector says so; behind webrtcvad its
        level must also clear the noise floor by the margin of the state (and, inside a sentence, stay within
        range of the sentence's speech level)."""
        settings = self.settings
        if level < settings.digital_silence_dbfs:
            return False
        floor = self._floor.follow(level)
        if not self._gated:
            return vad_says
        if self._state not in IN_SENTENCE:
            return vad_says and level >= floor + settings.onset_margin_db
        speech_level = self._speech_level_sum / self._speech_level_count
        return vad_says and level >= floor + settings.hold_margin_db and level >= speech_level - settings.hold_range_db

    def _step(self, frame: int, speech: bool) -> Sentence | None:
        """Advance the state machine by one frame; return a sentence if one closed on it."""
        state = self._state
        if state in (SegmenterState.QUIET, SegmenterState.STARTING):
            window = self._onset_speech
            if speech:
                window.append(frame)
            while window and window[0] <= frame - self._onset_window:
                window.popleft()
            if len(window) >= self._onset_frames:
                self._sentence_start = self._piece_start = max(window[0] - self._pre_roll_frames, self._earliest_start)
                self._last_piece_start = None
                self._open_pieces = []
                self._speech_level_sum, self._speech_level_count = self._speech_levels(self._sentence_start)
                self._last_speech = frame
                self._state = SegmenterState.SPEAKING
                window.clear()
            else:
                self._state = SegmenterState.STARTING if window else SegmenterState.QUIET
            return None
        if speech:
            if self._piece_pause_frames <= self._silence_run < self._closing_piece_frames and self._on_piece:
                self._cut_piece(self._last_speech + 1 + self._silence_run // 2)
            self._last_speech = frame
            self._silence_run = 0
            self._speech_level_sum += self._level_db[frame - self._first_frame]
            self._speech_level_count += 1
            self._state = SegmenterState.SPEAKING
        else:
            self._silence_run += 1
            self._state = SegmenterState.STOPPING
            if self._silence_run >= self._end_silence_frames:
                return self._close(self._last_speech + 1 + self._post_roll_frames)
            if self._silence_run == self._closing_piece_frames and self._on_piece:
                self._cut_piece(self._last_speech + 1 + self._post_roll_frames, closing=True)
        if frame + 1 - self._sentence_start < self._max_frames:
            return None
        return self._cut(frame)

    def _close(self, end: int) -> Sentence | None:
        """Close the open sentence at frame `end` (exclusive) and go quiet."""
        sentence = self._emit(self._sentence_start, end)
        self._state = SegmenterState.QUIET
        self._silence_run = 0
        self._earliest_start = end
        return sentence

    def _cut(self, frame: int) -> Sentence | None:
        """Cut a sentence that reached max length at the quietest stretch of its last part.

        What follows the cut stays open as the next sentence, unless it holds no speech yet (the cut fell in
        the pause after the last speech): then the segmenter goes quiet.
        """
        search_from = frame + 1 - self._cut_search_frames
        lo, hi = search_from - self._first_frame, frame + 1 - self._first_frame
        width = self._cut_pause_frames
        levels = np.array(self._level_db[lo:hi])
        stretch_means = np.convolve(levels, np.full(width, 1.0 / width), mode="valid")
        cut = search_from + int(np.argmin(stretch_means)) + width // 2
        if self._last_speech < cut:
            return self._close(cut)
        sentence = self._emit(self._sentence_start, cut)
        self._sentence_start = self._piece_start = cut
        self._last_piece_start = None
        self._open_pieces = []
        self._speech_level_sum, self._speech_level_count = self._speech_levels(cut)
        return sentence

    def _cut_piece(self, end: int, closing: bool = False) -> None:
        """Hand the open sentence's stretch from the last piece to frame `end` (exclusive) to the listener, if
        it is long enough to be a piece and the sentence has speech enough to be kept. In a pause that may
        close the sentence (`closing`), a stretch too short to be a piece is handed over joined to the last
        piece, from that piece's start (it replaces that piece), so the close still has nothing left; with no
        piece before it, it is handed over however short (it is the whole sentence if the pause closes it, so
        the close decodes nothing). A piece shorter than `min_piece_ms` (such a closing one, after which the
        speech went on) is replaced by the next piece, which starts where it started."""
        start = self._piece_start
        if self._last_piece_start is not None and (
            start - self._last_piece_start < self._min_piece_frames
            or (closing and end - start < self._min_piece_frames)
        ):
            start = self._last_piece_start
        shortest = 1 if closing and start == self._sentence_start else max(1, self._min_piece_frames)
        if end - start < shortest or self._speech_level_count < self._min_speech_frames:
            return
        self._last_piece_start, self._piece_start = start, end
        if self._open_pieces and self._open_pieces[-1][0] == start:
            self._open_pieces.pop()
        self._open_pieces.append((start, end))
        self._hand_piece(start, end)

    def _hand_piece(self, start: int, end: int) -> None:
        """Give the listener the open sentence's frames [start, end) as a piece."""
        n = self._frame_len
        lo, hi = start - self._first_frame, end - self._first_frame
        assert self._on_piece is not None
        self._on_piece(Piece(self._sentence_start * n, start * n, end * n, self._audio[lo * n : hi * n].copy()))

    def _speech_levels(self, start: int) -> tuple[float, int]:
        """Sum and count of the levels of the speech frames from `start` to now."""
        lo = start - self._first_frame
        levels = [level for level, speech in zip(self._level_db[lo:], self._speech[lo:], strict=True) if speech]
        return math.fsum(levels), len(levels)

    def _emit(self, start: int, end: int) -> Sentence | None:
        """The sentence of frames [start, end), or None when it has too little speech."""
        lo, hi = start - self._first_frame, end - self._first_frame
        speech = np.array(self._speech[lo:hi])
        speech_frames = int(speech.sum())
        if speech_frames < self._min_speech_frames:
            return None
        speech_power = np.power(10.0, np.array(self._level_db[lo:hi])[speech] / 10.0)
        noise_power = np.power(10.0, np.array(self._floor_db[lo:hi])[speech] / 10.0)
        snr_db = 10.0 * math.log10(float(speech_power.mean()) / float(noise_power.mean()))
        n = self._frame_len
        start_sample, end_sample = start * n, end * n
        sentence = Sentence(
            index=self._index,
            start_ms=start_sample * 1000 // SAMPLE_RATE,
            end_ms=end_sample * 1000 // SAMPLE_RATE,
            start_sample=start_sample,
            end_sample=end_sample,
            pcm=self._audio[lo * n : hi * n].copy(),
            speech_ms=speech_frames * self.settings.frame_ms,
            snr_db=round(snr_db, 2),
        )
        self._index += 1
        return sentence


def segment_pcm(pcm: np.ndarray, settings: SegmenterSettings = SegmenterSettings()) -> list[Sentence]:
    """Sentences of a whole 16 kHz mono int16 recording (push everything, then flush)."""
    segmenter = Segmenter(settings)
    return segmenter.push(pcm) + segmenter.flush()


def segment_file(path: str | Path, settings: SegmenterSettings = SegmenterSettings()) -> list[Sentence]:
    """Sentences of any media file `av` can decode (resampled to 16 kHz mono first)."""
    return segment_pcm(decode_audio_file(path), settings)
