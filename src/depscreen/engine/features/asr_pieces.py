"""Speech recognition of a sentence while it is spoken: its pieces are transcribed in the background as they are cut.

The segmenter cuts the open sentence at the pauses inside it (`segment.Piece`); each piece is handed to a
worker thread at once and transcribed there, following on from the text of the sentence's earlier pieces.
When the sentence closes, its owner waits for the pieces still running and transcribes only what follows
the last one, in its own thread (with the last piece when that rest is shorter than a piece); the pause that
closes a sentence ends its last piece first, so usually nothing is left. The text is the pieces' texts
joined: it depends only on where the pieces were cut, never on how fast the workers were, so the same audio
gives the same text however it is chunked.

A piece that may not be transcribed when it is cut (the server sheds ASR under load, or a caption already
covers it) waits and joins the next piece that may; whatever no piece covered is transcribed at the close.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, replace

import numpy as np

from depscreen.engine.features.asr import (
    NO_TRANSCRIPT,
    AsrObserver,
    Transcriber,
    Transcript,
    join_text,
    primary_language,
)
from depscreen.engine.media import SAMPLE_RATE
from depscreen.engine.segment import Piece, Sentence

SHORTEST_REST_S = 0.25
"""What follows a sentence's last piece is transcribed only from this long (the least speech of a sentence):
a shorter rest is the tail of a forced cut at a quiet point, not a word Whisper could make out alone."""

AsrTimer = Callable[[float, float], None]
"""Receives (wall seconds, CPU seconds of the transcribing thread) of each transcription."""


@dataclass(frozen=True, eq=False)
class _Stretch:
    """Audio of an open sentence to transcribe: samples [start_sample, end_sample) of the stream."""

    sentence_start: int
    start_sample: int
    end_sample: int
    pcm: np.ndarray


class SentenceInPieces:
    """The transcription of one session's sentences, piece by piece while they are open.

    `add`, `close` and `forget` are called by the session's owner, one call at a time; the pieces run on
    `executor`, one at a time per session and in order (each piece is decoded after the text of the ones
    before it in its sentence). Pieces of a sentence that never closes (too little speech) are dropped when
    a later one closes.
    """

    def __init__(
        self,
        transcriber: Transcriber,
        language: str,
        executor: Executor,
        min_piece_ms: int,
        on_asr: AsrTimer | None = None,
        observer: AsrObserver | None = None,
    ) -> None:
        """`min_piece_ms`: the segmenter's shortest piece; a shorter rest after the last piece is transcribed
        again with that piece at the close (Whisper makes out a short stretch alone worse). `observer` hears how
        long each piece waited for a worker thread."""
        self._min_piece_samples = min_piece_ms * SAMPLE_RATE // 1000
        self._transcriber = transcriber
        self._language = language
        self._code = primary_language(language)
        self._executor = executor
        self._on_asr = on_asr
        self._observer = observer
        self._submitted_at = 0.0
        """`time.perf_counter()` when the next piece was handed to the executor."""
        self._lock = threading.Condition()
        self._waiting: list[Piece] = []
        """Pieces of the open sentence not yet handed to a worker (transcription was not allowed yet)."""
        self._queue: list[_Stretch] = []
        """Stretches to transcribe, in order; the first is being transcribed while `_running`."""
        self._running = False
        self._done: list[tuple[_Stretch, Transcript]] = []
        self._error: BaseException | None = None

    def add(self, piece: Piece, allowed: bool) -> None:
        """A piece was cut: transcribe it (with the pieces waiting before it) in the background if `allowed`.
        A piece that starts again where the last one started replaces it (and its text)."""
        with self._lock:
            sentence = piece.sentence_start_sample
            self._waiting = [
                p for p in self._waiting if p.sentence_start_sample == sentence and p.end_sample <= piece.start_sample
            ]
            stretches = self._queue + [s for s, _ in self._done]
            redone = [s for s in stretches if s.sentence_start == sentence and s.end_sample > piece.start_sample]
            if redone:  # the piece replaces the end of a stretch: that stretch is transcribed again with it
                first = min(redone, key=lambda s: s.start_sample)
                self._queue = [s for s in self._queue if s not in redone]
                self._done = [(s, t) for s, t in self._done if s not in redone]
                head = first.pcm[: piece.start_sample - first.start_sample]
                piece = replace(piece, start_sample=first.start_sample, pcm=np.concatenate((head, piece.pcm)))
            self._waiting.append(piece)
            if not allowed:
                return
            waiting, self._waiting = self._waiting, []
            pcm = np.concatenate([p.pcm for p in waiting]) if len(waiting) > 1 else piece.pcm
            self._queue.append(_Stretch(piece.sentence_start_sample, waiting[0].start_sample, piece.end_sample, pcm))
            if not self._running:
                self._submit()
                self._running = True

    def close(self, sentence: Sentence) -> Transcript:
        """The closed `sentence`'s transcript: its pieces' texts (waiting for those still to run, but not for
        one that runs past the sentence's end: a forced cut's) and the transcription of its audio after the last
        of them, in the calling thread; the observer hears the decodings it waited for and how long. After
        pieces that one decoding is never re-checked (text that runs away or doubts its speech is dropped: the
        pieces before it made their fallback decisions in the background), so the close waits for no fallback;
        a sentence decoded whole at the close (no piece covered it, or its one piece is decoded again with a
        short rest) is decoded as a whole sentence is, re-check included. Re-raises a worker's error."""
        start, closed_at = sentence.start_sample, time.perf_counter()

        def used(stretch: _Stretch) -> bool:  # a piece past a forced cut's end is not the sentence's: no wait
            return stretch.sentence_start == start and stretch.end_sample <= sentence.end_sample

        with self._lock:
            pending = [s for s in self._queue if used(s)]
            while self._error is None and any(used(s) for s in self._queue):
                self._lock.wait()
            error, self._error = self._error, None
            done = [(s, t) for s, t in self._done if used(s)]
            self._forget_through(start)
        if error is not None:
            raise error
        kept = [transcript for _, transcript in done]
        waited_for = [kind for s, t in done if s in pending for kind in t.decodes]
        covered = done[-1][0].end_sample if done else start
        rest = sentence.end_sample - covered
        if done and rest >= SHORTEST_REST_S * SAMPLE_RATE and rest < self._min_piece_samples:
            kept.pop()  # too short to decode alone: transcribed again with the last piece
            covered = done[-1][0].start_sample
        if sentence.end_sample - covered >= (SHORTEST_REST_S * SAMPLE_RATE if done else 1):
            kept.append(self._transcribe(sentence.pcm[covered - start :], kept, recheck=not kept))
            waited_for += kept[-1].decodes
        if self._observer is not None:
            self._observer.closed(waited_for, time.perf_counter() - closed_at)
        heard = [t for t in kept if t.text]
        if not heard:
            return NO_TRANSCRIPT
        return Transcript(join_text([t.text for t in heard], self._code), float(np.mean([t.confidence for t in heard])))

    def forget(self, through_sample: int) -> None:
        """Drop the pieces of the sentences starting at or before `through_sample` (one closed without speech
        recognition, or the stream ended)."""
        with self._lock:
            self._forget_through(through_sample)

    def _forget_through(self, start: int) -> None:
        """Drop what belongs to sentences starting at or before sample `start` (called with the lock held); a
        stretch being transcribed finishes, and its text is dropped then."""
        self._waiting = [p for p in self._waiting if p.sentence_start_sample > start]
        self._queue = [s for s in self._queue if s.sentence_start > start]
        self._done = [(s, t) for s, t in self._done if s.sentence_start > start]

    def _transcribe(self, pcm: np.ndarray, before: list[Transcript], recheck: bool = True) -> Transcript:
        """`pcm` decoded with the text of its sentence's earlier pieces `before` as the decoder's prompt."""
        said_before = join_text([t.text for t in before], self._code)
        start, cpu_start = time.perf_counter(), time.thread_time()
        transcript = self._transcriber.transcribe(pcm, self._language, said_before, recheck)
        if self._on_asr is not None:
            self._on_asr(time.perf_counter() - start, time.thread_time() - cpu_start)
        return transcript

    def _submit(self) -> None:
        """Hand the first queued stretch to the executor (called with the lock held)."""
        self._submitted_at = time.perf_counter()
        self._executor.submit(self._work)

    def _work(self) -> None:
        """Transcribe the first queued stretch on a worker, then hand the next one to the executor (so one
        session's pieces never hold a worker while other sessions' wait)."""
        with self._lock:
            if self._observer is not None:
                self._observer.waited(time.perf_counter() - self._submitted_at)
            if not self._queue:
                self._running = False
                self._lock.notify_all()
                return
            stretch = self._queue[0]
            before = [t for s, t in self._done if s.sentence_start == stretch.sentence_start]
        try:
            transcript = self._transcribe(stretch.pcm, before)
        except BaseException as error:  # handed to the owner at its next `close`, never lost in the worker
            with self._lock:
                self._error = error
                self._queue = []
                self._running = False
                self._lock.notify_all()
            return
        with self._lock:
            if self._queue and self._queue[0] is stretch:
                self._queue.pop(0)
                self._done.append((stretch, transcript))
            if self._queue:
                self._submit()
            else:
                self._running = False
            self._lock.notify_all()
