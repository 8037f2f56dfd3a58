"""Engine results to wire messages: Estimate → `depscreen.v1.Estimate`, and the other server messages."""

from __future__ import annotations

from depscreen.engine.features.text import PHQ8_ITEMS
from depscreen.engine.modalities import MODALITY_NAMES
from depscreen.engine.pipeline import SentenceResult
from depscreen.engine.runtime.screener import Estimate
from depscreen.v1 import screening_pb2 as pb

MODALITY_ENUM = {name: pb.Modality.Value(name.upper()) for name in MODALITY_NAMES}
"""Each engine modality's wire value: the `depscreen.v1.Modality` named like it, upper-cased."""
PHQ_ENUM = {item: pb.PhqItem.Value(item.upper()) for item in PHQ8_ITEMS}


def estimate_message(estimate: Estimate) -> pb.Estimate:
    return pb.Estimate(
        probability=estimate.probability,
        evidence=estimate.evidence,
        modalities=[
            pb.ModalityConfidence(
                modality=MODALITY_ENUM[m.modality],
                available=m.available,
                quality=m.quality,
                weight=m.weight,
                probability=m.probability,
            )
            for m in estimate.modalities
        ],
        symptoms=[
            pb.SymptomEvidence(item=PHQ_ENUM[item], score=score)
            for item, score in zip(PHQ8_ITEMS, estimate.symptoms, strict=True)
        ],
        interval_low=estimate.interval_low,
        interval_high=estimate.interval_high,
        interval_level=estimate.interval_level,
        enough_speech=estimate.enough_speech,
    )


def sentence_message(result: SentenceResult, estimate: Estimate, latency_s: float) -> pb.ServerMessage:
    f = result.features
    return pb.ServerMessage(
        sentence=pb.SentenceUpdate(
            index=f.index,
            start_ms=f.start_ms,
            end_ms=f.end_ms,
            transcript=f.transcript,
            transcript_source=f.transcript_source,
            estimate=estimate_message(estimate),
            latency_ms=latency_s * 1000.0,
        )
    )
