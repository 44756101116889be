"""Open an uploaded clip safely and sample its frames, or say exactly what is wrong with it.

    clip = open_clip(data, settings, param="upload")      # header only: limits checked
    for chunk in clip.sampled(4):                          # [(t_seconds, RGB frame), ...]
        ...
    clip.truncated                                         # the file ended before its header said

PyAV (FFmpeg), not OpenCV: on a 1080p H.264 clip on this 2-core machine PyAV decoded 58.5
frames/s and OpenCV 46.1 (every frame), 137.8 and 104.2 when converting every 5th to RGB
(tests/benchmarks/bench_video_voting.py --decode); PyAV also gives the container's duration
from its header, so a 10-hour clip is refused before any frame is decoded, and it keeps
OpenCV out of the serving image.

Only the demuxers of MP4/MOV, MKV/WebM, AVI and MJPEG may open a clip (FFmpeg's
`format_whitelist`): a playlist (HLS, concat) that names other files or URLs is refused, not read.
CPU-bound: run it off the event loop (video_reading.py does, in one thread).
"""

from __future__ import annotations

import contextlib
import io
from collections.abc import Generator, Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

# PyAV is imported inside the functions that decode: a worker that only reads photos never
# loads FFmpeg (~16-20 MB a process, counted against the 1 GiB the manifests declare).
import numpy as np

from services.core.api_errors import ApiError
from services.plate_reader.settings import Settings

# FFmpeg's demuxer names for MP4/MOV, MKV/WebM, AVI and MJPEG.
FORMATS = "mov,mp4,m4a,3gp,3g2,mj2,matroska,webm,avi,mjpeg"
FORMAT_NAMES = "MP4, MOV, MKV, WebM, AVI or MJPEG"


@dataclass
class Clip:
    container: Any  # av.container.InputContainer
    duration_s: float | None  # from the header; None when the container does not say
    width: int
    height: int
    sample_fps: float
    max_frames: int
    max_duration_s: float
    param: str
    truncated: bool = False  # frames stopped early: the file is cut or damaged there
    frames_read: int = 0  # sampled frames handed out
    limited: bool = field(default=False)  # stopped at max_frames

    def sampled(self, chunk: int) -> Generator[list[tuple[float, np.ndarray]], None, None]:
        """Frames at `sample_fps` of the clip's own clock, `chunk` at a time, as RGB arrays."""
        import av

        stream = self.container.streams.video[0]
        stream.thread_type = "AUTO"  # frame threads: decoding H.264 on both cores
        step, next_t, last_t = 1 / self.sample_fps, 0.0, 0.0
        batch: list[tuple[float, np.ndarray]] = []
        try:
            for frame in self._decoded(stream):
                t = float(frame.time) if frame.time is not None else last_t + step
                last_t = t
                if t > self.max_duration_s:  # the header said less than the frames do
                    raise too_long(t, self.max_duration_s, self.param, decoded=True)
                if t + 1e-6 < next_t:
                    continue
                if self.frames_read >= self.max_frames:
                    self.limited = True
                    break
                next_t = max(next_t + step, t)
                batch.append((t, frame.to_ndarray(format="rgb24")))
                self.frames_read += 1
                if len(batch) == chunk:
                    yield batch
                    batch = []
        except (av.error.FFmpegError, ValueError):
            self.truncated = True  # what decoded before the damage is read
        else:
            rate = float(stream.average_rate) if stream.average_rate else 1.0
            if self.duration_s and not self.limited and last_t + 2 / rate < self.duration_s:
                self.truncated = True  # its frames ended well before its header says the clip does
        if batch:
            yield batch
        if self.frames_read == 0 and self.truncated:
            raise ApiError(
                400,
                f"`{self.param}` is a truncated or corrupt video: its header was read, but no frame "
                "could be decoded. Send the complete file",
                code="corrupt_video",
                param=self.param,
            )

    def _decoded(self, stream: Any) -> Iterator[Any]:
        """Every frame; at damage, the frames the decoder's threads still hold, then a ValueError."""
        import av

        try:
            for packet in self.container.demux(stream):
                yield from packet.decode()
        except av.error.FFmpegError as exc:
            with contextlib.suppress(av.error.FFmpegError):
                yield from stream.codec_context.decode(None)
            raise ValueError(exc) from None

    def close(self) -> None:
        self.container.close()


def open_clip(data: bytes, settings: Settings, *, param: str = "upload") -> Clip:
    """The clip with only its header read, its limits checked, or an ApiError."""
    import av

    if not data:
        raise ApiError(
            400, f"`{param}` is empty (0 bytes): send the video file", code="empty_video", param=param
        )
    if len(data) > settings.video_max_bytes:
        raise ApiError(
            413,
            f"`{param}` is {len(data):,} bytes; the limit is {settings.video_max_bytes:,} "
            "(MODELPORT_PLATE_VIDEO_MAX_BYTES). Send a shorter or more compressed clip",
            code="video_too_large",
            param=param,
        )
    try:
        container = av.open(io.BytesIO(data), options={"format_whitelist": FORMATS})
    except (av.error.FFmpegError, ValueError) as exc:
        # Not one of the formats, or no header to be found: a cut MP4 loses its index (moov).
        raise _unreadable(data, param, exc) from None
    if not container.streams.video or container.streams.video[0].codec_context is None:
        container.close()  # no video stream, or one in a codec FFmpeg cannot decode
        raise ApiError(
            415,
            f"`{param}` holds no video stream this service can decode. Send a {FORMAT_NAMES} clip",
            code="unsupported_video",
            param=param,
        )
    stream = container.streams.video[0]
    width, height = stream.codec_context.width, stream.codec_context.height
    duration = _duration(container, stream)
    try:
        if duration is not None and duration > settings.video_max_duration_s:
            raise too_long(duration, settings.video_max_duration_s, param, decoded=False)
        if width * height > settings.max_pixels:
            raise ApiError(
                413,
                f"`{param}` is {width}x{height} = {width * height:,} pixels a frame; the limit is "
                f"{settings.max_pixels:,}. Downscale it first",
                code="too_many_pixels",
                param=param,
            )
    except ApiError:
        container.close()
        raise
    return Clip(
        container,
        duration,
        width,
        height,
        settings.video_sample_fps,
        settings.video_max_frames,
        settings.video_max_duration_s,
        param,
    )


def too_long(seconds: float, limit: float, param: str, *, decoded: bool) -> ApiError:
    where = "its frames run past" if decoded else "its header says"
    return ApiError(
        413,
        f"`{param}` is too long: {where} {seconds:,.1f} s; the limit is {limit:,.0f} s "
        "(MODELPORT_PLATE_VIDEO_MAX_DURATION_S). Cut it into shorter clips",
        code="video_too_long",
        param=param,
    )


def _duration(container: Any, stream: Any) -> float | None:
    import av

    if container.duration is not None and container.duration > 0:
        return float(Fraction(container.duration, av.time_base))
    if stream.duration is not None and stream.time_base is not None:
        return float(stream.duration * stream.time_base)
    return None


def _unreadable(data: bytes, param: str, exc: Exception) -> ApiError:
    import av

    if isinstance(exc, av.error.ArgumentError) or not _looks_like_video(data):
        return ApiError(
            415,
            f"`{param}` is not a video this service can read (first bytes: {data[:8]!r}). Send a "
            f"{FORMAT_NAMES} clip; photos go to POST /v1/plate-reader",
            code="unsupported_video",
            param=param,
        )
    return ApiError(
        400,
        f"`{param}` is a truncated or corrupt video: no frame could be read ({exc}). Send the "
        "complete file (an MP4 cut short loses its index, which FFmpeg writes last unless "
        "`-movflags +faststart`)",
        code="corrupt_video",
        param=param,
    )


def _looks_like_video(data: bytes) -> bool:
    """The magic numbers of the formats taken: an MP4/MOV box, Matroska's EBML, RIFF AVI, JPEG."""
    head = data[:12]
    return (
        head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip")
        or head[:4] == b"\x1a\x45\xdf\xa3"
        or (head[:4] == b"RIFF" and head[8:12] == b"AVI ")
        or head[:2] == b"\xff\xd8"
    )
