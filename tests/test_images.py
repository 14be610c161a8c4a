"""Decoding every pixel format to RGB on white, and the one centre-crop policy."""

import numpy as np
import pytest
from PIL import Image

from rps.data.images import BadImage, fit_square, read_rgb, square_resizer, to_rgb

RED, GREEN, BLUE, WHITE = (255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 255)


def pixels(img: Image.Image) -> list[tuple[int, ...]]:
    rgb = to_rgb(img)
    assert rgb.dtype == np.uint8 and rgb.shape == (img.height, img.width, 3)
    return [tuple(int(v) for v in p) for p in rgb.reshape(-1, 3)]


def test_alpha_is_blended_onto_white_not_dropped():
    rgba = np.array(
        [[[255, 0, 0, 128], [0, 0, 255, 64], [0, 0, 0, 0], [10, 20, 30, 255]]], dtype=np.uint8
    )
    # c * a/255 + 255 * (1 - a/255), rounded
    assert pixels(Image.fromarray(rgba, "RGBA")) == [
        (255, 127, 127),
        (191, 191, 255),
        WHITE,
        (10, 20, 30),
    ]


def test_alpha_survives_a_png_round_trip(tmp_path):
    rgba = np.zeros((30, 40, 4), dtype=np.uint8)
    rgba[:, :20] = (255, 0, 0, 128)
    Image.fromarray(rgba, "RGBA").save(tmp_path / "half.png")
    rgb = read_rgb(tmp_path / "half.png")
    assert tuple(rgb[0, 0]) == (255, 127, 127) and tuple(rgb[0, 39]) == WHITE


def test_grey_with_alpha_is_blended_onto_white():
    la = Image.fromarray(np.array([[[0, 128], [100, 255], [0, 0]]], dtype=np.uint8), "LA")
    assert pixels(la) == [(127, 127, 127), (100, 100, 100), WHITE]


def test_palette_with_and_without_transparency(tmp_path):
    pal = Image.new("P", (3, 1))
    pal.putpalette([*RED, *GREEN, *BLUE])
    pal.putdata([0, 1, 2])
    assert pixels(pal) == [RED, GREEN, BLUE]
    pal.info["transparency"] = 1
    assert pixels(pal) == [RED, WHITE, BLUE]
    pal.save(tmp_path / "pal.png", transparency=1)
    with Image.open(tmp_path / "pal.png") as reopened:
        assert reopened.mode == "P"
        assert pixels(reopened) == [RED, WHITE, BLUE]


def test_grey_and_one_bit():
    assert pixels(Image.fromarray(np.array([[0, 77, 255]], dtype=np.uint8), "L")) == [
        (0, 0, 0),
        (77, 77, 77),
        WHITE,
    ]
    assert pixels(Image.new("1", (1, 1), 1)) == [WHITE]


@pytest.mark.parametrize("dtype", [np.uint16, np.int32])
def test_sixteen_bit_grey_is_scaled_not_clipped(dtype):
    img = Image.fromarray(np.array([[0, 257 * 100, 65535]], dtype=dtype))
    assert img.mode in ("I;16", "I")
    assert pixels(img) == [(0, 0, 0), (100, 100, 100), WHITE]


def test_sixteen_bit_png_file(tmp_path):
    Image.fromarray(np.full((4, 4), 257 * 200, dtype=np.uint16)).save(tmp_path / "g16.png")
    assert tuple(read_rgb(tmp_path / "g16.png")[0, 0]) == (200, 200, 200)


def test_cmyk():
    cmyk = Image.new("CMYK", (2, 1))
    cmyk.putdata([(0, 255, 255, 0), (0, 0, 0, 255)])
    assert pixels(cmyk) == [RED, (0, 0, 0)]


def test_jpeg_is_close_to_its_colour(tmp_path):
    Image.new("RGB", (40, 30), (10, 200, 30)).save(tmp_path / "c.jpg", quality=95)
    rgb = read_rgb(tmp_path / "c.jpg")
    assert rgb.shape == (30, 40, 3)
    assert np.abs(rgb.astype(int) - (10, 200, 30)).max() <= 4


def test_exif_rotation_is_applied(tmp_path):
    img = Image.new("RGB", (40, 30), GREEN)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: the camera was turned; show rotated 90 degrees
    img.save(tmp_path / "phone.jpg", exif=exif)
    assert read_rgb(tmp_path / "phone.jpg").shape == (40, 30, 3)


def test_unreadable_files_raise_bad_image_with_the_path(tmp_path):
    good = tmp_path / "good.png"
    Image.new("RGB", (64, 64), RED).save(good)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(good.read_bytes()[:-40])
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    for path in (truncated, text, tmp_path / "missing.png"):
        with pytest.raises(BadImage) as err:
            read_rgb(path)
        assert err.value.path == str(path) and err.value.reason


def banded(width: int, height: int) -> np.ndarray:
    """Green, with red/blue bands on the long sides that a centre square never reaches."""
    img = np.zeros((height, width, 3), dtype=np.uint8)
    img[:] = GREEN
    band = abs(width - height) // 2
    if width > height:
        img[:, :band], img[:, width - band :] = RED, BLUE
    else:
        img[:band], img[height - band :] = RED, BLUE
    return img


@pytest.mark.parametrize("width,height", [(300, 200), (200, 300)])
def test_fit_crops_the_centre_square_instead_of_squashing(width, height):
    out = fit_square(banded(width, height), 32)
    assert out.shape == (32, 32, 3) and out.dtype == np.uint8
    assert (out == GREEN).all()
    squashed = np.asarray(Image.fromarray(banded(width, height)).resize((32, 32)))
    assert not (squashed == GREEN).all()


def test_fit_leaves_an_image_of_the_target_size_unchanged():
    img = np.random.default_rng(0).integers(0, 256, (32, 32, 3)).astype(np.uint8)
    np.testing.assert_array_equal(fit_square(img, 32), img)


def test_fit_matches_the_layer_the_model_applies():
    img = np.random.default_rng(1).integers(0, 256, (30, 47, 3)).astype(np.uint8)
    layer = square_resizer(24)
    assert layer.get_config()["crop_to_aspect_ratio"]
    assert layer.get_config()["interpolation"] == "bilinear"
    eager = np.clip(np.rint(np.asarray(layer(img.astype(np.float32)))), 0, 255)
    np.testing.assert_array_equal(fit_square(img, 24), eager.astype(np.uint8))
    assert fit_square(img, 16).shape == (16, 16, 3)


def test_data_and_live_paths_crop_a_300x200_photo_to_the_same_unsquashed_square(tmp_path):
    """A circle stays a circle: the same centred square whether the photo is loaded for
    training or comes to live.py from an image folder (where the 300-pixel ROI cannot fit)."""
    from rps.apps.screen import place_roi
    from rps.config.apps import RoiConfig
    from rps.data.video import open_source

    yy, xx = np.mgrid[:200, :300]
    photo = np.full((200, 300, 3), 255, dtype=np.uint8)
    photo[(yy - 100) ** 2 + (xx - 150) ** 2 < 60**2] = BLUE
    Image.fromarray(photo).save(tmp_path / "photo.png")

    trained = fit_square(read_rgb(tmp_path / "photo.png"), 64)
    source = open_source(str(tmp_path / "photo.png"))
    (frame,) = list(source)
    crop = place_roi(RoiConfig(size=300), frame.image.shape).crop(frame.image)
    assert crop.shape == (200, 200, 3)
    rgb = crop[:, :, ::-1].astype(np.float32)  # OpenCV's BGR, as live.py converts it
    served = np.clip(np.rint(np.asarray(square_resizer(64)(rgb))), 0, 255).astype(np.uint8)
    np.testing.assert_array_equal(served, trained)
    disc = (trained == BLUE).all(axis=2)
    rows, cols = np.flatnonzero(disc.any(axis=1)), np.flatnonzero(disc.any(axis=0))
    assert rows[-1] - rows[0] == cols[-1] - cols[0]  # as tall as wide: not squashed
    centre = ((rows[0] + rows[-1]) / 2, (cols[0] + cols[-1]) / 2)
    assert centre == pytest.approx((31.5, 31.5), abs=0.5)  # the centre square


def test_the_hand_square_centres_the_hand_and_repeats_edges_past_the_image():
    from rps.data.crop import HAND_SCALE, cut, hand_square

    points = np.array([[40.0, 10.0, 0.0], [60.0, 50.0, 0.0]])  # 20 wide, 40 tall
    top, left, side = hand_square(points)
    assert side == round(HAND_SCALE * 40) and (left + side / 2, top + side / 2) == (50, 30)
    image = np.arange(60 * 80 * 3, dtype=np.uint8).reshape(60, 80, 3)
    inside = cut(image, 5, 10, 20)
    np.testing.assert_array_equal(inside, image[5:25, 10:30])
    beyond = cut(image, -3, 70, 20)
    assert beyond.shape == (20, 20, 3)
    np.testing.assert_array_equal(beyond[3:, :10], image[:17, 70:80])
    np.testing.assert_array_equal(beyond[0, :10], image[0, 70:80])  # the top row repeated
    np.testing.assert_array_equal(beyond[3:, 10], image[:17, 79])  # the last column repeated
