"""Engine subcommands: `depscreen segment` (the segmenter alone), `depscreen train`, `depscreen eval` and
`depscreen calibrate` (an interval calibration for an existing checkpoint)."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from depscreen.sample import sample_path

if TYPE_CHECKING:
    from depscreen.engine.train.datasets import DatasetSpec
    from depscreen.engine.train.sessions import DatasetLoad
    from depscreen.engine.train.trainer import Progress as EpochCallback


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the engine's subcommands to the `depscreen` command."""
    _register_segment(subparsers)
    _register_train(subparsers)
    _register_eval(subparsers)
    _register_calibrate(subparsers)


def _register_segment(subparsers: argparse._SubParsersAction) -> None:
    """`depscreen segment`: the segmenter alone on a file."""
    segment = subparsers.add_parser("segment")
    segment.add_argument("file", type=Path, help="any file av reads (wav, flac, mp3, mp4, ...)")
    segment.add_argument("--json", action="store_true", help="one JSON object per sentence")
    segment.add_argument(
        "--vad", choices=("webrtc", "silero"), default="webrtc", help="voice-activity detector (default webrtc)"
    )
    segment.set_defaults(func=run_segment)


def _register_train(subparsers: argparse._SubParsersAction) -> None:
    """`depscreen train`: the synthetic demo model, a dataset's model, its character head or the English text head."""
    train = subparsers.add_parser("train")
    source = train.add_mutually_exclusive_group(required=True)
    source.add_argument("--synthetic", action="store_true", help="train on synthetic sessions with a planted signal")
    source.add_argument("--dataset", choices=_dataset_names(), help="train on a labelled dataset (needs --data)")
    source.add_argument(
        "--text-corpora", type=Path, help="train the English text head on the Reddit corpora in this folder"
    )
    train.add_argument(
        "--data",
        type=Path,
        help="the dataset's folder (read, never copied); with --text-corpora: an EATD folder scored zero-shot",
    )
    train.add_argument(
        "--char-head",
        action="store_true",
        help="with --dataset: fit the dataset language's character text head (its running forms compared in "
        "repeated CV over --repeats fold assignments) and the stacked estimate on it (cross-validated the same way, "
        "shipped by the rule on the model card), and write the default model's checkpoint with that stack instead "
        "of training the screening model; it reads both the human transcripts and the live recogniser's text "
        "(--text is ignored) and caches features only under --cache (default: none)",
    )
    train.add_argument("--out", type=Path, required=True, help="output directory (model.pt is written there)")
    train.add_argument("--sessions", type=int, default=800, help="synthetic sessions to generate (default 800)")
    train.add_argument("--epochs", type=int, help="training epochs (default 8 synthetic, 25 with early stopping)")
    train.add_argument("--folds", type=int, default=5, help="cross-validation folds for --dataset (default 5)")
    train.add_argument(
        "--experiments",
        action="store_true",
        help="also cross-validate audio-only, text-only, the ablations and the classic baselines",
    )
    train.add_argument(
        "--repeats",
        type=int,
        default=1,
        help="with --dataset: also compare the model with the baselines over this many fold assignments (default 1)",
    )
    train.add_argument(
        "--ablation-repeats",
        type=int,
        help="with --repeats: run the ablations (sentence-embedding text, no score head) on only the first this many "
        "fold assignments (default: all)",
    )
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch threads for --dataset training (default 1: the small model's batches gain nothing from more)",
    )
    train.add_argument(
        "--calibration",
        type=Path,
        nargs="+",
        default=[sample_path()],
        help="real media whose feature scales the synthetic data takes (default: the bundled GRID sample)",
    )
    _feature_arguments(train)
    train.set_defaults(func=run_train)


def _register_eval(subparsers: argparse._SubParsersAction) -> None:
    """`depscreen eval`: a checkpoint against a labelled dataset."""
    evaluate = subparsers.add_parser("eval")
    evaluate.add_argument("--dataset", choices=_dataset_names(), required=True, help="which dataset format")
    evaluate.add_argument("--data", type=Path, required=True, help="the dataset's folder")
    evaluate.add_argument("--model", type=Path, help="checkpoint (.pt); default: the server's default model")
    evaluate.add_argument("--json", action="store_true", help="print one JSON object")
    evaluate.add_argument("--seed", type=int, default=0, help="seed of the bootstrap intervals (default 0)")
    _feature_arguments(evaluate)
    evaluate.set_defaults(func=run_eval)


def _register_calibrate(subparsers: argparse._SubParsersAction) -> None:
    """`depscreen calibrate`: the interval of an existing checkpoint."""
    calibrate = subparsers.add_parser(
        "calibrate", help="fit the estimate's interval for an existing checkpoint from held-out estimates"
    )
    calibrate.add_argument("--model", type=Path, required=True, help="the checkpoint (.pt) to calibrate")
    calibrate.add_argument(
        "--out", type=Path, required=True, help="where to write it with its interval (may be --model)"
    )
    held_out = calibrate.add_mutually_exclusive_group(required=True)
    held_out.add_argument(
        "--synthetic", action="store_true", help="score fresh synthetic sessions (for the synthetic demo model)"
    )
    held_out.add_argument(
        "--dataset",
        choices=_dataset_names(),
        help="cross-validate the checkpoint's training recipe on this dataset (needs --data) and use its "
        "out-of-fold estimates",
    )
    calibrate.add_argument("--data", type=Path, help="with --dataset: the dataset's folder (read, never copied)")
    calibrate.add_argument("--folds", type=int, default=5, help="with --dataset: folds (default 5)")
    calibrate.add_argument(
        "--sessions", type=int, default=400, help="with --synthetic: fresh sessions to score (default 400)"
    )
    calibrate.add_argument(
        "--seed",
        type=int,
        help="with --dataset: the training seed of the checkpoint (default 0); with --synthetic: the seed of the "
        "fresh sessions, other than the training one (default 1)",
    )
    calibrate.add_argument(
        "--calibration",
        type=Path,
        nargs="+",
        default=[sample_path()],
        help="with --synthetic: real media whose feature scales the synthetic data takes (as in train)",
    )
    _feature_arguments(calibrate)
    calibrate.set_defaults(func=run_calibrate)


def _dataset_names() -> list[str]:
    from depscreen.engine.train.datasets import DATASETS

    return list(DATASETS)


def _feature_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--text",
        choices=("human", "asr"),
        default="human",
        help="sentence text: the dataset's human transcripts (default), or the live speech recogniser in the "
        "dataset's language (what a live session without captions gets)",
    )
    parser.add_argument(
        "--cache", type=Path, help="feature cache folder (default ~/.cache/depscreen/features, or $XDG_CACHE_HOME)"
    )
    parser.add_argument("--no-cache", action="store_true", help="extract every feature afresh and store none")


def run_segment(args: argparse.Namespace) -> int:
    from depscreen.engine.segment import SegmenterSettings, segment_file

    try:
        sentences = segment_file(args.file, SegmenterSettings(vad=args.vad))
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    for s in sentences:
        if args.json:
            print(json.dumps({"index": s.index, "start_ms": s.start_ms, "end_ms": s.end_ms, "speech_ms": s.speech_ms}))
        else:
            print(f"{s.index:4d}  {s.start_ms / 1000:8.2f}s – {s.end_ms / 1000:8.2f}s  ({s.duration_ms / 1000:.2f}s)")
    return 0


def run_train(args: argparse.Namespace) -> int:
    if args.dataset and args.char_head:
        return _train_char_head(args)
    if args.dataset:
        return _train_dataset(args)
    if args.text_corpora:
        return _train_text_head(args)
    return _train_synthetic(args)


def _train_char_head(args: argparse.Namespace) -> int:
    from depscreen.engine.runtime.checkpoint import DEFAULT_MODEL
    from depscreen.engine.train.char_head import train_char_head
    from depscreen.engine.train.datasets import DEFAULT_TEXT_ENCODER_FOR_TRAINING
    from depscreen.engine.train.stack import TEXT_SOURCES, train_stacked_estimate

    if args.data is None:
        print("error: --char-head needs --data PATH (the dataset's folder)", file=sys.stderr)
        return 2
    repeats = max(args.repeats, 2)
    args.no_cache = args.no_cache or args.cache is None
    try:
        texts = {}
        for source in TEXT_SOURCES:
            spec, load = _load(argparse.Namespace(**{**vars(args), "text": source}), DEFAULT_TEXT_ENCODER_FOR_TRAINING)
            texts[source] = load.sessions
        forms = train_char_head(texts["human"], args.out, args.folds, repeats, args.seed)
        stacked = train_stacked_estimate(
            texts, spec.name, spec.language, DEFAULT_MODEL, args.out, args.folds, repeats, args.seed
        )
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"running_form": forms["chosen"], "forms": forms["auroc"], "stack": stacked["decision"]}))
    return 0


def _train_text_head(args: argparse.Namespace) -> int:
    from depscreen.engine.features.text import MULTILINGUAL
    from depscreen.engine.train.text_head import load_corpora, train_text_head

    try:
        corpora = load_corpora(args.text_corpora, args.seed)
        eatd = None
        if args.data is not None:
            args.dataset = "eatd"
            eatd = _load(args, MULTILINGUAL)[1].sessions
        results = train_text_head(corpora, eatd, args.out, args.seed)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2

    def brief(report: dict) -> dict:
        return {key: report[key] for key in ("auroc", "f1", "n")}

    summary = {name: brief(report) for name, report in results["held_out"].items()}
    if "eatd_zero_shot" in results:
        summary["eatd_zero_shot"] = brief(results["eatd_zero_shot"])
    chars = {name: brief(report) for name, report in results["chars"]["held_out"].items()}
    by_sentence = {name: brief(report) for name, report in results["chars"]["held_out_by_sentence"].items()}
    print(
        json.dumps(
            {
                "text_head": str(args.out / "text_head.npz"),
                "held_out": summary,
                "chars_held_out": chars,
                "chars_held_out_by_sentence": by_sentence,
            }
        )
    )
    return 0


def _train_synthetic(args: argparse.Namespace) -> int:
    import numpy as np
    import torch

    from depscreen.engine.runtime.checkpoint import ModelFacts, save_checkpoint
    from depscreen.engine.train.interval_fit import held_out_interval
    from depscreen.engine.train.metrics import auroc, logistic
    from depscreen.engine.train.stats import feature_stats_from_media
    from depscreen.engine.train.synthetic import generate_sessions
    from depscreen.engine.train.trainer import (
        TrainSettings,
        fit_temperature,
        prefix_logits,
        session_logits,
        train_model,
    )

    for path in args.calibration:
        if not path.is_file():
            print(f"error: calibration media {path} does not exist", file=sys.stderr)
            return 2
    started = time.perf_counter()
    stats = feature_stats_from_media(args.calibration)
    sessions = generate_sessions(args.sessions, stats, seed=args.seed)
    held_out = max(20, args.sessions // 5)
    train, calibration, test = (
        sessions[: -2 * held_out],
        sessions[-2 * held_out : -held_out],
        sessions[-held_out:],
    )

    epochs = args.epochs or 8

    def progress(epoch: int, loss: float, _: float | None) -> None:
        print(f"epoch {epoch + 1}/{epochs}  loss {loss:.4f}  ({time.perf_counter() - started:.0f}s)", flush=True)

    model = train_model(train, stats, settings=TrainSettings(epochs=epochs, seed=args.seed), progress=progress)
    temperature = fit_temperature(model, calibration)
    scores = torch.sigmoid(session_logits(model, test) / temperature).numpy()
    test_auroc = auroc([s.label for s in test], scores)
    held_out = calibration + test
    interval, interval_report = held_out_interval(
        held_out,
        [logistic(logits / temperature) for logits in prefix_logits(model, held_out)],
        np.array([0] * len(calibration) + [1] * len(test)),
    )
    facts = ModelFacts(
        model_id=f"synthetic-demo-s{args.seed}",
        trained_on=(
            f"{len(train)} synthetic sessions with a planted signal (engine/train/synthetic.py), feature scales "
            "from GRID corpus clips; demo of the plumbing only, not a screening model"
        ),
        model_card_url="docs/MODEL_CARD.md",
        interval=interval,
    )
    args.out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.out / "model.pt", model, facts)
    summary = {
        "model": str(args.out / "model.pt"),
        "train_sessions": len(train),
        "test_sessions": len(test),
        "test_auroc": round(test_auroc, 4),
        "temperature": round(temperature, 4),
        "interval": interval_report,
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(summary))
    return 0


def _load(args: argparse.Namespace, text_encoder: str) -> tuple[DatasetSpec, DatasetLoad]:
    """Load `args.dataset` from `args.data` with a progress bar; print what was skipped."""
    from rich.progress import Progress

    from depscreen.engine.train.cache import DEFAULT_CACHE_DIR, FeatureCache
    from depscreen.engine.train.datasets import dataset
    from depscreen.engine.train.featurize import InterviewFeaturizer

    spec = dataset(args.dataset)
    cache = None if args.no_cache else FeatureCache(args.cache or DEFAULT_CACHE_DIR)
    featurizer = InterviewFeaturizer(text_encoder, cache, spec.language, text=args.text)
    with Progress(transient=True) as bar:
        task = bar.add_task(f"features of {spec.name}", total=None)
        load = spec.load(args.data, featurizer, lambda done, total: bar.update(task, completed=done, total=total))
    print(load.summary(), file=sys.stderr)
    if asr_cpu_s := featurizer.stage_cpu_s.get("asr"):
        print(
            f"  ASR: {asr_cpu_s:.0f} CPU s for {featurizer.sentence_audio_s:.0f} s of sentence audio "
            f"({asr_cpu_s / featurizer.sentence_audio_s:.3f} CPU s per second; cache hits not counted)",
            file=sys.stderr,
        )
    for skipped in load.skipped:
        print(f"  skipped {skipped.item}: {skipped.reason}", file=sys.stderr)
    return spec, load


def _train_dataset(args: argparse.Namespace) -> int:
    from dataclasses import replace

    import torch
    from rich.progress import Progress

    from depscreen.engine.train.cache import DEFAULT_CACHE_DIR, FeatureCache
    from depscreen.engine.train.datasets import DEFAULT_TEXT_ENCODER_FOR_TRAINING, REFERENCE_TEXT_ENCODER
    from depscreen.engine.train.study import DATASET_TRAINING, run_study

    if args.data is None:
        print("error: --dataset needs --data PATH (the dataset's folder)", file=sys.stderr)
        return 2
    settings = replace(DATASET_TRAINING, seed=args.seed, epochs=args.epochs or DATASET_TRAINING.epochs)
    torch.set_num_threads(args.threads)
    try:
        spec, load = _load(args, DEFAULT_TEXT_ENCODER_FOR_TRAINING)
        reference = (
            (REFERENCE_TEXT_ENCODER, _load(args, REFERENCE_TEXT_ENCODER)[1])
            if args.experiments or args.repeats > 1
            else None
        )
        cache = None if args.no_cache else FeatureCache(args.cache or DEFAULT_CACHE_DIR)
        with Progress() as bar:
            task = bar.add_task("training", total=None)

            def progress(name: str) -> EpochCallback:
                bar.update(task, description=name, completed=0, total=settings.epochs)

                def epoch(index: int, loss: float, validation: float | None) -> None:
                    shown = "" if validation is None else f" val {validation:.3f}"
                    bar.update(task, completed=index + 1, description=f"{name}: loss {loss:.3f}{shown}")

                return epoch

            results = run_study(
                spec,
                load,
                args.out,
                DEFAULT_TEXT_ENCODER_FOR_TRAINING,
                args.folds,
                settings,
                args.experiments,
                progress,
                log=bar.console.print,
                cache=cache,
                repeats=args.repeats,
                reference=reference,
                ablation_repeats=args.ablation_repeats,
            )
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    model_row = results["cross_validation"][0]
    print(
        json.dumps(
            {
                "model": str(args.out / "model.pt"),
                "sessions": results["sessions"],
                "positives": results["positives"],
                "skipped": len(results["skipped"]),
                "cv_auroc": model_row["ci95"]["auroc"],
                "cv_f1": model_row["ci95"]["f1"],
                "seconds": results["seconds"],
            }
        )
    )
    return 0


def run_eval(args: argparse.Namespace) -> int:
    from dataclasses import asdict

    from depscreen.engine.runtime.checkpoint import DEFAULT_MODEL
    from depscreen.engine.runtime.screener import Screener
    from depscreen.engine.train.evaluate import evaluate
    from depscreen.engine.train.metrics import REPORT_METRICS

    try:
        screener = Screener.from_checkpoint(args.model or DEFAULT_MODEL, "cpu")
        spec, load = _load(args, screener.facts.text_encoder)
        split = screener.facts.training_split
        learnt = None
        if split is not None and split.text != args.text and split.overlaps(load.sessions):
            learnt = _load(argparse.Namespace(**{**vars(args), "text": split.text}), screener.facts.text_encoder)[1]
        report = evaluate(screener, load.sessions, args.seed, spec.language, learnt.sessions if learnt else None)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    report["skipped"] = len(load.skipped)
    report["text"] = args.text
    if load.asr_error is not None:
        report["asr_error"] = {"rate": round(load.asr_error.rate, 4), **asdict(load.asr_error)}
    if args.json:
        print(json.dumps(report))
        return 0
    print(
        f"{report['model']} on {args.dataset}: {report['n']} sessions, {report['positives']} positive, "
        f"threshold {report['threshold']}"
    )
    baselines = report["baselines"]
    print(f"{'metric':<18}{'model [95% CI]':<28}{'all-positive':>14}{'majority':>10}")
    for name in REPORT_METRICS:
        ci = report["ci95"][name]
        print(
            f"{name:<18}{ci['value']:.3f} [{ci['low']:.3f}, {ci['high']:.3f}]{'':<6}"
            f"{_number(baselines['all_positive'].get(name)):>14}{_number(baselines['majority'].get(name)):>10}"
        )
    if "estimates" in report:
        print(f"estimates: {report['estimates']}")
    interval = report["interval"]
    if not interval["level"]:
        print("interval: the checkpoint has no interval calibration (every interval is [0, 1])")
    elif interval["coverage"] is not None:
        by_label = interval["coverage_by_label"]
        print(
            f"interval ({interval['level']:.0%} nominal): holds the label in {interval['coverage']:.1%} of "
            f"{interval.get('estimates_with_enough_speech', interval.get('prefixes'))} estimates with enough speech "
            "(label 0: "
            f"{_number(by_label['0'])}, label 1: {_number(by_label['1'])})"
        )
    return 0


def _number(value: float | None) -> str:
    """Three decimals, or a dash where a baseline has no such metric (a constant predictor has no ECE)."""
    return "–" if value is None else f"{value:.3f}"


def run_calibrate(args: argparse.Namespace) -> int:
    """Fit the interval of `args.model` from held-out estimates and write the checkpoint with it to `args.out`."""
    from depscreen.engine.train.interval_fit import add_interval

    try:
        if args.synthetic:
            calibration, report = _synthetic_interval(args)
        else:
            calibration, report = _dataset_interval(args)
        if calibration is None:
            print(f"error: {report['reason']}", file=sys.stderr)
            return 2
        args.out.parent.mkdir(parents=True, exist_ok=True)
        add_interval(args.model, calibration, args.out)
    except (OSError, ValueError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    print(json.dumps({"model": str(args.out), "interval": report}))
    return 0


def _synthetic_interval(args: argparse.Namespace) -> tuple[object, dict]:
    """Score fresh synthetic sessions (never trained on: another seed) with the checkpoint itself."""
    import numpy as np

    from depscreen.engine.runtime.screener import Screener
    from depscreen.engine.train.interval_fit import held_out_interval
    from depscreen.engine.train.stats import feature_stats_from_media
    from depscreen.engine.train.synthetic import generate_sessions

    for path in args.calibration:
        if not path.is_file():
            raise ValueError(f"calibration media {path} does not exist")
    screener = Screener.from_checkpoint(args.model, "cpu")
    sessions = generate_sessions(args.sessions, feature_stats_from_media(args.calibration), seed=args.seed or 1)
    prefixes = [np.array([e.probability for e in screener.offline(s.sentences)]) for s in sessions]
    return held_out_interval(sessions, prefixes, np.arange(len(sessions)) % 5)


def _dataset_interval(args: argparse.Namespace) -> tuple[object, dict]:
    """Run the training recipe (`train --dataset`) into a scratch folder: its cross-validation's out-of-fold
    estimates give the interval. The recipe must build the checkpoint's architecture."""
    import tempfile
    from dataclasses import replace

    from depscreen.engine.runtime.checkpoint import load_checkpoint
    from depscreen.engine.train.datasets import DEFAULT_TEXT_ENCODER_FOR_TRAINING
    from depscreen.engine.train.study import DATASET_TRAINING, run_study

    if args.data is None:
        raise ValueError("--dataset needs --data PATH (the dataset's folder)")
    model, facts = load_checkpoint(args.model)
    settings = replace(DATASET_TRAINING, seed=args.seed or 0)
    spec, load = _load(args, DEFAULT_TEXT_ENCODER_FOR_TRAINING)
    with tempfile.TemporaryDirectory() as scratch:
        results = run_study(spec, load, Path(scratch), DEFAULT_TEXT_ENCODER_FOR_TRAINING, args.folds, settings,
                            log=lambda line: print(line, file=sys.stderr))  # fmt: skip
        recipe, recipe_facts = load_checkpoint(Path(scratch) / "model.pt")
    if recipe.config != model.config or recipe_facts.text_encoder != facts.text_encoder:
        raise ValueError(
            f"{args.model} was not trained by this version's recipe (its model config or text encoder differs): "
            "retrain it with `depscreen train --dataset`, which fits the interval itself"
        )
    return recipe_facts.interval, results["interval"]
