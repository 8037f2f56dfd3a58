"""The running char-LSA head: it learns a planted signal, its running logit after every sentence is the
whole-prefix head's (and the live account's), its state is a few numbers that survive a save and load, bad
input gives nan (no evidence) or a finite logit and never raises, and its read-out is chosen by inner CV."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from depscreen.engine.features.lsa_head import LsaAccount, LsaTextHead
from depscreen.engine.features.text import char_ngram_counts
from depscreen.engine.train.char_head import (
    choose_read_out,
    fit_chosen_lsa_head,
    fit_lsa_head,
    lsa_prefix_logits,
    sentence_counts,
)
from depscreen.engine.train.metrics import auroc

from .test_train_char_head import made_up_sessions, texts


@pytest.fixture(scope="module")
def planted() -> tuple[list[list[str]], np.ndarray]:
    sessions = made_up_sessions(40, seed=1)
    return texts(sessions), np.array([s.label for s in sessions])


@pytest.mark.parametrize("read_out", ["unit", "per-char"])
def test_the_head_learns_a_planted_signal_held_out(planted: tuple[list[list[str]], np.ndarray], read_out: str) -> None:
    sessions, labels = planted
    head = fit_lsa_head(sessions[:30], labels[:30], read_out)
    held_out = [head.session_logit(s) for s in sessions[30:]]
    assert auroc(labels[30:], np.array(held_out)) > 0.8


def test_the_running_logit_is_the_whole_prefix_heads_after_every_sentence(
    planted: tuple[list[list[str]], np.ndarray],
) -> None:
    sessions, labels = planted
    for read_out in ("unit", "per-char"):
        head = fit_lsa_head(sessions, labels, read_out)
        for sentences in sessions[:5]:
            running = lsa_prefix_logits(head, sentences)
            account = LsaAccount.empty(head.dim)
            for k, (sentence, projection) in enumerate(zip(sentences, head.projections(sentences), strict=True)):
                account = account.add(projection, sentence, "zh")
                whole = (sentence_counts(tuple(sentences[: k + 1])).sum(0) * head.idf) @ head.components
                chars = sum(len("".join(s.split())) for s in sentences[: k + 1])
                assert account.logit(head) == pytest.approx(head.logit(whole, chars), rel=1e-5, abs=1e-6)
                assert running[k] == pytest.approx(head.logit(whole, chars), rel=1e-5, abs=1e-6)
                assert head.session_logit(sentences[: k + 1]) == pytest.approx(running[k], rel=1e-5, abs=1e-6)
            assert len(account.projected) == head.dim == 32 and account.language == "zh"


def test_bad_input_gives_no_evidence_or_a_finite_logit_never_nan_in_a_logit(
    planted: tuple[list[list[str]], np.ndarray],
) -> None:
    sessions, labels = planted
    head = fit_lsa_head(sessions, labels, "per-char")
    assert np.isnan(head.session_logit([]))
    assert np.isnan(head.session_logit(["   "]))
    unknown = next(c for c in "ЖЩฆญ∮" if not (char_ngram_counts([c * 3]) * head.idf).any())  # hashes may collide
    assert np.isnan(head.session_logit([unknown * 3]))  # characters no training session had: no evidence
    assert not np.isinf(head.session_logit(["😀😀🙃" * 50]))  # emoji: no evidence unless their hashes collide
    for said in (["我最近 tired 😀 très fatigué، وأنا"], ["我最近总是很累" * 2000]):
        assert np.isfinite(head.session_logit(said))
    unknown_then_known = head.session_logit([unknown * 3, "我最近总是很累"])
    assert np.isfinite(unknown_then_known)
    with pytest.raises(ValueError, match="not finite"):
        LsaAccount.empty(head.dim).add(np.full(head.dim, np.nan), "x")
    assert np.isnan(LsaAccount.empty(3).logit(head))  # a state of another size: no evidence, not a crash


def test_the_head_survives_a_save_and_load_and_a_broken_file_is_refused(
    planted: tuple[list[list[str]], np.ndarray], tmp_path: Path
) -> None:
    sessions, labels = planted
    head = fit_lsa_head(sessions, labels, "per-char")
    head.save(tmp_path / "head.npz")
    loaded = LsaTextHead.load(tmp_path / "head.npz")
    assert loaded.read_out == "per-char"
    assert loaded.session_logit(sessions[0]) == pytest.approx(head.session_logit(sessions[0]), rel=1e-6)
    np.savez(tmp_path / "other.npz", coef=np.zeros(3))
    with pytest.raises(ValueError, match="not a char-LSA head file"):
        LsaTextHead.load(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="unknown char-LSA read-out"):
        LsaTextHead(head.idf, head.components, head.mean, head.std, head.coef, head.intercept, "max")
    with pytest.raises(ValueError, match="buckets"):
        LsaTextHead(head.idf[:10], head.components, head.mean, head.std, head.coef, head.intercept)


def test_the_read_out_is_chosen_by_inner_folds_of_the_training_sessions(
    planted: tuple[list[list[str]], np.ndarray], monkeypatch: pytest.MonkeyPatch
) -> None:
    sessions, labels = planted
    assert choose_read_out(sessions, labels) in ("unit", "per-char")
    import depscreen.engine.train.char_head as char_head

    fitted = []
    real = char_head.fit_lsa_head

    def spy(s: list[list[str]], y: np.ndarray, read_out: str = "unit") -> LsaTextHead:
        fitted.append((len(s), read_out))
        return real(s, y, read_out)

    monkeypatch.setattr(char_head, "fit_lsa_head", spy)
    head = fit_chosen_lsa_head(sessions, labels)
    assert sorted({n for n, _ in fitted})[:-1] == [32]  # inner folds of 40 sessions, then all of them
    assert fitted[-1] == (40, head.read_out) and {r for _, r in fitted} == {"unit", "per-char"}
