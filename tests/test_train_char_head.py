"""A language's character head fitted on a dataset's sentence transcripts: both running forms learn a planted
signal, the mean form's session logit is the live account's, the comparison reports every method and pair,
and the shipped Mandarin head is checked at load; the stack over heads finds the one with the signal, its
acoustic head reads running moments exactly, and the shipping rule applies its pre-registered margins; a head in
its own calibration ships as a one-head stack of weight 1 that eval cross-validates the same way."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from depscreen.engine.features.language_head import TextHeadAccount, language_text_head
from depscreen.engine.modalities import modality
from depscreen.engine.runtime.checkpoint import DEMO_MODEL, load_checkpoint, session_fingerprint
from depscreen.engine.runtime.screener import Screener
from depscreen.engine.train.char_head import compare_running_forms, fit_mean_head, fit_projected_head
from depscreen.engine.train.evaluate import evaluate, stream_session
from depscreen.engine.train.metrics import auroc, expected_calibration_error, logistic
from depscreen.engine.train.sessions import LabelledSession
from depscreen.engine.train.stack import (
    Stacker,
    cross_validate_once,
    fit_acoustic_head,
    fit_stack,
    frame_moments,
    head_fitters,
    prefix_logits,
    prior_logit,
    shipping_decision,
    summarise_runs,
    train_stacked_estimate,
    write_shipped,
)

from .conftest import spoken_sentence

LOW = ("我最近总是很累", "晚上睡不着觉", "觉得没有希望", "什么都不想做", "心情很难过")
HIGH = ("我最近很开心", "周末和朋友去爬山", "工作挺顺利的", "喜欢看电影", "每天都睡得很好")
SHARED = ("嗯", "然后", "就是说", "我觉得吧")


def made_up_sessions(count: int, seed: int, every: int = 2, faithful: float = 0.8) -> list[LabelledSession]:
    """Sessions of four sentences each, one in `every` depressed: depressed ones say LOW things with
    probability `faithful` (else HIGH things), the others HIGH things."""
    rng = np.random.default_rng(seed)
    sessions = []
    for i in range(count):
        label = int(i % every == every - 1)
        own, other = (LOW, HIGH) if label else (HIGH, LOW)
        said = [str(rng.choice(SHARED)) + str(rng.choice(own if rng.random() < faithful else other)) for _ in range(4)]
        audio = np.zeros((10, modality("audio").dim), np.float32)
        sentences = [spoken_sentence(k, audio, transcript=text) for k, text in enumerate(said)]
        sessions.append(LabelledSession(label=label, sentences=sentences, session_id=f"s{i}"))
    return sessions


def texts(sessions: list[LabelledSession]) -> list[list[str]]:
    return [[s.transcript for s in session.sentences] for session in sessions]


def test_both_running_forms_learn_a_planted_signal_and_the_mean_form_is_the_live_account() -> None:
    train, test = made_up_sessions(40, 0), made_up_sessions(20, 1)
    labels = np.array([s.label for s in train])
    test_labels = np.array([s.label for s in test])
    for head in (fit_mean_head(texts(train), labels), fit_projected_head(texts(train), labels)):
        logits = np.array([head.session_logit(sentences) for sentences in texts(test)])
        assert logits[test_labels == 1].mean() > logits[test_labels == 0].mean() + 0.5
    mean_head = fit_mean_head(texts(train), labels)
    sentences = texts(test)[0]
    account = TextHeadAccount()
    for k, (sentence, logit) in enumerate(zip(sentences, mean_head.logits(sentences), strict=True)):
        account.add(float(logit), sentence)
        assert account.logit == pytest.approx(mean_head.session_logit(sentences[: k + 1])), "prefix-exact"


def test_the_comparison_reports_every_method_and_pair_over_the_repeats() -> None:
    results = compare_running_forms(made_up_sessions(30, 2), folds=3, repeats=2, log=lambda _: None)
    assert set(results["auroc"]) == {"mean", "projected", "text-tfidf", "text-lsa"}
    assert results["auroc"]["mean"]["mean"] > 0.8, "a planted signal is found out of fold"
    assert "projected - mean" in results["auroc_difference"]
    assert all(np.isfinite(v["mean"]) for v in results["auroc_difference"].values())


def test_the_shipped_mandarin_head_is_checked_at_load_and_scores_anything_finitely() -> None:
    head = language_text_head("zh")
    assert head is not None and head is language_text_head("zh")
    pathological = ("😀🙃 ok ça va 我觉得 مرحبا " * 400)[:8000]
    assert np.isfinite(head.logits([pathological, "", "?", "我觉得很累"])).all()


def test_the_non_negative_stacker_gives_a_head_against_the_label_weight_0_and_the_free_one_is_l2_logistic() -> None:
    rng = np.random.default_rng(5)
    labels = np.array([0, 1] * 40)
    logits = np.stack([2.0 * labels + rng.normal(size=80), -1.5 * labels + rng.normal(size=80)], axis=1)
    free, free_bias = Stacker(5, False).fit(logits, labels)
    reference = LogisticRegression(C=1.0, tol=1e-8, max_iter=1000).fit(logits, labels)
    assert free == pytest.approx(reference.coef_[0], abs=1e-3)
    assert free_bias == pytest.approx(reference.intercept_[0], abs=1e-3)
    assert free[1] < 0, "the free stacker turns a head against the label round"
    bounded, _ = Stacker(5, True).fit(logits, labels)
    assert bounded[0] > 0 and bounded[1] == 0.0


def test_heads_learn_from_one_text_and_are_scored_on_another() -> None:
    sessions = with_noise_audio(made_up_sessions(30, 6), 2)
    mumbled = [
        replace(session, sentences=[replace(s, transcript="嗯然后") for s in session.sentences]) for session in sessions
    ]
    labels = np.array([s.label for s in sessions])
    heard = cross_validate_once(sessions, "zh", folds=3, seed=0, heads=("text:zh",), stackers=("nonneg-10", "lr-5"))
    assert set(heard.final) == {"text:zh", "text:zh@lr-5", "text:zh@own", "text-lsa", "text-tfidf"}
    assert auroc(labels, heard.final["text:zh"]) > 0.75
    lost = cross_validate_once(sessions, "zh", folds=3, seed=0, heads=("text:zh",), scored=mumbled)
    assert auroc(labels, lost.final["text:zh"]) < 0.6 and auroc(labels, lost.final["text-lsa"]) < 0.6, "nothing heard"
    summary = summarise_runs([heard, heard], labels, ["text:zh"])
    assert "text:zh@lr-5 - text-lsa" in summary["differences"] and "text:zh - text-lsa" in summary["differences"]
    assert summary["weights"]["text:zh"]["outer_folds"] == 6


def test_the_round_scores_on_both_texts_and_writes_only_what_replaces_the_shipped_estimate(tmp_path: Path) -> None:
    human = with_noise_audio(made_up_sessions(24, 7), 3)
    asr = [
        replace(session, sentences=[replace(s, transcript=s.transcript[1:]) for s in session.sentences])
        for session in human
    ]
    results = train_stacked_estimate(
        {"human": human, "asr": asr}, "eatd", "zh", DEMO_MODEL, tmp_path, folds=3, repeats=2, log=lambda _: None
    )
    assert set(results["scored_on"]) == {"asr", "human"}
    candidates = {"stack", "text:zh", "lsa:zh", "text:zh@own", "lsa:zh@own", "text-lsa", "text-tfidf"}
    assert set(results["scored_on"]["asr"]["auroc"]) == candidates
    decision = results["decision"]
    assert decision["ships"] in ("stack", "text:zh@own", "lsa:zh@own") and decision["shipped_now"] == "text:zh"
    assert (tmp_path / "model.pt").is_file() == decision["replaces_shipped"] and (tmp_path / "stack.json").is_file()
    with pytest.raises(ValueError, match="different sessions"):
        train_stacked_estimate(
            {"human": human, "asr": asr[1:]}, "eatd", "zh", DEMO_MODEL, tmp_path, 3, 2, log=lambda _: None
        )


def test_eval_on_the_training_split_reports_out_of_fold_estimates_and_refuses_part_of_it(tmp_path: Path) -> None:
    sessions = with_noise_audio(made_up_sessions(24, 8), 4)
    labels = np.array([s.label for s in sessions])
    run = cross_validate_once(sessions, "zh", folds=3, seed=2, heads=("text:zh",))
    write_shipped(sessions, "zh", "text:zh", run, DEMO_MODEL, tmp_path, seed=2)
    screener = Screener.from_checkpoint(tmp_path / "model.pt", "cpu")
    split = screener.facts.training_split
    assert split is not None and split.sessions == tuple(map(session_fingerprint, sessions))
    assert (split.folds, split.seed, split.text, split.stacker) == (3, 2, "human", "nonneg-10")
    report = evaluate(screener, sessions, language="zh")
    assert report["estimates"].startswith("out of fold")
    assert [row["probability"] for row in report["sessions"]] == pytest.approx(run.final["text:zh"], abs=1e-4)
    streamed = [stream_session(screener, s, "zh")[-1].probability for s in sessions]
    assert not np.allclose(streamed, run.final["text:zh"], atol=1e-3), "in-sample streaming is not what is reported"
    assert report["auroc"] == pytest.approx(auroc(labels, run.final["text:zh"]), abs=1e-4)
    interval = report["interval"]
    assert {"coverage", "mean_width_last", "rules_out_a_label_last"} <= set(interval) or "needs at least" in str(
        interval
    )
    assert "corr_with_median_f0" in report["pitch_check"]["estimate"] and report["ece"] is not None
    with pytest.raises(ValueError, match="exactly its training split"):
        evaluate(screener, sessions[:10], language="zh")
    unseen = [replace(s, sentences=s.sentences[:-1]) for s in sessions[:6]]
    assert "estimates" not in evaluate(screener, unseen, language="zh"), "sessions of the same names are others"
    measured = write_shipped(sessions, "zh", "text:zh@own", run, DEMO_MODEL, tmp_path / "own", seed=2)
    own = Screener.from_checkpoint(tmp_path / "own" / "model.pt", "cpu")
    assert own.facts.stack is not None and own.facts.stack.weights == (1.0,)
    assert own.facts.stack.bias == pytest.approx(prior_logit(labels)), "the prior correction is the stack's bias"
    assert logistic(np.array(own.facts.stack.bias)) == pytest.approx(own.facts.stack.base_rate, abs=1e-4)
    assert own.facts.training_split.stacker == "own" and measured["threshold"] == pytest.approx(
        own.facts.decision_threshold, abs=1e-4
    )
    report = evaluate(own, sessions, language="zh")
    assert [row["probability"] for row in report["sessions"]] == pytest.approx(run.final["text:zh@own"], abs=1e-4)
    assert "its own calibration" in report["estimates"]


def test_a_head_in_its_own_calibration_is_calibrated_to_the_training_base_rate_out_of_fold() -> None:
    """One session in four depressed and a weak signal: the head's class-balanced Platt scaling alone would centre
    its out-of-fold estimates near 0.45 (ECE ~0.2); with the prior correction they centre on the base rate."""
    sessions = made_up_sessions(48, 1, every=4, faithful=0.7)
    labels = np.array([s.label for s in sessions])
    run = cross_validate_once(sessions, "zh", 4, 1, heads=("text:zh",))
    estimates = run.final["text:zh@own"]
    assert abs(estimates.mean() - labels.mean()) < 0.06 and expected_calibration_error(labels, estimates) < 0.15
    balanced = logistic(np.log(estimates / (1 - estimates)) - [prior_logit(labels[run.folds != k]) for k in run.folds])
    assert balanced.mean() > 0.35, "without the correction the estimates lean to 0.5 (the test has teeth)"
    for k in range(4):  # a monotone map of the head's logit inside each fold: its ranking is the head's
        fold = run.folds == k
        assert auroc(labels[fold], estimates[fold]) == pytest.approx(auroc(labels[fold], balanced[fold]))
    with pytest.raises(ValueError, match="both labels"):
        prior_logit(np.zeros(5, dtype=int))


def with_noise_audio(sessions: list[LabelledSession], seed: int) -> list[LabelledSession]:
    """The sessions with random eGeMAPS frames (no signal in them)."""
    rng = np.random.default_rng(seed)
    return [
        replace(
            session,
            sentences=[
                replace(s, audio=rng.normal(size=(30, modality("audio").dim)).astype(np.float32))
                for s in session.sentences
            ],
        )
        for session in sessions
    ]


def test_the_acoustic_head_reads_running_moments_exactly_as_the_whole_session() -> None:
    sessions = with_noise_audio(made_up_sessions(20, 3), 0)
    head = fit_acoustic_head(sessions, np.array([s.label for s in sessions]))
    session = sessions[0]
    frames = np.concatenate([s.audio for s in session.sentences])
    whole = head.read_out(frame_moments(frames))
    assert prefix_logits(head, session)[-1] == pytest.approx(whole)
    assert np.isnan(head.read_out(frame_moments(frames[:1]))), "no estimate from a single frame"


def test_the_stack_finds_the_head_that_carries_the_signal_and_the_rule_ships_by_pre_registered_margins(
    tmp_path: Path,
) -> None:
    sessions = with_noise_audio(made_up_sessions(30, 4), 1)
    labels = np.array([s.label for s in sessions])
    stack = fit_stack(head_fitters("zh"), sessions, labels, seed=0)
    assert list(stack.heads) == ["text:zh", "lsa:zh", "audio"]
    assert stack.weights[0] > 0, "the planted text signal raises the estimate"
    run = cross_validate_once(sessions, "zh", folds=3, seed=0)
    assert auroc(labels, run.final["stack"]) > 0.75 and auroc(labels, run.final["text:zh"]) > 0.75
    assert set(run.final) == {
        "stack",
        "text:zh",
        "lsa:zh",
        "audio",
        "text:zh@own",
        "lsa:zh@own",
        "text-lsa",
        "text-tfidf",
    }
    assert auroc(labels, run.final["lsa:zh@own"]) > 0.75
    assert len(run.weights["stack"]) == 3 and all(len(fold) == 4 for fold in run.weights["stack"]), "per outer fold"
    assert all(len(p) == len(s.sentences) for p, s in zip(run.prefixes["stack"], sessions, strict=True))
    measured = write_shipped(sessions, "zh", "text:zh", run, DEMO_MODEL, tmp_path, seed=0)
    _, facts = load_checkpoint(tmp_path / "model.pt")
    assert facts.stack is not None and facts.stack.heads == ("text:zh",) and facts.model_id == "eatd-stack-s0"
    assert facts.decision_threshold == round(measured["threshold"], 4) and (tmp_path / "text_head_chars.npz").is_file()
    with pytest.raises(ValueError, match=r"cannot build \(audio\)"):
        write_shipped(sessions, "zh", "audio", run, DEMO_MODEL, tmp_path / "audio", seed=0)
    with pytest.raises(ValueError, match=r"cannot build \(lsa:zh\)"):
        write_shipped(sessions, "zh", "lsa:zh@own", run, DEMO_MODEL, tmp_path / "lsa", seed=0)

    def summary(stack: float, text: float, audio: float, lsa: float) -> dict:
        values = {"stack": stack, "text:zh": text, "audio": audio, "text-lsa": lsa}
        return {"auroc": {name: {"mean": value} for name, value in values.items()}}

    assert shipping_decision(summary(0.62, 0.61, 0.5, 0.625), ["text:zh", "audio"])["ships"] == "stack"
    assert shipping_decision(summary(0.60, 0.61, 0.5, 0.6), ["text:zh", "audio"])["ships"] == "text:zh"
    assert shipping_decision(summary(0.62, 0.61, 0.5, 0.64), ["text:zh", "audio"])["ships"] == "text:zh"
