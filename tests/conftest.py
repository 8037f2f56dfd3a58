"""Shared fixtures: a real `depscreen serve` process on loopback, and paths to the real media fixtures."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pytest
import torch

from depscreen.engine.features.sentence import SentenceFeatures
from depscreen.engine.modalities import modality
from depscreen.engine.model.screening import ScreeningModel
from depscreen.engine.runtime.checkpoint import DEMO_MODEL
from depscreen.localserver import LocalServer, read_counter, start_local_server
from depscreen.sample import sample_path

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLE = sample_path()
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`make test`), each worker and every process it starts (servers, commands) computes on
    one thread: several workers share the cores, and OpenMP pools of one thread per core spin on each other's
    cores (a 3-epoch synthetic training took over 160 s per epoch that way instead of seconds)."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        torch.set_num_threads(1)


def spoken_sentence(
    index: int, audio: np.ndarray, text: np.ndarray | None = None, transcript: str = ""
) -> SentenceFeatures:
    """Sentence `index` of a made-up session: one second (900 ms of speech at 20 dB), the given eGeMAPS frames,
    no face, and a captioned text vector when `text` is given."""
    return SentenceFeatures(
        index=index,
        start_ms=index * 1000,
        end_ms=(index + 1) * 1000,
        speech_ms=900,
        snr_db=20.0,
        audio=audio,
        video=np.zeros((0, modality("video").dim), np.float32),
        video_frames=0,
        text=text,
        transcript=transcript,
        transcript_source="caption" if text is not None else "",
        text_confidence=1.0 if text is not None else 0.0,
    )


def with_speaker_normalisation(model: ScreeningModel) -> ScreeningModel:
    """The same weights with speaker normalisation switched on (it adds no parameter or buffer), in eval mode:
    the streaming tests run it beside the shipped models, which have it off."""
    speaker = ScreeningModel(replace(model.config, speaker_normalisation=True))
    speaker.load_state_dict(model.state_dict())
    return speaker.eval()


@dataclass
class RunningServer:
    local: LocalServer
    log_path: Path

    @property
    def grpc_target(self) -> str:
        return self.local.grpc_target

    @property
    def http_url(self) -> str:
        return self.local.http_url

    def metrics(self) -> str:
        return self.local.metrics()

    def counter(self, sample: str) -> float:
        return read_counter(self.metrics(), sample)

    def log(self) -> str:
        return self.log_path.read_text()


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """One real server for the protocol tests: Whisper ASR on, default limits, CPU."""
    log_path = tmp_path_factory.mktemp("server") / "server.log"
    with log_path.open("w") as log:
        local = start_local_server("--device", "cpu", "--model", str(DEMO_MODEL), output=log)
    yield RunningServer(local, log_path)
    local.stop()
