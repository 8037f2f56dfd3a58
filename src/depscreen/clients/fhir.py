"""A screened session as a FHIR `RiskAssessment` (R4B, validated with `fhir.resources`) for a clinic's records.

R4B (4.3.0) is what `fhir.resources` 8 models besides R5; RiskAssessment and every data type used here are
unchanged from R4 (4.0.1), so R4 servers take the resource as it is. Needs the `fhir` extra.
"""

from __future__ import annotations

import html
from datetime import UTC, datetime, timedelta
from urllib.parse import urlsplit

from depscreen.v1 import screening_pb2 as pb

from .sentences import ScreenedSession

try:
    from fhir.resources.R4B.riskassessment import RiskAssessment
except ImportError as missing:  # pragma: no cover - depends on the installed extras
    raise ImportError("FHIR export needs the fhir extra: pip install 'depscreen[fhir]'") from missing

SCREENING_AID = (
    "Screening aid, not a diagnosis: an estimate from speech, face and language that the patient would screen "
    "positive on the model's training target. A prompt for a clinician to ask more; never an automated decision. "
    "Read the model card for what the model was trained and validated on, and how weak its discrimination is."
)
SNOMED_CT = "http://snomed.info/sct"
# SNOMED CT 171207006 |Depression screening (procedure)|: what was done (as in HEDIS depression-screening value
# sets and Synthea's records). LOINC's 73832-8 "Adult depression screening assessment" is left out: it is an
# adult questionnaire's result, and this is neither a questionnaire nor limited to adults.
ASSESSMENT_CODE = {"system": SNOMED_CT, "code": "171207006", "display": "Depression screening (procedure)"}
# SNOMED CT 35489007 |Depressive disorder (disorder)|: the condition the predicted outcome is about. The
# probability is that of screening positive on the model's training target, not of a diagnosis (outcome text).
OUTCOME_CODE = {"system": SNOMED_CT, "code": "35489007", "display": "Depressive disorder (disorder)"}
SESSION_SYSTEM = "urn:depscreen:session-id"
MODEL_SYSTEM = "urn:depscreen:model-id"
MODEL_CARD_ID = "model-card"
TOP_SYMPTOMS = 3


def risk_assessment(
    session: ScreenedSession,
    *,
    patient: str | None = None,
    occurred: datetime | None = None,
    model_card_url: str | None = None,
    include_transcript: bool = False,
) -> RiskAssessment:
    """The session's final estimate as a validated RiskAssessment, coded with SNOMED CT.

    `patient` is the FHIR reference of the subject (`Patient/123`); without it the subject is described, not
    linked. The occurrence is the session's own span, from its start (`accepted.started_at`, or a recording's
    `stream.json`) for as long as its audio; `occurred` overrides it with one moment. The model card is linked
    at `model_card_url`, else at the URL the server sent; it must be absolute (http or https). Transcripts go
    in only with `include_transcript`, as one note per sentence. ValueError names what is missing (an unknown
    start, a relative card URL) or, pydantic's, what would not be valid FHIR.
    """
    resource: dict = {
        "resourceType": "RiskAssessment",
        "status": "final" if session.finished else "preliminary",
        "code": {
            "coding": [ASSESSMENT_CODE],
            "text": "Depression screening from a recorded or live interview (speech, face, language)",
        },
        "subject": (
            {"reference": patient}
            if patient
            else {"display": f"the patient of screening session {session.session_id or '(unnamed)'}, not linked"}
        ),
        "prediction": [_prediction(session)],
        "note": [{"text": SCREENING_AID}],
        "text": {"status": "generated", "div": _narrative(session)},
    }
    if session.session_id:
        resource["identifier"] = [{"system": SESSION_SYSTEM, "value": session.session_id}]
    resource |= _occurrence(session, occurred)
    card_url = model_card_url or (session.model.model_card_url if session.model is not None else "")
    if card_url:
        resource["contained"] = [_model_card(_absolute(card_url), session.model)]
        resource["basis"] = [{"reference": f"#{MODEL_CARD_ID}", "display": "model card"}]
    if session.model is not None:
        resource["method"] = _method(session.model)
    if include_transcript:
        resource["note"] += [
            {"text": f"sentence {s.index} ({s.start_ms / 1000:.1f}-{s.end_ms / 1000:.1f} s): {s.transcript}"}
            for s in session.sentences
            if s.transcript
        ]
    return RiskAssessment.model_validate(resource)


def _prediction(session: ScreenedSession) -> dict:
    final = session.final
    return {
        "outcome": {
            "coding": [OUTCOME_CODE],
            "text": "would screen positive on the model's training target (see the model card), not a diagnosis",
        },
        "probabilityDecimal": round(float(final.probability), 4),
        "rationale": rationale(session),
    }


def rationale(session: ScreenedSession) -> str:
    """What the estimate rests on, in words: amount of speech, evidence, each modality, PHQ-8 items, interval."""
    final = session.final
    heard = f"after {len(session.sentences)} sentences"
    if session.summary is not None:
        heard += (
            f" ({session.summary.speech_seconds:.0f} s of speech in {session.summary.audio_seconds:.0f} s of audio)"
        )
    parts = [f"Estimate {heard}; evidence {final.evidence:.2f} on 0..1 (grows with usable speech heard)."]
    interval = session.final_interval
    if interval is not None:
        parts.append(f"Interval {interval[0]:.3f} to {interval[1]:.3f}{_interval_meaning(session)}.")
    modalities = []
    own_text_head = "text_own_head" in session.notice_codes
    for confidence in final.modalities:
        name = pb.Modality.Name(confidence.modality).lower()
        if not confidence.available:
            modalities.append(f"{name} unavailable")
        elif confidence.modality == pb.TEXT and own_text_head:
            modalities.append(
                f"text: its language's own text head {confidence.probability:.3f}, beside the estimate with weight "
                f"0 in it (the model's text pathway had fusion weight {confidence.weight:.2f})"
            )
        else:
            modalities.append(
                f"{name}: its head {confidence.probability:.3f}, its pathway's fusion weight {confidence.weight:.2f}"
            )
    if modalities:
        parts.append(
            "Each modality's own estimate and the weight the estimate gave it in the last sentence: "
            + "; ".join(modalities)
            + "."
        )
    symptoms = sorted((s for s in final.symptoms if s.score > 0), key=lambda symptom: -symptom.score)[:TOP_SYMPTOMS]
    if symptoms:
        items = ", ".join(f"{pb.PhqItem.Name(s.item).lower().replace('_', ' ')} {s.score:.2f}" for s in symptoms)
        parts.append(f"Strongest PHQ-8 item evidence in what was said: {items}.")
    return " ".join(parts)


def _narrative_interval(session: ScreenedSession) -> str:
    interval = session.final_interval
    if interval is None:
        return ""
    return f", interval {interval[0] * 100:.1f}%-{interval[1] * 100:.1f}%{_interval_meaning(session)}"


def _interval_meaning(session: ScreenedSession) -> str:
    """What the last sentence's interval is (the one `final_interval` gives), where its estimate says."""
    estimate = session.sentences[-1].estimate
    if not estimate.interval_level:
        return ""
    if not estimate.enough_speech:
        return " (not enough speech yet: the whole range)"
    return f" ({estimate.interval_level:.0%} nominal coverage: a split-conformal interval, see the model card)"


def _method(model: pb.ModelInfo) -> dict:
    name = f"depscreen model {model.model_id}"
    runs_on = "/".join(part for part in (model.device, model.kernels) if part)
    described = name + (f" ({runs_on})" if runs_on else "")
    if model.trained_on:
        described += f", trained on {model.trained_on}"
    return {"coding": [{"system": MODEL_SYSTEM, "code": model.model_id, "display": name}], "text": described}


def _absolute(url: str) -> str:
    """`url` when it is absolute (http or https); ValueError saying how to give one otherwise."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(
            f"the model card URL {url!r} is not absolute: a clinical record must link where the card is published; "
            "pass --model-card-url https://... (model_card_url=)"
        )
    return url


def _model_card(url: str, model: pb.ModelInfo | None) -> dict:
    model_id = model.model_id if model is not None else "the model"
    return {
        "resourceType": "DocumentReference",
        "id": MODEL_CARD_ID,
        "status": "current",
        "description": f"Model card of {model_id}: training data, validation, limits, intended use",
        "content": [{"attachment": {"contentType": "text/markdown", "url": url, "title": "model card"}}],
    }


def _occurrence(session: ScreenedSession, occurred: datetime | None) -> dict:
    if occurred is not None:
        return {"occurrenceDateTime": _aware(occurred).isoformat()}
    if session.started is None:
        raise ValueError(
            f"{session.source}: when the session took place is unknown (no accepted.started_at, from a server "
            "before protocol 1.1, and no recording's stream.json): pass --occurred ISO8601 (occurred=)"
        )
    started = _aware(session.started)
    seconds = session.summary.audio_seconds if session.summary is not None else session.sentences[-1].end_ms / 1000
    return {
        "occurrencePeriod": {"start": started.isoformat(), "end": (started + timedelta(seconds=seconds)).isoformat()}
    }


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def _narrative(session: ScreenedSession) -> str:
    final = session.final
    model = f" by model {session.model.model_id}" if session.model is not None else ""
    lines = [
        f"Depression screening estimate{model}: {final.probability * 100:.1f}% "
        f"(evidence {final.evidence:.2f}, {len(session.sentences)} sentences{_narrative_interval(session)}).",
        SCREENING_AID,
    ]
    body = "".join(f"<p>{html.escape(line)}</p>" for line in lines)
    return f'<div xmlns="http://www.w3.org/1999/xhtml">{body}</div>'
