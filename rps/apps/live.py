"""Live classification and dataset capture: frame -> ROI crop -> model -> label on the frame.

The loop takes a frame source, a view and sinks, so it runs the same on a camera with a
window as on a video file in CI. Only :class:`rps.apps.screen.Window` needs a display.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from itertools import chain
from pathlib import Path

from rps.apps.modes import Capturing, Classifying, Mode
from rps.apps.screen import (
    CropWriter,
    Meter,
    NoWindow,
    PredictionLog,
    Summary,
    Window,
    place_roi,
    wanted_roi,
)
from rps.config.apps import LiveConfig, LiveMode, RoiConfig, RoiFind
from rps.data.video import FolderSource, Frame, SourceError, VideoSink, open_source
from rps.serve import logged_model

log = logging.getLogger(__name__)

QUIT_KEYS = {ord("q"), 27}  # 27 is Esc


def loop(
    frames: Iterable[Frame],
    mode: Mode,
    view: Window | NoWindow,
    video: VideoSink | None,
    meter: Meter,
) -> None:
    """Until the stream ends, q or Esc, Ctrl-C, or the mode is done. Each frame is written
    as it is processed, so however the loop ends, the outputs hold every processed frame."""
    meter.start()
    try:
        for frame in frames:
            shown = mode.step(frame)
            if video is not None:
                video.write(shown)
            key = view.show(shown)
            meter.tick()
            if key in QUIT_KEYS or mode.done:
                break
            mode.on_key(key, frame)
    except KeyboardInterrupt:
        log.info("interrupted: ending with the %d frames processed", len(meter.frame_s))


def run(conf: LiveConfig, output_dir: Path, root: Path) -> Summary:
    """Check the model, then the source and its first frame, then the display, so each
    mistake is reported as itself; then loop. Sources and sinks close however it ends."""
    with ExitStack() as stack:
        model = None
        if conf.mode == LiveMode.classify:
            model = logged_model.chosen(conf, conf.tracking, root)
            if conf.roi.find == RoiFind.hand:
                model = model.finding_hands()
        source = open_source(conf.source)
        stack.callback(source.close)
        frames = iter(source)
        first = next(frames, None)
        if first is None:
            raise SourceError(
                f"{source.what} gave no frames. A camera may be in use by another program; a "
                "video may be empty or in a codec this OpenCV build cannot decode (convert it "
                "to .mp4); an image folder may hold only unreadable files."
            )
        view = NoWindow() if conf.headless else Window()
        stack.callback(view.close)
        if conf.mode == LiveMode.capture or conf.roi.find == RoiFind.fixed:
            _warn_if_roi_does_not_fit(conf.roi, first.image.shape)
        video = None
        if conf.output or conf.headless:
            video = VideoSink(_path(conf.output, output_dir / "annotated.mp4"), source.fps)
            stack.callback(video.close)
        meter = Meter()
        if model is None:
            label = conf.label or ""  # LiveConfig refuses capture without a label
            folder = conf.data.folder / conf.capture.split.value / label
            mode: Mode = Capturing(conf, CropWriter(folder, label), meter, recording=conf.headless)
        else:
            rows = PredictionLog(_path(conf.predictions, output_dir / "predictions.csv"))
            stack.callback(rows.close)
            mode = Classifying(
                model,
                conf,
                rows,
                CropWriter(output_dir / "crops", "crop"),
                meter,
                video=not isinstance(source, FolderSource),
            )
        loop(chain([first], frames), mode, view, video, meter)
    summary = meter.summary()
    _report(summary, source.what, conf, mode, video)
    return summary


def _warn_if_roi_does_not_fit(cfg: RoiConfig, shape: Sequence[int]) -> None:
    roi, wanted = place_roi(cfg, shape), wanted_roi(cfg, shape)
    if roi != wanted:
        where = "centred" if cfg.x is None and cfg.y is None else f"at x={wanted.x}, y={wanted.y}"
        log.warning(
            "the region of interest (roi.size=%d, %s) does not fit in the %dx%d frame: "
            "using the frame's largest centred square (%d pixels), as training crops every "
            "image, for each frame it does not fit. To choose the square yourself, make it "
            "lie inside the frame (roi.size=%d or less).",
            cfg.size,
            where,
            shape[1],
            shape[0],
            roi.size,
            roi.size,
        )


def _path(given: str | None, default: Path) -> Path:
    """A path the user gave is relative to the working directory, as typed."""
    return Path(given).expanduser() if given else default


def _report(
    summary: Summary, what: str, conf: LiveConfig, mode: Mode, video: VideoSink | None
) -> None:
    timing = (
        f"{summary.frames} frames from {what} in {summary.seconds:.1f} s: "
        f"{summary.fps:.1f} FPS, median frame {summary.median_frame_ms or 0:.1f} ms"
    )
    if summary.median_model_ms is not None:
        timing += f", median model latency {summary.median_model_ms:.1f} ms"
    log.info("%s", timing)
    if video is not None:
        log.info("annotated video: %s", video.path)
    if isinstance(mode, Classifying):
        log.info("predictions: %s", mode.rows.path)
        if mode.crops.count:
            log.info("%d saved crops in %s", mode.crops.count, mode.crops.folder)
    elif isinstance(mode, Capturing):
        total = sum(1 for p in mode.crops.folder.glob("*") if p.is_file())
        log.info(
            "saved %d crops of %r in %s (%d images there now). Train on them with "
            "`python run.py data=folder data.root=%s`.",
            mode.crops.count,
            conf.label,
            mode.crops.folder,
            total,
            conf.data.root,
        )
