"""A real RTSP server for the stream tests: GStreamer's (Debian's gstreamer1.0-rtsp, through
python3-gi), serving an H.264 Matroska clip as a camera would, at its own frame rate.

    /usr/bin/python3 tests/rtsp_server.py --port 8554 --clip clip.mkv     # rtsp://127.0.0.1:8554/cam

It runs under the system Python (the GObject bindings are Debian's, not the venv's): start it
with tests/streams.py's `rtsp_server(...)`. Every client gets the clip from its start (the
media is not shared); at the clip's end the session ends, as a camera dropping the stream.
"""

from __future__ import annotations

import argparse
import signal

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402 - after require_version


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--clip", required=True)
    args = parser.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(args.port))
    factory = GstRtspServer.RTSPMediaFactory()
    # The file's H.264 as it is (no re-encoding), paced at its timestamps like a live camera.
    factory.set_launch(
        f'( filesrc location="{args.clip}" ! matroskademux ! h264parse ! '
        "rtph264pay name=pay0 pt=96 config-interval=1 )"
    )
    factory.set_shared(False)
    server.get_mount_points().add_factory("/cam", factory)
    server.attach(None)
    loop = GLib.MainLoop()
    GLib.unix_signal_add(GLib.PRIORITY_DEFAULT, signal.SIGTERM, loop.quit)
    print(f"rtsp://127.0.0.1:{args.port}/cam ready", flush=True)
    loop.run()


if __name__ == "__main__":
    main()
