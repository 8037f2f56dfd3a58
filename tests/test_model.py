"""Model tests: Mamba step/scan parity, batching invariance, fusion masks, prefix parity, checkpoints."""

from __future__ import annotations

import logging
from dataclasses import asdict, replace

import pytest
import torch

from depscreen.engine.media import DEFAULT_VIDEO_FPS
from depscreen.engine.model import kernels
from depscreen.engine.model.mamba import Mamba
from depscreen.engine.model.screening import ModelConfig, ScreeningModel
from depscreen.engine.pipeline import PipelineSettings
from depscreen.engine.runtime.checkpoint import (
    DEFAULT_MODEL,
    DEMO_MODEL,
    ModelFacts,
    feature_differences,
    load_checkpoint,
    save_checkpoint,
)
from depscreen.engine.runtime.screener import Screener, collate
from depscreen.engine.segment import SegmenterSettings
from depscreen.engine.train.stats import FeatureStats
from depscreen.engine.train.synthetic import SyntheticSettings, generate_sessions
from depscreen.streamer.parts import check_features
from depscreen.streamer.settings import SettingsError

from .conftest import with_speaker_normalisation

UNIT_STATS = FeatureStats.unit()


@pytest.fixture(scope="module")
def model() -> ScreeningModel:
    torch.manual_seed(3)
    return ScreeningModel(ModelConfig()).eval()


def test_mamba_step_equals_full_scan() -> None:
    torch.manual_seed(0)
    mamba = Mamba(32, d_state=8).eval()
    x = torch.randn(3, 40, 32)
    with torch.no_grad():
        full = mamba(x)
        state = mamba.allocate_state(3)
        steps = []
        for t in range(40):
            y, state = mamba.step(x[:, t], state)
            steps.append(y)
    torch.testing.assert_close(torch.stack(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_mamba_parameter_names_match_mamba_ssm() -> None:
    names = {name for name, _ in Mamba(64).named_parameters()}
    assert names == {
        "A_log",
        "D",
        "in_proj.weight",
        "conv1d.weight",
        "conv1d.bias",
        "x_proj.weight",
        "dt_proj.weight",
        "dt_proj.bias",
        "out_proj.weight",
    }


def test_step_state_size_is_fixed(model: ScreeningModel) -> None:
    sentences = generate_sessions(1, UNIT_STATS, seed=1)[0].sentences
    screener = Screener(model, ModelFacts("t", "t"), torch.device("cpu"))
    track = screener.new_session()
    sizes = []
    for features in sentences:
        screener.step(track, features)
        sizes.append(sum(s.conv.numel() + s.ssm.numel() for s in track.state.layers))
    assert len(set(sizes)) == 1


def test_batched_encoding_equals_one_at_a_time(model: ScreeningModel) -> None:
    sentences = [s for session in generate_sessions(3, UNIT_STATS, seed=2) for s in session.sentences]
    with torch.no_grad():
        together = model.encode(collate(sentences, model.config, torch.device("cpu")))
        for i, sentence in enumerate(sentences):
            alone = model.encode(collate([sentence], model.config, torch.device("cpu")))
            torch.testing.assert_close(alone.fused[0], together.fused[i], atol=2e-5, rtol=1e-5)
            torch.testing.assert_close(alone.weights[0], together.weights[i], atol=2e-5, rtol=1e-5)


def test_gate_weights_mask_missing_modalities(model: ScreeningModel) -> None:
    sentences = [s for session in generate_sessions(4, UNIT_STATS, seed=4) for s in session.sentences]
    with torch.no_grad():
        encoded = model.encode(collate(sentences, model.config, torch.device("cpu")))
    available = torch.tensor([s.available for s in sentences])
    assert not bool(available.all()), "the generator should produce missing modalities"
    assert torch.all(encoded.weights[~available] == 0)
    torch.testing.assert_close(encoded.weights.sum(1), torch.ones(len(sentences)))


@pytest.mark.parametrize("speaker_normalisation", [False, True])
def test_prefix_parity_streaming_equals_offline(model: ScreeningModel, speaker_normalisation: bool) -> None:
    """Also with speaker normalisation: the state's audio moments stepped sentence by sentence normalise each
    sentence as the offline sums within the session do."""
    model = with_speaker_normalisation(model) if speaker_normalisation else model
    screener = Screener(model, ModelFacts("t", "t"), torch.device("cpu"))
    sentences = generate_sessions(
        1, UNIT_STATS, seed=5, settings=SyntheticSettings(min_sentences=12, max_sentences=12)
    )[0].sentences
    offline = screener.offline(sentences)
    track = screener.new_session()
    for k, features in enumerate(sentences):
        streamed = screener.step(track, features)
        assert streamed.probability == pytest.approx(offline[k].probability, abs=1e-5)
        assert streamed.evidence == pytest.approx(offline[k].evidence, abs=1e-9)
        for a, b in zip(streamed.modalities, offline[k].modalities, strict=True):
            assert a.probability == pytest.approx(b.probability, abs=1e-5)
            assert a.weight == pytest.approx(b.weight, abs=1e-5)
        assert streamed.symptoms == pytest.approx(offline[k].symptoms, abs=1e-6)
    # The offline reference over a prefix is the same as the first k outputs of the whole session.
    prefix = screener.offline(sentences[:3])
    assert [e.probability for e in prefix] == pytest.approx([e.probability for e in offline[:3]], abs=1e-6)


def test_determinism(model: ScreeningModel) -> None:
    screener = Screener(model, ModelFacts("t", "t"), torch.device("cpu"))
    sentences = generate_sessions(1, UNIT_STATS, seed=6)[0].sentences
    runs = []
    for _ in range(2):
        track = screener.new_session()
        runs.append([screener.step(track, s) for s in sentences])
    assert runs[0] == runs[1]


def test_checkpoint_round_trip(tmp_path, model: ScreeningModel) -> None:
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, ModelFacts("test-model", "nothing"))
    loaded, facts = load_checkpoint(path)
    assert facts.model_id == "test-model"
    for (name, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_checkpoint_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nope\.pt"):
        load_checkpoint(tmp_path / "nope.pt")
    bogus = tmp_path / "bogus.pt"
    torch.save({"hello": 1}, bogus)
    with pytest.raises(ValueError, match=r"bogus\.pt"):
        load_checkpoint(bogus)


def test_shipped_demo_model_says_what_it_is() -> None:
    _, facts = load_checkpoint(DEMO_MODEL)
    assert "synthetic" in facts.model_id
    assert "synthetic" in facts.trained_on and "not a screening model" in facts.trained_on


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_kernels_match_reference() -> None:
    if not kernels.cuda_kernels_available():
        pytest.skip("mamba-ssm is not installed (extra `gpu`)")
    torch.manual_seed(0)
    mamba = Mamba(64).eval()
    x = torch.randn(2, 50, 64)
    with torch.no_grad():
        reference = mamba(x)
        fused = mamba.cuda()(x.cuda()).cpu()
        state = mamba.allocate_state(2)
        y, _ = mamba.step(x[:, 0].cuda(), state)
    torch.testing.assert_close(fused, reference, atol=2e-3, rtol=2e-3)
    torch.testing.assert_close(y.cpu(), reference[:, 0], atol=2e-3, rtol=2e-3)


def test_a_checkpoint_records_the_feature_settings_it_was_trained_with(tmp_path) -> None:
    path = tmp_path / "model.pt"
    save_checkpoint(path, ScreeningModel(ModelConfig(d_model=16)), ModelFacts("m", "t", video_fps=2.5))
    _, facts = load_checkpoint(path)
    assert facts.segmenter == asdict(SegmenterSettings()) and facts.video_fps == 2.5
    assert feature_differences(facts, SegmenterSettings(), 2.5) == []
    assert feature_differences(facts, SegmenterSettings(end_silence_ms=800), DEFAULT_VIDEO_FPS) == [
        "segmenter end_silence_ms: trained with 600, live 800",
        "video_fps: trained at 2.5, live 5",
    ]
    unknown = replace(facts, segmenter={**facts.segmenter, "lookahead_ms": 400})
    with pytest.raises(ValueError, match=r"segmenter settings this version does not have \(lookahead_ms\)"):
        feature_differences(unknown, SegmenterSettings(), 2.5)
    for shipped in (DEMO_MODEL, DEFAULT_MODEL):
        assert feature_differences(load_checkpoint(shipped)[1], SegmenterSettings(), DEFAULT_VIDEO_FPS) == []


def test_the_server_refuses_a_model_whose_features_it_cannot_make_and_warns_of_other_settings(
    caplog: pytest.LogCaptureFixture,
) -> None:
    facts = ModelFacts("m", "t", video_fps=2.5)
    check_features(facts, PipelineSettings(video_fps=2.5))
    assert not caplog.records
    with caplog.at_level(logging.WARNING, logger="depscreen.streamer.server"):
        check_features(facts, PipelineSettings(video_fps=5.0, segmenter=SegmenterSettings(vad="silero")))
    warned = [r.getMessage() for r in caplog.records]
    assert any("segmenter vad: trained with 'webrtc', live 'silero'" in m for m in warned), warned
    assert any("video_fps: trained at 2.5, live 5" in m for m in warned), warned
    unknown = replace(facts, segmenter={**facts.segmenter, "lookahead_ms": 400})
    with pytest.raises(SettingsError, match=r"segmenter settings this version does not have \(lookahead_ms\)"):
        check_features(unknown, PipelineSettings(video_fps=2.5))
