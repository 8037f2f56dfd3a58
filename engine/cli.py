"""Engine subcommands: `depscreen segment` (judge the segmenter alone) and `depscreen train --synthetic`."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

DEFAULT_CALIBRATION = Path(__file__).resolve().parents[1] / "clients" / "samples" / "grid_interview.mp4"


def register(subparsers: argparse._SubParsersAction) -> None:
    segment = subparsers.add_parser("segment", help="cut a media file into sentences with the live segmenter")
    segment.add_argument("file", type=Path, help="any file av reads (wav, flac, mp3, mp4, ...)")
    segment.add_argument("--json", action="store_true", help="one JSON object per sentence")
    segment.set_defaults(func=run_segment)

    train = subparsers.add_parser("train", help="train a checkpoint")
    train.add_argument(
        "--synthetic", action="store_true", required=True, help="train on synthetic sessions with a planted signal"
    )
    train.add_argument("--out", type=Path, required=True, help="output directory (model.pt is written there)")
    train.add_argument("--sessions", type=int, default=800, help="synthetic sessions to generate (default 800)")
    train.add_argument("--epochs", type=int, default=8, help="training epochs (default 8)")
    train.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    train.add_argument(
        "--calibration",
        type=Path,
        nargs="+",
        default=[DEFAULT_CALIBRATION],
        help="real media whose feature scales the synthetic data takes (default: the bundled GRID sample)",
    )
    train.set_defaults(func=run_train)


def run_segment(args: argparse.Namespace) -> int:
    from depscreen.engine.segment import segment_file

    try:
        sentences = segment_file(args.file)
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
    import torch

    from depscreen.engine.runtime.checkpoint import ModelFacts, save_checkpoint
    from depscreen.engine.train.stats import feature_stats_from_media
    from depscreen.engine.train.synthetic import generate_sessions
    from depscreen.engine.train.trainer import TrainSettings, auroc, fit_temperature, session_logits, train_model

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

    def progress(epoch: int, loss: float) -> None:
        print(f"epoch {epoch + 1}/{args.epochs}  loss {loss:.4f}  ({time.perf_counter() - started:.0f}s)", flush=True)

    model = train_model(train, stats, settings=TrainSettings(epochs=args.epochs, seed=args.seed), progress=progress)
    temperature = fit_temperature(model, calibration)
    scores = torch.sigmoid(session_logits(model, test) / temperature).numpy()
    test_auroc = auroc([s.label for s in test], scores)
    facts = ModelFacts(
        model_id=f"synthetic-demo-s{args.seed}",
        trained_on=(
            f"{len(train)} synthetic sessions with a planted signal (engine/train/synthetic.py), feature scales "
            "from GRID corpus clips; demo of the plumbing only, not a screening model"
        ),
        model_card_url="docs/MODEL_CARD.md",
    )
    args.out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(args.out / "model.pt", model, facts)
    summary = {
        "model": str(args.out / "model.pt"),
        "train_sessions": len(train),
        "test_sessions": len(test),
        "test_auroc": round(test_auroc, 4),
        "temperature": round(temperature, 4),
        "seconds": round(time.perf_counter() - started, 1),
    }
    print(json.dumps(summary))
    return 0
