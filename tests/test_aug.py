"""aug=background: the hand mask, the composite, the held-out hues, and a model that still
reloads without rps."""

import dataclasses
import subprocess
import sys

import keras
import numpy as np
import pytest
import tensorflow as tf
from conftest import REPO, compose_cfg, make_folder_dataset
from PIL import Image

from rps.cache import ArrayCache
from rps.config import compose
from rps.config.model import ImageAugConfig
from rps.data import dataset
from rps.errors import ConfigError
from rps.features import base, sources
from rps.model import aug, backgrounds, network
from rps.model.aug import HandComposite, RandomBlur, WhiteBalance
from rps.train import callbacks, pipeline, stages, tensorboard

# Image augmentation needs an image backbone: the default reads hands.
IMAGE = ("backbone=efficientnet_lite0",)

OPTIONS = sorted(path.stem for path in (REPO / "conf" / "aug").glob("*.yaml"))

SIZE = 64
BROWN, PALE = (150, 100, 70), (240, 215, 200)  # saturation 0.53 and 0.17


def render(colour: tuple[int, int, int]) -> np.ndarray:
    """A disc of ``colour`` on a white background shaded down to light grey, like the renders."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    shade = 255 - 25 * xx / SIZE  # a soft grey gradient across the background
    image = np.repeat(shade[:, :, None], 3, axis=2)
    disc = (yy - SIZE / 2) ** 2 + (xx - SIZE / 2) ** 2 < 18**2
    image[disc] = colour
    return image.astype("float32")


def regions() -> tuple[np.ndarray, np.ndarray]:
    """The disc's interior and the background away from its edge."""
    yy, xx = np.mgrid[:SIZE, :SIZE]
    r2 = (yy - SIZE / 2) ** 2 + (xx - SIZE / 2) ** 2
    return r2 < 14**2, r2 > 22**2


@pytest.mark.parametrize("colour", [BROWN, PALE])
def test_mask_is_the_hand_and_not_the_shaded_white(colour):
    mask = np.asarray(aug.hand_mask(render(colour)[None]))[0, :, :, 0]
    inside, outside = regions()
    assert mask[inside].min() == 1.0
    assert mask[outside].max() == 0.0
    assert 0.0 < mask.mean() < 1.0


def test_background_is_replaced_and_the_hand_untouched():
    images = np.stack([render(BROWN)] * 8)
    out = np.asarray(HandComposite(1.0, 0.0, seed=0)(images, training=True))
    inside, outside = regions()
    np.testing.assert_array_equal(out[:, inside], images[:, inside])
    changed = np.abs(out - images)[:, outside].mean(axis=(1, 2))
    assert (changed > 20).sum() >= 6  # a generated background may happen to be pale


def test_probability_zero_keeps_the_white_and_skin_tone_recolours_only_the_hand():
    images = np.stack([render(BROWN)] * 8)
    out = np.asarray(HandComposite(0.0, 0.5, seed=0)(images, training=True))
    inside, outside = regions()
    np.testing.assert_allclose(out[:, outside], images[:, outside])
    assert np.abs(out - images)[:, inside].mean(axis=(1, 2)).max() > 5


def test_every_layer_is_identity_at_inference_and_seeded_in_training():
    cfg = compose.to_object(compose_cfg(*IMAGE, "aug=background")).aug
    images = np.stack([render(BROWN), render(PALE)] * 2)
    layer = aug.build(cfg, 3)
    np.testing.assert_array_equal(np.asarray(layer(images, training=False)), images)
    first = np.asarray(aug.build(cfg, 3)(images, training=True))
    again = np.asarray(aug.build(cfg, 3)(images, training=True))
    other = np.asarray(aug.build(cfg, 4)(images, training=True))
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).mean() > 10
    assert first.min() >= 0 and first.max() <= 255


def test_background_colours_span_the_hue_circle():
    generator = keras.random.SeedGenerator(0)

    def uniform(shape, low=0.0, high=1.0):
        return keras.random.uniform(shape, low, high, seed=generator)

    rgb = backgrounds.random_colours(uniform, 20000)[:, 0, 0, :] / 255.0
    hsv = np.asarray(tf.image.rgb_to_hsv(rgb))
    hue = hsv[hsv[:, 1] > 0.05, 0]  # hue means nothing for near-greys
    counts, _ = np.histogram(hue, bins=10, range=(0, 1))
    assert counts.min() > 0.5 * counts.mean()


def test_generated_backgrounds_vary_within_and_between_images():
    generator = keras.random.SeedGenerator(1)

    def uniform(shape, low=0.0, high=1.0):
        return keras.random.uniform(shape, low, high, seed=generator)

    out = np.asarray(backgrounds.backgrounds(uniform, tf.constant([64, SIZE, SIZE, 3])))
    assert out.shape == (64, SIZE, SIZE, 3) and out.min() >= 0 and out.max() <= 255
    spread = out.std(axis=(1, 2)).mean(axis=1)
    assert (spread < 5).sum() >= 3  # solid colours under a film of fine noise
    assert (spread > 20).sum() >= 20  # gradients, noise, stripes, checks
    assert np.unique(out.mean(axis=(1, 2)).round(), axis=0).shape[0] == 64


def test_bundled_photos_load_as_pictures():
    canvas, sizes = backgrounds.photos()
    assert len(sizes) == len(backgrounds.PHOTOS) and (sizes >= 400).all()
    for image, (h, w) in zip(canvas, sizes, strict=True):
        photo = image[:h, :w].astype("float32") / 255.0
        assert photo.std() > 0.1  # a real picture, not a blank canvas


def test_photo_crops_are_scaled_and_mirrored_crops_of_the_photos():
    canvas, sizes = backgrounds.photos()
    # Draws, in photo_crops' order: photo, size, top, left, mirror.
    draws = iter(
        [
            0.99,
            0.99,
            0.5,
            0.5,
            0.99,  # the last photo, a big crop, centred, as is
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
        ]
    )  # the first photo, the smallest crop, top left

    def uniform(shape, low=0.0, high=1.0):
        return tf.fill(shape, low + (high - low) * next(draws))

    last, first = (
        np.asarray(backgrounds.photo_crops(uniform, tf.constant([1, 128, 128, 3])))[0]
        for _ in range(2)
    )
    h, w = sizes[-1]
    side = min(h, w) * (backgrounds.PHOTO_CROP[0] + 0.99 * (1 - backgrounds.PHOTO_CROP[0]))
    top, left = 0.5 * (h - side), 0.5 * (w - side)
    expected = tf.image.resize(
        canvas[-1:, int(top) : int(top + side), int(left) : int(left + side)].astype("float32"),
        (128, 128),
    )[0]
    assert np.abs(last - expected).mean() < 8
    assert first.shape == (128, 128, 3)
    h, w = sizes[0]
    side = int(min(h, w) * backgrounds.PHOTO_CROP[0])
    expected = tf.image.resize(canvas[:1, :side, :side].astype("float32"), (128, 128))[0]
    assert np.abs(first - expected[:, ::-1]).mean() < 8
    assert np.abs(first - expected).mean() > 3 * np.abs(first - expected[:, ::-1]).mean()


def test_recoloured_photos_keep_their_light_and_shade_in_two_new_colours():
    generator = keras.random.SeedGenerator(2)

    def uniform(shape, low=0.0, high=1.0):
        return keras.random.uniform(shape, low, high, seed=generator)

    crops = backgrounds.photo_crops(uniform, tf.constant([8, SIZE, SIZE, 3]))
    out = np.asarray(backgrounds.recoloured(uniform, crops)).reshape(8, -1, 3)
    luma = np.asarray(tf.image.rgb_to_grayscale(crops)).reshape(8, -1)
    assert out.min() >= 0 and out.max() <= 255
    for pixels, shade in zip(out, luma, strict=True):
        # Every pixel lies on the line between the image's two colours, at its own luma.
        centred = pixels - pixels.mean(axis=0)
        strengths = np.linalg.svd(centred, compute_uv=False)
        assert strengths[1] < 1e-3 * strengths[0]
        assert abs(np.corrcoef(centred @ np.linalg.svd(centred)[2][0], shade)[0, 1]) > 0.999
    assert len(np.unique(out.mean(axis=1).round(), axis=0)) == 8  # new colours per image


CYAN = (20, 200, 200)  # hue 0.5: in the held-out band, which bundled photos never show


def test_user_photos_join_the_bundled_ones_shrunk_and_in_their_own_colours(tmp_path):
    Image.new("RGB", (1280, 320), CYAN).save(tmp_path / "wall.png")
    Image.new("RGB", (200, 300), (90, 60, 30)).save(tmp_path / "desk.jpg")
    (tmp_path / ".DS_Store").write_bytes(b"litter")
    canvas, sizes = backgrounds.photos(str(tmp_path))
    bundled = len(backgrounds.PHOTOS)
    assert len(sizes) == bundled + 2
    np.testing.assert_array_equal(sizes[bundled:], [[300, 200], [160, 640]])  # desk, wall
    h, w = sizes[-1]
    assert (canvas[-1, :h, :w] == CYAN).all()
    np.testing.assert_array_equal(
        canvas[:bundled], backgrounds.photos()[0][:, : canvas.shape[1], : canvas.shape[2]]
    )
    # Pasted behind hands in training: some backgrounds are the user's wall, none otherwise.
    hands = np.stack([render(BROWN)] * 32)
    _, outside = regions()
    for folder, walls in ((str(tmp_path), True), (None, False)):
        layer = HandComposite(1.0, 0.0, 1.0, photo_dir=folder, seed=0)
        out = np.asarray(layer(hands, training=True))
        on_wall = (np.abs(out[:, outside] - CYAN).max(axis=(1, 2)) < 1).sum()
        assert (on_wall >= 2) if walls else (on_wall == 0)
    Image.new("RGB", (64, 64), (0, 0, 255)).save(tmp_path / "door.png")  # read again
    assert len(backgrounds.photos(str(tmp_path))[1]) == bundled + 3


@pytest.mark.parametrize("problem", ["missing", "empty", "corrupt"])
def test_a_bad_background_dir_is_one_paragraph_before_training(tmp_path, problem):
    folder = tmp_path / "photos"
    if problem != "missing":
        folder.mkdir()
    if problem == "corrupt":
        Image.new("RGB", (64, 64), CYAN).save(folder / "ok.png")
        (folder / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    cfg = compose.to_object(compose_cfg(*IMAGE, "aug=background", f"aug.background_dir={folder}"))
    expected = {
        "missing": "is not a folder",
        "empty": "has no images",
        "corrupt": r"1 file\(s\) that are not readable images: broken.jpg",
    }[problem]
    with pytest.raises(ConfigError, match=expected) as err:
        aug.build(cfg.aug, 0)
    assert "\n" not in str(err.value) and str(folder) in str(err.value)


def test_background_dir_without_photo_backgrounds_is_refused():
    with pytest.raises(ConfigError, match="would never be used"):
        compose.to_object(compose_cfg("aug=strong", "aug.background_dir=/tmp"))


def test_blur_keeps_each_image_mean_and_white_balance_tints_per_image():
    rng = np.random.default_rng(0)
    images = rng.uniform(0, 255, (6, SIZE, SIZE, 3)).astype("float32")
    blurred = np.asarray(RandomBlur(3.0, seed=0)(images, training=True))
    np.testing.assert_allclose(blurred.mean(axis=(1, 2)), images.mean(axis=(1, 2)), atol=1.5)
    roughness = np.abs(np.diff(blurred, axis=2)).mean(axis=(1, 2, 3))
    assert roughness.max() < np.abs(np.diff(images, axis=2)).mean()
    assert roughness.max() / roughness.min() > 1.2  # each image drew its own sigma
    grey = np.full((6, 4, 4, 3), 128.0, dtype="float32")
    tinted = np.asarray(WhiteBalance(0.2, seed=0)(grey, training=True))[:, 0, 0]
    assert ((tinted >= 128 * 0.8 - 1e-3) & (tinted <= 128 * 1.2 + 1e-3)).all()
    assert len(np.unique(tinted.round(3), axis=0)) == 6


@pytest.mark.parametrize(
    "zoom_in,zoom_out,narrowest,widest", [(0.0, 0.8, 32 / 1.8, 32), (0.3, 0.0, 32, 32 / 0.7)]
)
def test_zoom_in_and_out_bound_how_large_the_hand_gets(zoom_in, zoom_out, narrowest, widest):
    squares = np.full((32, 64, 64, 3), 255.0, dtype="float32")
    squares[:, 16:48, 16:48] = 0.0  # a 32-pixel "hand" in the middle of white
    layer = aug.build(ImageAugConfig(zoom_in=zoom_in, zoom_out=zoom_out), seed=0)
    zoomed = np.asarray(layer(squares, training=True))
    widths = (zoomed[:, 32, :, 0] < 128).sum(axis=1)
    assert widths.min() >= np.floor(narrowest) - 1 and widths.max() <= np.ceil(widest) + 1
    assert np.ptp(widths) > (widest - narrowest) / 2  # it draws across the range


@pytest.mark.parametrize(
    "key,value",
    [
        ("background", 1.5),
        ("background_photos", 1.5),
        ("background_recolour", -0.5),
        ("skin_tone", -0.1),
        ("white_balance", 2.0),
        ("blur", 6.0),
    ],
)
def test_range_checks(key, value):
    with pytest.raises(ConfigError, match=f"aug.{key}"):
        ImageAugConfig(**{key: value})


def test_inference_model_drops_augmentation_and_reloads_with_plain_keras(tmp_path):
    cfg = compose.to_object(
        compose_cfg(
            "aug=background",
            "backbone=mobilenet_v2",
            "backbone=efficientnet_lite0",
            "backbone.weights=null",
            "backbone.input_size=32",
            "head=linear",
        )
    )
    classifier = sources.classifier(cfg, 3)
    assert aug.LAYER_NAME in [layer.name for layer in classifier.train.layers]
    served = classifier.inference
    assert aug.LAYER_NAME not in [layer.name for layer in served.layers]
    images = np.random.default_rng(0).uniform(0, 255, (2, 40, 50, 3)).astype("float32")
    logits = np.asarray(served(images))
    np.testing.assert_array_equal(logits, np.asarray(classifier.train(images, training=False)))
    network.save(served, ["paper", "rock", "scissors"], tmp_path)
    np.save(tmp_path / "images.npy", images)
    script = (
        "import sys, keras, numpy as np; "
        f"m = keras.models.load_model(r'{tmp_path / network.MODEL_FILE}'); "
        "assert not any(n == 'rps' or n.startswith('rps.') for n in sys.modules); "
        f"np.save(r'{tmp_path / 'out.npy'}', m.predict(np.load(r'{tmp_path / 'images.npy'}'),"
        " verbose=0))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    np.testing.assert_allclose(np.load(tmp_path / "out.npy"), logits, atol=1e-5)


@pytest.mark.parametrize("option", OPTIONS)
def test_on_images_says_whether_the_option_builds_any_transform(option):
    chosen = compose.to_object(
        compose_cfg(f"aug={option}", *([] if option == "landmarks" else IMAGE))
    ).aug
    if isinstance(chosen, ImageAugConfig):
        assert chosen.on_images == bool(aug.build(chosen, 0).layers)
    else:  # aug=none, aug=landmarks: no image key at all
        assert not chosen.on_images and not hasattr(chosen, "rotation")
    for key in ("rotation", "blur", "skin_tone", "flip"):
        assert dataclasses.replace(ImageAugConfig(), **{key: 1.0}).on_images


def test_trains_on_cached_background_views_and_shows_them_in_tensorboard(tmp_path):
    root = make_folder_dataset(tmp_path / "data", n_train=6, n_test=2)
    cfg = compose.to_object(
        compose_cfg(
            "data=folder",
            f"data.root={root}",
            "aug=background",
            "backbone=mobilenet_v2",
            "backbone=efficientnet_lite0",
            "backbone.weights=null",
            "backbone.input_size=32",
            "head=linear",
            "trainer.epochs=1",
            "trainer.batch_size=8",
            "finetune=none",
        )
    )
    store = ArrayCache(tmp_path / "cache")
    data = dataset.load(cfg.data, cfg.backbone.input_size, cfg.trainer.seed, store)
    strategy = stages.distribution(cfg.trainer.strategy)
    classifier = pipeline.built(cfg, len(data.class_names), strategy)
    shown = tensorboard.AugmentedImages(data.train, classifier.augment, tmp_path / "tb", 0)
    loop = callbacks.training_loop(classifier.train, cfg.trainer.patience, others=[shown])
    stages.fit(cfg, classifier, data, strategy, loop, store)
    assert shown.written and list((tmp_path / "tb" / "images").iterdir())
    # The images shown are the model's own first draws, and drawing them left the model's
    # augment stage where it was: its next draws are a fresh copy's first ones.
    images = data.train.images[:4].astype("float32")
    copy = keras.Sequential.from_config(classifier.augment.get_config())
    np.testing.assert_array_equal(
        np.asarray(classifier.augment(images, training=True)),
        np.asarray(copy(images, training=True)),
    )
    keras.backend.clear_session()  # the same weights as fit's model, so the same keys
    keras.utils.set_random_seed(cfg.trainer.seed)
    cached = sources.of(cfg.backbone).features(cfg, sources.classifier(cfg, 3), data, store)
    assert cached.seconds == 0 and cached.train.shape[0] == base.AUTO_VIEWS
    assert np.abs(cached.train[0] - cached.train[1]).max() > 0
