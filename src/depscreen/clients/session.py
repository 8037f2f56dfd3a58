"""`ScreeningClient` and its sessions: one channel to the screening server, live-source sessions on it that
send audio, frames and captions as they arrive and yield typed updates, resuming after breaks."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from contextlib import aclosing, asynccontextmanager
from pathlib import Path
from types import TracebackType

import grpc

from depscreen.v1 import screening_pb2 as pb

from .call import call_replies
from .errors import MissingExtraError, SessionClosedError, SessionInputError
from .resumable import resumable_replies
from .settings import ClientSettings
from .tls import channel_credentials
from .updates import Reconnecting, Update, update_of

QUEUE_MESSAGES = 64
"""Messages a session holds ahead of its stream; `send_*` waits while the stream is down or slow."""
IMAGE_FORMATS = {"jpeg": pb.JPEG, "png": pb.PNG, "rgb24": pb.RGB24}
ROLES = {"patient": pb.PATIENT, "clinician": pb.CLINICIAN}
"""The roles a channel or a caption may have, by the names the client takes."""


def wire_role(role: str) -> pb.Role.ValueType:
    """A role name ("patient", "clinician") as its wire value; SessionInputError for another."""
    value = ROLES.get(role.lower()) if isinstance(role, str) else None
    if value is None:
        raise SessionInputError(f"{role!r} is not a role: use one of {', '.join(ROLES)}")
    return value


SAMPLE_RATES_HZ = range(8_000, 48_001)
"""The audio rates the server accepts (the wire contract's `AudioFormat.sample_rate_hz`)."""
MAX_CHANNELS = 2
MAX_SESSION_ID_CHARS = 128
LANGUAGE_TAG = re.compile(r"[A-Za-z]{2,3}(-[A-Za-z0-9]{1,8})*")
"""A BCP-47 language tag's shape: a 2-3 letter primary language, then subtags ("en", "zh-Hans-CN")."""


class ScreeningClient:
    """Client of the `depscreen.v1.Screening` service at `target` ("HOST:PORT", or any gRPC target).

    Use it as `async with ScreeningClient(...) as client:`; it holds one channel, with gRPC keepalive pings
    (`settings`), for all its sessions. The channel is plaintext unless a TLS file is given: `tls_ca` (PEM CA
    bundle the server's certificate must chain to) turns TLS on, and `tls_cert` with `tls_key` present a
    client certificate (for servers that require mTLS). With a `token`, every call carries the metadata
    `authorization: Bearer <token>`. The server's refusals (and a break that cannot be resumed) are raised
    typed by what to do about them (`errors.py`: `UnauthenticatedError`, `InvalidInputError`, `RefusedError`
    with `retry_after_s`, `UnavailableError`, `ResumeLostError`; each a `ScreeningError` and a `StatusError`,
    whose `code()` and `details()` are the status the server sent).
    """

    def __init__(
        self,
        target: str,
        *,
        token: str | None = None,
        tls_ca: str | Path | None = None,
        tls_cert: str | Path | None = None,
        tls_key: str | Path | None = None,
        settings: ClientSettings | None = None,
    ) -> None:
        self.target = target
        self.settings = settings or ClientSettings()
        self._metadata = (("authorization", f"Bearer {token}"),) if token else ()
        self._credentials = channel_credentials(tls_ca, tls_cert, tls_key)
        self._channel: grpc.aio.Channel | None = None

    async def __aenter__(self) -> ScreeningClient:
        if self._channel is None:
            self._channel = self._open_channel()
        return self

    def _open_channel(self) -> grpc.aio.Channel:
        options = self.settings.channel_options()
        if self._credentials is None:
            return grpc.aio.insecure_channel(self.target, options=options)
        return grpc.aio.secure_channel(self.target, self._credentials, options=options)

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the channel (sessions still open on it fail)."""
        if self._channel is not None:
            await self._channel.close()
            self._channel = None

    @asynccontextmanager
    async def _channel_for_call(self) -> AsyncIterator[grpc.aio.Channel]:
        """The client's channel, or (on a client used without `async with`) one opened for this call only."""
        if self._channel is not None:
            yield self._channel
            return
        channel = self._open_channel()
        try:
            yield channel
        finally:
            await channel.close()

    async def stream_messages(self, messages: AsyncIterable[pb.ClientMessage]) -> AsyncIterator[pb.ServerMessage]:
        """Open `StreamSession`, send `messages` as given (nothing is added, checked or resumed) and yield the
        replies while sending goes on; the raw protocol, for tools and tests. When the server ends the stream
        early, the remaining messages are not sent and its status is raised."""
        async with (
            self._channel_for_call() as channel,
            aclosing(call_replies(channel, self._metadata, messages)) as replies,
        ):
            async for reply in replies:
                yield reply

    def session(
        self,
        *,
        sample_rate_hz: int = 16_000,
        channels: int = 1,
        language: str = "en",
        session_id: str = "",
        disable_asr: bool = False,
        resume: bool = True,
        channel_roles: Sequence[str] = (),
    ) -> Session:
        """A session for `async with`: audio is s16le PCM at `sample_rate_hz` (8000-48000) with `channels` (1 or
        2) interleaved; `language` is the BCP-47 tag of the speech and captions ("" = English); `session_id`
        (at most 128 printable characters) is echoed back, a server id made when empty; `disable_asr` takes the
        text from captions only. Out-of-range values raise `SessionInputError` here, before anything is sent.

        `channel_roles` says whose voice each channel carries, in channel order ("patient", "clinician"), e.g.
        `channels=2, channel_roles=("patient", "clinician")`: only the patient's channel is scored, and each
        answer names the clinician's question before it. Empty: every channel is the patient's.

        With `resume` (the default), a stream that breaks is resumed whenever the server granted a resume
        token (it has a state store), a `Reconnecting` update announcing each try; `resume=False` lets the
        first break end the session with its error.
        """
        if self._channel is None:
            raise SessionClosedError("open the client first: `async with ScreeningClient(...) as client:`")
        return self._session(
            self._channel, sample_rate_hz, channels, language, session_id, disable_asr, resume, channel_roles
        )

    def _session(
        self,
        channel: grpc.aio.Channel,
        sample_rate_hz: int,
        channels: int,
        language: str,
        session_id: str,
        disable_asr: bool,
        resume: bool,
        channel_roles: Sequence[str] = (),
    ) -> Session:
        check_start(sample_rate_hz, channels, language, session_id)
        if channel_roles and len(channel_roles) != channels:
            raise SessionInputError(
                f"channel_roles has {len(channel_roles)} roles for {channels} channels: give one role per channel"
            )
        start = pb.SessionStart(
            session_id=session_id,
            audio=pb.AudioFormat(sample_rate_hz=sample_rate_hz, channels=channels),
            language=language,
            disable_asr=disable_asr,
            channel_roles=[wire_role(role) for role in channel_roles],
        )
        return Session(channel, self._metadata, start, resume=resume, settings=self.settings)

    async def stream_file(
        self,
        path: str | Path,
        *,
        speed: float = 1.0,
        chunk_ms: int = 100,
        captions: str | Path | None = None,
        video: bool = True,
        video_fps: float = 5.0,
        session_id: str = "",
        language: str = "en",
        disable_asr: bool = False,
        on_send: Callable[[pb.ClientMessage], None] | None = None,
        resume: bool = True,
        channel_roles: Sequence[str] = (),
    ) -> AsyncIterator[pb.ServerMessage]:
        """Stream one media file as a session, paced at `speed` (1 = real time, 0 = as fast as possible); needs
        the [media] extra (PyAV).

        Sends the file's 16 kHz mono audio (with `channel_roles`, e.g. ("patient", "clinician"), its channels kept
        apart, one role each, in channel order; a file with another channel count raises `MediaError`) with
        sampled JPEG frames and the `captions` file's cues in media
        order, then ends the session, yielding every server message as it arrives (an `accepted` again after
        each resume; each sentence index once). `on_send` is called with each message as it is handed to the
        session. Media and caption problems found before the stream opens raise `MediaError` and
        `CaptionError`; a file failing to decode mid-stream cancels the call and raises its `MediaError`.
        """
        try:
            from .media import SAMPLE_RATE_HZ, MediaSource, Pacer
        except ModuleNotFoundError as error:
            raise MissingExtraError("streaming a media file", "media", error.name or "av") from None
        from .captions import read_captions

        cues = read_captions(captions) if captions is not None else []
        pacer = Pacer(speed)
        for role in channel_roles:
            wire_role(role)
        with MediaSource(path, video=video, video_fps=video_fps, channels=len(channel_roles) or None) as source:
            async with self._channel_for_call() as channel:
                session = self._session(
                    channel, SAMPLE_RATE_HZ, source.channels, language, session_id, disable_asr, resume, channel_roles
                )
                async with session:

                    async def produce() -> None:
                        try:
                            async for message in pacer.pace(source.messages(chunk_ms=chunk_ms, captions=cues)):
                                if on_send is not None:
                                    on_send(message)
                                await session.send_message(message)
                        except Exception as error:
                            await session.abort(error)
                            return
                        await session.end()

                    producer = asyncio.create_task(produce())
                    try:
                        async with aclosing(session.server_messages()) as replies:
                            async for reply in replies:
                                yield reply
                    finally:
                        producer.cancel()
                        await asyncio.gather(producer, return_exceptions=True)


def check_start(sample_rate_hz: int, channels: int, language: str, session_id: str) -> None:
    """`SessionInputError` naming the first `start` parameter the server would refuse, and what it accepts."""
    if sample_rate_hz not in SAMPLE_RATES_HZ:
        raise SessionInputError(
            f"sample_rate_hz={sample_rate_hz} is not supported: use {SAMPLE_RATES_HZ.start}-{SAMPLE_RATES_HZ.stop - 1}"
            " Hz (resample the audio first)"
        )
    if not 1 <= channels <= MAX_CHANNELS:
        raise SessionInputError(f"channels={channels} is not supported: send mono (1) or stereo (2)")
    if language and not LANGUAGE_TAG.fullmatch(language):  # empty: the server's default, English
        raise SessionInputError(
            f"language={language!r} is not a BCP-47 language tag: use a code such as 'en', 'zh' or 'en-GB'"
        )
    if len(session_id) > MAX_SESSION_ID_CHARS:
        raise SessionInputError(
            f"session_id has {len(session_id)} characters; the limit is {MAX_SESSION_ID_CHARS}: use a shorter id"
        )
    if not session_id.isprintable():
        raise SessionInputError("session_id contains control or other unprintable characters: use printable text")


class Session:
    """One screening session of a live source: `send_audio`, `send_frame`, `send_caption` as the media
    arrives, `end()` when done (leaving `async with` ends it too), and `updates()` to read what comes back.

    Sending waits while the stream is being resumed (up to `QUEUE_MESSAGES` messages are held); what the
    server has not committed is kept and re-sent after a break. Bad input is refused with `SessionInputError`
    before anything is sent; sending on an ended or failed session raises `SessionClosedError` (or the
    session's own error).
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        metadata: tuple[tuple[str, str], ...],
        start: pb.SessionStart,
        *,
        resume: bool,
        settings: ClientSettings,
    ) -> None:
        self._channel = channel
        self._metadata = metadata
        self._start = start
        self._resume = resume
        self._settings = settings
        self._frame_bytes = 2 * start.audio.channels
        self._bytes_per_ms = start.audio.sample_rate_hz * self._frame_bytes / 1000
        self._audio_bytes = 0
        self._outgoing: asyncio.Queue[pb.ClientMessage | Exception | None] = asyncio.Queue(QUEUE_MESSAGES)
        self._replies: asyncio.Queue[pb.ServerMessage | Reconnecting | BaseException | None] = asyncio.Queue()
        self._ended = False
        self._error: BaseException | None = None
        self._error_seen = False
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Session:
        self._task = asyncio.create_task(self._run())
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._task is None:
            return
        if error is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            return
        await self.end()
        await asyncio.gather(self._task, return_exceptions=True)
        if self._error is not None and not self._error_seen:
            self._error_seen = True
            raise self._error

    @property
    def audio_ms(self) -> float:
        """Milliseconds of audio sent so far: the session's media clock."""
        return self._audio_bytes / self._bytes_per_ms

    async def send_audio(self, pcm: bytes | bytearray | memoryview) -> None:
        """Send s16le PCM (the session's rate and channels, interleaved): bytes, or any buffer of 16-bit
        integers (an int16 numpy array, array('h')). Refused: samples of another width (float32, int32), or a
        byte count that is not whole frames."""
        view = memoryview(pcm)
        if view.format not in ("B", "b", "c") and view.itemsize != 2:
            raise SessionInputError(
                f"audio must be 16-bit PCM (s16le), got {view.itemsize * 8}-bit samples ({view.format!r}): convert "
                "them first, e.g. (samples * 32767).astype('<i2') for floats in -1..1"
            )
        data = view.tobytes()
        if not data or len(data) % self._frame_bytes:
            raise SessionInputError(
                f"audio chunk of {len(data)} bytes is not whole 16-bit frames of {self._start.audio.channels} "
                f"channel(s) ({self._frame_bytes} bytes each): send whole samples"
            )
        self._audio_bytes += len(data)
        await self.send_message(pb.ClientMessage(audio=pb.AudioChunk(data=data)))

    async def send_frame(
        self,
        image: bytes,
        *,
        format: pb.ImageFormat.ValueType | str,
        timestamp_ms: float | None = None,
        width: int = 0,
        height: int = 0,
    ) -> None:
        """Send a video frame: an encoded JPEG or PNG, or raw RGB24 with its `width` and `height`. Its time is
        `timestamp_ms` on the audio clock (default: the audio sent so far)."""
        kind = IMAGE_FORMATS.get(format.lower()) if isinstance(format, str) else format
        if kind not in IMAGE_FORMATS.values():
            raise SessionInputError(f"a frame needs its format: one of {', '.join(IMAGE_FORMATS)}, got {format!r}")
        if not image:
            raise SessionInputError("a frame needs its image bytes, got none")
        if kind == pb.RGB24 and (width <= 0 or height <= 0 or len(image) != width * height * 3):
            raise SessionInputError(
                f"an RGB24 frame needs width and height with width*height*3 bytes: got {len(image)} bytes for "
                f"{width}x{height}"
            )
        stamp = self.audio_ms if timestamp_ms is None else timestamp_ms
        frame = pb.VideoFrame(timestamp_ms=round(stamp), image=image, format=kind, width=width, height=height)
        await self.send_message(pb.ClientMessage(video=frame))

    async def send_caption(self, text: str, *, start_ms: float, end_ms: float, role: str = "patient") -> None:
        """Send what was said between `start_ms` and `end_ms` on the audio clock (a live caption); `role`
        "clinician" for the clinician's words (they never become the patient's text)."""
        if not 0 <= start_ms <= end_ms:
            raise SessionInputError(f"a caption needs 0 <= start_ms <= end_ms, got {start_ms}..{end_ms}")
        caption = pb.Caption(start_ms=round(start_ms), end_ms=round(end_ms), text=text, role=wire_role(role))
        await self.send_message(pb.ClientMessage(caption=caption))

    async def send_message(self, message: pb.ClientMessage) -> None:
        """Send a media message as given (audio, video or caption; only the `send_*` methods check it)."""
        if self._error is not None:
            self._error_seen = True
            raise self._error
        if self._ended:
            raise SessionClosedError("the session has ended: open a new one to send more")
        await self._outgoing.put(message)

    async def end(self) -> None:
        """Say the interview is over; the server then sends its summary. Calling it again does nothing."""
        if not self._ended:
            self._ended = True
            await self._outgoing.put(None)

    async def abort(self, error: Exception) -> None:
        """End the session with `error` (the media source failed): the call is cancelled and `error` raised
        from `updates()`."""
        if not self._ended:
            self._ended = True
            await self._outgoing.put(error)

    async def updates(self) -> AsyncIterator[Update]:
        """Every update as it arrives, typed (`Accepted`, `SentenceUpdate`, `Summary`, and `Reconnecting` when
        a broken stream is about to be resumed); the session's error (a refusal, or a break it could not
        resume: a `ScreeningError`) is raised here."""
        resumed = False
        async for item in self._items():
            if isinstance(item, Reconnecting):
                yield item
                continue
            yield update_of(item, resumed=resumed)
            resumed = resumed or item.WhichOneof("kind") == "accepted"

    async def server_messages(self) -> AsyncIterator[pb.ServerMessage]:
        """The server's messages as they are on the wire (de-duplicated like `updates()`)."""
        async for item in self._items():
            if not isinstance(item, Reconnecting):
                yield item

    async def _items(self) -> AsyncIterator[pb.ServerMessage | Reconnecting]:
        while True:
            item = await self._replies.get()
            if item is None:
                return
            if isinstance(item, BaseException):
                self._error_seen = True
                raise item
            yield item

    async def _run(self) -> None:
        replies = resumable_replies(
            self._channel, self._metadata, self._start, self._outgoing, resume=self._resume, settings=self._settings
        )
        try:
            async with aclosing(replies) as messages:
                async for message in messages:
                    self._replies.put_nowait(message)
        except Exception as error:
            self._error = error
            self._replies.put_nowait(error)
        finally:
            self._ended = True
            self._replies.put_nowait(None)
            while not self._outgoing.empty():  # frees a sender blocked on a full queue; its next send raises
                self._outgoing.get_nowait()
