"""The character text pathway (n-gram counts, TF-IDF/LSA fitted on training sentences), the score head, and the
text featurizer a checkpoint records."""

from __future__ import annotations

import zlib
from dataclasses import replace

import numpy as np
import pytest
import torch

from depscreen.engine.features.text import (
    CHAR_BUCKETS,
    CHAR_NGRAMS,
    MULTILINGUAL,
    PHQ8_ITEMS,
    char_ngram_counts,
    make_text_embedder,
)
from depscreen.engine.model.encoders import TextEncoder
from depscreen.engine.model.screening import ScreeningModel
from depscreen.engine.pipeline import Extractors
from depscreen.engine.runtime.checkpoint import ModelFacts, load_checkpoint, save_checkpoint
from depscreen.engine.runtime.screener import Screener, collate
from depscreen.engine.train.char_lsa import LSA_COMPONENTS, fit_char_lsa, sentence_counts
from depscreen.engine.train.crossval import cross_validate
from depscreen.engine.train.sessions import LabelledSession
from depscreen.engine.train.stats import FeatureStats
from depscreen.engine.train.study import dataset_config, score_head_decision
from depscreen.engine.train.trainer import TrainSettings, final_outputs, train_model

from .conftest import spoken_sentence

WORDS = ("天气", "工作", "朋友", "学校", "周末", "电影", "家里", "吃饭", "睡不着", "难过")
QUICK = TrainSettings(epochs=2, batch_size=8, seed=0)


def bucket(gram: str) -> int:
    return zlib.crc32(gram.encode()) % CHAR_BUCKETS


def char_sessions(count: int = 24, seed: int = 0, scored: bool = True) -> list[LabelledSession]:
    """Sessions with Mandarin transcripts (the label shifts the word mix) and their character text features."""
    rng = np.random.default_rng(seed)
    sessions = []
    for i in range(count):
        label = int(i % 3 == 0)
        sentences = []
        for k in range(3):
            words = rng.choice(WORDS[8:] if label and rng.random() < 0.5 else WORDS[:8], 3).tolist()
            transcript = "".join(words)
            similarities = rng.uniform(0.0, 0.5, len(PHQ8_ITEMS)).astype(np.float32)
            audio = rng.normal(0.0, 1.0, (60, 25)).astype(np.float32)
            text = np.concatenate([char_ngram_counts([transcript])[0], similarities])
            sentences.append(spoken_sentence(k, audio, text, transcript))
        score = 40.0 + 20.0 * label + float(rng.normal(0.0, 5.0)) if scored else None
        sessions.append(LabelledSession(label, sentences, f"s{i}", score))
    return sessions


def test_char_ngrams_are_stable_language_agnostic_and_bounded() -> None:
    counts = char_ngram_counts(["aaa", "我睡不着", "I  Can't\tSLEEP", "", "   "])
    assert counts.shape == (5, CHAR_BUCKETS) and counts.dtype == np.float32
    assert counts[0, bucket("a")] == pytest.approx(1 + np.log(3)), "sublinear count of a repeated character"
    assert counts[0, bucket("aaa")] >= 1.0 and counts[0, bucket("aa")] >= 1 + np.log(2) - 1e-6
    assert counts[1, bucket("睡不着")] >= 1.0, "Mandarin needs no word segmentation"
    assert counts[2, bucket("i c")] >= 1.0, "lower-cased, whitespace collapsed"
    assert not counts[3].any() and not counts[4].any(), "no text is all zeros"
    pathological = "😀" * 3000 + "混合 scripts ١٢٣ " * 200
    heavy = char_ngram_counts([pathological])
    assert np.isfinite(heavy).all() and heavy.min() >= 0 and heavy.max() < 20


def test_lsa_is_fitted_on_training_rows_and_the_model_projects_exactly_like_it() -> None:
    rows = char_ngram_counts(["我今天很难过", "周末去看电影", "工作很累睡不着", "和朋友吃饭", "学校的天气很好"]).astype(
        np.float64
    )
    lsa = fit_char_lsa(rows, components=8, seed=0)
    unseen = bucket("龘")
    assert not rows[:, unseen].any() and lsa.idf[unseen] == 0.0, "a bucket no training row has weighs nothing"
    assert lsa.components.shape == (CHAR_BUCKETS, 8) and not lsa.components[:, 4:].any(), "rank <= rows - 1"
    encoder = TextEncoder(CHAR_BUCKETS + len(PHQ8_ITEMS), 16, projection=8)
    encoder.fit_projection(*lsa.tensors())
    projected = encoder.project(torch.as_tensor(rows, dtype=torch.float32)).numpy()
    weighted = rows * lsa.idf
    expected = (weighted / np.linalg.norm(weighted, axis=1, keepdims=True)) @ lsa.components
    np.testing.assert_allclose(projected[:, :4], (expected[:, :4] - lsa.mean[:4]) / lsa.std[:4], atol=1e-4)
    np.testing.assert_allclose(projected[:, :4].mean(0), 0.0, atol=1e-4)
    np.testing.assert_allclose(projected[:, :4].std(0), 1.0, atol=1e-3)
    with pytest.raises(ValueError, match="no training sentence has text"):
        sentence_counts([replace(s, sentences=[replace(x, text=None) for x in s.sentences]) for s in char_sessions(2)])


def test_a_trained_char_model_streams_like_its_offline_scan_and_its_checkpoint_carries_the_projection(
    tmp_path,
) -> None:
    sessions = char_sessions()
    config = dataset_config(CHAR_NGRAMS, score_head=True)
    assert config.text_projection == LSA_COMPONENTS and config.text_dim == CHAR_BUCKETS + len(PHQ8_ITEMS)
    model = train_model(sessions, FeatureStats.unit(), config, QUICK)
    assert model.text_encoder.idf.min() == 0.0 and model.text_encoder.components.abs().sum() > 0, "fitted"
    assert float(model.score_mean) == pytest.approx(np.mean([s.score for s in sessions]), rel=1e-5)
    first = sessions[0].sentences
    changed = [replace(first[0], text=char_sessions(4, seed=9)[3].sentences[0].text)]
    with torch.no_grad():
        tokens = [model.encode(collate(s, config, torch.device("cpu"))).tokens[0, 2] for s in ([first[0]], changed)]
    assert not torch.allclose(*tokens), "the text token follows the transcript's characters"

    path = tmp_path / "char.pt"
    save_checkpoint(path, model, ModelFacts("char", "test", text_encoder=CHAR_NGRAMS))
    loaded, facts = load_checkpoint(path)
    assert facts.text_encoder == CHAR_NGRAMS and torch.equal(
        loaded.text_encoder.components, model.text_encoder.components
    )
    screener = Screener(loaded, facts, torch.device("cpu"))
    offline = screener.offline(first)
    track = screener.new_session()
    for k, features in enumerate(first):
        assert screener.step(track, features).probability == pytest.approx(offline[k].probability, abs=1e-5)
    score = final_outputs(loaded, sessions[:2]).score
    assert score is not None and score.shape == (2,) and np.isfinite(score).all()


def test_a_checkpoint_whose_text_featurizer_does_not_make_its_input_is_refused(tmp_path) -> None:
    char_model = ScreeningModel(dataset_config(CHAR_NGRAMS))
    with pytest.raises(ValueError, match=r"'use-multilingual-v3' makes 520-d sentence embeddings.*retrain"):
        save_checkpoint(tmp_path / "x.pt", char_model, ModelFacts("x", "t", text_encoder=MULTILINGUAL))
    save_checkpoint(tmp_path / "ok.pt", char_model, ModelFacts("x", "t", text_encoder=CHAR_NGRAMS))
    blob = torch.load(tmp_path / "ok.pt", weights_only=True)
    blob["facts"]["text_encoder"] = "char-ngrams-v9"
    torch.save(blob, tmp_path / "future.pt")
    with pytest.raises(ValueError, match=r"future\.pt: model x reads text features of 'char-ngrams-v9'.*does not have"):
        load_checkpoint(tmp_path / "future.pt")
    blob["facts"]["text_encoder"] = MULTILINGUAL
    torch.save(blob, tmp_path / "mismatch.pt")
    with pytest.raises(ValueError, match=r"mismatch\.pt: .*projected from n-gram counts"):
        load_checkpoint(tmp_path / "mismatch.pt")


def test_the_live_extractors_build_the_char_features_the_model_reads() -> None:
    extractors = Extractors.load(asr="none", text_encoder=CHAR_NGRAMS)
    assert extractors.text.feature_dim == dataset_config(CHAR_NGRAMS).text_dim
    texts = ["我晚上总是睡不着觉。", "I can't sleep at night.", ""]
    features = extractors.text.features(texts)
    np.testing.assert_array_equal(features[:, :CHAR_BUCKETS], char_ngram_counts(texts))
    _, similarities = make_text_embedder(MULTILINGUAL).embed(texts)
    np.testing.assert_allclose(features[:, CHAR_BUCKETS:], similarities, atol=1e-6)
    assert similarities[0].argmax() == PHQ8_ITEMS.index("sleep"), "PHQ-8 item evidence stays as explanation"


def test_without_the_continuous_score_the_binary_head_trains_alone_and_says_so() -> None:
    unscored = char_sessions(scored=False)
    trains, reason = score_head_decision(unscored)
    assert not trains and reason.startswith("24 of 24 sessions have no continuous score: the binary head trains alone")
    config = dataset_config(CHAR_NGRAMS, score_head=trains)
    model = train_model(unscored, FeatureStats.unit(), config, QUICK)
    assert not hasattr(model, "score_head")
    with pytest.raises(ValueError, match="some training sessions have no questionnaire score"):
        train_model(unscored, FeatureStats.unit(), dataset_config(CHAR_NGRAMS, score_head=True), QUICK)
    assert score_head_decision(char_sessions())[0]


def test_cross_validation_reports_each_head_and_the_score_error() -> None:
    sessions = char_sessions(30)
    cv = cross_validate(sessions, FeatureStats.unit(), dataset_config(CHAR_NGRAMS, score_head=True), QUICK, folds=3)
    heads = cv.head_aurocs()
    assert set(heads) == {"fused", "audio", "text"} and all(0.0 <= v <= 1.0 for v in heads.values())
    error = cv.score_error()
    assert set(error) == {"mae", "rmse", "training_mean_mae", "training_mean_rmse"}
    assert 0 < error["mae"] <= error["rmse"] and 0 < error["training_mean_mae"] <= error["training_mean_rmse"]
    truth = np.array([s.score for s in sessions])
    assert error["mae"] == pytest.approx(np.abs(cv.scores - truth).mean(), abs=1e-3)
    unscored = cross_validate(
        char_sessions(30, scored=False), FeatureStats.unit(), dataset_config(CHAR_NGRAMS), QUICK, folds=3
    )
    assert unscored.score_error() is None
