"""The tournament: an Optuna study over candidates x engine settings x decode settings, measured
like the judge, tracked in MLflow; its board, the winner it writes to winner.json, and the
ledger of judge submissions that calibrates it.

- ``config``: the sweep file (YAML) schema; ``inputs``: candidates and eval questions;
  ``space``: the search space; ``storage``: Optuna storage and dead-worker recovery;
  ``sweep``: the trial loop; ``tracking``: MLflow; ``board`` / ``winner`` / ``ledger`` /
  ``calibration``: reading the results; ``demo``: the CPU tournament; ``cli``: the commands.
"""
