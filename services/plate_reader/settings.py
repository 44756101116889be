"""Every setting of the plate reader, in one place, each overridable by an environment
variable named `MODELPORT_PLATE_<FIELD>` (e.g. `MODELPORT_PLATE_MAX_IMAGE_BYTES=5000000`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace

from services.core.env_settings import read_env


@dataclass(frozen=True)
class Settings:
    # Model-store tags the service loads; empty means the version `modelport models serve`
    # chose, else the newest (see services.core.model_store.serving_tag).
    detector_model: str = ""
    ocr_model: str = ""
    text_detector_model: str = ""
    # A plate-tuned recogniser read beside ocr_model as its equal (read_fusion.fuse_equals: both
    # read every number line; a plate they read alike scores as both agreeing, one they read
    # apart is flagged). The default, "plate-ocr-tail", is the neck and head trained here on
    # synthetic plates for PP-OCRv6 small (models/MODEL_CARD.md), grafted on ocr_model and read
    # in its calls (tuned_tail.py: ~2% more time, no second session); with an ocr_model whose
    # backbone it was not trained on, ocr_model reads alone (a version fine-tuned with the
    # backbone frozen keeps its base's). "" (or "none") = ocr_model alone; "auto" = the
    # newest stored version fine-tuned from ocr_model (`make plate-ocr-tuned`), if any; a tag =
    # that version. On the test split: 22 more plates read right and unflagged at the same 2
    # wrong (README, "A plate-tuned recogniser, read beside the base as its equal").
    ocr_tuned_model: str = "plate-ocr-tail"
    # Its scores' temperature, fitted on the dev crops (calibrate_plate_ocr.py: the lowest NLL of
    # "the read is the plate" at T=1.4; the tuned head is over-sure on synthetic plates).
    ocr_tuned_temperature: float = 1.4
    # Read only the plate number's text line (text_lines.py: the state name, slogan, stickers
    # and frame text around it are left out). Off: each crop is read whole, as before. On the
    # held-out seed-0 synthetic crops exact went 68.1% -> 91.0%, coverage 37.1% -> 74.3%; all
    # held-out sets together kept 99.6% of auto-accepted reads right (99.2% off). README.
    text_lines: bool = True
    min_score: float = 0.25  # detector confidence below which a box is not a plate
    # Detector input, long side. 640 read 18/18 test photos right at ~50 ms per 1280x720
    # photo; 480 is ~35% faster and read 17/18 (measured): the knob for tight latency budgets.
    detector_imgsz: int = 640
    # A photo where nothing was found at detector_imgsz, or nothing read surely, is run again at
    # this size (0: off). 960 found 72 of 87 synthetic dev plates where 640 alone found 62; it
    # costs a second, ~2x slower detector pass, only on photos without a sure plate at the first.
    detector_retry_imgsz: int = 960
    # A photo where nothing was read surely (nothing found, or only flagged readings) is searched
    # again in square tiles of this many pixels, each at detector_imgsz (small_plates.py; 0: off),
    # where that sees it larger than the passes above did (a long side over 1,440 px), else in
    # tiles of detector_imgsz (the photo at its own scale) where those do (a long side over 960
    # px). README, "Small plates in large photos".
    detector_tile: int = 960
    # Readings whose score (the weakest character's confidence, less twice any rival that makes
    # another valid plate) is below this get "review": true. Chosen on the dev splits for
    # auto-accepted precision: 0.93 kept 98.5% of synthetic crops' and 97.1% of synthetic
    # photos' accepted reads right (table per value in the README).
    review_threshold: float = 0.93
    max_image_bytes: int = 10 * 1024 * 1024  # one image, after base64 decoding
    max_request_bytes: int = 40 * 1024 * 1024  # the whole body (4 images, base64-inflated)
    max_pixels: int = 40_000_000  # ~8K x 5K; stops decompression bombs before decoding
    max_images: int = 8  # images in one request
    # All of one request's images together, from their headers: 8 photos of 6000x6000 (36 Mpx).
    max_request_pixels: int = 300_000_000
    # Photos up to this are kept whole from decoding to reading (1920x1080: 6 MB). Larger ones
    # are kept at the detector's size and decoded again only for plate crops (image_decoding.py).
    whole_image_max_pixels: int = 2_100_000
    # Decoded pixels held at once by everything in flight (3 bytes each: 192 MB); beyond it a
    # request gets 413 with Retry-After. A photo counts at the size it is kept at, so 3
    # requests of 8 photos of 36 Mpx hold 24 x 960x960 = 22 Mpx.
    max_pixels_in_flight: int = 64_000_000
    # Blocks of this many bytes and up get a memory map of their own, given back when freed
    # (glibc's M_MMAP_THRESHOLD, services/core/memory.py). glibc's own threshold climbs to 32 MB,
    # so a large photo's 16 MB decode blocks were kept in whichever thread's malloc arena took
    # them: 3 requests of 8 photos of 36 Mpx peaked at 740-920 MB in the worker, by CPU load;
    # 630-660 MB at this value, on a quiet and a loaded machine. 0: glibc's default.
    malloc_mmap_threshold: int = 1_048_576
    # Hosts whose https URLs may be sent as `upload_url` (Plate Recognizer's field), comma-separated
    # in MODELPORT_PLATE_UPLOAD_URL_HOSTS, each exactly (no wildcards). Empty: `upload_url` is
    # refused. Even a listed host is fetched only from public addresses (upload_url.py).
    upload_url_hosts: tuple[str, ...] = ()
    allowed_formats: tuple[str, ...] = field(default=("JPEG", "PNG", "WEBP", "BMP"))
    # Images run through the detector together. On 2 cores larger batches bought nothing and
    # cost memory: 8 clients sending a 4-plate photo got 8.2 images/s at 2, 7.6 at 4 and 6.7
    # at 8, with a serving peak RSS of 520, 577 and 700 MB (bench_plate_reader.py's 4-plate photo
    # and HTTP load, run against servers with each setting).
    batch_max_size: int = 2
    # Batches read at once, each in a thread of its own (batching.py). On 2 cores a second lane
    # fills the core one batch leaves idle: README, "Speed against Ultralytics", for what 1 and
    # 2 lanes measured at 1 and 8 clients, and the memory each holds. 1: one batch at a time.
    batch_lanes: int = 2
    max_in_flight: int = 16  # requests read at once: the lanes' batches running, the next filling
    max_queue: int = 64  # requests waiting their turn (~4 s of work on 2 cores); more: 429 + Retry-After
    max_queue_wait_s: float = 10.0  # a request still waiting after this is answered 429
    # Cameras the served reader watches (stream_watch.py), a JSON list of {"camera_id", "url"}:
    # [{"camera_id": "gate-1", "url": "rtsp://cam.lan/live"}]. `modelport watch` reads one.
    cameras: str = ""
    # Cameras on private addresses (a LAN) the operator allows: host names as in the URL,
    # addresses or networks (192.168.1.0/24), comma-separated. Any other private, loopback or
    # link-local camera address is refused (stream_url.py).
    camera_private_hosts: tuple[str, ...] = ()
    # Frames sampled per second of a camera; only moving ones are read. 5/s gives a car
    # crossing a gate in ~2 s about 10 readings to vote over (README, "Cameras").
    camera_fps: float = 5.0
    # After 2 s without motion decode keyframes only (an idle camera costs less: README), at the
    # price of noticing a car up to one keyframe interval late (stream_source.py, README "Cameras").
    camera_idle_keyframes: bool = False
    # Webhook targets (webhooks.py, README "Webhooks"): a JSON list of {url, secret, events,
    # cameras, name}, or the path of a file holding one. Empty: no webhooks.
    webhooks: str = ""
    # An event not delivered within a day is given up (a receiver down for hours still gets all).
    webhook_max_age_s: float = 86_400.0
    webhook_backoff_s: float = 1.0  # the first retry's wait; doubled each time (jittered 50-100%)...
    webhook_backoff_max_s: float = 300.0  # ...up to 5 minutes: a receiver back up waits at most that
    webhook_timeout_s: float = 10.0  # one delivery attempt, connect to answer
    # Development and tests only: hosts a webhook may reach over plain http and at loopback or
    # private addresses (e.g. 127.0.0.1). Never set in production: it lifts the SSRF rules.
    webhook_dev_hosts: tuple[str, ...] = ()
    # Video (POST /v1/plate-reader/video, video_reading.py). A clip must also fit max_request_bytes.
    video_max_bytes: int = 32 * 1024 * 1024  # ~1 min of 1080p H.264 at 4 Mbit/s
    # From the container's header, before decoding: a 10-hour clip is refused at once. 60 s read
    # at 5 frames/s is ~30 s of work on 2 cores, inside the request timeout (service.py).
    video_max_duration_s: float = 60.0
    video_max_frames: int = 300  # sampled frames read from one clip (60 s at 5/s)
    # Frames read per second of video. A car crossing a gate is in view ~2 s: 5/s gives ~10
    # readings to vote over, at ~5x less work than every frame of 25 fps.
    video_sample_fps: float = 5.0
    # Tracking (vehicle_tracks.py): a track not matched for this long has ended (its car left).
    track_max_gap_s: float = 1.0
    track_max_live: int = 32  # tracks open at once; beyond it the stalest ends early (memory)
    track_max_readings: int = 32  # readings kept per track for the vote: the surest ones
    # Best crops of vehicle events kept for GET /v1/plate-reader/video/crops/{id}, oldest dropped.
    video_crop_store_bytes: int = 32 * 1024 * 1024
    # Off: review items and event crops keep text only, no photo or crop (privacy).
    store_images: bool = True

    @classmethod
    def from_env(cls, environ: dict[str, str] | None = None) -> Settings:
        values = read_env(cls, "MODELPORT_PLATE_", environ)
        if "allowed_formats" in values:  # PIL names formats in capitals
            values["allowed_formats"] = tuple(f.upper() for f in values["allowed_formats"])
        settings = cls(**values)
        if not settings.detector_model or not settings.ocr_model or not settings.text_detector_model:
            from services.core.model_store import serving_tag

            settings = replace(
                settings,
                detector_model=settings.detector_model or serving_tag("plate-detector"),
                ocr_model=settings.ocr_model or serving_tag("plate-ocr"),
                text_detector_model=settings.text_detector_model or serving_tag("plate-text-detector"),
            )
        return settings

    def tuned_ocr_model(self, ocr_model: str | None = None) -> str | None:
        """The tag of the recogniser fused with `ocr_model` (default: this one's), or None. A bare
        name is the version `modelport models serve` chose, else the newest; the shipped tail
        missing from a store imported before it existed: None, with a warning."""
        if self.ocr_tuned_model in ("", "none"):
            return None
        from services.core.model_store import ModelNotFound, resolve, serving_tag, tuned_from

        if self.ocr_tuned_model == "auto":
            return tuned_from(ocr_model or self.ocr_model)
        if ":" in self.ocr_tuned_model:
            return self.ocr_tuned_model
        try:
            return str(resolve(serving_tag(self.ocr_tuned_model)).tag)
        except ModelNotFound:
            if self.ocr_tuned_model != Settings.ocr_tuned_model:
                raise
            logging.getLogger(__name__).warning(
                "%s is not in the model store: reading with the base recogniser alone "
                "(`modelport models import %s` adds it)",
                self.ocr_tuned_model,
                self.ocr_tuned_model,
            )
            return None
