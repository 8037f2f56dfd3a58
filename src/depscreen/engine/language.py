"""Language tags: the BCP-47 tag a session names, and the Whisper language code the recognisers are chosen by.

Light on purpose (no recogniser loaded): the protocol checks a session's tag before any model is touched.
"""

from __future__ import annotations

import re

LANGUAGE_TAG = re.compile(
    r"[A-Za-z]{2,3}(?:-[A-Za-z]{3}){0,3}(?:-[A-Za-z]{4})?(?:-(?:[A-Za-z]{2}|[0-9]{3}))?(?:-[A-Za-z0-9]{1,8})*"
)
"""A well-formed BCP-47 tag, loosely: a 2-3 letter primary language, then extlang, script, region and variant
subtags (e.g. "en", "en-US", "zh-CN", "zh-Hans-CN", "cmn")."""

DEFAULT_LANGUAGE = "en"
"""The language of a session that names none (the wire's default)."""
LANGUAGE_ALIASES = {"cmn": "zh"}
"""ISO 639-3 codes Whisper knows under their ISO 639-1 code (Mandarin)."""


def primary_language(tag: str) -> str:
    """The Whisper language code of a BCP-47 tag ("en" for an empty one); ValueError naming a malformed tag."""
    if not tag:
        return DEFAULT_LANGUAGE
    if len(tag) > 35 or not LANGUAGE_TAG.fullmatch(tag):
        raise ValueError(
            f"language {tag[:40]!r} is not a BCP-47 language tag: use one such as en, en-US, zh, zh-CN or cmn"
        )
    primary = tag.split("-")[0].lower()
    return LANGUAGE_ALIASES.get(primary, primary)
