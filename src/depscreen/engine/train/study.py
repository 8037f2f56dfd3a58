"""`depscreen train --dataset`: cross-validate the model (and, with experiments, its variants and the
classic baselines), fit the shipped model on all sessions, and write checkpoint, results, figures and card.

Variants (all on the same seeded folds, the threshold always chosen on training folds):
`audio+text` (the model), `audio`, `text`; ablations of the model: `session-mean-pool` (no session Mamba),
`forward-only-encoder` (no backward scan in the sentence encoders), `no-modality-dropout`, `no-score-head`
(the binary head alone), `speaker-normalised-audio` (audio normalised by the session's own statistics) and,
given the dataset featurized with a sentence encoder as `reference`,
`sentence-embedding-text` (the text token from a sentence embedding instead of character n-grams). With
`repeats` > 1 the model, the baselines and the `REPEATED_ABLATIONS` are also compared over that many fold
assignments (`repeated`).

Every variant that hears audio gets the pitch check (`pitch.py`): its estimate within pitch groups and its
correlation with the speaker's median pitch.

The score head trains only when every session has the dataset's continuous score; otherwise the binary head
trains alone and the results (`score_head`) and the log say so.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from depscreen.engine.features.text import TEXT_ENCODERS, text_feature_dim
from depscreen.engine.modalities import MODALITY_NAMES, modality
from depscreen.engine.model.screening import ModelConfig, ScreeningModel
from depscreen.engine.runtime.checkpoint import DEMO_MODEL, ModelFacts, load_checkpoint, save_checkpoint
from depscreen.engine.runtime.interval import IntervalCalibration
from depscreen.engine.train.baselines import BASELINES, applicable_baselines, cross_validate_baseline
from depscreen.engine.train.cache import FeatureCache
from depscreen.engine.train.char_lsa import LSA_COMPONENTS, has_text
from depscreen.engine.train.crossval import CrossValidation, cross_validate, fit
from depscreen.engine.train.datasets import DatasetSpec
from depscreen.engine.train.faces import unlabelled_faces
from depscreen.engine.train.interpret import Attribution, attribute, video_gate_weight
from depscreen.engine.train.interval_fit import held_out_interval
from depscreen.engine.train.metrics import screening_report
from depscreen.engine.train.model_card import share, write_model_card
from depscreen.engine.train.pitch import median_f0, pitch_check
from depscreen.engine.train.repeated import repeated_comparison
from depscreen.engine.train.report import plot_attribution, plot_estimate_vs_sentences, plot_reliability, plot_roc
from depscreen.engine.train.sessions import DatasetLoad, LabelledSession
from depscreen.engine.train.stats import FeatureStats
from depscreen.engine.train.trainer import ModelFactory, Progress, TrainSettings
from depscreen.engine.train.variants import (
    MODALITY_SETS,
    MeanPoolScreeningModel,
    forward_only,
    restrict,
    speaker_normalised,
)

DATASET_TRAINING = TrainSettings(
    epochs=25,
    batch_size=16,
    learning_rate=2e-3,
    weight_decay=1e-2,
    modality_dropout=0.3,
    patience=4,
    unlabelled_video=0.3,
    crop_frames=400,
)
"""Real datasets are small (EATD: 82 sessions): a small model, strong weight decay, short audio crops; patience
4 (fixed beforehand: most EATD folds peaked in their first epochs, and a 10-repeat study must fit on 2 shared
cores)."""


def dataset_config(text_encoder: str, audio_dim: int = modality("audio").dim, score_head: bool = False) -> ModelConfig:
    """A small model for small datasets: d_model 32, audio LLDs pooled to 200 ms steps (half the scan of 100 ms
    steps: cheap enough for repeated cross-validation on shared CPUs); character n-gram counts projected to
    `LSA_COMPONENTS` dimensions."""
    return ModelConfig(
        audio_dim=audio_dim,
        text_dim=text_feature_dim(text_encoder),
        text_projection=LSA_COMPONENTS if TEXT_ENCODERS[text_encoder].NGRAM_COUNTS else 0,
        score_head=score_head,
        d_model=32,
        audio_pool=20,
    )


def pitch_checks(sessions: list[LabelledSession], runs: dict[str, CrossValidation]) -> dict[str, object]:
    """`pitch.pitch_check` of every cross-validated variant that hears audio: its fused estimate and its audio
    head against the sessions' median pitch."""
    f0 = {s.session_id: median_f0(s) for s in sessions}
    audio = MODALITY_NAMES.index("audio")
    checks = {}
    for name, cv in runs.items():
        heads = cv.modality_probabilities
        if heads is None or (heads[:, audio] == 0.5).all():
            continue
        estimates = {"fused": cv.probabilities, "audio_head": heads[:, audio]}
        checks[name] = pitch_check(np.array([f0[i] for i in cv.session_ids]), cv.labels, estimates, cv.folds)
    return checks


def _pitch_line(check: dict) -> str:
    fused, audio = check["fused"], check["audio_head"]
    return (
        f"median F0 alone AUROC {check['median_f0_auroc']}; fused AUROC low/high pitch {fused['auroc_low_pitch']}/"
        f"{fused['auroc_high_pitch']}, corr with F0 {fused['corr_with_median_f0']}; audio head "
        f"{audio['auroc_low_pitch']}/{audio['auroc_high_pitch']}, corr {audio['corr_with_median_f0']}"
    )


def _trained_modalities(load: DatasetLoad, language: str, has_video: bool, text_seen: bool) -> str:
    """What the dataset gave the model to learn from, in words ("audio + video + zh transcripts" and the like)."""
    text = (
        f"{language} {'speech-recognised text' if load.text == 'asr' else 'transcripts'}"
        if text_seen
        else "no text (text pathway untrained)"
    )
    return " + ".join(["audio", *(["video"] if has_video else []), text])


def score_head_decision(sessions: list[LabelledSession]) -> tuple[bool, str]:
    """(whether the score head trains, why): only when every session has the continuous score."""
    missing = sum(s.score is None for s in sessions)
    if missing:
        return False, (
            f"{missing} of {len(sessions)} sessions have no continuous score: the binary head trains alone, without "
            "the score head"
        )
    return True, f"all {len(sessions)} sessions have the continuous score: the score head trains beside the binary head"


@dataclass(frozen=True)
class Variant:
    name: str
    modalities: tuple[str, ...]
    factory: ModelFactory = ScreeningModel
    modality_dropout: float | None = None
    """None: the training settings' own."""
    score_head: bool = True
    """False: no score head even where the sessions have the score."""
    reference_text: bool = False
    """Trained on the `reference` featurization (text from a sentence encoder) instead of character n-grams."""


MODEL = Variant("audio+text", MODALITY_SETS["audio+text"])
SENTENCE_EMBEDDING_TEXT = Variant("sentence-embedding-text", MODALITY_SETS["audio+text"], reference_text=True)
NO_SCORE_HEAD = Variant("no-score-head", MODALITY_SETS["audio+text"], score_head=False)
EXPERIMENTS = (
    Variant("audio", MODALITY_SETS["audio"]),
    Variant("text", MODALITY_SETS["text"]),
    Variant("session-mean-pool", MODALITY_SETS["audio+text"], MeanPoolScreeningModel),
    Variant("forward-only-encoder", MODALITY_SETS["audio+text"], forward_only),
    Variant("no-modality-dropout", MODALITY_SETS["audio+text"], modality_dropout=0.0),
    Variant("speaker-normalised-audio", MODALITY_SETS["audio+text"], speaker_normalised),
    NO_SCORE_HEAD,
    SENTENCE_EMBEDDING_TEXT,
)
REPEATED_ABLATIONS = (SENTENCE_EMBEDDING_TEXT, NO_SCORE_HEAD)
"""The ablations `repeats` > 1 also compares over every fold assignment: the parts issue-level choices rest on."""


def video_statistics() -> FeatureStats:
    """Landmark normalisation for datasets without video: the statistics the demo model measured on the
    bundled GRID corpus sample with the live landmarker (audio fields unused)."""
    demo, _ = load_checkpoint(DEMO_MODEL)
    mean, std = (t.numpy() for t in demo.normalisation("video"))
    unit = FeatureStats.unit()
    return FeatureStats({**unit.mean, "video": mean}, {**unit.std, "video": std})


def _row(name: str, cv: CrossValidation, seed: int) -> dict[str, object]:
    row = {"name": name, **screening_report(cv.labels, cv.probabilities, cv.thresholds, seed), "epochs": cv.epochs}
    row["heads"] = cv.head_aurocs()
    if (error := cv.score_error()) is not None:
        row["score_error"] = error
    return row


def _interval_line(report: dict[str, object]) -> str:
    if not report["fitted"]:
        return f"no interval calibration: {report['reason']}"
    coverage = report["cross_validated"]
    if "coverage" not in coverage:
        return f"interval fitted; {coverage['reason']}"
    by_label = coverage["coverage_by_label"]
    return (
        f"interval: {coverage['level']:.0%} nominal, {share(coverage['coverage'])} of {coverage['prefixes']} "
        f"held-out estimates covered in CV (label 0: {share(by_label['0'])}, label 1: {share(by_label['1'])})"
    )


@dataclass(frozen=True)
class _VariantRunner:
    """How the study cross-validates one variant: its sessions (the reference featurization for
    `reference_text` variants), its model config and its settings, on the study's folds."""

    spec: DatasetSpec
    load: DatasetLoad
    text_encoder: str
    scored: bool
    folds: int
    video: FeatureStats
    faces: FeatureStats | None
    reference: tuple[str, DatasetLoad] | None
    progress: Callable[[str], Progress] | None
    log: Callable[[str], None]

    def runnable(self, variant: Variant) -> bool:
        if variant.reference_text and self.reference is None:
            self.log(f"{variant.name} not run: no reference featurization of the dataset was given")
            return False
        if not self.sessions(variant):
            self.log(f"{variant.name} not run: no {self.spec.name} session has {' or '.join(variant.modalities)}")
            return False
        return True

    def sessions(self, variant: Variant) -> list[LabelledSession]:
        source = self.reference[1] if variant.reference_text and self.reference else self.load
        return restrict(source.sessions, variant.modalities)

    def cross_validate(self, variant: Variant, settings: TrainSettings, task: str) -> CrossValidation:
        featurizer = self.reference[0] if variant.reference_text and self.reference else self.text_encoder
        if variant.modality_dropout is not None:
            settings = replace(settings, modality_dropout=variant.modality_dropout)
        return cross_validate(
            self.sessions(variant),
            self.video,
            dataset_config(featurizer, self.spec.audio_dim, self.scored and variant.score_head),
            settings,
            self.folds,
            variant.factory,
            progress=self.progress(task) if self.progress else None,
            faces=self.faces,
        )


def run_study(
    spec: DatasetSpec,
    load: DatasetLoad,
    out: Path,
    text_encoder: str,
    folds: int,
    settings: TrainSettings = DATASET_TRAINING,
    experiments: bool = False,
    progress: Callable[[str], Progress] | None = None,
    log: Callable[[str], None] = print,
    cache: FeatureCache | None = None,
    repeats: int = 1,
    reference: tuple[str, DatasetLoad] | None = None,
    ablation_repeats: int | None = None,
) -> dict[str, object]:
    """Everything `depscreen train --dataset` writes (see the module docstring); returns the results.

    `progress(task)` gives the per-epoch callback of a task's training runs; `reference`: (text featurizer,
    the same dataset featurized with it), for the `sentence-embedding-text` ablation; `ablation_repeats`: on how
    many of the `repeats` fold assignments the `REPEATED_ABLATIONS` run (default all). The checkpoint, figures,
    results and card are written once the final model is fitted, and rewritten with the repeated comparison.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be at least 1, not {repeats}")
    started = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    scored, reason = score_head_decision(load.sessions)
    log(reason)
    has_video = any(len(s.video) for session in load.sessions for s in session.sentences)
    text_seen = has_text(load.sessions)
    if not text_seen:
        log(f"no {spec.name} sentence has text: the text pathway is not trained (it screens on audio and video)")
    faces = None if has_video or not settings.unlabelled_video else unlabelled_faces(cache=cache)
    runner = _VariantRunner(
        spec, load, text_encoder, scored, folds, video_statistics(), faces, reference, progress, log
    )
    config = dataset_config(text_encoder, spec.audio_dim, scored)
    results: dict[str, object] = {
        "dataset": spec.name,
        "sessions": len(load.sessions),
        "positives": load.positives,
        "skipped": [asdict(s) for s in load.skipped],
        "folds": folds,
        "seed": settings.seed,
        "settings": asdict(settings),
        "config": config.to_dict(),
        "text_encoder": text_encoder,
        "score_head": {"trained": scored, "reason": reason},
    }
    rows, first = _cross_validate_variants(runner, (MODEL, *EXPERIMENTS) if experiments else (MODEL,), settings)
    model_cv = first[MODEL.name]
    results["pitch_check"] = pitch_checks(load.sessions, first)
    for name, check in results["pitch_check"].items():
        log(f"pitch check {name}: {_pitch_line(check)}")
    baselines = _cross_validate_baselines(load.sessions, folds, settings.seed, rows, log) if experiments else {}
    results["cross_validation"] = rows
    interval, results["interval"] = held_out_interval(
        restrict(load.sessions, MODEL.modalities), model_cv.prefix_probabilities, model_cv.folds
    )
    log(_interval_line(results["interval"]))
    attribution = _fit_final(runner, settings, config, interval, has_video, text_seen, out / "model.pt", results)
    _plot_report(out / "report", f"{spec.name}, {folds}-fold CV, out of fold", model_cv, baselines)
    plot_attribution(attribution, out / "report" / "attribution.png", f"{spec.name}: what moves the estimate")
    _write(out, spec, results, started)
    if repeats > 1:
        results["repeated"] = _repeated(runner, settings, repeats, first, ablation_repeats)
        _write(out, spec, results, started)
    return results


def _cross_validate_variants(
    runner: _VariantRunner, variants: tuple[Variant, ...], settings: TrainSettings
) -> tuple[list[dict[str, object]], dict[str, CrossValidation]]:
    """Each runnable variant on the study's folds: its results row and its cross-validation, by name."""
    rows: list[dict[str, object]] = []
    first: dict[str, CrossValidation] = {}
    for variant in variants:
        if not runner.runnable(variant):
            continue
        variant_started = time.perf_counter()
        cv = first[variant.name] = runner.cross_validate(variant, settings, variant.name)
        rows.append({**_row(variant.name, cv, settings.seed), "seconds": round(time.perf_counter() - variant_started)})
        runner.log(
            f"{variant.name}: AUROC {rows[-1]['ci95']['auroc']}  F1 {rows[-1]['ci95']['f1']}  heads {rows[-1]['heads']}"
        )
    return rows, first


def _cross_validate_baselines(
    sessions: list[LabelledSession], folds: int, seed: int, rows: list[dict[str, object]], log: Callable[[str], None]
) -> dict[str, CrossValidation]:
    """The classic baselines every session has input for, on the same folds; each appends its row to `rows`."""
    usable = applicable_baselines(sessions)
    for name in sorted(set(BASELINES) - set(usable)):
        log(f"baseline {name} not run: some sessions lack its input")
    baselines = {}
    for name in usable:
        cv = baselines[name] = cross_validate_baseline(name, sessions, folds, seed)
        rows.append(_row(f"baseline:{name}", cv, seed))
        log(f"baseline {name}: AUROC {rows[-1]['ci95']['auroc']}  F1 {rows[-1]['ci95']['f1']}")
    return baselines


def _fit_final(
    runner: _VariantRunner,
    settings: TrainSettings,
    config: ModelConfig,
    interval: IntervalCalibration | None,
    has_video: bool,
    text_seen: bool,
    checkpoint: Path,
    results: dict[str, object],
) -> Attribution:
    """Fit the shipped model on every session, save it with its facts to `checkpoint`, and record its
    temperature, threshold, attribution and facts in `results`; returns the attribution."""
    spec, load, faces = runner.spec, runner.load, runner.faces
    final = fit(
        load.sessions,
        runner.video,
        config,
        settings,
        progress=runner.progress("final model") if runner.progress else None,
        faces=faces,
    )
    attribution = attribute(final.model, load.sessions)
    results["final"] = {"temperature": final.temperature, "threshold": final.threshold, "epochs": final.epochs}
    if faces is not None:
        results["final"]["video_gate_weight"] = video_gate_weight(final.model, load.sessions, faces)
        runner.log(f"mean video gate weight with unrelated faces attached: {results['final']['video_gate_weight']}")
    results["attribution"] = asdict(attribution)
    facts = ModelFacts(
        model_id=f"{spec.name}-bimamba-s{settings.seed}",
        trained_on=(
            f"{len(load.sessions)} {spec.description.split(':')[0]} sessions ({load.positives} positive), "
            f"{_trained_modalities(load, spec.language, has_video, text_seen)}; research-use data"
        ),
        model_card_url="docs/MODEL_CARD.md",
        decision_threshold=round(final.threshold, 4),
        text_encoder=runner.text_encoder,
        interval=interval,
        text_languages=(spec.language,) if text_seen else (),
    )
    save_checkpoint(checkpoint, final.model, facts)
    results["facts"] = asdict(facts)
    return attribution


def _plot_report(report: Path, title: str, model_cv: CrossValidation, baselines: dict[str, CrossValidation]) -> None:
    """The model's reliability and estimate-by-sentence figures, and the ROC curves beside the baselines'."""
    plot_reliability(model_cv.labels, model_cv.probabilities, report / "reliability.png", title)
    plot_estimate_vs_sentences(
        model_cv.labels, model_cv.prefix_probabilities, report / "estimate_vs_sentences.png", title
    )
    curves = {"model (audio+text)": (model_cv.labels, model_cv.probabilities)}
    for name, cv in baselines.items():
        curves[f"baseline {name}"] = (cv.labels, cv.probabilities)
    plot_roc(curves, report / "roc.png", title)


def _repeated(
    runner: _VariantRunner,
    settings: TrainSettings,
    repeats: int,
    first: dict[str, CrossValidation],
    ablation_repeats: int | None,
) -> dict[str, object]:
    """The model, the baselines and the `REPEATED_ABLATIONS` over `repeats` fold assignments."""
    ablations = [v for v in REPEATED_ABLATIONS if runner.runnable(v) and (runner.scored or v.score_head)]

    def variant_cv(variant: Variant) -> Callable[[TrainSettings], CrossValidation]:
        return lambda repeat_settings: runner.cross_validate(
            variant, repeat_settings, f"{variant.name}, seed {repeat_settings.seed}"
        )

    return repeated_comparison(
        runner.sessions(MODEL),
        variant_cv(MODEL),
        settings,
        runner.folds,
        repeats,
        first=first[MODEL.name],
        log=runner.log,
        ablations={v.name: variant_cv(v) for v in ablations},
        first_ablations={v.name: first[v.name] for v in ablations if v.name in first},
        ablation_repeats=ablation_repeats,
    )


def _write(out: Path, spec: DatasetSpec, results: dict[str, object], started: float) -> None:
    results["seconds"] = round(time.perf_counter() - started)
    (out / "results.json").write_text(json.dumps(results, indent=2, ensure_ascii=False))
    write_model_card(out / "MODEL_CARD.md", spec, results)
