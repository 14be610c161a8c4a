"""Loading folder and tfds datasets: splits, determinism, and an error for each bad input."""

import logging
import time
from pathlib import Path

import numpy as np
import pytest
import requests
import tensorflow_datasets as tfds
from conftest import SHARED, make_folder_dataset

from rps.config.data import BadImagePolicy, FolderDataConfig, TfdsDataConfig
from rps.data import dataset, folder, tfds_data
from rps.data.dataset import load
from rps.data.images import fit_square, read_rgb
from rps.data.splits import Data, Split
from rps.errors import ConfigError, DataError

SIZE = 24


def folder_config(root: Path, **kwargs) -> FolderDataConfig:
    return FolderDataConfig(root=str(root), **kwargs)


def split_of(source: str) -> str:
    return Path(source).parts[-3]


def check_labels_match_folders(data: Data) -> None:
    for split in (data.train, data.val, data.test):
        assert split.images.dtype == np.uint8 and split.images.shape[1:] == (SIZE, SIZE, 3)
        assert split.labels.dtype == np.int32 and len(split.sources) == len(split.labels)
        assert [Path(s).parent.name for s in split.sources] == [
            data.class_names[label] for label in split.labels
        ]


def per_class(split: Split, n_classes: int) -> list[int]:
    return np.bincount(split.labels, minlength=n_classes).tolist()


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    return make_folder_dataset(
        tmp_path_factory.mktemp("rps"), ("scissors", "rock", "paper"), n_train=10, n_test=3
    )


def test_folder_loads_sorted_classes_and_holds_out_a_stratified_val(root):
    data = load(folder_config(root, val_fraction=0.2), SIZE, seed=1)
    assert data.class_names == ["paper", "rock", "scissors"]
    assert per_class(data.train, 3) == [8, 8, 8] and per_class(data.val, 3) == [2, 2, 2]
    assert per_class(data.test, 3) == [3, 3, 3]
    check_labels_match_folders(data)
    assert {split_of(s) for s in data.train.sources + data.val.sources} == {"train"}
    assert {split_of(s) for s in data.test.sources} == {"test"}
    assert not set(data.train.sources) & set(data.val.sources)


@pytest.mark.parametrize(
    "name,group",
    [
        ("paper01-004.png", "paper01"),
        ("rock_3_12.png", "rock_3"),
        ("hand.png", "hand"),
        ("17.jpg", "17"),
    ],
)
def test_a_files_group_is_its_name_without_the_last_number(name, group):
    assert dataset.group_of(f"/data/train/x/{name}") == group


def test_val_groups_holds_out_whole_groups_of_each_class(tmp_path):
    root = make_folder_dataset(tmp_path, n_train=12, n_test=1)
    for path in sorted((root / "train").glob("*/*.png")):  # <class>_<i> -> <class>0<g>-<i>
        cls, i = path.stem.rsplit("_", 1)
        path.rename(path.with_name(f"{cls}0{int(i) % 4}-{int(i):03d}.png"))
    data = load(folder_config(root, val_fraction=0.25, val_groups=True), SIZE, seed=3)
    val_groups = {dataset.group_of(s) for s in data.val.sources}
    train_groups = {dataset.group_of(s) for s in data.train.sources}
    assert not val_groups & train_groups
    assert len(val_groups) == 3 and per_class(data.val, 3) == [3, 3, 3]
    again = load(folder_config(root, val_fraction=0.25, val_groups=True), SIZE, seed=3)
    assert again.val.sources == data.val.sources
    others = [
        load(folder_config(root, val_fraction=0.25, val_groups=True), SIZE, seed=seed)
        for seed in range(4, 8)
    ]
    assert any(o.val.sources != data.val.sources for o in others)


def test_val_groups_falls_back_to_files_when_names_have_no_groups(root, caplog):
    with caplog.at_level(logging.WARNING, logger="rps"):
        data = load(folder_config(root, val_fraction=0.2, val_groups=True), SIZE, seed=1)
    plain = load(folder_config(root, val_fraction=0.2), SIZE, seed=1)
    assert data.val.sources == plain.val.sources and per_class(data.val, 3) == [2, 2, 2]
    assert "class paper, rock, scissors differ only in their last number" in caplog.text
    with pytest.raises(ConfigError, match="tfds dataset has no file names"):
        load(TfdsDataConfig(val_groups=True), SIZE, seed=0)


def test_images_are_the_decoded_files_with_the_crop_policy(root):
    data = load(folder_config(root), SIZE, seed=0)
    for image, source in zip(data.test.images, data.test.sources, strict=True):
        np.testing.assert_array_equal(image, fit_square(read_rgb(source), SIZE))


def test_same_seed_same_split_other_seed_other_split(root):
    first, again, other = (load(folder_config(root), SIZE, seed) for seed in (7, 7, 8))
    assert first.val.sources == again.val.sources
    np.testing.assert_array_equal(first.train.images, again.train.images)
    assert set(first.val.sources) != set(other.val.sources)


def test_val_folder_is_used_when_present(tmp_path):
    make_folder_dataset(tmp_path, n_train=4, n_test=2, n_val=3)
    data = load(folder_config(tmp_path), SIZE, seed=0)
    assert per_class(data.train, 3) == [4, 4, 4] and per_class(data.val, 3) == [3, 3, 3]
    assert {split_of(s) for s in data.val.sources} == {"val"}
    check_labels_match_folders(data)


def test_small_classes_keep_one_val_image_and_a_single_image_stays_in_train(tmp_path):
    make_folder_dataset(tmp_path, n_train=20, n_test=1)
    for path in sorted((tmp_path / "train/paper").iterdir())[2:]:
        path.unlink()
    for path in sorted((tmp_path / "train/rock").iterdir())[1:]:
        path.unlink()
    data = load(folder_config(tmp_path, val_fraction=0.1), SIZE, seed=0)
    assert per_class(data.val, 3) == [1, 0, 2] and per_class(data.train, 3) == [1, 1, 18]


def test_hidden_and_stray_entries_are_ignored(tmp_path):
    make_folder_dataset(tmp_path, n_train=2, n_test=1)
    (tmp_path / "train/.ipynb_checkpoints").mkdir()
    (tmp_path / "train/README.txt").write_text("class folders below")
    (tmp_path / "train/rock/.DS_Store").write_bytes(b"\0\1junk")
    data = load(folder_config(tmp_path), SIZE, seed=0)
    assert data.class_names == ["paper", "rock", "scissors"]
    assert len(data.train) + len(data.val) == 6


def test_decoding_is_logged_with_its_time(root, caplog):
    with caplog.at_level(logging.INFO, logger="rps"):
        load(folder_config(root), SIZE, seed=0)
    assert any("decoded 30 train images in" in r.getMessage() for r in caplog.records)


# --- bad input ------------------------------------------------------------------------------


def load_error(cfg) -> str:
    with pytest.raises(DataError) as err:
        load(cfg, SIZE, seed=0)
    return str(err.value)


def test_missing_root(tmp_path):
    message = load_error(folder_config(tmp_path / "nowhere"))
    assert "data.root" in message and "nowhere" in message and "train/<class>/" in message


def test_missing_train_or_test(tmp_path):
    make_folder_dataset(tmp_path, n_train=2, n_test=0)
    message = load_error(folder_config(tmp_path))
    assert "no test/ folder" in message and "data.root" in message


def test_one_class_is_not_a_classifier(tmp_path):
    make_folder_dataset(tmp_path, ["rock"], n_train=2, n_test=1)
    assert "at least two" in load_error(folder_config(tmp_path))


def test_empty_class_folder_is_named(tmp_path):
    make_folder_dataset(tmp_path, n_train=2, n_test=1)
    for path in (tmp_path / "test/rock").iterdir():
        path.unlink()
    (tmp_path / "test/rock/.DS_Store").write_bytes(b"")
    message = load_error(folder_config(tmp_path))
    assert "no images in class folder(s) test/rock/" in message


def test_class_folders_that_differ_between_splits_are_listed(tmp_path):
    make_folder_dataset(tmp_path, n_train=2, n_test=1, n_val=1)
    for path in (tmp_path / "test/scissors").iterdir():
        path.unlink()
    (tmp_path / "test/scissors").rmdir()
    (tmp_path / "val/lizard").mkdir()
    message = load_error(folder_config(tmp_path))
    assert "test/ lacks scissors" in message and "val/ has extra lizard" in message
    assert "same class subfolders" in message


@pytest.fixture
def with_bad_files(tmp_path) -> Path:
    make_folder_dataset(tmp_path, n_train=5, n_test=2)
    good = (tmp_path / "train/rock/rock_000.png").read_bytes()
    (tmp_path / "train/rock/truncated.png").write_bytes(good[: len(good) // 2])
    (tmp_path / "train/paper/notes.txt").write_text("not an image")
    (tmp_path / "test/scissors/empty.jpg").write_bytes(b"")
    return tmp_path


# Damaged images; notes.txt is no image at all, and is skipped and listed whatever the policy.
BAD = ["train/rock/truncated.png", "test/scissors/empty.jpg"]
NOT_AN_IMAGE = "train/paper/notes.txt"


def test_bad_files_fail_by_default_listing_all_of_them(with_bad_files, caplog):
    with caplog.at_level(logging.WARNING, logger="rps"):
        message = load_error(folder_config(with_bad_files))
    assert "2 file(s)" in message and "data.on_bad_image=skip" in message
    for name in BAD:
        assert name in message
    assert NOT_AN_IMAGE not in message
    assert f"skipping 1 file(s) that are not images, by their suffix: {NOT_AN_IMAGE}" in caplog.text


def test_bad_files_are_skipped_with_a_warning(with_bad_files, caplog):
    cfg = folder_config(with_bad_files, on_bad_image=BadImagePolicy.skip)
    with caplog.at_level(logging.WARNING, logger="rps"):
        data = load(cfg, SIZE, seed=0)
    assert (len(data.train) + len(data.val), len(data.test)) == (15, 6)
    check_labels_match_folders(data)
    warning = " ".join(r.getMessage() for r in caplog.records if r.levelno == logging.WARNING)
    assert "skipping 2 unreadable" in warning and all(name in warning for name in BAD)
    assert "skipping 1 file(s) that are not images" in warning and NOT_AN_IMAGE in warning


def test_files_that_are_not_images_are_skipped_in_training_and_scoring_alike(tmp_path, caplog):
    """notes.txt and labels.json in a class folder: training skips and lists them, as
    evaluate.py's listing does, under the default policy that fails on a damaged image."""
    make_folder_dataset(tmp_path, n_train=3, n_test=1)
    for name in ("train/rock/notes.txt", "test/paper/labels.json"):
        (tmp_path / name).write_text("{}")
    with caplog.at_level(logging.WARNING, logger="rps"):
        data = load(folder_config(tmp_path), SIZE, seed=0)
    assert len(data.test) == 3 and len(data.train) + len(data.val) == 9
    assert "skipping 2 file(s) that are not images" in caplog.text
    assert "train/rock/notes.txt" in caplog.text and "test/paper/labels.json" in caplog.text
    photos, listed = folder.labelled(tmp_path / "test", ["paper", "rock", "scissors"])
    assert len(photos) == 3
    assert [(Path(b.path).name, b.reason) for b in listed] == [("labels.json", folder.NOT_AN_IMAGE)]


def test_many_bad_files_are_counted_not_all_named(tmp_path):
    make_folder_dataset(tmp_path, n_train=2, n_test=1)
    for i in range(13):
        (tmp_path / f"train/rock/junk{i:02d}.png").write_text("junk")
    message = load_error(folder_config(tmp_path))
    assert "13 file(s)" in message and "and 3 more" in message and "junk12" not in message


def test_skipping_every_image_of_a_class_is_an_error(tmp_path):
    make_folder_dataset(tmp_path, n_train=2, n_test=1)
    for path in (tmp_path / "test/paper").iterdir():
        path.write_text("corrupt")
    message = load_error(folder_config(tmp_path, on_bad_image=BadImagePolicy.skip))
    assert "no readable images" in message and "test/paper/" in message


# --- tfds -----------------------------------------------------------------------------------


def test_tfds_images_are_cropped_and_labels_follow_sorted_names(tmp_path, monkeypatch):
    # mock_data replaces the download, so the pre-download reachability check has no job.
    monkeypatch.setattr(tfds_data, "_check_reachable", lambda urls: None)
    cfg = TfdsDataConfig(tfds_dir=str(tmp_path))
    with tfds.testing.mock_data(num_examples=12):
        data = load(cfg, SIZE, seed=0)
        builder = tfds.builder(cfg.tfds_name, data_dir=cfg.tfds_dir)
        raw = list(tfds.as_numpy(builder.as_dataset(split="train", as_supervised=True)))
    assert builder.info.features["label"].names == ["rock", "paper", "scissors"]
    assert data.class_names == ["paper", "rock", "scissors"]
    assert len(data.train) + len(data.val) == 12 and len(data.test) == 12
    to_sorted = {0: 1, 1: 0, 2: 2}
    for split in (data.train, data.val):
        assert split.images.shape[1:] == (SIZE, SIZE, 3) and split.images.dtype == np.uint8
        for image, label, source in zip(split.images, split.labels, split.sources, strict=True):
            raw_image, raw_label = raw[int(source.split("[")[1].rstrip("]"))]
            assert label == to_sorted[int(raw_label)]
            np.testing.assert_array_equal(image, fit_square(raw_image, SIZE))


def test_tfds_failed_download_says_what_to_do(tmp_path, monkeypatch):
    # The host answered the reachability check, then the download itself failed.
    monkeypatch.setattr(tfds_data, "_check_reachable", lambda urls: None)

    def offline(self, *args, **kwargs):
        raise requests.exceptions.ConnectionError(
            "HTTPSConnectionPool(host='storage.googleapis.com', port=443): Max retries "
            "exceeded with url: /download.tensorflow.org/data/rps.zip"
        )

    monkeypatch.setattr(tfds.builder_cls("rock_paper_scissors"), "download_and_prepare", offline)
    with pytest.raises(DataError) as err:
        load(TfdsDataConfig(tfds_dir=str(tmp_path)), SIZE, seed=0)
    message = str(err.value)
    for part in (
        "download of rock_paper_scissors failed",
        "ConnectionError",
        "offline",
        "data.tfds_dir",
        str(tmp_path),
        "data=folder",
        "train/<class>/",
    ):
        assert part in message
    assert isinstance(err.value.__cause__, requests.exceptions.ConnectionError)


def test_tfds_unreachable_host_fails_before_downloading(tmp_path, monkeypatch):
    # ".invalid" never resolves, so this exercises the real connection check offline or not.
    builder_cls = tfds.builder_cls("rock_paper_scissors")
    monkeypatch.setattr(builder_cls, "url_infos", {"https://rps.invalid/rps.zip": None})

    def download(self, *args, **kwargs):
        raise AssertionError("tfds started its minutes-long download retries")

    monkeypatch.setattr(builder_cls, "download_and_prepare", download)
    with pytest.raises(DataError, match="offline") as err:
        load(TfdsDataConfig(tfds_dir=str(tmp_path)), SIZE, seed=0)
    assert isinstance(err.value.__cause__, OSError)


def test_unknown_tfds_name(tmp_path):
    message = load_error(TfdsDataConfig(tfds_name="rock_paper_lizard", tfds_dir=str(tmp_path)))
    assert "data.tfds_name=rock_paper_lizard" in message


# --- the real dataset -----------------------------------------------------------------------


@pytest.mark.integration
@pytest.mark.skipif(not SHARED.is_dir(), reason=f"{SHARED} is absent")
def test_real_dataset_loads_quickly_on_white():
    start = time.perf_counter()
    data = load(folder_config(SHARED), 224, seed=42)
    seconds = time.perf_counter() - start
    print(f"decoded {len(data.train) + len(data.val) + len(data.test)} images in {seconds:.1f} s")
    assert data.class_names == ["paper", "rock", "scissors"]
    assert len(data.train) + len(data.val) == 2520 and len(data.test) == 372
    assert per_class(data.val, 3) == [126, 126, 126]
    for split in (data.train, data.val, data.test):
        assert split.images.shape[1:] == (224, 224, 3)
        corners = split.images[:, [0, 0, -1, -1], [0, -1, 0, -1]]
        assert corners.mean() > 245
    assert seconds < 120
