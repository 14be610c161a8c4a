"""benchmarks/robustness: the proxy sets on generated renders, and the comparison driver with
its evaluation on a tiny model trained by run.py."""

import colorsys
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from conftest import CLASSES, compose_cfg, fit
from mlflow.tracking import MlflowClient
from PIL import Image

from benchmarks.robustness import backgrounds, compare, proxy, tfds_copy
from benchmarks.robustness.__main__ import main
from rps import augment, config, scores
from rps import data as data_lib
from rps import model as model_lib
from rps.augment import HELD_OUT_HUES
from rps.config import FolderDataConfig, TfdsDataConfig
from rps.predictor import Predictor

SKIN = (205, 150, 120)
TINY = ("backbone.weights=null", "backbone.input_size=32", "head=linear", "aug=none",
        "trainer.epochs=1", "trainer.batch_size=8", "finetune=none")
SIZE = 48


def render(centre: tuple[int, int], radius: int, size: int = SIZE) -> np.ndarray:
    """A skin-coloured disc on a white backdrop with grey shading, like the CGI renders."""
    yy, xx = np.mgrid[:size, :size]
    shade = 245 - 40 * (xx / size)[:, :, None]  # never pure white: that is reframe's fill
    image = np.repeat(shade, 3, axis=2)
    disc = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2
    image[disc] = SKIN
    return image.astype(np.uint8)


def write_renders(root: Path, splits: dict[str, int], size: int = SIZE) -> Path:
    """``root/<split>/<class>/*.png``: class k's disc sits in its own place, so a model can
    learn the classes; the position varies a little per image."""
    rng = np.random.default_rng(0)
    for split, count in splits.items():
        for k, name in enumerate(CLASSES):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                centre = (size // 2 + rng.integers(-2, 3), size * (k + 1) // 4)
                Image.fromarray(render(centre, size // 6, size)).save(
                    root / split / name / f"{name}_{i}.png")
    return root


def hues(image: np.ndarray) -> np.ndarray:
    flat = image.reshape(-1, 3) / 255.0
    return np.array([colorsys.rgb_to_hsv(*p)[0] for p in flat])


# --- the proxy transforms ------------------------------------------------------------------

def test_composite_replaces_the_backdrop_and_keeps_the_hand():
    image = render((24, 24), 10)
    backdrop = np.zeros_like(image)
    backdrop[...] = (10, 120, 90)
    out = proxy.composite(image, backdrop)
    yy, xx = np.mgrid[:SIZE, :SIZE]
    distance = np.hypot(yy - 24, xx - 24)
    inside, outside = distance <= 5, distance >= 14  # edge at 10, softened over ~3 px
    assert np.abs(out[inside].astype(int) - SKIN).max() <= 1
    np.testing.assert_array_equal(out[outside], np.broadcast_to(backdrop[0, 0], (outside.sum(), 3)))
    # The shaded grey of the backdrop is backdrop too, not hand.
    assert image[outside].min() < 220


def test_solid_backdrops_come_from_the_held_out_hue_band():
    draws = [backgrounds.draw(np.random.default_rng(seed), (8, 8)) for seed in range(40)]
    solids = [d for kind, d in draws if kind == "solid"]
    assert 3 <= len(solids) <= 20  # about SOLID_SHARE of 40
    lo, hi = HELD_OUT_HUES
    for colour in solids:
        assert (colour == colour[0, 0]).all()
        assert lo <= hues(colour[:1, :1])[0] <= hi
    photos = [(kind, d) for kind, d in draws if kind != "solid"]
    assert {kind for kind, _ in photos} <= set(backgrounds.PHOTOS)
    assert len({d.tobytes() for _, d in photos}) == len(photos)  # crops differ


def _thumbnail(image: np.ndarray) -> np.ndarray:
    grey = cv2.resize(image[..., :3].astype(np.float32).mean(axis=2), (32, 32),
                      interpolation=cv2.INTER_AREA).ravel()
    return (grey - grey.mean()) / (grey.std() + 1e-6)


def test_the_proxy_photos_are_none_of_the_training_photos():
    canvas, sizes = augment.photos()
    training = [_thumbnail(image[:h, :w]) for image, (h, w) in zip(canvas, sizes, strict=True)]
    for name in backgrounds.PHOTOS:
        proxied = _thumbnail(backgrounds.photo(name))
        # Same content gives a correlation near 1, whatever the tint or the size.
        assert max(float(proxied @ t) / len(t) for t in training) < 0.9, name
    # The check sees a shared photo: a training photo against itself, darker.
    h, w = sizes[0]
    assert float(training[0] @ _thumbnail(canvas[0, :h, :w] * 0.7)) / len(training[0]) > 0.99


def test_reframe_scales_and_shifts_the_content_onto_white():
    image = render((24, 24), 6)
    before = image.min(axis=2) < 200
    for seed in range(10):
        out, kind = proxy.reframe(image, np.random.default_rng(seed))
        after = out.min(axis=2) < 200
        moved = np.hypot(*(np.argwhere(after).mean(0) - np.argwhere(before).mean(0)))
        assert moved >= proxy.SHIFT[0] * SIZE - 1
        ratio = after.sum() / before.sum()
        assert 0.25 < ratio < 1.7 and abs(ratio - 1) > 0.15
        assert kind == ("smaller" if ratio < 1 else "larger")
        if ratio < 1:  # scaled down: what came into view is white
            assert (out == 255).all(axis=2).sum() >= (1 - np.sqrt(ratio)) * SIZE * SIZE


def test_build_writes_each_set_deterministically_and_reuses_it(tmp_path):
    test_dir = write_renders(tmp_path / "data", {"test": 2}) / "test"
    first = proxy.build(test_dir, tmp_path / "a", seed=0)
    again = proxy.build(test_dir, tmp_path / "b", seed=0)
    other = proxy.build(test_dir, tmp_path / "c", seed=1)
    sources = sorted(p.relative_to(test_dir) for p in test_dir.rglob("*.png"))
    for name in proxy.SETS:
        written = sorted(p.relative_to(first[name]) for p in first[name].rglob("*.png"))
        assert written == sources  # every image, under its own class
        for rel in written:
            a = (first[name] / rel).read_bytes()
            assert a == (again[name] / rel).read_bytes()
            original = np.asarray(Image.open(test_dir / rel).convert("RGB"))
            assert not np.array_equal(np.asarray(Image.open(first[name] / rel)), original)
        assert any((first[name] / r).read_bytes() != (other[name] / r).read_bytes()
                   for r in written)
        kinds = proxy.kinds(first[name])  # one per image, in list_images order
        assert len(kinds) == len(written) and kinds == proxy.kinds(again[name])
    assert set(proxy.kinds(first["backgrounds"])) <= {"solid", *backgrounds.PHOTOS}
    assert set(proxy.kinds(first["geometry"])) <= {"smaller", "larger"}
    assert set(proxy.kinds(first["lighting"])) <= {"darker", "brighter"}
    assert proxy.kinds(test_dir) is None

    stamp = {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*.png")}
    proxy.build(test_dir, tmp_path / "a", seed=0)
    assert stamp == {p: p.stat().st_mtime_ns for p in (tmp_path / "a").rglob("*.png")}
    Image.fromarray(render((20, 20), 9)).save(test_dir / "rock" / "rock_0.png")
    proxy.build(test_dir, tmp_path / "a", seed=0)
    changed = tmp_path / "a" / "lighting" / "rock" / "rock_0.png"
    assert changed.stat().st_mtime_ns != stamp[changed]


def test_missing_test_split_is_one_paragraph(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["build", "--data", str(tmp_path), "--out", str(tmp_path / "out")])
    assert exit_.value.code == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("error: ") and "pass --data with the dataset root" in err


# --- evaluation and the comparison ---------------------------------------------------------

def direct_accuracy(model, class_names: list[str], folder: Path, kind: str | None = None
                    ) -> float:
    """Raw files straight into the saved model, which crops and resizes them itself; with
    ``kind``, only the files ``kinds.json`` gives that kind."""
    files = sorted(folder.rglob("*.png"))
    if kind is not None:
        kinds = json.loads((folder / "kinds.json").read_text())
        files = [f for f in files if kinds[f"{f.parent.name}/{f.name}"] == kind]
    images = np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files])
    truth = [class_names.index(f.parent.name) for f in files]
    return float(np.mean(model.predict(images, verbose=0).argmax(1) == truth))


def test_evaluate_matches_a_direct_computation(tmp_path, capsys):
    data = write_renders(tmp_path / "data", {"train": 6, "test": 3}, size=32)
    cfg = config.to_object(compose_cfg(*TINY, "data=folder", f"data.root={data}"))
    loaded = data_lib.load(cfg.data, cfg.backbone.input_size, cfg.trainer.seed)
    classifier, _ = fit(cfg, loaded)
    model_lib.save(classifier.inference, loaded.class_names, tmp_path / "model")
    tested = scores.test(Predictor.of(classifier.inference, loaded.class_names), loaded,
                         cfg.trainer.batch_size)
    out = tmp_path / "out"

    main(["evaluate", "--model", str(tmp_path / "model"), "--data", str(data), "--out",
          str(out)])
    (row,) = json.loads((out / "evaluation.json").read_text())
    assert row["model"] == str(tmp_path / "model")
    assert row["test"] == pytest.approx(tested["test_accuracy"])
    model, class_names = model_lib.load(tmp_path / "model")
    for name, folder in [("test", data / "test")] + [(s, out / "proxy" / s)
                                                     for s in proxy.SETS]:
        assert row[name] == pytest.approx(direct_accuracy(model, class_names, folder)), name
    for name in proxy.SETS:  # and per kind, for every set
        (by_kind,) = json.loads((out / f"evaluation-{name}.json").read_text())
        kinds = set(json.loads((out / "proxy" / name / "kinds.json").read_text()).values())
        assert by_kind.pop("model") == str(tmp_path / "model") and set(by_kind) == kinds
        for kind, value in by_kind.items():
            folder = out / "proxy" / name
            assert value == pytest.approx(direct_accuracy(model, class_names, folder, kind))
    table = capsys.readouterr().out
    assert "| model | test | backgrounds | lighting | geometry |" in table
    assert f"| {tmp_path / 'model'} | {row['test']:.3f} |" in table
    assert "geometry, by kind:" in table


@pytest.mark.slow
def test_compare_trains_scores_and_reuses_its_runs(tmp_path, mlflow_store):
    data = write_renders(tmp_path / "data", {"train": 6, "test": 3}, size=32)
    out = tmp_path / "out"
    argv = ["compare", "--data", str(data), "--out", str(out), "--configs", "none/none",
            "--seeds", "1", "2", "--", *[o for o in TINY if not o.startswith("aug=")]]
    main(argv)
    rows = json.loads((out / "comparison.json").read_text())
    assert [r["seed"] for r in rows] == [1, 2, "mean", "worst"]
    client = MlflowClient(mlflow_store)
    runs = client.search_runs([client.get_experiment_by_name("robustness").experiment_id])
    by_seed = {r.data.params["trainer.seed"]: r for r in runs}
    assert sorted(by_seed) == ["1", "2"]
    for row in rows[:2]:
        run = by_seed[str(row["seed"])]
        assert row["run"] == run.info.run_id and (row["aug"], row["finetune"]) == ("none", "none")
        assert row["test"] == run.data.metrics["test/accuracy"]
        assert row["val"] == run.data.metrics["val/best_accuracy"]
        assert row["worst proxy"] == min(row[s] for s in proxy.SETS)
        assert (out / "logs" / f"none-none-seed{row['seed']}.log").is_file()
    mean, worst = rows[2:]
    for name in ("test", *proxy.SETS):
        assert mean[name] == pytest.approx((rows[0][name] + rows[1][name]) / 2)
        assert worst[name] == min(rows[0][name], rows[1][name])
    geometry = json.loads((out / "comparison-geometry.json").read_text())
    assert [r["seed"] for r in geometry] == [1, 2, "mean", "worst"]
    assert [r["run"] for r in geometry[:2]] == [r["run"] for r in rows[:2]]

    # A newer run with the same overrides but another config (as if a YAML had changed
    # since) is not reused: the first runs match the config the overrides compose to today.
    experiment_id = runs[0].info.experiment_id
    stale = client.create_run(experiment_id, tags={"overrides": runs[0].data.tags["overrides"]})
    client.log_param(stale.info.run_id, "aug.background", "0.123")
    client.log_metric(stale.info.run_id, "val/best_accuracy", 0.0)
    client.set_terminated(stale.info.run_id, "FINISHED")
    main(argv)  # runs with the same overrides and config have finished: reused, not retrained
    assert len(client.search_runs([experiment_id])) == 3
    assert json.loads((out / "comparison.json").read_text()) == rows


def test_the_tfds_copy_is_the_folder_data_through_tfds_own_builder(tmp_path, caplog):
    data = write_renders(tmp_path / "data", {"train": 3, "test": 2}, size=300)  # tfds' size
    copy = tmp_path / "tfds"
    assert tfds_copy.prepare(data, copy) == copy

    def pixels(cfg):
        loaded = data_lib.load(cfg, 64, seed=0)
        splits = {"train": [loaded.train, loaded.val], "test": [loaded.test]}
        return {name: sorted((loaded.class_names[label], image.tobytes())
                             for split in parts
                             for image, label in zip(split.images, split.labels, strict=True))
                for name, parts in splits.items()}

    through_tfds = pixels(TfdsDataConfig(tfds_dir=str(copy)))
    assert through_tfds == pixels(FolderDataConfig(root=str(data)))
    assert len(through_tfds["train"]) == 9 and len(through_tfds["test"]) == 6

    caplog.set_level("INFO", logger="rps")
    tfds_copy.prepare(data, copy)
    assert "up to date" in caplog.text
    Image.fromarray(render((150, 60), 50, 300)).save(data / "test/rock/rock_0.png")
    tfds_copy.prepare(data, copy)  # a changed file: prepared again
    assert pixels(TfdsDataConfig(tfds_dir=str(copy))) == pixels(FolderDataConfig(root=str(data)))
    assert [j.overrides[:2] for j in compare.jobs(["none/none"], data, "e", [], tfds_dir=copy)] \
        == [["data=rps", f"data.tfds_dir={copy}"]]


def test_a_tfds_copy_needs_the_three_class_folders(tmp_path, capsys):
    data = write_renders(tmp_path / "data", {"train": 1, "test": 1}, size=300)
    (data / "train/rock").rename(data / "train/stone")
    for name in ("paper", "scissors"):
        (data / "train" / name).rename(data / "train" / f"other_{name}")
    with pytest.raises(SystemExit):
        main(["compare", "--source", "tfds", "--data", str(data), "--out", str(tmp_path)])
    message = " ".join(capsys.readouterr().err.split())
    assert "train has no rock/, paper/ or scissors/ PNG files" in message


def test_a_failed_config_keeps_an_empty_row_and_exits_1(tmp_path, mlflow_store):
    data = write_renders(tmp_path / "data", {"train": 6, "test": 3}, size=32)
    out = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_:
        main(["compare", "--data", str(data), "--out", str(out), "--configs", "none/none",
              "--", "trainer.epochs=-1"])  # run.py refuses it: the job fails
    assert exit_.value.code == 1
    (row,) = json.loads((out / "comparison.json").read_text())
    assert row["run"] == "failed" and row["test"] is None and row["worst proxy"] is None
    assert not list(out.glob("comparison-*.json"))


def test_a_failed_seed_is_left_out_of_the_summary():
    rows = [{"aug": "none", "finetune": "none", "seed": seed, "run": run, "val": val,
             "train s": secs, "test": test}
            for seed, run, val, secs, test in [(1, "a", 0.5, 10, 0.25), (2, "failed", None,
                                                                          None, None),
                                               (3, "c", 1.0, 21, 0.75)]]
    rows.append({"aug": "light", "finetune": "none", "seed": 1, "run": "d", "val": 0.1,
                 "train s": 5, "test": 0.2})
    summary = compare.summarised(rows)
    assert summary[:3] == rows[:3] and summary[-1] == rows[-1]  # one seed: no summary rows
    mean, worst = summary[3:5]
    assert mean == {"aug": "none", "finetune": "none", "seed": "mean", "run": "2 runs",
                    "val": 0.75, "train s": 16, "test": 0.5}
    assert worst == {"aug": "none", "finetune": "none", "seed": "worst", "run": "2 runs",
                     "val": 0.5, "train s": None, "test": 0.25}
