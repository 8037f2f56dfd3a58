"""Checkpoints: the model's weights, sizes and feature statistics, with the facts a model card needs."""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch

from depscreen.engine.features.language_head import SHIPPED_HEADS
from depscreen.engine.features.text import DEFAULT_TEXT_ENCODER, TEXT_ENCODERS
from depscreen.engine.media import DEFAULT_VIDEO_FPS
from depscreen.engine.model.screening import ModelConfig, ScreeningModel
from depscreen.engine.runtime.interval import IntervalCalibration
from depscreen.engine.runtime.stack import Stack, check_stack
from depscreen.engine.segment import SegmenterSettings

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "model" / "weights"
DEMO_MODEL = WEIGHTS_DIR / "synthetic-demo.pt"
"""The shipped demo checkpoint, trained by `depscreen train --synthetic` (plumbing only, not a screener)."""
DEFAULT_MODEL = WEIGHTS_DIR / "eatd-bimamba.pt"
"""The shipped screening model, trained by `depscreen train --dataset eatd` (see docs/MODEL_CARD.md)."""

FORMAT_VERSION = 1


@dataclass(frozen=True)
class TrainingSplit:
    """The sessions a stacked checkpoint was fitted on and how (`train.stack`): enough to cross-validate the same
    recipe on them again. Sessions by fingerprint only (`session_fingerprint`), nothing of what was said."""

    dataset: str
    sessions: tuple[str, ...]
    """`session_fingerprint` of each training session."""
    text: str
    """Where the heads' training text came from: "human" transcripts or "asr" text."""
    stacker: str
    """The `train.stack.STACKERS` name of the stacker, or "own": one head in its own calibration, no stacker."""
    folds: int
    seed: int

    def overlaps(self, sessions: list) -> bool:
        """Whether any of `sessions` (`LabelledSession`s of `dataset`) is one of the split's."""
        return bool({session_fingerprint(s) for s in sessions} & set(self.sessions))


def session_fingerprint(session: object) -> str:
    """A labelled session's identity without its content: SHA-256 (16 hex digits) of its id, label and the
    segmenter's sentence times, so another dataset's session of the same name is not taken for it."""
    times = [(s.start_ms, s.end_ms) for s in session.sentences]
    return hashlib.sha256(repr((session.session_id, session.label, times)).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class ModelFacts:
    """What every session is told about the model that scores it."""

    model_id: str
    trained_on: str
    intended_use: str = "Screening aid for clinicians; not a diagnosis."
    model_card_url: str = ""
    decision_threshold: float = 0.5
    """Estimate at or above which a session screens positive (chosen on held-out training data)."""
    text_encoder: str = DEFAULT_TEXT_ENCODER
    """The text featurizer that made the training text features (`features.text.TEXT_ENCODERS`); the server
    builds live text features with the same one. Checkpoints written before it was recorded used
    all-MiniLM-L6-v2."""
    segmenter: dict[str, object] = field(default_factory=lambda: asdict(SegmenterSettings()))
    """The `SegmenterSettings` that cut the training sentences. Checkpoints written before it was recorded
    were cut with the defaults."""
    video_fps: float = DEFAULT_VIDEO_FPS
    """Video frames per second analysed for the training features (or, for a model trained without video,
    the rate its landmark statistics were measured at)."""
    interval: IntervalCalibration | None = None
    """The estimate's interval calibration (`runtime.interval`), fitted on held-out estimates in training or
    added later by `depscreen calibrate`. None in checkpoints written before it: their interval is [0, 1]."""
    text_languages: tuple[str, ...] = ()
    """Languages (primary codes) of the text the model's text pathway was trained on; () when the model was
    trained without text or the checkpoint predates the record (then text in any language is read)."""
    stack: Stack | None = None
    """The heads whose logits make the screening probability, with their weights (`runtime.stack`); None in
    checkpoints written before it: their probability is the model's fused head."""
    training_split: TrainingSplit | None = None
    """What the stack was fitted on, so that `depscreen eval` on those sessions reports out-of-fold estimates
    instead of in-sample ones; None in checkpoints written before it."""


@dataclass(frozen=True)
class TextRoute:
    """Whether a session's text reaches the model, and what its client is told about it ("" = nothing)."""

    reads_text: bool
    notice: str = ""
    own_head: str = ""
    """The language whose own text head (`features.language_head`) scores the text beside the estimate, for a
    language the model did not learn; "" = none."""


def text_route(facts: ModelFacts, language: str) -> TextRoute:
    """How the model `facts` describes treats the text of a session in `language` (a primary code): read as
    trained; read through a cross-lingual featurizer that maps it beside a training language (a transfer that
    was not validated, and the client is told so); or not read at all, when the featurizer has no such map (a
    character n-gram model trained on Mandarin learns nothing about English n-grams): then the estimate rests
    on audio and video, and the client is told that too. A language with its own text head (English) also gets
    that head's estimate of the text, shown beside the estimate and never part of it, and the client is told
    what that head was trained on."""
    if facts.stack is not None:
        return _stacked_route(facts, facts.stack, language)
    return _model_route(facts, language)


def _stacked_route(facts: ModelFacts, stack: Stack, language: str) -> TextRoute:
    """The route of a checkpoint whose estimate is a stack: its language's text head feeds it; another
    language's own head is shown beside it, and the client is told that the estimate does not read that text."""
    stacked = stack.text_language()
    if language == stacked:
        return TextRoute(
            not facts.text_languages or language in facts.text_languages,
            f"the estimate is a stack fitted out of fold; its text evidence is the {language} character n-gram "
            f"head trained on {SHIPPED_HEADS[language].trained_on}",
            language,
        )
    return TextRoute(
        _model_route(facts, language).reads_text,
        f"the estimate is a stack of heads ({', '.join(stack.heads)}) of which none reads {language}: this "
        f"session's estimate stays at the training base rate and its interval is the whole "
        f"range{_own_head_words(language)}",
        language if language in SHIPPED_HEADS else "",
    )


def _model_route(facts: ModelFacts, language: str) -> TextRoute:
    trained = facts.text_languages
    if not trained or language in trained:
        return TextRoute(True)
    learned = ", ".join(trained)
    shared = TEXT_ENCODERS[facts.text_encoder].LANGUAGES
    own = _own_head_words(language)
    own_head = language if language in SHIPPED_HEADS else ""
    if shared is not None and language in shared and shared.intersection(trained):
        return TextRoute(
            True,
            f"the model's text pathway learned {learned} text; {language} text is read through the cross-lingual "
            f"{facts.text_encoder} encoder, a transfer not validated on {language} interviews{own}",
            own_head,
        )
    return TextRoute(
        False,
        f"the model's text pathway learned {learned} text only ({facts.text_encoder}): the text of this "
        f"{language} session is transcribed but not read by the model, and the estimate rests on audio and "
        f"video{own}",
        own_head,
    )


def feature_differences(facts: ModelFacts, segmenter: SegmenterSettings, video_fps: float) -> list[str]:
    """How features made live with `segmenter` and `video_fps` differ from the training features of the model
    `facts` describes: one line per setting, [] when they match. ValueError when this version cannot make
    features like the training ones at all (the checkpoint records a segmenter setting it does not have)."""
    known = {f.name for f in fields(SegmenterSettings)}
    unknown = sorted(set(facts.segmenter) - known)
    if unknown:
        raise ValueError(
            f"model {facts.model_id} was trained on sentences cut with segmenter settings this version does not "
            f"have ({', '.join(unknown)}): serve it with the depscreen version that trained it, or retrain it"
        )
    trained = replace(SegmenterSettings(), **facts.segmenter)
    differences = [
        f"segmenter {name}: trained with {getattr(trained, name)!r}, live {getattr(segmenter, name)!r}"
        for name in sorted(known)
        if getattr(trained, name) != getattr(segmenter, name)
    ]
    if facts.video_fps != video_fps:
        differences.append(f"video_fps: trained at {facts.video_fps:g}, live {video_fps:g}")
    return differences


def check_text_featurizer(config: ModelConfig, facts: ModelFacts) -> None:
    """ValueError unless this version has the text featurizer `facts` names and it makes the text input that
    `config` reads (its width, and n-gram counts exactly when the model projects them)."""
    featurizer = TEXT_ENCODERS.get(facts.text_encoder)
    if featurizer is None:
        raise ValueError(
            f"model {facts.model_id} reads text features of {facts.text_encoder!r}, a featurizer this version does "
            f"not have ({', '.join(TEXT_ENCODERS)}): serve it with the depscreen version that trained it"
        )
    width = featurizer.DIM + featurizer.ITEMS
    if config.text_dim != width or bool(config.text_projection) != featurizer.NGRAM_COUNTS:
        raise ValueError(
            f"model {facts.model_id} reads {config.text_dim}-d text input"
            f"{' projected from n-gram counts' if config.text_projection else ''}, but its text featurizer "
            f"{facts.text_encoder!r} makes {width}-d "
            f"{'n-gram counts' if featurizer.NGRAM_COUNTS else 'sentence embeddings'}: the checkpoint is "
            "inconsistent; retrain it or record the featurizer it was trained with"
        )


def save_checkpoint(path: str | Path, model: ScreeningModel, facts: ModelFacts) -> None:
    """Write weights, config and facts to one file (ValueError when the facts' text featurizer does not make
    the text input the model reads)."""
    check_text_featurizer(model.config, facts)
    torch.save(
        {
            "format_version": FORMAT_VERSION,
            "config": model.config.to_dict(),
            "facts": asdict(facts),
            "state_dict": model.state_dict(),
        },
        Path(path),
    )


def replace_facts(path: str | Path, facts: ModelFacts, out: str | Path) -> None:
    """Write the checkpoint at `path` to `out` with `facts` instead of its own, everything else byte for byte as
    it was stored (its weights and its config as the version that trained it wrote them)."""
    blob = torch.load(Path(path), map_location="cpu", weights_only=True)
    blob["facts"] = asdict(facts)
    torch.save(blob, Path(out))


def load_checkpoint(path: str | Path, device: torch.device | None = None) -> tuple[ScreeningModel, ModelFacts]:
    """Load a checkpoint written by `save_checkpoint` into an eval-mode model on `device`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"model checkpoint {path} does not exist: pass --model PATH to a .pt checkpoint")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{path} is not a depscreen checkpoint (format {FORMAT_VERSION})")
    recorded = dict(blob["facts"])
    if recorded.get("interval") is not None:
        recorded["interval"] = IntervalCalibration(**recorded["interval"])
    recorded["text_languages"] = tuple(recorded.get("text_languages", ()))
    if recorded.get("stack") is not None:
        stack = recorded["stack"]
        base_rate = stack.get("base_rate")  # absent before it was recorded
        recorded["stack"] = Stack(
            tuple(stack["heads"]),
            tuple(stack["weights"]),
            float(stack["bias"]),
            None if base_rate is None else float(base_rate),
        )
    if recorded.get("training_split") is not None:
        split = recorded["training_split"]
        recorded["training_split"] = TrainingSplit(**{**split, "sessions": tuple(split["sessions"])})
    config, facts = ModelConfig(**blob["config"]), ModelFacts(**recorded)
    try:
        check_text_featurizer(config, facts)
        if facts.stack is not None:
            check_stack(facts.stack, facts.model_id)
    except ValueError as error:
        raise ValueError(f"{path}: {error}") from error
    model = ScreeningModel(config)
    model.load_state_dict(blob["state_dict"])
    model.eval()
    return model.to(device or torch.device("cpu")), facts


def _own_head_words(language: str) -> str:
    """The end of a route's notice that names the language's own text head, or "" when it has none."""
    head = SHIPPED_HEADS.get(language)
    if head is None:
        return ""
    return (
        f"; the text modality's own estimate comes from a {language} character n-gram head trained on "
        f"{head.trained_on}, shown beside the estimate and not part of it"
    )
