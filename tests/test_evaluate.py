"""evaluate.py: a model scored on a labelled folder, as the scores say, and filed with its run."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import make_folder_dataset, run_cli
from mlflow.tracking import MlflowClient
from PIL import Image

from rps.apps import evaluate
from rps.data import folder
from rps.data.images import fit_square
from rps.model import network


@pytest.fixture(scope="module")
def trained(tiny_run) -> dict:
    """The session's tiny tracked model, and a labelled folder it never saw (its test split)."""
    return {**tiny_run, "client": MlflowClient(tiny_run["uri"])}


def evaluate_cli(*overrides: str):
    return run_cli(*overrides, script="evaluate.py")


def test_scores_match_the_model_and_are_logged_to_its_run(trained, tmp_path):
    out = tmp_path / "eval"
    # Generated images hold no hand: the model's own crop of the whole image.
    proc = evaluate_cli(
        f"run_id={trained['run_id']}",
        f"tracking.uri={trained['uri']}",
        f"data.root={trained['folder']}",
        "roi.find=fixed",
        f"hydra.run.dir={out}",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / evaluate.RESULT_FILE).read_text())
    # The same images through the saved model, computed here directly.
    model, names = network.load(trained["out"])
    split, bad = folder.labelled(trained["folder"], names)
    size = network.input_size(model)
    batch = np.stack([fit_square(image, size) for image in split.images]).astype("float32")
    predicted = model.predict(batch, verbose=0).argmax(1)
    assert bad == [] and result["images"] == len(split) == 9
    assert result["accuracy"] == pytest.approx(float(np.mean(predicted == split.labels)))
    assert np.array(result["confusion_matrix"]).sum() == 9
    assert len(result["misclassified"]) == int(np.sum(predicted != split.labels))
    assert f"accuracy {result['accuracy']:.3f}" in proc.stdout and "recall:" in proc.stdout
    assert (out / "misclassified.png").is_file() and (out / "confusion_matrix.png").is_file()

    run = trained["client"].get_run(trained["run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.metrics["eval/test/accuracy"] == pytest.approx(result["accuracy"])
    # The fixed crop searches for no hand, so it cannot miss one.
    assert result["hand_found"] is None and "eval/test/hand_found" not in run.data.metrics
    assert "a hand found in" not in proc.stdout
    assert set(names) == {
        k.split("/")[-1] for k in run.data.metrics if k.startswith("eval/test/recall/")
    }
    logged = {
        Path(f.path).name for f in trained["client"].list_artifacts(trained["run_id"], "eval/test")
    }
    assert {evaluate.RESULT_FILE, "misclassified.png", "confusion_matrix.png"} <= logged


def test_a_model_file_and_a_folder_of_some_classes_with_an_unreadable_image(trained, tmp_path):
    real = tmp_path / "real"
    for name in ("rock", "paper"):
        (real / name).mkdir(parents=True)
        for source in sorted((trained["folder"] / name).iterdir()):
            Image.open(source).save(real / name / source.name)
    (real / "rock" / "broken.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    Image.new("RGB", (1, 1)).save(real / "paper" / "one_pixel.png")  # too small for a hand
    out = tmp_path / "eval"
    proc = evaluate_cli(f"model_path={trained['out']}", f"data.root={real}", f"hydra.run.dir={out}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((out / evaluate.RESULT_FILE).read_text())
    assert result["images"] == 7 and set(result["recall"]) == {"rock", "paper"}
    # By default the model sees the hand the palm detector finds: these images have none.
    assert result["no_hand"] == 7 and result["accuracy"] == 0 and result["hand_found"] == 0
    assert "a hand found in 0.000 of the images; 7 with none, counted as wrong" in proc.stdout
    listed = [m for m in result["misclassified"] if m["predicted"] == "no hand"]
    assert len(listed) == 7
    assert [Path(b["source"]).name for b in result["unreadable"]] == ["broken.jpg"]
    assert "1 unreadable file(s) not scored: broken.jpg" in proc.stdout


@pytest.mark.parametrize(
    "case,needle",
    [
        ("no model", "needs exactly one model"),
        ("unknown run", "cannot load the model of run 0123456789abcdef"),
        ("missing folder", "is not a folder"),
        ("unknown class", "class folders the model does not know (lizard)"),
        ("no root", "needs data.root"),
    ],
)
def test_bad_input_is_one_paragraph(trained, tmp_path, case, needle):
    folder = (
        make_folder_dataset(tmp_path / "odd", classes=("rock", "lizard"), n_train=1, n_test=0)
        / "train"
    )
    given = {
        "no model": [f"data.root={folder}"],
        "unknown run": [
            "run_id=0123456789abcdef",
            f"tracking.uri={trained['uri']}",
            f"data.root={folder}",
        ],
        "missing folder": [f"model_path={trained['out']}", f"data.root={tmp_path / 'nope'}"],
        "unknown class": [f"model_path={trained['out']}", f"data.root={folder}"],
        "no root": [f"model_path={trained['out']}"],
    }[case]
    proc = evaluate_cli(*given, f"hydra.run.dir={tmp_path / 'eval'}")
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert needle in proc.stderr.replace("\n", " ") and "Traceback" not in proc.stderr
    assert not (tmp_path / "eval").exists()  # a refusal leaves no output folder
    assert not (tmp_path / "eval" / evaluate.RESULT_FILE).exists()


@pytest.mark.parametrize(
    "case,needle",
    [
        ("cut short", "cannot be loaded as a model"),
        ("foreign", "cannot be loaded as a model"),
        ("names edited", "is not the list of class names"),
        ("names of another run", "gives 3 scores but"),
    ],
)
def test_a_damaged_model_folder_is_one_paragraph(trained, tmp_path, case, needle):
    """A crash mid-copy, an edit, or files mixed from two runs: exit 2 and one paragraph
    naming the file, for evaluate.py and live.py alike; the model's own folder is untouched."""
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(trained["out"], folder)
    model_file, names = folder / network.MODEL_FILE, folder / network.CLASSES_FILE
    data = model_file.read_bytes()
    if case == "cut short":
        model_file.write_bytes(data[: len(data) // 2])
    elif case == "foreign":
        model_file.write_text("this is a text file, not a model")
    elif case == "names edited":
        names.write_text('["paper", "rock"')
    else:
        names.write_text('["paper", "rock"]')
    for script, extra in (
        ("evaluate.py", [f"data.root={trained['folder']}"]),
        ("live.py", [f"source={trained['folder'] / 'rock'}", "headless=true"]),
    ):
        proc = run_cli(
            f"model_path={folder}", *extra, f"hydra.run.dir={tmp_path / script}", script=script
        )
        assert proc.returncode == 2, proc.stderr[-3000:]
        message = proc.stderr.replace("\n", " ")
        assert needle in message and "Traceback" not in proc.stderr
        assert not (tmp_path / script).exists()
        damaged = model_file if "model" in needle or "scores" in needle else names
        assert str(damaged) in message
    assert (trained["out"] / network.MODEL_FILE).read_bytes() == data
