"""How fast a served model answers: `make serve`'s latency per 640x480 image, by request form.

    python benchmarks/serving.py --images ../shared/data/rps-real-frames [--requests 30]

It logs the default model (the landmark head, random weights: timing does not depend on
them) to a throwaway MLflow store, serves it with `make serve` (MLflow's own scoring server),
and posts one 640x480 photo per request, as a base64-encoded JPEG and as a JSON list of
pixels, against the same predictor called in-process. Latency is the median round trip.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # rps, when it is not installed into the environment
SIZE = (640, 480)


def frames(images: Path, count: int) -> list[bytes]:
    """JPEGs of real photos, centre-cropped and scaled to 640x480 as a webcam sends them."""
    files = sorted(p for p in images.rglob("*") if p.suffix.lower() in {".png", ".jpg", ".jpeg"})
    if not files:
        raise SystemExit(f"no images under {images}: pass --images <folder of photos>")
    out = []
    for path in files[:count]:
        image = cv2.imread(str(path))
        if image is None:
            raise SystemExit(f"{path} is not an image OpenCV reads")
        h, w = image.shape[:2]
        side_w, side_h = min(w, h * 4 // 3), min(h, w * 3 // 4)
        top, left = (h - side_h) // 2, (w - side_w) // 2
        image = cv2.resize(image[top : top + side_h, left : left + side_w], SIZE)
        out.append(cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes())
    return out


def logged_run(store: Path) -> str:
    from rps.config import compose
    from rps.config.job import TrackingConfig
    from rps.features import sources
    from rps.model import network
    from rps.serve import logged_model
    from rps.tracking import mlflow_runs

    conf = compose.to_object(compose.config(REPO / "conf", []))
    model = sources.classifier(conf, 3).inference
    settings = TrackingConfig(uri=f"sqlite:///{store / 'mlflow.db'}")
    names = ["paper", "rock", "scissors"]
    saved = network.save(model, names, store / "model")
    with mlflow_runs.job_run(settings, store, "serving benchmark", {}) as run:
        logged_model.log(run, model, names, saved, None)
    return run.run_id or ""


def served(url: str, body: bytes) -> float:
    request = urllib.request.Request(
        f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}
    )
    started = time.perf_counter()
    with urllib.request.urlopen(request, timeout=120) as response:
        json.loads(response.read())
    return 1000 * (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, required=True)
    parser.add_argument("--requests", type=int, default=30)
    args = parser.parse_args()
    jpegs = frames(args.images, args.requests)
    with tempfile.TemporaryDirectory() as tmp:
        store = Path(tmp)
        run_id = logged_run(store)
        from rps.serve import logged_model

        predictor = logged_model.load(run_id, tracking_uri=f"sqlite:///{store / 'mlflow.db'}")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{store / 'mlflow.db'}"}
        server = subprocess.Popen(
            [
                "make",
                "-s",
                "serve",
                f"BIN={Path(sys.executable).parent}",
                f"RUN_ID={run_id}",
                f"SERVE_PORT={port}",
            ],
            cwd=REPO,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 180
            while True:
                try:
                    urllib.request.urlopen(f"{url}/ping", timeout=2).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or server.poll() is not None:
                        raise SystemExit("make serve did not answer within 180 s") from None
                    time.sleep(0.5)
            decoded = [np.asarray(Image.open(io.BytesIO(j)).convert("RGB")) for j in jpegs]
            files = [json.dumps({"inputs": [base64.b64encode(j).decode()]}).encode() for j in jpegs]
            pixels = [json.dumps({"inputs": [d.tolist()]}).encode() for d in decoded]
            served(url, files[0])  # the first request loads what the model needs
            rows = {
                "in-process predictor (decoded RGB)": [
                    _timed(lambda d=d: predictor.probabilities([d])) for d in decoded
                ],
                "served, base64 JPEG": [served(url, body) for body in files],
                "served, JSON pixels": [served(url, body) for body in pixels[:5]],
            }
        finally:
            os.killpg(server.pid, signal.SIGINT)
            server.wait(timeout=30)
    base = statistics.median(rows["in-process predictor (decoded RGB)"])
    print(
        f"{len(jpegs)} photos from {args.images.name}, each 640x480, one per request; "
        f"JPEG {statistics.median(len(j) for j in jpegs) / 1000:.0f} kB median.\n"
    )
    print("| how | requests | median ms | x in-process |\n|---|---|---|---|")
    for name, times in rows.items():
        median = statistics.median(times)
        print(f"| {name} | {len(times)} | {median:.0f} | {median / base:.1f} |")


def _timed(call) -> float:
    started = time.perf_counter()
    call()
    return 1000 * (time.perf_counter() - started)


if __name__ == "__main__":
    main()
