"""QuestionTrack: the clinician's voice of a two-role session cut into sentences, for the questions the patient
answers (no model, no features: nothing of it is scored).

The clinician's channel goes through its own resampler and its own `Segmenter` (the patient's settings, a
second instance), so both voices are cut the same way on the same audio clock. Each closed clinician sentence
is kept as a `Question` (its span, and its text when the session asks for the clinician's words: the clinician's
captions overlapping it, else ASR when it may run); its audio is not kept. A patient sentence answers the last
question that ended before it began (`answered_by`). With the same segmenter settings a clinician sentence that
ends before a patient sentence begins is always closed before that patient sentence is: the push of a chunk to
this track must come before the push of the same chunk to the patient's pipeline.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from depscreen.engine.caption import Caption, checked_caption
from depscreen.engine.features.asr import Transcriber
from depscreen.engine.media import PcmResampler
from depscreen.engine.pipeline import PipelineSettings
from depscreen.engine.segment import Segmenter, SegmenterSettings, Sentence

KEPT_QUESTIONS = 32
"""Closed questions kept for the patient sentences still to close (an open patient sentence is at most
`max_sentence_ms` long, far fewer questions than this fit before it)."""
KEPT_CAPTIONS = 256
"""Clinician captions held waiting for their question; the oldest are dropped beyond this."""


@dataclass(frozen=True)
class Question:
    """A clinician's sentence on the session's clock, with its text when the session reports it."""

    start_ms: int
    end_ms: int
    transcript: str = ""
    transcript_source: str = ""
    """"caption", "asr" or "" (no text, or the clinician's words are not reported)."""


class QuestionTrack:
    """The clinician's channel of one session: `push_audio` its mono PCM, `push_caption` its captions,
    `finish` at the end; `answered_by` names the question a patient sentence answers."""

    def __init__(
        self,
        *,
        sample_rate_hz: int,
        settings: SegmenterSettings,
        transcriber: Transcriber | None = None,
        language: str = "",
        keep_text: bool = False,
        origin_ms: int = 0,
    ) -> None:
        """`keep_text`: the questions carry the clinician's words (captions, else ASR with `transcriber` when
        it knows `language`); False: spans only, and clinician captions are dropped unread. `origin_ms`: the
        session clock at the first sample (a resumed session)."""
        self.keep_text = keep_text
        self.language = language
        self.origin_ms = origin_ms
        self._transcriber = transcriber
        self._resampler = PcmResampler(sample_rate_hz, 1)
        self._segmenter = Segmenter(settings)
        self._questions: deque[Question] = deque(maxlen=KEPT_QUESTIONS)
        self._captions: deque[Caption] = deque(maxlen=KEPT_CAPTIONS)
        self.sentences = 0
        """Clinician sentences closed so far (by this track)."""

    def push_audio(self, data: bytes, transcribe: bool = True) -> None:
        """The clinician's mono s16le PCM at the session's rate; `transcribe` False (the server sheds ASR under
        load) leaves the questions it closes without ASR text."""
        self._close(self._segmenter.push(self._resampler.push(data)), transcribe)

    def finish(self, transcribe: bool = True) -> None:
        """End of stream: drain the resampler and close the open clinician sentence."""
        sentences = self._segmenter.push(self._resampler.flush()) + self._segmenter.flush()
        self._close(sentences, transcribe)

    def push_caption(self, caption: Caption, max_chars: int = PipelineSettings.max_caption_chars) -> bool:
        """Hold a clinician caption for the question it overlaps; False when it is not used (the session does
        not report the clinician's words). An invalid one raises ValueError, as the patient's captions do."""
        checked = checked_caption(caption.start_ms, caption.end_ms, caption.text, max_chars)
        if not self.keep_text:
            return False
        self._captions.append(checked)
        return True

    def answered_by(self, start_ms: int) -> Question | None:
        """The question a patient sentence beginning at `start_ms` answers: the last one that ended at or before
        it; None when the clinician has not finished a sentence before it. Patient sentences come in order, so
        the questions before that one are forgotten."""
        while len(self._questions) > 1 and self._questions[1].end_ms <= start_ms:
            self._questions.popleft()
        if self._questions and self._questions[0].end_ms <= start_ms:
            return self._questions[0]
        return None

    def _close(self, sentences: list[Sentence], transcribe: bool) -> None:
        for sentence in sentences:
            start_ms, end_ms = sentence.start_ms + self.origin_ms, sentence.end_ms + self.origin_ms
            text, source = self._text(sentence, start_ms, end_ms, transcribe) if self.keep_text else ("", "")
            self._questions.append(Question(start_ms, end_ms, text, source))
            self.sentences += 1

    def _text(self, sentence: Sentence, start_ms: int, end_ms: int, transcribe: bool) -> tuple[str, str]:
        spans = [c.text for c in self._captions if c.start_ms < end_ms and c.end_ms > start_ms]
        while self._captions and self._captions[0].end_ms <= end_ms:
            self._captions.popleft()
        if spans:
            return " ".join(spans), "caption"
        transcriber = self._transcriber
        if transcribe and transcriber is not None and transcriber.model_for(self.language):
            heard = transcriber.transcribe(sentence.pcm, self.language).text.strip()
            return heard, "asr" if heard else ""
        return "", ""
