"""Every code snippet in the docs runs as written, with its placeholders filled in."""

import itertools
import json
import os
import re
import shlex
import subprocess
import sys

import pytest
from conftest import REPO, SHARED, served_model, tracked_job

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.S)


def blocks(language: str) -> list[tuple[str, str]]:
    return [
        (page.name, code)
        for page in PAGES
        for lang, code in BLOCK.findall(page.read_text())
        if lang == language
    ]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The default config on a few renders: a run, its output folder, and a photo."""
    uri, out, run, _ = tracked_job(
        tmp_path_factory.mktemp("docs"),
        "data=folder",
        f"data.root={SHARED}",
        "data.limit=8",
        "trainer.epochs=2",
    )
    image = sorted((SHARED / "test" / "rock").iterdir())[0]
    return {"uri": uri, "out": out, "run_id": run.info.run_id, "image": image}


def filled(code: str, trained: dict) -> str:
    return (
        code.replace("outputs/runs/<time>", str(trained["out"]))
        .replace("<run id>", trained["run_id"])
        .replace("<image>", str(trained["image"]))
    )


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "test").is_dir(), reason=f"{SHARED} is absent")
def test_every_python_snippet_runs(trained):
    snippets = blocks("python")
    assert len(snippets) >= 2
    for page, code in snippets:
        proc = subprocess.run(
            [sys.executable, "-c", filled(code, trained)],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
            env={**os.environ, "MLFLOW_TRACKING_URI": trained["uri"]},
        )
        assert proc.returncode == 0, f"{page}:\n{code}\n{proc.stderr[-2000:]}"
        assert "'paper', 'rock', 'scissors'" in proc.stdout, f"{page}:\n{code}"


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED / "test").is_dir(), reason=f"{SHARED} is absent")
def test_the_served_model_answers_the_documented_curl(trained):
    (curl,) = [code for _, code in blocks("bash") if "curl" in code and "invocations" in code]
    command = "\n".join(line for line in curl.splitlines() if not line.startswith("make "))
    with served_model(f"runs:/{trained['run_id']}/model", trained["uri"]) as url:
        port = url.rsplit(":", 1)[1]
        proc = subprocess.run(
            ["bash", "-c", filled(command, trained).replace("5001", port)],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr
    (row,) = json.loads(proc.stdout)["predictions"]
    assert set(row) == {"paper", "rock", "scissors", "label"}


def distinct_placeholders(text: str) -> str:
    """``<run id>`` and the like as x1, x2, ...: values a schema accepts, each unlike the others."""
    numbers = itertools.count(1)
    return re.sub(r"<[^>]+>", lambda _: f"x{next(numbers)}", text)


COMMAND = re.compile(r"^\s*python (run|evaluate|live|ensemble)\.py (.*?)(#.*)?$")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_documented_command_composes_a_valid_config(page):
    """Each `python <app>.py <overrides>` a page shows, placeholders filled, a sweep's first
    value taken: Hydra composes it and the schemas accept it."""
    from rps.config import compose

    compose.register()
    found = 0
    for lang, code in BLOCK.findall(page.read_text()):
        for line in code.replace("\\\n", " ").splitlines() if lang == "bash" else []:
            if not (match := COMMAND.match(line)) or "--help" in line:
                continue
            found += 1
            args = [
                a
                for a in shlex.split(distinct_placeholders(match.group(2)))
                if a != "-m" and not a.startswith("hydra")
            ]
            first = [a if "[" in a else a.split(",")[0] for a in args]
            app = match.group(1)
            cfg = compose.config(REPO / "conf", first, name="config" if app == "run" else app)
            compose.to_object(cfg)
    assert found or page.name not in {"README.md", "configuration.md", "live.md"}
