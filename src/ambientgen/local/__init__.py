"""The embedded, Pachyderm-compatible local runner: a versioned file store plus incremental pipeline jobs.

Library API (what `ambientgen local ...` and the demo use)::

    from ambientgen.local import Store, run_pipelines
    store = Store(".ambientgen-store")
    store.put_files("audio-unprocessed", ["music/"], dest="/")   # one commit
    results = run_pipelines(store, "pipelines")                  # -> list[JobResult]
    store.export("ambient-render", "results/")                   # files of the head commit
"""

from __future__ import annotations

from .runner import DatumResult, JobResult, find_job, list_jobs, read_logs, run_pipeline, run_pipelines
from .specs import PipelineSpec, glob_matches, load_specs, parse_spec, topo_order
from .store import Commit, FileInfo, Store, StoreBusy, StoreError

__all__ = [
    "Commit", "DatumResult", "FileInfo", "JobResult", "PipelineSpec", "Store", "StoreBusy", "StoreError",
    "find_job", "glob_matches", "list_jobs", "load_specs", "parse_spec", "read_logs", "run_pipeline",
    "run_pipelines", "topo_order",
]
