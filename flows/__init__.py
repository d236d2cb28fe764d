"""The Prefect layer: orchestrates the DVC stages (never re-implements them).

- `flows.pipeline`: the `pipeline` flow and its command line.
- `flows.study`: the `study` flow (the lab's hyperparameter study as DVC experiments), a package:
  its plan, DVC's local queue, the work pool, the results, the flow and its command line.
- `flows.dvc_adapter`: the one adapter through which both flows ask DVC questions and run DVC commands.
- `flows.deployments`: the deployments (`nightly`, `on-demand`, `study`), rendered into prefect.yaml.
- `flows.serve`: serves those deployments in one process.

Imports point down only: flows/ uses stages/ (stages.core.tracking for what a stage process reports,
stages.core.params, io, reporting), never the reverse.
"""
