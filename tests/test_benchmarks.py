"""The benchmarks still run on the current code (they are not run by anything else between
regenerations of docs/results.md), and the page keeps what it did not rerun."""

import importlib.util
import subprocess
import sys

import pytest
from conftest import REPO, SHARED, compose_cfg, make_folder_dataset


def load_results(monkeypatch, page):
    spec = importlib.util.spec_from_file_location("results", REPO / "benchmarks" / "results.py")
    results = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(results)
    monkeypatch.setattr(results, "PAGE", page)
    return results


def test_the_results_page_keeps_the_sections_it_did_not_rerun(monkeypatch, tmp_path):
    results = load_results(monkeypatch, tmp_path / "results.md")
    live = "## Live\n<!-- live abc1234 -->\n\nthe live table\n"
    results.write({"live": live, "speed": "## Speed\n<!-- speed abc1234 -->\n\nold\n"})
    kept = results.kept_sections()
    assert kept["live"] == live and list(kept) == ["speed", "live"]
    results.write({**kept, "speed": "## Speed\n<!-- speed def5678 -->\n\nnew\n"})
    text = (tmp_path / "results.md").read_text()
    assert text.startswith("# Results\n") and text.count("## ") == 2
    assert "new" in text and "old" not in text and text.index("## Speed") < text.index(live)


def test_a_page_without_sections_keeps_nothing(monkeypatch, tmp_path):
    page = tmp_path / "results.md"
    page.write_text("# Results\n\nwritten by hand\n")
    assert load_results(monkeypatch, page).kept_sections() == {}


@pytest.mark.slow
def test_the_live_benchmark_prints_its_table(tmp_path):
    images = make_folder_dataset(tmp_path / "data", n_train=0, n_test=2) / "test"
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "live.py"),
            "--images",
            str(images),
            "--frames",
            "6",
            "--backbones",
            "efficientnet_lite0",
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (row,) = [line for line in proc.stdout.splitlines() if line.startswith("| efficientnet")]
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert len(cells) == 8 and all(float(c) > 0 for c in cells[1:])


@pytest.mark.skipif(not (SHARED / "test").is_dir(), reason=f"{SHARED} is absent")
def test_the_hand_search_benchmark_prints_each_stage(tmp_path):
    """An untrained default head is enough: the benchmark's found-hand rate is the finder's,
    and a blank image beside each render is never a hand, at any stage."""
    from PIL import Image

    from rps.config import compose
    from rps.features import sources
    from rps.model import network

    classes = ["paper", "rock", "scissors"]
    classifier = sources.classifier(compose.to_object(compose_cfg()), len(classes))
    network.save(classifier.inference, classes, tmp_path / "model")
    photos = tmp_path / "photos"
    for name in classes:
        (photos / name).mkdir(parents=True)
        render = sorted((SHARED / "test" / name).iterdir())[0]
        (photos / name / render.name).write_bytes(render.read_bytes())
        Image.new("RGB", (300, 200), (255, 255, 255)).save(photos / name / "blank.png")
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / "benchmarks" / "hand_search.py"),
            "--model",
            str(tmp_path / "model"),
            str(photos),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")][1:]
    assert len(rows) == 4 and "(the default)" in rows[-1]
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        assert float(cells[1]) == 0.5 and 0 <= float(cells[2]) <= 0.5
        assert float(cells[3]) > 0 and float(cells[4]) >= float(cells[3])


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "test").is_dir(), reason=f"{SHARED} is absent")
def test_a_job_enters_its_modules_in_the_order_of_its_story():
    """Config, data and model before training, training before the test pass, the test
    pass before the outputs; nothing enters the job's spine from outside it."""
    proc = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "job_path.py"), "--renders", str(SHARED)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    first = lines[lines.index("In the order the job first enters them:") + 1].split(" -> ")
    story = ["train.job", "config.compose", "data.dataset", "train.pipeline", "train.stages"]
    story += ["model.optimizer", "serve.predictor", "train.outputs"]
    assert [module for module in first if module in story] == story
    assert "features.sources" in first and "tracking.mlflow_runs" in first


@pytest.mark.skipif(not (SHARED / "test").is_dir(), reason=f"{SHARED} is absent")
def test_the_feedback_benchmark_times_the_landmark_pass_both_ways():
    """Its jobs are the entry points the other tests run; its own part is the two ways of
    searching a list of renders, timed interleaved."""
    spec = importlib.util.spec_from_file_location("feedback", REPO / "benchmarks" / "feedback.py")
    feedback = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(feedback)
    rows = feedback.landmark_pass(SHARED, 40, 1)
    (one, _), (per_core, _) = rows
    assert one.startswith("one finder,") and per_core.startswith("one finder per core")
    assert all(ms > 0 for _, ms in rows)


def test_the_feedback_benchmark_times_a_processs_fixed_costs_both_ways():
    spec = importlib.util.spec_from_file_location("feedback", REPO / "benchmarks" / "feedback.py")
    feedback = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(feedback)
    (python, *pythons), (rps, *ours) = feedback.fixed_costs(1)
    assert python == "as Python does" and rps.startswith("as rps does")
    assert all(seconds >= 0 for seconds in pythons + ours)
