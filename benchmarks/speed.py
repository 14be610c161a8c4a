"""How fast rps trains on this machine, with and without the feature cache.

    python benchmarks/speed.py [--data ../shared/data/rps] [--out /tmp/rps-bench]

Prints one markdown table per question, as medians and ratios measured in this one run:
1. backbone feature throughput at each backbone's input size, and its share of matmul peak;
2. a frozen image backbone's job (experiment=cnn finetune=none) wall time to its test accuracy,
   cold (empty cache) and warm;
3. a 4-job head sweep against one cold job;
4. end-to-end training against cached-head training, per epoch, and their test accuracy
   with aug=none and the same seed (they should agree within a point).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PEAK_GFLOPS = 100.0  # rough fp32 matmul peak of these 2-core machines


def flops_per_image(model) -> float:
    """Multiply-adds of the convolutions and dense layers, times two."""
    import keras

    def layers(model):
        for layer in model.layers:
            yield layer
            if isinstance(layer, keras.Model):
                yield from layers(layer)

    total = 0
    for layer in layers(model):
        if isinstance(layer, keras.layers.DepthwiseConv2D):
            h, w, c = layer.output.shape[1:]
            total += h * w * c * layer.kernel_size[0] * layer.kernel_size[1]
        elif isinstance(layer, keras.layers.Conv2D):
            h, w, c = layer.output.shape[1:]
            total += h * w * c * layer.kernel_size[0] * layer.kernel_size[1] * layer.input.shape[-1]
        elif isinstance(layer, keras.layers.Dense):
            total += layer.units * layer.input.shape[-1]
    return 2.0 * total


def throughput(repeats: int = 3, images: int = 128) -> list[list[str]]:
    import numpy as np

    from rps.config.model import BackboneConfig, BackboneName
    from rps.model import backbone

    sizes = {
        BackboneName.efficientnet_lite0: 224,
        BackboneName.mobilenet_v2: 224,
        BackboneName.efficientnet_b0: 224,
        BackboneName.resnet50: 300,
    }
    rows = []
    for name, size in sizes.items():
        model = backbone.build(BackboneConfig(name=name, input_size=size, weights=None))
        batch = np.random.default_rng(0).uniform(-1, 1, (32, size, size, 3)).astype("float32")
        model.predict_on_batch(batch)
        rates = []
        for _ in range(repeats):
            started = time.perf_counter()
            for _ in range(images // len(batch)):
                model.predict_on_batch(batch)
            rates.append(images / (time.perf_counter() - started))
        rate = statistics.median(rates)
        gflops = flops_per_image(model) / 1e9
        rows.append(
            [
                name.value,
                str(size),
                f"{rate:.1f}",
                f"{gflops:.2f}",
                f"{rate * gflops:.0f}",
                f"{rate * gflops / PEAK_GFLOPS:.0%}",
            ]
        )
    return rows


def job(out: Path, name: str, *overrides: str) -> dict:
    """One run.py process; returns its metrics (the last job's, for a sweep) and wall time."""
    started = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(REPO / "run.py"), *overrides],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{out}/mlflow.db"},
    )
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        sys.exit(f"{name} failed:\n{proc.stderr[-3000:]}")
    found = sorted((out / name).rglob("metrics.json"))
    return {"wall": wall, "metrics": [json.loads(p.read_text()) for p in found]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "rps")
    parser.add_argument("--out", type=Path, default=Path("/tmp/rps-bench"))
    args = parser.parse_args()
    if not (args.data / "train").is_dir():
        sys.exit(f"no dataset at {args.data}: pass --data /path/with/train/and/test")
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    cache = args.out / "cache"
    # A frozen image backbone, where the cache does its work: the image recipe fine-tunes,
    # and stage 2 runs end to end whatever the cache holds.
    base = [
        "data=folder",
        f"data.root={args.data}",
        f"cache.dir={cache}",
        "experiment=cnn",
        "finetune=none",
    ]

    def run(name: str, *overrides: str, multirun: bool = False) -> dict:
        where = (
            f"hydra.sweep.dir={args.out / name}" if multirun else f"hydra.run.dir={args.out / name}"
        )
        return job(args.out, name, *(["-m"] if multirun else []), *base, *overrides, where)

    print(f"### Backbone features on {os.cpu_count()} CPU cores (batch 32, median of 3)\n")
    table(
        ["backbone", "input", "images/s", "GFLOP/image", "GFLOP/s", "of ~100 GFLOP/s peak"],
        throughput(),
    )

    cold = run("cold")
    warm = run("warm")
    shutil.rmtree(cache)
    sweep = run("sweep", "head.units=64,128,256,512", multirun=True)
    print(
        "\n### `experiment=cnn finetune=none`, wall time to test accuracy (each a fresh process)\n"
    )
    rows = [
        ["cold (empty cache)", f"{cold['wall']:.0f}", acc(cold), "1.00"],
        [
            "warm (cache present)",
            f"{warm['wall']:.0f}",
            acc(warm),
            f"{warm['wall'] / cold['wall']:.2f}",
        ],
        [
            "4-job head sweep, empty cache",
            f"{sweep['wall']:.0f}",
            " ".join(acc({"metrics": [m]}) for m in sweep["metrics"]),
            f"{sweep['wall'] / cold['wall']:.2f}",
        ],
    ]
    table(["run", "wall s", "test accuracy", "x cold"], rows)

    epochs = ["aug=none", "trainer.epochs=5", "trainer.patience=null"]
    e2e = run("end_to_end", *epochs, "cache.enabled=false")
    cached = run("cached", *epochs)
    print(
        "\n### Per epoch, `aug=none`, same seed: end to end against the head on cached features\n"
    )
    rows = []
    for label, result in (("end to end", e2e), ("cached head", cached)):
        metrics = result["metrics"][0]
        per_epoch = statistics.median(h["seconds"] for h in metrics["history"])
        rows.append(
            [
                label,
                f"{per_epoch:.2f}",
                f"{metrics['features_seconds']:.0f}",
                f"{result['wall']:.0f}",
                acc(result),
            ]
        )
    ratio = float(rows[0][1]) / float(rows[1][1])
    table(["training", "s/epoch (median)", "feature pass s", "wall s", "test accuracy"], rows)
    print(f"\nCached head epochs are {ratio:.0f}x faster.")


def acc(result: dict) -> str:
    return " ".join(f"{m['test_accuracy']:.4f}" for m in result["metrics"])


def table(header: list[str], rows: list[list[str]]) -> None:
    for row in (header, ["---"] * len(header), *rows):
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    main()
