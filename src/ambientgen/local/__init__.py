"""The embedded, Pachyderm-compatible local runner: a versioned file store plus incremental pipeline jobs.

Library API (what `ambientgen local ...` and the demo use)::

    from ambientgen.local import Store, run_pipelines
    store = Store(".ambientgen-store")
    store.put_files("audio-unprocessed", ["music/"], dest="/")   # one commit
    results = run_pipelines(store, "pipelines")                  # -> list[JobResult]
    store.export("ambient-render", "results/")                   # files of the head commit

Names are imported on first use, so that ``ambientgen --help`` does not load the runner.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "Commit": "records", "FileInfo": "records", "Store": "store", "StoreBusy": "records", "StoreError": "records",
    "PipelineSpec": "specs", "default_pipelines_dir": "specs", "glob_matches": "specs", "load_specs": "specs", "parse_spec": "specs",
    "topo_order": "specs",
    "DatumResult": "datum", "JobResult": "runner", "find_job": "runner", "list_jobs": "runner",
    "read_logs": "runner", "run_pipeline": "runner", "run_pipelines": "runner",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
