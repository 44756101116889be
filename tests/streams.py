"""Camera streams for tests: a clip of a real plate passing a real street, and a real RTSP
server (GStreamer's) that serves it.

    clip = gate_clip(tmp_path / "gate.mkv")            # H.264, the plate "AD799KB" passes
    with rtsp_server(clip) as url:                      # rtsp://127.0.0.1:PORT/cam
        ...
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image

from tests.assets import asset
from tests.ci_tools import missing_tool
from tests.scenes import PLATES
from tests.servers import REPO, free_port

SYSTEM_PYTHON = "/usr/bin/python3"
APT_PACKAGES = (
    "apt-get install gstreamer1.0-rtsp gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good"
    " gstreamer1.0-plugins-bad python3-gi"
)


def gate_clip(
    path: Path,
    *,
    fps: int = 10,
    still_s: float = 1.0,
    passing_s: float = 3.0,
    after_s: float = 2.0,
    size: tuple[int, int] = (1280, 720),
    plate_asset: str = "plate_ad799kb",
    gop: int = 20,
) -> Path:
    """An H.264 Matroska clip: the empty street (Ultralytics' bus.jpg), then a real plate crop
    (fast-plate-ocr's) crossing it left to right and growing as it nears, then the empty street
    again. The plate's text is tests.scenes.PLATES[plate_asset]."""
    street = Image.open(asset("bus")).convert("RGB").resize(size)
    plate = Image.open(asset(plate_asset)).convert("RGB")
    frames: list[np.ndarray] = []
    empty = np.asarray(street)
    frames += [empty] * round(still_s * fps)
    passing = round(passing_s * fps)
    for i in range(passing):
        scale = 1.4 + 0.4 * i / max(1, passing - 1)
        crop = plate.resize((round(plate.width * scale), round(plate.height * scale)))
        frame = street.copy()
        frame.paste(crop, (round(size[0] * (0.2 + 0.3 * i / passing)), round(size[1] * 0.62)))
        frames.append(np.asarray(frame))
    frames += [empty] * round(after_s * fps)
    write_h264(path, frames, fps=fps, gop=gop)
    return path


def plate_text(plate_asset: str = "plate_ad799kb") -> str:
    return PLATES[plate_asset]


def write_h264(path: Path, frames: list[np.ndarray], *, fps: int, gop: int) -> None:
    with av.open(str(path), "w", format="matroska") as container:
        stream = container.add_stream("libx264", rate=Fraction(fps))
        stream.width, stream.height = frames[0].shape[1], frames[0].shape[0]
        stream.pix_fmt = "yuv420p"
        # A camera's encoder: no B-frames, a keyframe every `gop` frames.
        stream.options = {"preset": "veryfast", "tune": "zerolatency", "g": str(gop), "bf": "0"}
        for rgb in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(rgb, format="rgb24")))
        container.mux(stream.encode(None))


def rtsp_available() -> None:
    """Skip (laptop) or fail (CI) when GStreamer's RTSP server is not installed."""
    probe = (
        "import gi; gi.require_version('GstRtspServer', '1.0'); from gi.repository import Gst, "
        "GstRtspServer; Gst.init(None); assert Gst.ElementFactory.find('h264parse')"
    )
    if (
        not Path(SYSTEM_PYTHON).exists()
        or subprocess.run([SYSTEM_PYTHON, "-c", probe], capture_output=True).returncode != 0
    ):
        missing_tool(f"GStreamer's RTSP server for the system Python: {APT_PACKAGES}")


class RtspServer:
    """GStreamer's RTSP server in its own process; `stop()` and `start()` again on the same port."""

    def __init__(self, clip: Path, port: int | None = None) -> None:
        self.clip = clip
        self.port = port or free_port()
        self.url = f"rtsp://127.0.0.1:{self.port}/cam"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 20.0) -> None:
        script = REPO / "tests" / "rtsp_server.py"
        self.process = subprocess.Popen(
            [SYSTEM_PYTHON, str(script), "--port", str(self.port), "--clip", str(self.clip)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                out = self.process.stdout.read().decode() if self.process.stdout else ""
                raise RuntimeError(f"the RTSP server exited: {out[-2000:]}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.5):
                return
            time.sleep(0.1)
        raise TimeoutError(f"the RTSP server on {self.port} did not listen within {timeout}s")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()  # as a camera losing power: no goodbye to the client
            self.process.wait(10)
        self.process = None


@contextlib.contextmanager
def rtsp_server(clip: Path) -> Iterator[RtspServer]:
    rtsp_available()
    server = RtspServer(clip)
    server.start()
    try:
        yield server
    finally:
        server.stop()
