"""The feature and decoded-image caches: hits, misses on any changed input, safe sharing."""

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import keras
import numpy as np
import pytest
from conftest import REPO, SHARED, compose_cfg, fit, make_folder_dataset, run_cli
from PIL import Image

from rps.cache import ArrayCache, digest
from rps.config import compose
from rps.data import dataset
from rps.features import base, image, sources

SMALL = [
    "backbone=mobilenet_v2",
    "backbone.input_size=32",
    "trainer.batch_size=8",
    "trainer.epochs=2",
    "head=linear",
    "aug=none",
    "finetune=none",
]


@pytest.fixture
def root(tmp_path) -> Path:
    return make_folder_dataset(tmp_path / "data", n_train=8, n_test=3)


@pytest.fixture
def weights(tmp_path) -> Path:
    path = tmp_path / "mobilenet.weights.h5"
    keras.applications.MobileNetV2(
        include_top=False, weights=None, input_shape=(32, 32, 3)
    ).save_weights(path)
    return path


def job(root: Path, weights: Path, store: ArrayCache, *overrides: str):
    cfg = compose.to_object(
        compose_cfg(
            "data=folder", f"data.root={root}", *SMALL, f"backbone.weights={weights}", *overrides
        )
    )
    data = dataset.load(cfg.data, cfg.backbone.input_size, cfg.trainer.seed, store)
    model = sources.classifier(cfg, len(data.class_names))
    return cfg, data, sources.of(cfg.backbone).features(cfg, model, data, store)


def test_second_job_hits_and_trains_the_same_model(root, weights, tmp_path):
    store = ArrayCache(tmp_path / "cache")
    cfg = compose.to_object(
        compose_cfg("data=folder", f"data.root={root}", *SMALL, f"backbone.weights={weights}")
    )
    results = []
    for _ in range(2):
        data = dataset.load(cfg.data, cfg.backbone.input_size, cfg.trainer.seed, store)
        classifier, fitted = fit(cfg, data, cache=store)
        results.append((fitted.metrics, classifier.inference.predict(data.test.images)))
    (cold, cold_logits), (warm, warm_logits) = results
    assert cold["features_seconds"] > 0 and warm["features_seconds"] == 0
    assert warm["best_val_accuracy"] == cold["best_val_accuracy"]
    np.testing.assert_allclose(warm_logits, cold_logits, atol=1e-5)


def test_a_changed_image_or_weights_file_misses(root, weights, tmp_path):
    store = ArrayCache(tmp_path / "cache")
    assert job(root, weights, store)[2].seconds > 0
    assert job(root, weights, store)[2].seconds == 0
    image = next((root / "train" / "rock").iterdir())
    Image.new("RGB", (40, 30), (1, 2, 3)).save(image)
    assert job(root, weights, store)[2].seconds > 0, "an edited image must miss"
    assert job(root, weights, store)[2].seconds == 0
    other = keras.applications.MobileNetV2(include_top=False, weights=None, input_shape=(32, 32, 3))
    other.get_layer("Conv1").kernel.assign(other.get_layer("Conv1").kernel * 2.0)
    other.save_weights(weights)  # same path, other contents
    assert job(root, weights, store)[2].seconds > 0, "new weights must miss"


def test_an_edited_background_photo_misses(root, weights, tmp_path):
    photos = tmp_path / "photos"
    photos.mkdir()
    Image.new("RGB", (64, 48), (200, 40, 40)).save(photos / "wall.png")
    store = ArrayCache(tmp_path / "cache")
    overrides = ("aug=background", f"aug.background_dir={photos}", "cache.views=1")
    assert job(root, weights, store, *overrides)[2].seconds > 0
    assert job(root, weights, store, *overrides)[2].seconds == 0
    Image.new("RGB", (64, 48), (40, 40, 200)).save(photos / "wall.png")  # same name
    assert job(root, weights, store, *overrides)[2].seconds > 0, "a new photo must miss"


def test_views_are_distinct_augmented_draws(root, weights, tmp_path):
    store = ArrayCache(tmp_path / "cache")
    _, data, cached = job(root, weights, store, "aug=strong", "cache.views=3")
    assert cached.train.shape[:2] == (3, len(data.train))
    first, second = cached.train[0], cached.train[1]
    assert np.abs(first - second).max() > 0.01 * np.abs(first).max(), "views must differ"
    _, data, plain = job(root, weights, store, "aug=none")
    assert plain.train.shape[0] == 1, "no augmentation: one view is all there is"
    assert (
        base.views(compose.to_object(compose_cfg("experiment=cnn", "aug=light"))) == base.AUTO_VIEWS
    )


def test_decoded_images_come_back_identical_from_the_cache(root, tmp_path, caplog):
    store = ArrayCache(tmp_path / "cache")
    cfg = compose.to_object(compose_cfg("data=folder", f"data.root={root}"))
    first = dataset.load(cfg.data, 32, 0, store)
    with caplog.at_level(logging.INFO, logger="rps"):
        second = dataset.load(cfg.data, 32, 0, store)
    assert "mapped from the cache" in caplog.text
    for name in ("train", "val", "test"):
        a, b = getattr(first, name), getattr(second, name)
        np.testing.assert_array_equal(a.images, b.images)
        np.testing.assert_array_equal(a.labels, b.labels)
        assert a.sources == b.sources and a.key == b.key
    assert isinstance(second.test.images, np.memmap), "mapped, not read"


def test_a_warm_load_hashes_no_file_and_reads_no_pixel(root, tmp_path, monkeypatch):
    """The files' digests are kept by size, mtime and ctime: unchanged files are only
    stat'ed, and the images stay on disk until used. A file touched is hashed again (the
    same bytes: a hit); a file rewritten is hashed again and misses."""
    store = ArrayCache(tmp_path / "cache")
    data = compose.to_object(compose_cfg("data=folder", f"data.root={root}")).data
    first = dataset.load(data, 32, 0, store)
    hashed = []
    file_digest = hashlib.file_digest
    monkeypatch.setattr(
        hashlib, "file_digest", lambda f, name: hashed.append(f.name) or file_digest(f, name)
    )
    again = dataset.load(data, 32, 0, store)
    assert hashed == [] and again.train.key == first.train.key
    assert "images" not in vars(again.train), "a held-out split keeps its rows, not a copy"
    np.testing.assert_array_equal(again.train.take(np.array([2, 0])), first.train.images[[2, 0]])
    touched = root / "train" / "rock" / "rock_001.png"
    os.utime(touched)
    assert dataset.load(data, 32, 0, store).train.key == first.train.key
    assert hashed == [str(touched)]
    Image.new("RGB", (40, 30), (1, 2, 3)).save(touched)
    changed = dataset.load(data, 32, 0, store)
    assert hashed[1:] == [str(touched)] and changed.train.key != first.train.key


def test_cache_disabled_takes_the_image_path_and_writes_nothing(root, tmp_path):
    cache_dir = tmp_path / "cache"
    proc = run_cli(
        "data=folder",
        f"data.root={root}",
        *SMALL,
        "backbone.weights=null",
        f"cache.dir={cache_dir}",
        "cache.enabled=false",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not cache_dir.exists()
    assert "features:" not in proc.stdout + proc.stderr
    proc = run_cli(
        "data=folder",
        f"data.root={root}",
        *SMALL,
        "backbone.weights=null",
        f"cache.dir={cache_dir}",
        f"hydra.run.dir={tmp_path / 'run2'}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert any((cache_dir / image.FEATURES_KIND).iterdir())


def _write_repeatedly(folder: str, value: int) -> None:
    store = ArrayCache(Path(folder))
    for _ in range(15):
        store.put("features", "shared", {"features": np.full((512, 1280), value, "float32")})


def test_concurrent_writers_never_leave_a_torn_entry(tmp_path):
    store = ArrayCache(tmp_path)
    ctx = multiprocessing.get_context("spawn")
    writers = [ctx.Process(target=_write_repeatedly, args=(str(tmp_path), v)) for v in (1, 2)]
    for w in writers:
        w.start()
    reads = 0
    while any(w.is_alive() for w in writers):
        entry = store.get("features", "shared")
        if entry is not None:
            values = np.unique(entry["features"])
            assert len(values) == 1 and values[0] in (1, 2), "a mixed or partial entry"
            reads += 1
    for w in writers:
        w.join()
        assert w.exitcode == 0
    assert reads > 0
    assert list(tmp_path.glob("features/.*")) == [], "temporary files left behind"


def test_unreadable_entry_is_a_miss(tmp_path):
    store = ArrayCache(tmp_path)
    store.path("features", "k").parent.mkdir(parents=True)
    store.path("features", "k").write_bytes(b"not an npz")
    assert store.get("features", "k") is None


def test_digest_tells_arrays_apart_by_content_dtype_and_shape():
    a = np.zeros((2, 3), "float32")
    assert digest(a) == digest(a.copy())
    assert (
        len({digest(a), digest(a.astype("float64")), digest(a.reshape(3, 2)), digest(a + 1)}) == 4
    )


@pytest.mark.parametrize("keep", [0, 200, -100])
def test_an_entry_cut_short_is_removed_and_rebuilt(tmp_path, caplog, keep):
    """A crash or a full disk leaves a cut .npz (empty, its start, or all but its end):
    the next read logs its path, removes it and misses, so the job rebuilds it."""
    store = ArrayCache(tmp_path / "cache")
    arrays = {"features": np.arange(5000, dtype=np.float32), "seconds": np.array(1.5)}
    path = store.put("landmarks", "k", arrays)
    data = path.read_bytes()
    path.write_bytes(data[:keep])
    with caplog.at_level(logging.WARNING, logger="rps"):
        assert store.get("landmarks", "k") is None
    assert str(path) in caplog.text and not path.exists()
    store.put("landmarks", "k", arrays)
    np.testing.assert_array_equal(store.get("landmarks", "k")["features"], arrays["features"])


def test_the_same_files_elsewhere_hit_the_decoded_images(root, tmp_path, caplog):
    """Keyed by the files' bytes and their place below the root, not by where they are."""
    store = ArrayCache(tmp_path / "cache")
    cfg = compose.to_object(compose_cfg("data=folder", f"data.root={root}"))
    first = dataset.load(cfg.data, 32, 0, store)
    (tmp_path / "link").symlink_to(root)
    copy = Path(shutil.copytree(root, tmp_path / "copy"))
    for elsewhere in (tmp_path / "link", copy):
        moved = compose.to_object(compose_cfg("data=folder", f"data.root={elsewhere}"))
        caplog.clear()
        with caplog.at_level(logging.INFO, logger="rps"):
            again = dataset.load(moved.data, 32, 0, store)
        assert "mapped from the cache" in caplog.text
        np.testing.assert_array_equal(first.train.images, again.train.images)
        # Its paths are where the files are now, for error reports and grids.
        assert again.test.sources == [
            s.replace(str(root), str(elsewhere)) for s in first.test.sources
        ]
    assert len(list((tmp_path / "cache" / "images").iterdir())) == 1
    (copy / "train" / "rock" / "rock_000.png").rename(copy / "train" / "rock" / "rock_x.png")
    dataset.load(
        compose.to_object(compose_cfg("data=folder", f"data.root={copy}")).data, 32, 0, store
    )  # a renamed file is another dataset: a miss
    assert len(list((tmp_path / "cache" / "images").iterdir())) == 2


def test_size_report_and_clean(tmp_path):
    folder = tmp_path / "cache"
    store = ArrayCache(folder)
    for kind, key in [("images", "a"), ("images", "b"), ("landmarks", "c")]:
        store.put(kind, key, {"x": np.zeros(1000, dtype=np.uint8)})
    old = store.path("images", "a")
    os.utime(old, (time.time() - 10 * 86400,) * 2)

    def cli(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "rps.cache", "--dir", str(folder), *args],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=False,
        )

    report = cli()
    assert report.returncode == 0, report.stderr
    lines = {line.split()[0]: line.split()[1] for line in report.stdout.splitlines()[1:]}
    assert lines == {"images": "2", "landmarks": "1"}
    refused = cli("clean", "--kind", "imgs")
    assert refused.returncode == 2 and "holds images, landmarks" in refused.stderr
    assert "Traceback" not in refused.stderr and old.exists()
    assert "removed 1 entries" in cli("clean", "--unused", "7").stdout
    assert not old.exists() and store.path("images", "b").exists()
    assert "removed 1 entries" in cli("clean", "--kind", "landmarks").stdout
    assert store.get("landmarks", "c") is None and store.get("images", "b") is not None
    assert "removed 1 entries" in cli("clean").stdout
    assert "0.0 MB" in cli().stdout.splitlines()[0]


@pytest.mark.skipif(not (SHARED / "test").is_dir(), reason=f"{SHARED} is absent")
def test_a_job_heals_cache_entries_a_crash_cut_short(tmp_path, mlflow_store, monkeypatch):
    """As a user meets it: a full disk cut the landmark and image entries of an earlier
    job; the next job logs each path, rebuilds it, and finishes."""
    hand_models = Path(os.environ["RPS_CACHE_DIR"]) / "hand_models"
    if hand_models.is_dir():  # fetched once for the session already
        shutil.copytree(hand_models, tmp_path / "cache" / "hand_models")
    monkeypatch.setenv("RPS_CACHE_DIR", str(tmp_path / "cache"))

    def job(name: str) -> subprocess.CompletedProcess:
        return run_cli(
            "data=folder",
            f"data.root={SHARED}",
            "data.limit=8",
            "trainer.epochs=1",
            f"hydra.run.dir={tmp_path / name}",
        )

    first = job("first")
    assert first.returncode == 0, first.stderr[-3000:]
    entries = sorted((tmp_path / "cache").glob("*/*.npz"))
    assert {e.parent.name for e in entries} == {"file_digests", "images", "landmarks"}
    for i, entry in enumerate(entries):
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2] if i % 2 else b"")
    second = job("second")
    assert second.returncode == 0, second.stderr[-3000:]
    for entry in entries:
        assert f"removing unreadable {entry}" in second.stdout
        assert ArrayCache(tmp_path / "cache").get(entry.parent.name, entry.stem) is not None
    assert (
        json.loads((tmp_path / "first" / "metrics.json").read_text())["test_accuracy"]
        == json.loads((tmp_path / "second" / "metrics.json").read_text())["test_accuracy"]
    )
