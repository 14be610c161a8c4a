"""backbone=hand_landmarks: the model files, the palm and landmark decoding, landmark
features and their augmentation, and training and scoring on real hands."""

import csv
import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REAL_DEV, REAL_FRAMES, SHARED, compose_cfg, post_images, run_cli, served_model
from mlflow import MlflowClient
from PIL import Image

from rps.config import compose
from rps.data.images import read_rgb
from rps.errors import ConfigError, WeightsError
from rps.features import sources
from rps.features.hand import HandSource
from rps.hands import detect, landmarks, models
from rps.serve import scores
from rps.serve.predictor import Predictor, surety

RENDER = SHARED / "test" / "scissors"
needs_renders = pytest.mark.skipif(not RENDER.is_dir(), reason=f"{SHARED} is absent")


@pytest.fixture(scope="module")
def finder() -> detect.HandFinder:
    """The real models, fetched once per test session into its cache (RPS_CACHE_DIR)."""
    return detect.HandFinder()


def hand_like(n: int, seed: int = 0) -> np.ndarray:
    """Random but hand-shaped landmarks: a wrist and five rays of four joints."""
    rng = np.random.default_rng(seed)
    points = np.zeros((n, 21, 3))
    for finger, angle in enumerate(np.linspace(-0.9, 0.6, 5)):
        lengths = np.cumsum(rng.uniform(0.2, 0.5, (n, 4)), axis=1)
        bend = rng.uniform(-0.6, 0.6, (n, 1)) * np.arange(4)
        points[:, 1 + 4 * finger : 5 + 4 * finger, 0] = lengths * np.sin(angle + bend)
        points[:, 1 + 4 * finger : 5 + 4 * finger, 1] = -lengths * np.cos(angle + bend)
    points[:, :, 2] = rng.normal(0, 0.05, (n, 21))
    return points


def test_anchors_are_the_palm_detectors_two_grids():
    centres = detect.anchors()
    assert centres.shape == (2016, 2)
    np.testing.assert_allclose(centres[:2], [[1 / 48, 1 / 48]] * 2)
    np.testing.assert_allclose(centres[1152:1158], [[1 / 24, 1 / 24]] * 6)
    np.testing.assert_allclose(centres[-1], [23 / 24, 23 / 24])


def test_weighted_nms_merges_overlaps_by_score_and_keeps_the_rest():
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [50, 50, 60, 60]], float)
    keypoints = np.zeros((3, 7, 2))
    keypoints[1] += 1
    kept = detect.weighted_nms(boxes, keypoints, np.array([0.9, 0.6, 0.8]))
    assert [round(score, 2) for _, _, score in kept] == [0.9, 0.8]
    np.testing.assert_allclose(kept[0][0], [0.4, 0.4, 10.4, 10.4])  # (0.9*0 + 0.6*1) / 1.5
    np.testing.assert_allclose(kept[1][0], boxes[2])


def test_features_ignore_position_size_rotation_and_mirror_but_not_the_pose():
    points = hand_like(8)
    turn = np.radians(130)
    rotation = np.array(
        [[np.cos(turn), -np.sin(turn), 0], [np.sin(turn), np.cos(turn), 0], [0, 0, 1]]
    )
    moved = points @ rotation.T * 3.5 + np.array([40.0, -7.0, 2.0])
    mirrored = points * np.array([-1.0, 1.0, 1.0])
    base = landmarks.features(points)
    assert base.shape == (8, landmarks.SIZE) and base.dtype == np.float32
    np.testing.assert_allclose(landmarks.features(moved), base, atol=1e-4)
    np.testing.assert_allclose(landmarks.features(mirrored), base, atol=1e-4)
    assert np.abs(landmarks.features(hand_like(8, seed=1)) - base).max() > 0.1


def test_landmark_augmentation_is_seeded_and_moves_what_features_see():
    points = hand_like(4)
    same = landmarks.augmented(points, 0.0, 0.0, np.random.default_rng(0))
    np.testing.assert_allclose(same, points, atol=1e-12)
    views = [
        landmarks.augmented(points, 0.02, 30, np.random.default_rng(seed)) for seed in (0, 0, 1)
    ]
    np.testing.assert_array_equal(views[0], views[1])
    assert np.abs(landmarks.features(views[0]) - landmarks.features(views[2])).max() > 0.01
    size = np.linalg.norm(points[:, 9] - points[:, 0], axis=-1)
    jittered = landmarks.augmented(points, 0.02, 0.0, np.random.default_rng(0)) - points
    assert 0.005 < np.abs(jittered).mean() / size.mean() < 0.05


def test_a_damaged_model_file_is_removed_and_fetched_again(tmp_path, monkeypatch, caplog):
    """Offline here (pip finds no index), so the fetch that follows is refused."""
    damaged = [tmp_path / member.rsplit("/", 1)[1] for member, _ in models.MODELS.values()]
    for path in damaged:
        path.write_bytes(b"not a model")
    monkeypatch.setenv("PIP_NO_INDEX", "1")
    with (
        caplog.at_level(logging.WARNING, logger="rps"),
        pytest.raises(WeightsError, match="could not fetch MediaPipe's hand models"),
    ):
        models.model_files(tmp_path)
    for path in damaged:
        assert f"removing {path}, damaged" in caplog.text and not path.exists()


def test_models_missing_while_offline_is_one_paragraph(tmp_path):
    """An index that refuses connections stands in for no network."""
    env = {
        **os.environ,
        "PIP_INDEX_URL": "http://127.0.0.1:9/simple",
        "PIP_NO_CACHE_DIR": "1",
        "PIP_RETRIES": "0",
        "PIP_TIMEOUT": "3",
    }
    script = (
        "import sys; from pathlib import Path; from rps.hands import models\n"
        "from rps.errors import WeightsError\n"
        "try:\n    models.model_files(Path(sys.argv[1]))\n"
        "except WeightsError as err:\n    print(err)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "models")],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert "could not fetch MediaPipe's hand models" in proc.stdout, proc.stderr[-2000:]
    assert "run once with network access" in proc.stdout
    assert not list((tmp_path / "models").glob("*.tflite"))


def test_config_refuses_what_does_not_apply_to_landmarks():
    with pytest.raises(ConfigError, match="aug=landmarks"):
        compose.to_object(compose_cfg("aug=background"))  # the default backbone reads hands
    with pytest.raises(ConfigError, match="aug=landmarks"):
        compose.to_object(compose_cfg("finetune=top"))
    with pytest.raises(ConfigError, match="only backbone=hand_landmarks reads"):
        compose.to_object(
            compose_cfg("backbone=efficientnet_lite0", "aug=landmarks", "finetune=none")
        )
    with pytest.raises(ConfigError, match="weights=mediapipe"):
        compose.to_object(compose_cfg("backbone.weights=imagenet"))
    conf = compose.to_object(compose_cfg())
    assert (
        isinstance(sources.of(conf.backbone), HandSource)
        and conf.aug.on_landmarks
        and not conf.aug.on_images
    )


@needs_renders
def test_finder_reads_a_render_and_follows_it_when_turned(finder):
    rgb = read_rgb(sorted(RENDER.iterdir())[0])
    (hand,) = finder.hands(rgb)
    assert hand.score > 0.5 and hand.landmarks.shape == (21, 3)
    height, width = rgb.shape[:2]
    assert (hand.landmarks[:, 0] >= -5).all() and (hand.landmarks[:, 0] <= width + 5).all()
    turned = np.ascontiguousarray(np.rot90(rgb))  # 90 degrees anticlockwise
    (again,) = finder.hands(turned)
    # A point (x, y) of the image is at (y, width - 1 - x) once turned.
    expected = np.stack([hand.landmarks[:, 1], width - 1 - hand.landmarks[:, 0]], axis=1)
    assert np.abs(again.landmarks[:, :2] - expected).mean() < 0.03 * width
    np.testing.assert_allclose(
        landmarks.features(again.landmarks[None]),
        landmarks.features(hand.landmarks[None]),
        atol=0.25,
    )


@pytest.mark.skipif(not REAL_DEV.is_dir(), reason="the real photos are absent")
def test_a_followed_hand_reads_as_a_detected_one_and_is_lost_when_gone(finder):
    rgb = np.asarray(Image.open(sorted((REAL_DEV / "scissors").iterdir())[0]).convert("RGB"))
    (hand,) = finder.hands(rgb)
    moved = np.ascontiguousarray(np.roll(rgb, (6, -8), axis=(0, 1)))  # the next frame
    (detected,) = finder.hands(moved)
    followed = finder.follow(moved, hand)
    side = max(rgb.shape[:2])
    assert np.abs(followed.landmarks[:, :2] - detected.landmarks[:, :2]).mean() < 0.01 * side
    np.testing.assert_allclose(
        landmarks.features(followed.landmarks[None]),
        landmarks.features(detected.landmarks[None]),
        atol=0.25,
    )
    assert finder.follow(np.full_like(rgb, 255), hand) is None


def test_live_runs_the_palm_detector_only_to_find_a_lost_hand_or_new_ones(finder):
    from rps.apps.modes import REDETECT_EVERY, Hands

    rgb = read_rgb(sorted(RENDER.iterdir())[0]) if RENDER.is_dir() else None
    if rgb is None:
        pytest.skip(f"{SHARED} is absent")
    tiles = len(finder.tiles(*rgb.shape[:2]))
    assert tiles > 1  # a 300x300 render is larger than the detector's 192 pixels
    calls = []
    palms = finder.palms
    finder.palms = lambda image: calls.append(image.shape) or palms(image)
    try:
        video, photos = Hands(finder, follow=True), Hands(finder, follow=False)
        assert all(len(video(rgb)) == 1 for _ in range(2 * REDETECT_EVERY))
        # The first frame, and REDETECT_EVERY frames later: each the frame and one tile.
        assert len(calls) == 4 and calls[0] == calls[2] == rgb.shape
        # Lost: the detector looks again: the frame and a tile, the frame padded, then the
        # same again brightened.
        assert video(np.full_like(rgb, 255)) == [] and len(calls) == 10
        assert calls[6][0] > rgb.shape[0] and calls[7] == rgb.shape and calls[9] == calls[6]
        calls.clear()
        # A photo is searched whole: the frame and every tile.
        assert all(len(photos(rgb)) == 1 for _ in range(3)) and len(calls) == 3 * (1 + tiles)
    finally:
        del finder.palms


def test_tiles_cover_a_large_frame_and_skip_a_small_one(finder):
    assert finder.tiles(200, 300) == []  # 2/3 of 200 is below the detector's 192 pixels
    height, width = 480, 640
    tiles = finder.tiles(height, width)
    side = tiles[0][2]
    assert side == round(detect.TILE * height) and len(tiles) == 6
    covered = np.zeros((height, width), int)
    for top, left, s in tiles:
        assert s == side and 0 <= top <= height - s and 0 <= left <= width - s
        covered[top : top + s, left : left + s] += 1
    assert covered.min() >= 1
    # Neighbours overlap by half a tile or more, so a hand up to half a tile wide lies whole
    # in one of them.
    lefts = sorted({left for _, left, _ in tiles})
    assert max(np.diff(lefts)) <= side / 2
    untiled = detect.HandFinder(tiled=False)
    assert untiled.tiles(height, width) == []


@needs_renders
def test_a_small_far_hand_is_found_in_the_tiles(finder):
    """A render's hand shrunk into a corner of a large frame, as a person 3 m from a webcam
    shows it: the whole frame at the detector's 192 pixels misses it, a tile finds it, and
    its landmarks have the full-size render's shape."""
    rgb = read_rgb(sorted(RENDER.iterdir())[0])
    (near,) = finder.hands(rgb)
    frame = np.full((960, 1280, 3), 255, np.uint8)
    small = np.asarray(Image.fromarray(rgb).resize((110, 110)))
    frame[700:810, 1050:1160] = small
    assert finder.palms(frame) == []
    (far,) = finder.hands(frame)
    assert (far.landmarks[:, 0] > 1040).all() and (far.landmarks[:, 1] > 690).all()
    shape = np.abs(
        landmarks.normalised(far.landmarks[None]) - landmarks.normalised(near.landmarks[None])
    )
    assert shape.mean() < 0.08  # in palm lengths (wrist to middle knuckle)


@pytest.mark.skipif(not REAL_DEV.is_dir(), reason="the real photos are absent")
def test_live_follows_both_of_two_hands_and_keeps_them_apart(finder):
    from rps.apps.modes import REDETECT_EVERY, Hands

    photos = [
        np.asarray(Image.open(p).convert("RGB")) for p in sorted((REAL_DEV / "rock").iterdir())[:2]
    ]
    pair = np.concatenate(photos, axis=1)
    calls = []
    palms = finder.palms
    finder.palms = lambda image: calls.append(1) or palms(image)
    try:
        video = Hands(finder, follow=True)
        seen = [video(pair) for _ in range(REDETECT_EVERY)]
        assert len(calls) == 1  # one search, on the first frame; both hands followed since
        assert all(len(found) == 2 and not detect.same_hand(*found) for found in seen)
        # One photo replaced by grey: that hand is lost, and the search runs again.
        alone = pair.copy()
        alone[:, photos[0].shape[1] :] = 128
        assert len(video(alone)) == 1 and len(calls) == 2
    finally:
        del finder.palms


@needs_renders
def test_a_hand_in_the_dark_is_found_once_brightened(finder):
    rgb = read_rgb(sorted(RENDER.iterdir())[0])
    (lit,) = finder.hands(rgb)
    dark = (rgb * 0.12).astype(np.uint8)  # a dark room: the brightest pixel is 30 of 255
    assert finder._search(dark, None) == []  # the frame and its tiles, as they are
    (found,) = finder.hands(dark)
    # The served model passes the same pixels as 0-255 floats.
    (served,) = finder.hands(dark.astype(np.float32))
    np.testing.assert_allclose(served.landmarks, found.landmarks, atol=0.01 * max(rgb.shape))
    shape = np.abs(
        landmarks.normalised(found.landmarks[None]) - landmarks.normalised(lit.landmarks[None])
    )
    assert shape.mean() < 0.08


@pytest.mark.skipif(not REAL_DEV.is_dir(), reason="the real photos are absent")
def test_two_hands_are_both_found_once_each_surest_first(finder):
    photos = [
        np.asarray(Image.open(p).convert("RGB")) for p in sorted((REAL_DEV / "rock").iterdir())[:2]
    ]
    pair = np.concatenate(photos, axis=1)
    found = finder.hands(pair)
    assert len(found) == 2
    assert found[0].score >= found[1].score
    assert not detect.same_hand(found[0], found[1]) and detect.same_hand(found[0], found[0])
    centres = sorted(hand.landmarks[:, 0].mean() for hand in found)
    width = photos[0].shape[1]
    assert centres[0] < width < centres[1]


def test_finder_finds_no_hand_in_a_blank_or_noisy_image(finder):
    assert finder.hands(np.full((240, 320, 3), 255, np.uint8)) == []
    noise = np.random.default_rng(0).integers(0, 256, (200, 200, 3)).astype(np.uint8)
    points = detect.first_landmarks(finder, [noise, np.zeros((64, 64, 3), np.uint8)])
    assert points.shape == (2, 21, 3) and np.isnan(points).all()


def evaluated(model: Path, photos: Path, out: Path) -> dict:
    """What ``python evaluate.py`` scores of a saved model on a labelled folder."""
    proc = run_cli(
        f"model_path={model}", f"data.root={photos}", f"hydra.run.dir={out}", script="evaluate.py"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "evaluation.json").read_text())


@pytest.mark.slow
@pytest.mark.integration
@pytest.mark.skipif(
    not all(folder.is_dir() for folder in (SHARED / "train", REAL_DEV, REAL_FRAMES)),
    reason="the renders or the real photos are absent",
)
def test_trained_on_renders_it_reads_real_hands(tmp_path):
    """The whole product path, on one default model trained on the renders only: both real
    sets scored by evaluate.py (an image with no hand found counts as wrong), live.py, the
    served model, and an ensemble with a second seed."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    proc = run_cli(
        "data=folder",
        f"data.root={SHARED}",
        f"tracking.uri={uri}",
        f"hydra.run.dir={tmp_path / 'run'}",
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test_accuracy"] >= 0.99
    assert "[rps.features.hand][INFO] - no hand found in" in proc.stdout + proc.stderr
    result = evaluated(tmp_path / "run", REAL_DEV, tmp_path / "eval")
    print({k: result[k] for k in ("accuracy", "no_hand", "recall")})
    assert result["images"] == 724 and result["accuracy"] >= 0.97
    wrong = [m for m in result["misclassified"] if m["predicted"] == "no hand"]
    assert len(wrong) == result["no_hand"]
    rooms = evaluated(tmp_path / "run", REAL_FRAMES, tmp_path / "frames-eval")
    print({k: rooms[k] for k in ("accuracy", "hand_found")})
    assert rooms["images"] == 131 and rooms["accuracy"] >= 0.95

    # live.py on a few of those photos and a blank frame: the hands are read, the blank
    # frame says "no hand".
    frames = tmp_path / "frames"
    frames.mkdir()
    for source in sorted((REAL_DEV / "paper").iterdir())[:5]:
        Image.open(source).save(frames / f"{source.stem}.png")
    pair = [
        Image.open(p).convert("RGB").resize((320, 240))
        for p in sorted((REAL_DEV / "rock").iterdir())[:2]
    ]
    two = Image.new("RGB", (640, 240))
    two.paste(pair[0], (0, 0))
    two.paste(pair[1], (320, 0))
    two.save(frames / "zy_two_hands.png")
    Image.new("RGB", (300, 200), (255, 255, 255)).save(frames / "zz_blank.png")
    proc = run_cli(
        f"model_path={tmp_path / 'run'}",
        f"source={frames}",
        "headless=true",
        f"hydra.run.dir={tmp_path / 'live'}",
        script="live.py",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    with open(tmp_path / "live" / "predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    labels = [row["class"] for row in rows]
    assert labels[-1] == "no hand" and labels[:5].count("paper") >= 4
    assert (labels[-2], rows[-2]["hands"]) == ("rock", "2")

    # The logged model, served: it carries the hand models, so it answers raw images with
    # an empty cache and no package index to fetch from.
    client = MlflowClient(uri)
    (run,) = client.search_runs([client.get_experiment_by_name("rps").experiment_id])
    photos = [
        np.asarray(Image.open(p).convert("RGB").resize((320, 240)))
        for p in sorted((REAL_DEV / "scissors").iterdir())[:4]
    ]
    offline = {"RPS_CACHE_DIR": str(tmp_path / "empty"), "PIP_INDEX_URL": "http://127.0.0.1:9"}
    with served_model(f"runs:/{run.info.run_id}/model", uri, offline) as url:
        rows = post_images(url, np.stack([*photos, np.full_like(photos[0], 255)]))
    assert [row["label"] for row in rows[:-1]].count("scissors") >= 3
    assert rows[-1]["label"] == "no hand"
    assert sum(rows[0][name] for name in ("paper", "rock", "scissors")) == pytest.approx(1)

    # An ensemble of two seeds. Another seed deals other images to val, and still finds the
    # landmarks the first job cached.
    proc = run_cli(
        "data=folder",
        f"data.root={SHARED}",
        "trainer.seed=1",
        f"tracking.uri={uri}",
        f"hydra.run.dir={tmp_path / 'seed1'}",
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "train and val landmarks from the cache" in proc.stdout + proc.stderr
    second = json.loads((tmp_path / "seed1" / "metrics.json").read_text())
    runs = [r.info.run_id for r in client.search_runs([run.info.experiment_id])]
    proc = run_cli(
        f"runs=[{','.join(runs)}]",
        f"tracking.uri={uri}",
        f"hydra.run.dir={tmp_path / 'ensemble'}",
        script="ensemble.py",
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    combined = json.loads((tmp_path / "ensemble" / "metrics.json").read_text())
    assert (
        combined["test_accuracy"] >= min(metrics["test_accuracy"], second["test_accuracy"]) - 0.01
    )
    scored = evaluated(tmp_path / "ensemble", REAL_DEV, tmp_path / "eval-ensemble")
    print(
        {
            "ensemble": scored["accuracy"],
            "members": [metrics["test_accuracy"], second["test_accuracy"]],
        }
    )
    assert scored["accuracy"] >= 0.97


def test_a_reading_is_surer_for_a_clear_gesture_than_for_an_idle_hand():
    assert surety(0.95, np.array([0.4, 0.35, 0.25])) < surety(0.9, np.array([0.9, 0.05, 0.05]))
    assert surety(0.6, np.array([0.9, 0.05, 0.05])) < surety(0.9, np.array([0.9, 0.05, 0.05]))


@pytest.mark.skipif(not REAL_DEV.is_dir(), reason="the real photos are absent")
def test_with_two_hands_the_predictor_keeps_the_surest_reading(finder):
    """Every hand in the image is read (an untrained head reads each differently), and the
    image's probabilities are those of the surest reading, not of the first hand found."""
    names = ["paper", "rock", "scissors"]
    head = sources.classifier(compose.to_object(compose_cfg()), len(names)).inference
    predictor = Predictor(head, names, HandSource(), finder)
    photos = [
        np.asarray(Image.open(sorted((REAL_DEV / name).iterdir())[0]).convert("RGB"))
        for name in ("rock", "paper")
    ]
    for pair in (np.concatenate(photos, axis=1), np.concatenate(photos[::-1], axis=1)):
        found = finder.hands(pair)
        assert len(found) == 2
        each = scores.softmax(
            np.asarray(
                head.predict(
                    landmarks.features(np.stack([hand.landmarks for hand in found])), verbose=0
                ),
                np.float64,
            )
        )
        assert not np.allclose(each[0], each[1])
        surest = max((0, 1), key=lambda i: surety(found[i].score, each[i]))
        np.testing.assert_allclose(predictor.probabilities([pair])[0], each[surest], atol=1e-5)


def test_an_image_folder_without_any_hand_is_one_paragraph(tmp_path):
    root = tmp_path / "data"
    for split, count in (("train", 2), ("test", 1)):
        for name in ("rock", "paper"):
            (root / split / name).mkdir(parents=True)
            for i in range(count):
                Image.new("RGB", (64, 64), (255, 255, 255)).save(
                    root / split / name / f"{name}_{i}.png"
                )
    proc = run_cli(
        "data=folder",
        f"data.root={root}",
        "data.val_groups=false",
        "data.val_fraction=0.5",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 2
    assert "no hand was found in any training image" in proc.stderr.replace("\n", " ")
    assert "Traceback" not in proc.stderr


def test_no_hand_counts_as_wrong_and_live_says_so():
    from rps.apps.modes import decide
    from rps.serve import scores
    from rps.serve.scores import NO_HAND

    nan = np.nan
    probs = np.array([[0.9, 0.05, 0.05], [nan, nan, nan], [0.1, 0.8, 0.1]])
    scored = scores.summary(probs, np.array([0, 0, 1]), ["paper", "rock", "scissors"])
    assert scored["accuracy"] == pytest.approx(2 / 3) and scored["no_hand"] == 1
    assert scored["per_class"]["paper"]["recall"] == 0.5
    assert scored["per_class"]["paper"]["no_hand"] == 1
    assert np.array(scored["confusion_matrix"]).sum() == 2 and scored["predicted"][1] == -1
    assert decide(probs[1], ["paper", "rock", "scissors"], 0.5) == (NO_HAND, 0.0)
