"""ServerParts: the loaded parts a server is built from (screener, feature extractors, speech recogniser, language
text heads), and `load_parts`, which loads the real ones as the settings say.

A `Server` given no parts loads them with `load_parts` at start; a test gives it parts of its own (the fakes of
`tests/fakes.py`), so the protocol, the session, admission and resume run without loading a feature model.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from depscreen.engine.features.asr import DEFAULT_LANGUAGE, AsrObserver, ModelFilesError
from depscreen.engine.features.language_head import SHIPPED_HEADS, LanguageTextHead, language_text_head
from depscreen.engine.pipeline import Extractors, PipelineSettings
from depscreen.engine.runtime.checkpoint import ModelFacts, feature_differences, text_route
from depscreen.engine.runtime.screener import Screener
from depscreen.engine.segment import SegmenterSettings
from depscreen.engine.vad import preload_vad
from depscreen.streamer.settings import ServerSettings, SettingsError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServerParts:
    """What a server's sessions run on, loaded once and shared by all of them."""

    screener: Screener
    """The model on its device (`runtime.screener`)."""
    extractors: Extractors
    """The feature extractors (audio, text) and the speech recogniser (`extractors.transcriber`)."""
    language_head: Callable[[str], LanguageTextHead | None] = language_text_head
    """The text head of a language the model did not learn, by primary code (`features.language_head`); None
    for a language without one."""


def load_parts(settings: ServerSettings, asr_observer: AsrObserver | None = None) -> ServerParts:
    """Load the model, the feature extractors and the recogniser `settings` ask for, and preload the VAD, the
    language heads the model needs and the wire's default language's recogniser, so no session pays for loading;
    SettingsError says what to fix (a checkpoint this version cannot serve, a missing model package, a damaged
    head). `asr_observer` hears each decoding's cost (the server's metrics). Blocking: run it off the event loop."""
    try:
        screener = Screener.from_checkpoint(settings.model, settings.device)
    except ValueError as error:  # a checkpoint this version cannot serve: say why instead of a traceback
        raise SettingsError(str(error)) from None
    check_features(
        screener.facts, PipelineSettings(video_fps=settings.video_fps, segmenter=SegmenterSettings(vad=settings.vad))
    )
    try:
        extractors = Extractors.load(settings.asr, settings.asr_capacity, screener.facts.text_encoder, asr_observer)
    except ModelFilesError as error:
        raise SettingsError(str(error)) from None
    preload_vad(settings.vad)
    preload_language_heads(screener.facts)
    # The wire's default language is loaded now; a session in another language loads its model on first use.
    extractors.transcriber.preload(DEFAULT_LANGUAGE)
    return ServerParts(screener, extractors)


def check_features(facts: ModelFacts, pipeline: PipelineSettings) -> None:
    """Refuse (SettingsError) a model whose training features this server cannot make; warn of each setting
    the operator chose unlike the model's training (its estimates rest on features it was not trained on)."""
    try:
        differences = feature_differences(facts, pipeline.segmenter, pipeline.video_fps)
    except ValueError as error:
        raise SettingsError(str(error)) from None
    for difference in differences:
        log.warning("model %s was trained on other features than this server makes: %s", facts.model_id, difference)


def preload_language_heads(facts: ModelFacts) -> None:
    """Load (and check against their pinned checksums) the text heads of the languages the model did not learn;
    a damaged head file stops the server here (SettingsError), not a session later."""
    for language in SHIPPED_HEADS:
        if not text_route(facts, language).own_head:
            continue
        try:
            language_text_head(language)
        except ValueError as error:
            raise SettingsError(str(error)) from None
