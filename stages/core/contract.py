"""Names the stages share with the Prefect flows; no heavy imports, so the flows load it cheaply."""

MIRROR_ENV = "DNNLAB_DATA_MIRROR"  # a folder laid out like ../shared/data: read instead of downloading
FORCE_DOWNLOAD_ENV = "DNNLAB_FORCE_DOWNLOAD"  # "1": ignore the download caches (the flow's force_fetch)
NETWORK_EXIT_CODE = 75  # EX_TEMPFAIL: a download failed; the Prefect flow retries fetches that end with it
STAGE_REPORT_ENV = "DNNLAB_STAGE_REPORT"  # a file: run_stage appends one JSON line {stage, experiment, exit_code, line}
PROGRESS_ARTIFACT_ENV = "DNNLAB_PROGRESS_ARTIFACT"  # a Prefect progress artifact's id: the training stage updates it
EXPORT_SUFFIX = ".tflite"  # LiteRT: what train exports (stages/training/export.py), evaluate and serving load
SEED_EXPORT_PREFIX = "seed-"  # train's folder of every seed's network: seed-42.tflite, seed-43.tflite, ...
METRICS_DOCUMENT = "reports/metrics/{task}.json"  # evaluate's metrics over the seeds (dvc.yaml); the flows read it back
