"""How fast live.py classifies, per backbone: model latency per frame and end-to-end FPS.

    python benchmarks/live.py [--images ../shared/data/rps/test] [--frames 300]

It writes a 640x480 video (a webcam's size) of test-set photos, builds each backbone's
classifier (random weights: timing does not depend on them), saves it, and runs live.py's
own headless loop on the video: decode, crop, model, annotate, encode, predictions file.
It also times three ways of calling the model on one crop, which is why live.py traces a
``tf.function`` instead of calling ``model.predict`` per frame.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # rps, when it is not installed into the environment
BACKBONES = ("efficientnet_lite0", "resnet50")
CALLS = 20


def make_video(images: Path, frames: int, path: Path) -> Path:
    files = sorted(p for p in images.rglob("*") if p.suffix.lower() in {".png", ".jpg"})
    if not files:
        raise SystemExit(f"no .png or .jpg images under {images}: pass --images <folder>")
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"mp4v"), 30.0, (640, 480))
    for i in range(frames):
        read = cv2.imread(str(files[i * 7 % len(files)]))
        if read is None:
            raise SystemExit(f"{files[i * 7 % len(files)]} is not an image OpenCV reads")
        photo = cv2.resize(read, (300, 300))
        canvas = np.full((480, 640, 3), 200, dtype=np.uint8)
        canvas[90:390, 170:470] = photo
        writer.write(canvas)
    writer.release()
    return path


def build_model(backbone: str, folder: Path) -> Path:
    from rps.config import compose
    from rps.features import sources
    from rps.model import network

    conf = compose.to_object(
        compose.config(REPO / "conf", [f"backbone={backbone}", "backbone.weights=null"])
    )
    network.save(sources.classifier(conf, 3).inference, ["paper", "rock", "scissors"], folder)
    return folder


def median_ms(call, crop: np.ndarray) -> float:
    call(crop)
    times = []
    for _ in range(CALLS):
        started = time.perf_counter()
        call(crop)
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def call_styles(model_dir: Path) -> dict[str, float]:
    """Median ms per call on one 300x300 crop: ``predict``, an eager call, a ``tf.function``
    and live's predictor (the same function, frozen)."""
    import tensorflow as tf

    from rps.model import network
    from rps.serve.predictor import Predictor

    model, class_names = network.load(model_dir)
    crop = np.random.default_rng(0).integers(0, 256, (300, 300, 3)).astype(np.float32)
    batch = crop[None]
    frozen = Predictor.of(model, class_names).frame(300)
    traced = tf.function(
        lambda x: model(x, training=False), input_signature=[tf.TensorSpec([1, None, None, 3])]
    )
    return {
        "predict": median_ms(lambda _: model.predict(batch, verbose=0), crop),
        "eager": median_ms(lambda _: model(batch, training=False).numpy(), crop),
        "tf.function": median_ms(lambda _: traced(batch).numpy(), crop),
        "frozen": median_ms(lambda x: frozen(x, None), crop),
    }


def bench_live(model_dir: Path, video: Path, out: Path):
    from rps.apps.live import run
    from rps.config.apps import LiveConfig, RoiConfig, RoiFind

    conf = LiveConfig(
        model_path=str(model_dir),
        source=str(video),
        headless=True,
        roi=RoiConfig(find=RoiFind.fixed),
        output=str(out / "annotated.mp4"),
        predictions=str(out / "p.csv"),
    )
    return run(conf, out, REPO)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=REPO.parent / "shared/data/rps/test")
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES))
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        tmp = Path(scratch)
        video = make_video(args.images, args.frames, tmp / "clip.mp4")
        for backbone in args.backbones:
            folder = build_model(backbone, tmp / backbone)
            styles = call_styles(folder)
            summary = bench_live(folder, video, folder)
            rows.append((backbone, styles, summary))
    print(
        f"### live.py per image backbone: {args.frames} frames of 640x480 video, 300x300 "
        f"ROI, {os.cpu_count()} CPU cores\n"
    )
    print(
        "Median ms per call on one crop, then live.py's loop (which calls the frozen function).\n"
    )
    print(
        "| backbone | predict | eager | tf.function | frozen | live: model ms "
        "| live: frame ms | live: end-to-end FPS |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for backbone, styles, s in rows:
        calls = " | ".join(
            f"{styles[k]:.1f}" for k in ("predict", "eager", "tf.function", "frozen")
        )
        print(
            f"| {backbone} | {calls} | {s.median_model_ms:.1f} | {s.median_frame_ms:.1f} | "
            f"{s.fps:.1f} |"
        )


if __name__ == "__main__":
    main()
