"""The MLflow store a job tracks into: its URI, a client bound to it, its experiments, and
the link that opens a run in ``mlflow ui``."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from rps.config.job import TrackingConfig
from rps.errors import UserError

log = logging.getLogger(__name__)

URI_ENV = "MLFLOW_TRACKING_URI"
EXPERIMENT_KIND_TAG, MODEL_TRAINING = "mlflow.experimentKind", "custom_model_development"
SERVER_TIMEOUT_S = 5
UI_ADDRESS = "http://127.0.0.1:5000"  # where `mlflow ui` listens unless told otherwise


class TrackingError(UserError):
    pass


def store_uri(cfg: TrackingConfig, root: Path) -> str:
    """``tracking.uri``, else MLflow's own ``MLFLOW_TRACKING_URI``, else the SQLite database at
    the project root: absolute, so every working directory (Hydra job folders included)
    writes to the one store that ``mlflow ui`` started in the project root reads."""
    return cfg.uri or os.environ.get(URI_ENV) or f"sqlite:///{(root / 'mlflow.db').resolve()}"


def artifact_location(uri: str, experiment: str) -> str | None:
    """Beside a SQLite file, ``mlruns/``: where ``mlflow ui`` started in that folder looks.
    A server chooses its own artifact root."""
    if not uri.startswith("sqlite:///"):
        return None
    folder = Path(uri.removeprefix("sqlite:///")).parent
    return (folder / "mlruns" / experiment).resolve().as_uri()


def client_for(uri: str):
    from mlflow.tracking import MlflowClient

    if uri.startswith(("http://", "https://")):
        check_server(uri)
    if not uri.startswith("sqlite:///"):
        return MlflowClient(tracking_uri=uri)
    with _locked(Path(uri.removeprefix("sqlite:///"))):  # a new client creates the tables
        return MlflowClient(tracking_uri=uri)


@contextmanager
def _locked(database: Path) -> Iterator[None]:
    """Holds the SQLite file's lock while MLflow creates its tables: jobs started side by side
    on a new store otherwise all run the migrations, and all but one fail. SQLite's own
    locks are of another kind (fcntl), so this one does not block its readers or writers."""
    import fcntl

    database.parent.mkdir(parents=True, exist_ok=True)
    with open(database, "ab") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def check_server(uri: str) -> None:
    """Fail in seconds: MLflow retries a server that does not answer for minutes."""
    import urllib.error
    import urllib.request

    try:
        urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=SERVER_TIMEOUT_S).close()
    except urllib.error.HTTPError:
        return  # it answered; behind a proxy or a login, /health may be refused
    except OSError as err:  # URLError, timeouts and refused connections
        raise TrackingError(
            f"cannot reach the MLflow tracking server at {uri} "
            f"({getattr(err, 'reason', err)}). Start it (`make mlflow-server` serves "
            "http://127.0.0.1:5000), check the host and port, or drop tracking.uri (and "
            "MLFLOW_TRACKING_URI) to log to mlflow.db at the project root; "
            "tracking.enabled=false turns tracking off."
        ) from None


def experiment_id(client, name: str, uri: str) -> str:
    """The experiment, created if new, and marked as model training: MLflow 3's UI opens an
    unmarked experiment on its GenAI traces page, empty for rps, instead of its runs."""
    from mlflow.exceptions import MlflowException

    found = client.get_experiment_by_name(name)
    if found is None:
        try:
            found = client.get_experiment(
                client.create_experiment(name, artifact_location=artifact_location(uri, name))
            )
        except MlflowException:  # a concurrent job created it first
            found = client.get_experiment_by_name(name)
    if found.tags.get(EXPERIMENT_KIND_TAG) is None:
        client.set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    return found.experiment_id


def ui_link(uri: str, experiment: str, run_id: str | None = None) -> str:
    """Where ``mlflow ui`` (for a local store, at its default address) shows an experiment or
    a run, in its model-training view: MLflow 3.17's UI opens in its GenAI view, which shows
    traces and no runs, unless the link or the user picks the other."""
    base = uri.rstrip("/") if uri.startswith(("http://", "https://")) else UI_ADDRESS
    page = f"experiments/{experiment}" + (f"/runs/{run_id}" if run_id else "")
    return f"{base}/#/{page}?workflowType=machine_learning"
