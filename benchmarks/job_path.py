"""The path a training job takes through rps's modules, as a reader would follow it.

    python benchmarks/job_path.py --renders ../shared/data/rps

Runs ``python run.py debug=default`` in this process with a profiler that notes each call
into or out of the job's spine (train.job, train.pipeline, train.stages) from another rps
module; what a called module does inside is a detail of that step. Prints the modules in
the order the job enters them, and how often it comes back to a module it had already left:
the spine is left and re-entered once per step, and a module off the spine is entered again
only when the story needs it again.
"""

from __future__ import annotations

import argparse
import runpy
import sys
import tempfile
from pathlib import Path
from types import FrameType

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # rps, when it is not installed into the environment


def rps_module(frame: FrameType | None) -> str | None:
    name = frame.f_globals.get("__name__", "") if frame is not None else ""
    return name if name.startswith("rps.") else None


def traced(argv: list[str], spine: set[str]) -> list[str]:
    """The rps modules the job's spine calls into, in order, consecutive repeats folded."""
    entered: list[str] = []

    def profile(frame: FrameType, event: str, arg: object) -> None:
        if event != "call" or frame.f_code.co_name == "<module>":
            return  # an import runs a module's top level: not a step of the job
        module = rps_module(frame)
        if module is None:
            return  # most calls, TensorFlow's: no walk up their stack
        caller = frame.f_back
        while caller is not None and rps_module(caller) is None:
            caller = caller.f_back
        if caller is None or rps_module(caller) == module:
            return
        if rps_module(caller) in spine or module in spine:
            if not entered or entered[-1] != module:
                entered.append(module)

    # Their imports are no step of the job, and profiled they take minutes.
    import matplotlib.pyplot  # noqa: F401
    import mlflow  # noqa: F401
    import tensorflow  # noqa: F401

    sys.argv = [str(REPO / "run.py"), *argv]
    sys.setprofile(profile)
    try:
        runpy.run_path(str(REPO / "run.py"), run_name="__main__")
    except SystemExit:
        pass
    finally:
        sys.setprofile(None)
    return entered


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--renders", type=Path, required=True)
    parser.add_argument(
        "--spine",
        nargs="+",
        default=["rps.train.job", "rps.train.pipeline", "rps.train.stages"],
        help="the modules whose calls make the job's story",
    )
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        entered = traced(
            [
                "debug=default",
                "data=folder",
                f"data.root={args.renders.resolve()}",
                f"hydra.run.dir={tmp}/run",
                f"tracking.uri=sqlite:///{tmp}/mlflow.db",
            ],
            set(args.spine),
        )
    first = list(dict.fromkeys(entered))
    left: set[str] = set()
    returns = 0
    for before, module in zip(entered, entered[1:], strict=False):
        left.add(before)
        returns += module in left
    print("In the order the job first enters them:")
    print(" -> ".join(m.removeprefix("rps.") for m in first))
    print("\nEvery entry, consecutive repeats folded:")
    print(" -> ".join(m.removeprefix("rps.") for m in entered))
    print(
        f"\n{len(entered)} entries into {len(first)} modules; "
        f"{returns} returns to a module already left"
    )


if __name__ == "__main__":
    main()
