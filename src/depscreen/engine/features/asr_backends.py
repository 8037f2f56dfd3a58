"""The speech recognisers `--asr` can pick, by name, and the transcriber an `--asr` value builds.

`--asr` is "none", a backend's name (all its models), or a comma-separated list of one backend's model keys.
A new recogniser is a module with an `AsrBackend` and one entry in `BACKENDS`.
"""

from __future__ import annotations

from depscreen.engine.features import whisper
from depscreen.engine.features.asr import (
    ONE_AT_A_TIME,
    AsrBackend,
    AsrCapacity,
    AsrObserver,
    NoTranscriber,
    Transcriber,
)

BACKENDS: dict[str, AsrBackend] = {whisper.BACKEND.name: whisper.BACKEND}
"""The recognisers this server can run, by name."""


def asr_choice(asr: str) -> tuple[AsrBackend | None, tuple[str, ...]]:
    """The backend an `--asr` value picks and the model keys it allows ((None, ()) for "none"); ValueError
    naming a bad value and what `--asr` accepts."""
    if asr == "none":
        return None, ()
    if asr in BACKENDS:
        return BACKENDS[asr], BACKENDS[asr].models
    keys = tuple(key.strip() for key in asr.split(","))
    for backend in BACKENDS.values():
        if all(key in backend.models for key in keys):
            return backend, keys
    lists = "; ".join(f"{', '.join(b.models)} ({b.name})" for b in BACKENDS.values())
    raise ValueError(
        f"asr={asr!r} is not {', '.join(BACKENDS)}, none, or a comma-separated list of one backend's models: {lists}"
    )


def asr_models(asr: str) -> tuple[str, ...]:
    """The model keys an `--asr` value allows (none for "none"); ValueError naming a bad value."""
    return asr_choice(asr)[1]


def asr_cache_key(asr: str) -> dict[str, object]:
    """What the text of an `--asr` value depends on besides the audio: its backend's name and cache key."""
    backend, models = asr_choice(asr)
    return {"backend": "none"} if backend is None else {"backend": backend.name, **backend.cache_key(models)}


def make_transcriber(
    asr: str, capacity: AsrCapacity = ONE_AT_A_TIME, observer: AsrObserver | None = None
) -> Transcriber:
    """The transcriber an `--asr` value asks for: NoTranscriber for "none", else its backend's with those
    models (`capacity`: calls at once and batching; each decoding's cost goes to `observer`)."""
    backend, models = asr_choice(asr)
    return NoTranscriber() if backend is None else backend.build(models, capacity, observer)
