"""Prometheus metrics of one server: latency per stage, sentences, sessions, audio, errors, and the process
(CPU, memory, file descriptors, garbage collection), its build and its session limit."""

from __future__ import annotations

from collections.abc import Sequence

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    GCCollector,
    Histogram,
    Info,
    ProcessCollector,
    generate_latest,
)

from depscreen.engine.features.asr import DECODE_KINDS, DecodeWork

LATENCY_BUCKETS = (0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
STAGE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
STAGES = ("decode", "vad", "features_audio", "features_video", "asr", "text_embed", "model")
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128)
REJECT_REASONS = ("capacity", "overloaded", "token_quota")
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
ASR_PARTS = ("features", "encode", "tail", "generate", "fallback", "no_speech_check")
"""Where speech recognition's time goes: the own-length decoding's log-mel, encoder (less the share of the
silent tail and padding, counted as `tail`) and decoder, and the whole re-decodings in the check window
(`DECODE_KINDS`)."""
WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Metrics:
    """The server's metrics on their own registry (several servers can live in one process, as in tests)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        GCCollector(registry=self.registry)
        self.build_info = Info(
            "depscreen_build",
            "The server's version, model id, device and model kernels (one series, value 1).",
            registry=self.registry,
        )
        self.max_sessions = Gauge(
            "depscreen_max_sessions",
            "Concurrent sessions the server admits (max_sessions); alerts compare sessions_active to it.",
            registry=self.registry,
        )
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
            "Errors: gRPC status codes that ended a stream (protocol errors, stalls, shutdown; CANCELLED for streams "
            "broken by the client or its link), dropped inputs (video_frame, caption), failed checkpoint writes "
            "(checkpoint) and failed recordings (record).",
            ["code"],
            registry=self.registry,
        )
        self.audio_seconds_total = Counter(
            "depscreen_audio_seconds", "Seconds of audio received.", registry=self.registry
        )
        self.queue_depth = Gauge(
            "depscreen_queue_depth",
            "Work waiting: CPU tasks queued for a worker plus sentences queued for the model batcher.",
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "depscreen_batch_size", "Sentences per batched model step.", buckets=BATCH_BUCKETS, registry=self.registry
        )
        self.shed_video_frames_total = Counter(
            "depscreen_shed_video_frames",
            "Video frames dropped under overload (audio is never dropped).",
            registry=self.registry,
        )
        self.shed_asr_total = Counter(
            "depscreen_shed_asr",
            "Sentences left without ASR under overload (their text modality is unavailable).",
            registry=self.registry,
        )
        self.rejected_sessions_total = Counter(
            "depscreen_rejected_sessions",
            "Sessions refused with RESOURCE_EXHAUSTED, by reason: capacity (at max_sessions), overloaded "
            "(reject_backlog), token_quota (the token holds max_sessions_per_token).",
            ["reason"],
            registry=self.registry,
        )
        self.starved_sessions_total = Counter(
            "depscreen_starved_sessions",
            "Sessions ended for sending less audio than min_audio_speed (audio_grace_s behind).",
            registry=self.registry,
        )
        self.dropped_ice_candidates_total = Counter(
            "depscreen_dropped_ice_candidates",
            "Remote ICE candidates of WHIP offers and trickles given no connectivity checks: a non-public address "
            "outside webrtc_allow_networks, or an mDNS name.",
            registry=self.registry,
        )
        self.state_pool_slots_used = Gauge(
            "depscreen_state_pool_slots_used", "Model-state slots held by sessions.", registry=self.registry
        )
        self.event_loop_lag = Histogram(
            "depscreen_event_loop_lag_seconds",
            "How late the event loop wakes a timer: time it could not serve gRPC I/O.",
            buckets=LAG_BUCKETS,
            registry=self.registry,
        )
        self.asr_seconds = Counter(
            "depscreen_asr_seconds",
            "Seconds speech recognition spent, by part: features (log-mel), encode, tail (the encoder's share for "
            "the 1 s silent tail and padding), generate, and the re-decodings in the longer check window: fallback "
            "(own-length text ran "
            "away or repeated) and no_speech_check (own-length decoding doubted speech). Encode and generate run "
            "one call on one recogniser thread, so their seconds are that thread's busy time.",
            ["part"],
            registry=self.registry,
        )
        self.asr_decodes_total = Counter(
            "depscreen_asr_decodes",
            "Whisper decodings by kind: own (own-length window), fallback, no_speech_check (the longer check window).",
            ["kind"],
            registry=self.registry,
        )
        self.asr_speech_seconds_total = Counter(
            "depscreen_asr_speech_seconds",
            "Seconds of speech transcribed (own-length decodings): divide depscreen_asr_seconds by it for the cost "
            "per speech-second.",
            registry=self.registry,
        )
        self.asr_worker_wait = Histogram(
            "depscreen_asr_worker_wait_seconds",
            "How long a piece of an open sentence waited for a free speech recognition worker.",
            buckets=WAIT_BUCKETS,
            registry=self.registry,
        )
        self.asr_close_decodes_total = Counter(
            "depscreen_asr_close_decodes",
            "Decodings a closed sentence's transcript waited for, by kind (own, fallback, no_speech_check): those "
            "of its pieces still being transcribed when it closed, then the close's own.",
            ["kind"],
            registry=self.registry,
        )
        self.asr_close_wait = Histogram(
            "depscreen_asr_close_wait_seconds",
            "How long a closed sentence waited for its transcript (its last pieces and the close's own decoding).",
            buckets=WAIT_BUCKETS,
            registry=self.registry,
        )
        self.asr_batch_size = Histogram(
            "depscreen_asr_batch_size",
            "Decodings (of one or more sessions) run as one speech recognition model call, by model.",
            ["model"],
            buckets=(1, 2, 3, 4, 6, 8, 12, 16, 32),
            registry=self.registry,
        )
        for reason in REJECT_REASONS:
            self.rejected_sessions_total.labels(reason=reason)
        for stage in STAGES:
            self.stage_seconds.labels(stage=stage)
            self.stage_cpu_seconds.labels(stage=stage)
        for part in ASR_PARTS:
            self.asr_seconds.labels(part=part)
        for kind in DECODE_KINDS:
            self.asr_decodes_total.labels(kind=kind)
            self.asr_close_decodes_total.labels(kind=kind)

    def observe_stage(self, stage: str, seconds: float, cpu_seconds: float) -> None:
        self.stage_seconds.labels(stage=stage).observe(seconds)
        self.stage_cpu_seconds.labels(stage=stage).inc(cpu_seconds)

    def decoded(self, work: DecodeWork) -> None:
        """Count one speech recognition decoding and its parts' seconds (an `AsrObserver`)."""
        self.asr_decodes_total.labels(kind=work.kind).inc()
        if work.kind == "own":
            self.asr_speech_seconds_total.inc(work.speech_s)
            self.asr_seconds.labels(part="features").inc(work.features_s)
            self.asr_seconds.labels(part="encode").inc(work.encode_s * (1 - work.padding_share))
            self.asr_seconds.labels(part="tail").inc(work.encode_s * work.padding_share)
            self.asr_seconds.labels(part="generate").inc(work.generate_s)
        else:
            self.asr_seconds.labels(part=work.kind).inc(work.features_s + work.encode_s + work.generate_s)

    def batched(self, model: str, size: int) -> None:
        """One speech recognition model call decoded `size` decodings together (an `AsrObserver`)."""
        self.asr_batch_size.labels(model=model).observe(size)

    def waited(self, seconds: float) -> None:
        """A piece waited `seconds` for a speech recognition worker (an `AsrObserver`)."""
        self.asr_worker_wait.observe(seconds)

    def closed(self, decodes: Sequence[str], seconds: float) -> None:
        """A closed sentence waited `seconds` for its transcript and the decodings `decodes` (an `AsrObserver`)."""
        for kind in decodes:
            self.asr_close_decodes_total.labels(kind=kind).inc()
        self.asr_close_wait.observe(seconds)

    def describe_server(self, version: str, model_id: str, device: str, kernels: str, max_sessions: int) -> None:
        """Publish what this server runs (`depscreen_build_info`) and its session limit."""
        self.build_info.info({"version": version, "model_id": model_id, "device": device, "kernels": kernels})
        self.max_sessions.set(max_sessions)

    def exposition(self) -> bytes:
        """The text exposition format served on /metrics."""
        return generate_latest(self.registry)
