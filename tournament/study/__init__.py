"""The tournament: an Optuna study over candidates x engine settings x decode settings, measured
like the judge, tracked in MLflow; its board, the winner it writes to winner.json, and the
ledger of judge submissions that calibrates it.

- ``config``: the sweep file (YAML) schema; ``inputs``: candidates and eval questions;
  ``space``: the search space; ``optuna_storage``: where trials live; ``recovery``: heartbeat
  and dead-worker recovery; ``run_repair``: a dead worker's MLflow runs; ``optuna_private``:
  Optuna's private attributes, read in one place; ``sweep``: the trial loop; ``tracking``:
  MLflow; ``board`` / ``winner`` / ``ledger`` / ``calibration``: reading the results;
  ``demo``: the CPU tournament; ``cli``: the commands.
"""
