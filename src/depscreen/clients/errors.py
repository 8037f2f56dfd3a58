"""The client's errors: one base (`ScreeningError`), the server's statuses typed by what the application should
do about them (`UnauthenticatedError`, `InvalidInputError`, `RefusedError` with its retry hint,
`UnavailableError`, `ResumeLostError`), and the client's own (bad input refused before sending, a server that
stopped answering, unusable media, a missing extra)."""

from __future__ import annotations

import grpc
import grpc.aio
from google.protobuf import any_pb2, descriptor_pb2, descriptor_pool, duration_pb2, message_factory
from google.protobuf.message import DecodeError

STATUS_DETAILS_KEY = "grpc-status-details-bin"
"""The trailer that carries a `google.rpc.Status` with typed details (the server's `RetryInfo`)."""
RETRY_INFO_TYPE = "type.googleapis.com/google.rpc.RetryInfo"


class ScreeningError(Exception):
    """The base of every error the client raises about a session or its input: `except ScreeningError` catches
    them all."""


class StatusError(ScreeningError, grpc.aio.AioRpcError):
    """The session ended with a gRPC status: `code()` and `details()` are what the server (or, for the client's
    own refusals, the client) said, `trailing_metadata()` the server's trailers. Also a `grpc.aio.AioRpcError`,
    so code written against the raw status keeps working. Subclasses say what to do; a status none of them
    covers (`INTERNAL`, `CANCELLED`...) is raised as this class."""

    retry_after_s: float | None
    """The server's suggested wait before trying again (its `google.rpc.RetryInfo`), or None when it gave none."""

    def __init__(
        self,
        code: grpc.StatusCode,
        details: str,
        initial_metadata: grpc.aio.Metadata | None = None,
        trailing_metadata: grpc.aio.Metadata | None = None,
    ) -> None:
        initial = initial_metadata if initial_metadata is not None else grpc.aio.Metadata()
        trailing = trailing_metadata if trailing_metadata is not None else grpc.aio.Metadata()
        super().__init__(code, initial, trailing, details)
        self.retry_after_s = retry_after_s(trailing)

    def __str__(self) -> str:
        return f"{self.code().name}: {self.details()}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.code().name}, {self.details()!r})"

    @classmethod
    def of(cls, error: grpc.aio.AioRpcError) -> StatusError:
        """The typed error for a raw status (the class its code maps to); a typed one is returned as it is."""
        if isinstance(error, StatusError):
            return error
        kind = _BY_CODE.get(error.code(), StatusError)
        return kind(error.code(), error.details() or "", error.initial_metadata(), error.trailing_metadata())


class UnauthenticatedError(StatusError):
    """The server refused the caller's credentials (`UNAUTHENTICATED`, `PERMISSION_DENIED`): fix the token."""


class InvalidInputError(StatusError, ValueError):
    """The server refused something the client sent as malformed or out of range (`INVALID_ARGUMENT`,
    `OUT_OF_RANGE`, `FAILED_PRECONDITION`): the details name the field and the fix. Not worth retrying as is."""


class SessionInputError(InvalidInputError):
    """The client refused input before sending anything (`INVALID_ARGUMENT`): `start` parameters out of range,
    audio of the wrong sample width, a frame without its format, a caption ending before it starts."""

    def __init__(self, details: str) -> None:
        super().__init__(grpc.StatusCode.INVALID_ARGUMENT, details)

    def __str__(self) -> str:
        return self.details() or ""


class RefusedError(StatusError):
    """The server refused or ended the session at a limit (`RESOURCE_EXHAUSTED`: at capacity, overloaded, the
    token's quota, the session's time); `retry_after_s` is its suggested wait when it is worth trying again."""


class UnavailableError(StatusError, ConnectionError):
    """The server or the link went away (`UNAVAILABLE`, `DEADLINE_EXCEEDED`) and the session could not be
    carried over: not resumable (no state store, `resume=False`), or still broken after
    `ClientSettings.reconnect_s`. Retrying later, with a new session, may work."""


class ServerStalledError(UnavailableError):
    """The server sent nothing for `ClientSettings.reply_timeout_s` while the client was sending: it is hung or
    the link is down (`DEADLINE_EXCEEDED`, raised by the client). A resumable session reconnects; otherwise this
    is raised."""

    def __init__(self, details: str) -> None:
        super().__init__(grpc.StatusCode.DEADLINE_EXCEEDED, details)


class ResumeLostError(StatusError):
    """A session that broke could not be resumed: the server no longer knows its resume token (expired, the
    store lost it) or cannot re-send what the client lacks. Its updates so far stand; start a new session for
    the rest."""


_BY_CODE: dict[grpc.StatusCode, type[StatusError]] = {
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: UnauthenticatedError,
    grpc.StatusCode.INVALID_ARGUMENT: InvalidInputError,
    grpc.StatusCode.OUT_OF_RANGE: InvalidInputError,
    grpc.StatusCode.FAILED_PRECONDITION: InvalidInputError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: RefusedError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
    grpc.StatusCode.DEADLINE_EXCEEDED: UnavailableError,
}


class SessionClosedError(ScreeningError, RuntimeError):
    """Something was sent on a session that has ended (after `end()`, or once its stream failed)."""


class MediaError(ScreeningError):
    """A media file that is missing, cannot be decoded or has no audio stream to screen."""


class WhipError(ScreeningError):
    """The WHIP endpoint refused a request (`status` is its HTTP status) or the WebRTC connection failed."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class MissingExtraError(ImportError):
    """A feature needs an optional dependency group that is not installed; the message names the extra."""

    def __init__(self, feature: str, extra: str, missing: str) -> None:
        super().__init__(
            f"{feature} needs the [{extra}] extra (missing module {missing}): pip install 'depscreen[{extra}]'"
        )
        self.extra = extra


def _status_classes() -> tuple[type, type]:
    """`google.rpc.Status` and `google.rpc.RetryInfo`, built in a private descriptor pool from their public
    field layout (googleapis/google/rpc), so reading a retry hint needs only protobuf (no grpcio-status, no
    googleapis-common-protos) and never clashes with those packages' own definitions."""
    pool = descriptor_pool.DescriptorPool()
    for well_known in (any_pb2, duration_pb2):
        pool.AddSerializedFile(well_known.DESCRIPTOR.serialized_pb)
    rpc = descriptor_pb2.FileDescriptorProto(
        name="depscreen_client/google_rpc.proto",
        package="google.rpc",
        syntax="proto3",
        dependency=["google/protobuf/any.proto", "google/protobuf/duration.proto"],
    )
    field = descriptor_pb2.FieldDescriptorProto
    status = rpc.message_type.add(name="Status")
    status.field.add(name="code", number=1, type=field.TYPE_INT32, label=field.LABEL_OPTIONAL)
    status.field.add(name="message", number=2, type=field.TYPE_STRING, label=field.LABEL_OPTIONAL)
    status.field.add(
        name="details", number=3, type=field.TYPE_MESSAGE, label=field.LABEL_REPEATED, type_name=".google.protobuf.Any"
    )
    retry = rpc.message_type.add(name="RetryInfo")
    retry.field.add(
        name="retry_delay",
        number=1,
        type=field.TYPE_MESSAGE,
        label=field.LABEL_OPTIONAL,
        type_name=".google.protobuf.Duration",
    )
    pool.Add(rpc)
    return (
        message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.Status")),
        message_factory.GetMessageClass(pool.FindMessageTypeByName("google.rpc.RetryInfo")),
    )


_STATUS, _RETRY_INFO = _status_classes()


def retry_after_s(trailing_metadata: grpc.aio.Metadata | None) -> float | None:
    """The wait a status's `google.rpc.RetryInfo` suggests (from the `grpc-status-details-bin` trailer), in
    seconds; None when the trailers carry none or cannot be read."""
    if trailing_metadata is None:
        return None
    for key, value in trailing_metadata:
        if key != STATUS_DETAILS_KEY or not isinstance(value, bytes):
            continue
        status, info = _STATUS(), _RETRY_INFO()
        try:
            status.ParseFromString(value)
            detail = next((d for d in status.details if d.type_url == RETRY_INFO_TYPE), None)
            if detail is None:
                return None
            info.ParseFromString(detail.value)
        except DecodeError:  # a malformed trailer is no hint, not a reason to hide the status itself
            return None
        return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
    return None
