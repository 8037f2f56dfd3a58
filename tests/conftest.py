"""Shared fixtures: a real `depscreen serve` process on loopback, and paths to the real media fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from depscreen.engine.model.screening import ScreeningModel
from depscreen.engine.runtime.checkpoint import DEMO_MODEL
from depscreen.localserver import LocalServer, read_counter, start_local_server
from depscreen.sample import sample_path

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLE = sample_path()
SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"


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
