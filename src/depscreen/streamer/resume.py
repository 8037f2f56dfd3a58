"""Resumable sessions: snapshots of a session's model state and estimates, and the resume tokens that reach them.

After every sentence a resumable session writes a `SessionSnapshot` to the state store: the model state after that
sentence, its evidence account, the index of the next sentence, the media time up to the end of that sentence
(`resume_from_ms`), where its media handling goes on from (`pipeline.ResumePoint`: the segmenter's state and
the video schedule, with the sample the client re-sends from), its counters, its last estimate and its last
`KEPT_UPDATES` sentence updates without their transcripts (re-sent on a resume to a client that missed them).
Nothing else: no audio, video or transcript text (the resume point holds a SHA-256 of the audio to re-send, to
check it, never the audio).
A session that ends with `end` leaves its last snapshot with its summary (`SessionSnapshot.summary`: the wire
`SessionSummary`, counts and the final estimate, no text) for `finished_retention_s`, so that a client whose
stream broke before the summary reached it can resume and take it; that resume deletes the record.
Tensors are written with `torch.save` and read back with `weights_only=True`, so a record cannot run code.

A resume token is `<record id>.<MAC>`: the MAC is HMAC-SHA256, under the server key, of the record id, the
caller's session id, the principal the session was opened by (the authenticated token's name or JWT subject;
empty on an open server) and a random nonce kept in the record (never in the token). A token therefore works
only for its own session and only when presented by the caller it was issued to (a token that leaks to another
tenant opens nothing), cannot be made without the key, and dies with its record, which expires after
`resume_ttl_s` without a snapshot. Tokens are never logged or stored.

Each stream of a session holds a generation of its record (`Ticket.generation`): a new session's first
snapshot creates the record at generation 1, and every resume takes the next one before the stream goes on.
A snapshot or delete by a stream whose generation is no longer the record's (one that was frozen while its
session was resumed elsewhere) is refused by the store (`state_store.FencedError`) and writes nothing.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import pickle
import secrets
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import numpy as np
import torch
from google.protobuf.message import DecodeError

from depscreen.engine.features.language_head import TextHeadAccount
from depscreen.engine.model.state import RecurrentState
from depscreen.engine.pipeline import ResumePoint, SessionCounts
from depscreen.engine.runtime.screener import EvidenceAccount, ModalityEstimate, RunningEstimate, SessionTrack
from depscreen.streamer.state_store import StateStore, StoreRecord
from depscreen.v1 import screening_pb2 as pb

MIN_KEY_BYTES = 16
"""Shortest server key accepted from `--resume-key-file`."""
NONCE_BYTES = 32
KEPT_UPDATES = 64
"""Sentence updates kept with a snapshot, to re-send to a resuming client that did not receive them."""


class ResumeError(ValueError):
    """A resume token that leads to no session (malformed, forged, another caller's, or expired)."""


@dataclass
class SessionSnapshot:
    """What a session carries over a resume: model state and estimates only."""

    session_id: str
    next_index: int = 0
    resume_from_ms: int = 0
    """Media time up to the end of the last scored sentence (the client re-sends from `resume.first_sample`,
    before it)."""
    counts: SessionCounts = field(default_factory=SessionCounts)
    """The session's counts after the last scored sentence."""
    track: SessionTrack = field(default_factory=SessionTrack)
    """Model state after the last scored sentence (None before the first one) and the evidence account."""
    estimate: RunningEstimate | None = None
    updates: tuple[pb.SentenceUpdate, ...] = ()
    """The last (at most `KEPT_UPDATES`) sentence updates, oldest first, as `kept_update` made them."""
    resume: ResumePoint | None = None
    """Where the media handling goes on from after the last scored sentence; None before the first sentence
    (the stream starts afresh) and in snapshots written before it was kept (the segmenter restarts cold at
    `resume_from_ms`)."""
    summary: pb.SessionSummary | None = None
    """The summary sent on `end` (a finished session's record); None while the session goes on."""


def kept_update(update: pb.SentenceUpdate) -> pb.SentenceUpdate:
    """A sentence update as a snapshot keeps it: transcript and transcript source cleared (the store holds
    no text)."""
    kept = pb.SentenceUpdate()
    kept.CopyFrom(update)
    kept.ClearField("transcript")
    kept.ClearField("transcript_source")
    return kept


def encode(snapshot: SessionSnapshot) -> bytes:
    """The snapshot as bytes (torch.save of tensors and plain values). The state's parts sit at the top
    level as `RecurrentState.to_plain` lays them out, each None when there is no state yet: the layout of the
    first release, so records stay readable across an upgrade in either direction."""
    state, account = snapshot.track.state, snapshot.track.account
    payload = {
        "next_index": snapshot.next_index,
        "resume_from_ms": snapshot.resume_from_ms,
        **asdict(snapshot.counts),
        "usable_speech_s": account.usable_speech_s,
        "symptom_sum": torch.from_numpy(np.asarray(account.symptom_sum, dtype=np.float64)),
        "text_sentences": account.text_sentences,
        "language_text": [account.language_text.logit_sum, account.language_text.chars],
        "language_text_head": account.language_text.language,
        "estimate": _estimate_fields(snapshot.estimate),
        **(state.to_plain() if state is not None else dict.fromkeys(RecurrentState.parts())),
        "updates": [update.SerializeToString() for update in snapshot.updates],
        "resume_point": snapshot.resume.to_plain() if snapshot.resume is not None else None,
        # hex: an empty message's bytes b"" would be pickled as a call `weights_only` refuses
        "summary": snapshot.summary.SerializeToString().hex() if snapshot.summary is not None else None,
    }
    buffer = io.BytesIO()
    torch.save(payload, buffer)
    return buffer.getvalue()


def decode(session_id: str, data: bytes) -> SessionSnapshot:
    """A snapshot from `encode`'s bytes (tensors on the CPU)."""
    payload = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    state = RecurrentState.from_record(payload)
    account = EvidenceAccount(
        usable_speech_s=payload["usable_speech_s"],
        symptom_sum=payload["symptom_sum"].numpy(),
        text_sentences=payload["text_sentences"],
        language_text=TextHeadAccount(  # absent before it existed
            *payload.get("language_text", (0.0, 0)), payload.get("language_text_head", "")
        ),
    )
    return SessionSnapshot(
        session_id=session_id,
        next_index=payload["next_index"],
        resume_from_ms=payload["resume_from_ms"],
        counts=SessionCounts(**{f.name: payload[f.name] for f in fields(SessionCounts)}),
        track=SessionTrack(state=state, account=account),
        estimate=_estimate_from(payload["estimate"]),
        updates=tuple(pb.SentenceUpdate.FromString(data) for data in payload.get("updates", ())),
        resume=ResumePoint.from_plain(payload["resume_point"]) if payload.get("resume_point") else None,
        summary=pb.SessionSummary.FromString(bytes.fromhex(payload["summary"]))
        if payload.get("summary") is not None
        else None,
    )


def _estimate_fields(estimate: RunningEstimate | None) -> dict | None:
    if estimate is None:
        return None
    return {
        "probability": float(estimate.probability),
        "evidence": float(estimate.evidence),
        "modalities": [
            {
                "modality": str(m.modality),
                "available": bool(m.available),
                "quality": float(m.quality),
                "weight": float(m.weight),
                "probability": float(m.probability),
            }
            for m in estimate.modalities
        ],
        "symptoms": [float(score) for score in estimate.symptoms],
        "interval": [float(estimate.interval_low), float(estimate.interval_high), float(estimate.interval_level)],
        "enough_speech": bool(estimate.enough_speech),
    }


def _estimate_from(fields: dict | None) -> RunningEstimate | None:
    if fields is None:
        return None
    low, high, level = fields.get("interval", (0.0, 1.0, 0.0))  # snapshots written before intervals: [0, 1]
    return RunningEstimate(
        probability=fields["probability"],
        evidence=fields["evidence"],
        modalities=tuple(ModalityEstimate(**m) for m in fields["modalities"]),
        symptoms=tuple(fields["symptoms"]),
        interval_low=low,
        interval_high=high,
        interval_level=level,
        enough_speech=fields.get("enough_speech", False),
    )


def read_key_file(path: str) -> bytes:
    """The server key in `path` (its bytes, surrounding whitespace removed); ValueError says what is wrong."""
    try:
        key = Path(path).read_bytes().strip()
    except OSError as error:
        raise ValueError(f"resume_key_file {path}: cannot read it ({error.strerror})") from None
    if len(key) < MIN_KEY_BYTES:
        raise ValueError(
            f"resume_key_file {path} holds {len(key)} bytes; use at least {MIN_KEY_BYTES} random ones "
            "(python -c 'import secrets; print(secrets.token_urlsafe(32))')"
        )
    return key


@dataclass(frozen=True)
class Ticket:
    """A session's place in the store: its record id and nonce (the token is derived from them)."""

    record_id: str
    session_id: str
    nonce: bytes
    principal: str = ""
    """Who opened the session ("" on an open server); only they can resume it."""
    generation: int = 0
    """The record's generation this stream holds (0: the record is not written yet); not part of the token."""


class Resumer:
    """Issues resume tokens, writes snapshots and restores sessions, over one state store. Blocking calls."""

    def __init__(self, store: StateStore, key: bytes, ttl_s: float, finished_retention_s: float = 0.0) -> None:
        """`finished_retention_s`: how long a session that ended with `end` keeps its record with its summary
        (0: deleted at once)."""
        self.store = store
        self.ttl_s = ttl_s
        self.finished_retention_s = finished_retention_s
        self._key = key

    def new_ticket(self, session_id: str, principal: str | None = None) -> Ticket:
        """A fresh place in the store for a session opened by `principal` (None on an open server)."""
        return Ticket(secrets.token_hex(16), session_id, secrets.token_bytes(NONCE_BYTES), principal or "")

    def token(self, ticket: Ticket) -> str:
        """The resume token of a ticket."""
        return f"{ticket.record_id}.{self._mac(ticket)}"

    def _mac(self, ticket: Ticket) -> str:
        message = b"\n".join(
            (ticket.record_id.encode(), ticket.session_id.encode(), ticket.principal.encode(), ticket.nonce)
        )
        digest = hmac.new(self._key, message, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).rstrip(b"=").decode()

    def save(self, ticket: Ticket, snapshot: SessionSnapshot) -> Ticket:
        """Write the session's snapshot (this also restarts its idle TTL), fenced by the ticket's generation
        (`state_store.FencedError` when another stream has resumed the session since); the ticket as stored
        (a new record's first write gives it generation 1)."""
        record = StoreRecord(
            ticket.record_id, ticket.session_id, ticket.nonce, encode(snapshot), generation=ticket.generation
        )
        return replace(ticket, generation=self.store.save(record, self.ttl_s))

    def restore(self, token: str, principal: str | None = None) -> tuple[Ticket, SessionSnapshot]:
        """The session a token presented by `principal` leads to and its last snapshot, with the next
        generation of its record taken (every older stream of the session is fenced from then on); ResumeError
        when it leads nowhere (a token presented by another principal than its session's leads nowhere),
        `state_store.FencedError` when another resume took the generation first."""
        record_id, _, mac = token.partition(".")
        if not (len(record_id) == 32 and mac and all(c in "0123456789abcdef" for c in record_id)):
            raise ResumeError("malformed")
        record = self.store.load(record_id, self.ttl_s)
        if record is None:
            raise ResumeError("unknown or expired")
        ticket = Ticket(record.record_id, record.session_id, record.nonce, principal or "")
        if not hmac.compare_digest(mac.encode(), self._mac(ticket).encode()):
            raise ResumeError("forged or another caller's")
        try:
            snapshot = decode(record.session_id, record.payload)
        except (pickle.UnpicklingError, EOFError, RuntimeError, KeyError, TypeError, ValueError, DecodeError) as error:
            raise ResumeError(f"valid, but its snapshot is unreadable ({type(error).__name__})") from None
        return replace(ticket, generation=self.store.advance(record.record_id, record.generation)), snapshot

    def finish(self, ticket: Ticket, snapshot: SessionSnapshot) -> None:
        """A session ended with `end`: its record becomes `snapshot` (its last one, with its summary) for
        `finished_retention_s` (with 0, it is deleted), fenced by the ticket's generation."""
        if self.finished_retention_s <= 0:
            self.forget(ticket)
            return
        record = StoreRecord(
            ticket.record_id, ticket.session_id, ticket.nonce, encode(snapshot), generation=ticket.generation
        )
        self.store.finish(record, self.finished_retention_s)

    def forget(self, ticket: Ticket) -> None:
        """Delete a finished session's record (its token stops working), fenced by the ticket's generation."""
        self.store.delete(ticket.record_id, ticket.generation)
