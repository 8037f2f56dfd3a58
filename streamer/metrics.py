"""Prometheus metrics of one server: latency per stage, sentences, sessions, audio, errors."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
STAGES = ("decode", "vad", "features_audio", "features_video", "asr", "text_embed", "model")


class Metrics:
    """The server's metrics on their own registry (several servers can live in one process, as in tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.sentence_latency = Histogram(
            "depscreen_sentence_latency_seconds",
            "Sentence closed by the segmenter until its update is handed to the transport.",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "depscreen_stage_seconds",
            "CPU stage durations: decode, vad, features_audio, features_video, asr, text_embed, model.",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=self.registry,
        )
        self.stage_cpu_seconds = Counter(
            "depscreen_stage_cpu_seconds",
            "CPU time spent per stage (worker thread time), for per-stage CPU budgets.",
            ["stage"],
            registry=self.registry,
        )
        self.sessions_active = Gauge("depscreen_sessions_active", "Sessions streaming now.", registry=self.registry)
        self.sessions_total = Counter("depscreen_sessions", "Sessions accepted.", registry=self.registry)
        self.sentences_total = Counter("depscreen_sentences", "Sentences scored.", registry=self.registry)
        self.errors_total = Counter(
            "depscreen_errors",
            "Errors: gRPC status codes that ended a stream, and dropped inputs (video_frame, caption).",
            ["code"],
            registry=self.registry,
        )
        self.audio_seconds_total = Counter(
            "depscreen_audio_seconds", "Seconds of audio received.", registry=self.registry
        )
        for stage in STAGES:
            self.stage_seconds.labels(stage=stage)
            self.stage_cpu_seconds.labels(stage=stage)

    def observe_stage(self, stage: str, seconds: float, cpu_seconds: float) -> None:
        self.stage_seconds.labels(stage=stage).observe(seconds)
        self.stage_cpu_seconds.labels(stage=stage).inc(cpu_seconds)

    def exposition(self) -> bytes:
        """The text exposition format served on /metrics."""
        return generate_latest(self.registry)
