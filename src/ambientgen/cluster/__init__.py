"""The chain on a Pachyderm cluster: `ambientgen cluster` (cli), deploying specs (pipelines), moving files and
following jobs (transfer). The library API below is what the tests and bench/bench_pach.py call."""

from __future__ import annotations

from .pipelines import (
    BRANCH,
    PachError,
    connect,
    dependency_order,
    deploy,
    downstream_of,
    input_repos,
    load_specs,
    same_spec,
    undeploy,
    with_registry,
)
from .transfer import (
    check_config,
    download_repo,
    get_results,
    job_state,
    latest_input_commit,
    put_config,
    put_files,
    put_mp3,
    report_jobs,
    wait_jobs,
)

__all__ = [
    "BRANCH", "PachError", "check_config", "connect", "dependency_order", "deploy", "download_repo", "downstream_of",
    "get_results", "input_repos", "job_state", "latest_input_commit", "load_specs", "put_config", "put_files",
    "put_mp3", "report_jobs", "same_spec", "undeploy", "wait_jobs", "with_registry",
]

