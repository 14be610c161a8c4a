"""The Optuna sweeper of ``hparams_search=optuna``: Hydra's, ending like any other sweep when
every trial failed.

Hydra's Optuna sweeper asks the study for its best trial at the end, and Optuna raises when
no trial finished: a bad value fixed on the command line would end the search in a
traceback, before the sweep's summary is written. Here it ends in that summary and exit
status 1, as a sweep whose every job failed does. Hydra instantiates sweepers only from the
``hydra_plugins`` namespace, hence this module's place.
"""

from __future__ import annotations

import logging

from hydra_plugins.hydra_optuna_sweeper import optuna_sweeper

log = logging.getLogger(__name__)

NO_TRIAL_FINISHED = "No trials are completed yet"  # what optuna 2.10 raises


class OptunaSweeper(optuna_sweeper.OptunaSweeper):
    def sweep(self, arguments: list[str]) -> None:
        try:
            super().sweep(arguments)
        except ValueError as err:
            if NO_TRIAL_FINISHED not in str(err):
                raise
            log.error("no trial finished, so the search has no best parameters")
