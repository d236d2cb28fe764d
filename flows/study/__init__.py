"""The `study` flow: the lab's hyperparameter study as DVC experiments, compared in one report.

    python -m flows.study [--only NAME]... [--jobs N] [--json]
    python -m flows.study --pool NAME [--attempts N] [--only NAME]... [--json]

Each variation in params.yaml's `study:` section becomes a DVC experiment named after it:
the flow checks every entry first (nothing is queued if one is bad), brings the workspace's
pipeline up to date (the `pipeline` flow; nothing runs when it is built) and checks that git
tracks its results (an experiment starts from git's view of the workspace), removes this commit's
earlier experiments of the same names (a re-run replaces them), queues each variation with
`dvc exp run --queue -n NAME -S key=value evaluate` (the evaluate stages and what they need;
not the lab's report.html), runs the queue (`dvc exp run --run-all -j N`:
N Celery workers, each experiment in its own temporary copy, the workspace untouched), reads
the results back with `dvc exp show --json` (params, metrics) and from each experiment's commit
(learning curve, predictions), and writes `reports/study.html`.

With `--pool NAME` the variations run on a Prefect process work pool instead of DVC's queue, on
any machine with a worker (`prefect worker start --pool NAME`): each is a run of the `variation`
flow (on_pool.py), which trains it in its own clone of the git remote at the study's commit and
pushes its data and its experiment; the study waits for them (flows/pool.py: resubmitting the runs
of dead workers), `dvc exp pull`s them and writes the same report. Variations whose experiment is
already at the git remote are reused, not trained; a variation that fails is one line of the
result while the others finish.

The package, one module per concern: `plan` (checking params.yaml's study and choosing the
variations), `local_queue` (DVC's queue), `on_pool` (the work pool and its `variation` flow),
`results` (reading the experiments back, the report and the artifacts), `flow` (the `study` flow
and its command line; `python -m flows.study` runs it).
"""
