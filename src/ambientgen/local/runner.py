"""Jobs and datums: bring every pipeline's output repo up to date with its inputs, like Pachyderm does.

One job per pipeline whose inputs moved on (or whose spec changed). Each datum runs the spec's
``transform.cmd`` in a staging folder standing in for ``/pfs``; the outputs of all datums merge into one
output commit, published only when every datum succeeded. A datum already processed with the same
hash (its data plus the pipeline salt) is skipped and its earlier output reused.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..util import progress
from .datum import DatumResult, datum_files, datum_record_path, log_path, run_datum
from .records import StoreError, crash_point, new_id, now_iso, short
from .specs import Datum, PipelineSpec, datums_for, load_specs, topo_order
from .store import Store

log = logging.getLogger(__name__)

@dataclass
class JobResult:
    pipeline: str
    state: str  # JOB_SUCCESS | JOB_FAILURE | UP_TO_DATE | WAITING
    id: str | None = None
    output_commit: str | None = None  # the published commit (the current head when nothing was published)
    input_commits: dict[str, str] = field(default_factory=dict)
    processed: int = 0
    skipped: int = 0
    failed: int = 0
    total: int = 0
    seconds: float = 0.0
    error: str = ""
    started: str = ""
    finished: str = ""
    datums: list[DatumResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.state in ("JOB_SUCCESS", "UP_TO_DATE", "WAITING")

    def summary(self) -> str:
        if self.state == "UP_TO_DATE":
            return f"{self.pipeline}: up to date (commit {short(self.output_commit)})"
        if self.state == "WAITING":
            return f"{self.pipeline}: waiting: {self.error}"
        s = (f"{self.pipeline}: job {short(self.id)} {self.state.removeprefix('JOB_').lower()}: "
             f"{self.total} datums, {self.processed} processed, {self.skipped} skipped, {self.failed} failed "
             f"in {self.seconds:.1f} s")
        if self.state == "JOB_SUCCESS":
            s += f" -> commit {short(self.output_commit)}"
        elif self.error:
            s += f"; {self.error}"
        return s

    def to_json(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------- records
def job_path(store: Store, pipeline: str, job_id: str) -> Path:
    return store.root / "jobs" / pipeline / f"{job_id}.json"


def list_jobs(store: Store, pipeline: str | None = None) -> list[dict]:
    """Job records, newest first."""
    base = store.root / "jobs"
    pattern = f"{pipeline}/*.json" if pipeline else "*/*.json"
    jobs = []
    for f in base.glob(pattern) if base.exists() else []:
        with contextlib.suppress(OSError, ValueError):
            jobs.append(json.loads(f.read_text()))
    return sorted(jobs, key=lambda j: j.get("started", ""), reverse=True)


def find_job(store: Store, ref: str) -> dict:
    """A job by ``PIPELINE@JOB``, a job id or a unique prefix."""
    pipeline, _, jid = ref.rpartition("@")
    if not re.fullmatch(r"[0-9a-f]{4,32}", jid):
        raise StoreError(f"invalid job id {jid!r}")
    found = [j for j in list_jobs(store, pipeline or None) if j.get("id", "").startswith(jid)]
    if not found:
        raise StoreError(f"job {ref} not found")
    if len(found) > 1:
        raise StoreError(f"job id prefix {jid!r} is ambiguous")
    return found[0]


def finish_interrupted_jobs(store: Store) -> None:
    """A job killed after its commit was published is a success; the store's recovery marked it killed."""
    for job in list_jobs(store):
        if job.get("state") == "JOB_KILLED" and job.get("output_commit_pending"):
            with contextlib.suppress(StoreError):
                if store.head(job["pipeline"]) == job["output_commit_pending"]:
                    job["state"] = "JOB_SUCCESS"
                    job["output_commit"] = job.pop("output_commit_pending")
                    job["reason"] = "the commit was published; the job record was completed by the next run"
                    store.write_json_atomic(job_path(store, job["pipeline"], job["id"]), job)


# ---------------------------------------------------------------------- running
def run_pipelines(store: Store, pipelines_dir: str | os.PathLike, only: list[str] | None = None,
                  parallelism: int = 1, wait: bool = False) -> list[JobResult]:
    """Bring the output repos of the specs in pipelines_dir up to date, in dependency order.

    ``only`` limits the run to those pipelines (still in dependency order; their inputs are used as
    they are). A failed job publishes nothing: its output repo keeps its last good commit, and
    pipelines downstream of it run on that commit.
    """
    specs = load_specs(pipelines_dir)
    order = topo_order(specs)
    taken = [n for n in order if store.repo_exists(n) and not store.repo_info(n).get("pipeline")]
    if taken:
        raise StoreError(f"pipeline(s) {', '.join(taken)} named like an input repo: a pipeline would replace that "
                         "repo's files with its output; rename the pipeline", pipelines_dir)
    if only:
        unknown = sorted(set(only) - set(specs))
        if unknown:
            raise StoreError(f"no such pipeline(s): {', '.join(unknown)} (known: {', '.join(order)})",
                             pipelines_dir)
        order = [n for n in order if n in only]
    results = []
    with store.writer(wait=wait, what="run"):
        finish_interrupted_jobs(store)
        for name in order:
            res = run_pipeline(store, specs[name], parallelism=parallelism)
            log.info("%s", res.summary())
            results.append(res)
    return results


def run_pipeline(store: Store, spec: PipelineSpec, parallelism: int = 1) -> JobResult:
    """Run one pipeline's job if its inputs or spec changed since its output head commit."""
    started = time.monotonic()
    store.create_repo(spec.name, description=f"output of pipeline {spec.name}", pipeline=spec.name, exist_ok=True)
    heads: dict[str, str] = {}
    for repo in spec.input_repos:
        head = store.head(repo) if store.repo_exists(repo) else None
        if not head:
            return JobResult(spec.name, "WAITING", error=f"input repo {repo!r} has no commits yet")
        heads[repo] = head
    out_head = store.head(spec.name)
    if out_head:
        c = store.get_commit(spec.name, out_head)
        if c.salt == spec.salt and {p["repo"]: p["commit"] for p in c.provenance} == heads:
            return JobResult(spec.name, "UP_TO_DATE", output_commit=out_head, input_commits=heads)

    job = JobResult(spec.name, "JOB_RUNNING", id=new_id(), input_commits=heads,
                    started=now_iso())
    out_commit_id = new_id()
    record = {"id": job.id, "pipeline": spec.name, "state": "JOB_RUNNING", "started": job.started,
              "input_commits": heads, "salt": spec.salt, "output_commit_pending": out_commit_id,
              "spec": str(spec.path) if spec.path else None}
    jpath = job_path(store, spec.name, job.id)
    store.write_json_atomic(jpath, record)

    try:
        datums = datums_for(spec.spec["input"], heads, store)
    except StoreError as exc:
        datums = []
        job.error = f"cannot list datums: {exc}"
    job.total = len(datums)
    todo: list[Datum] = []
    results: dict[str, DatumResult] = {}
    for d in datums:
        h = d.hash(spec.salt)
        if h in results:
            continue  # the same datum twice (e.g. a union of one input with itself)
        rec = _load_datum_record(store, spec.name, h) if spec.skip_datums else None
        if rec is not None:
            results[h] = DatumResult(d.id, h, "skipped", datum_files(d), files=rec["files"], job=rec["job"])
        else:
            results[h] = DatumResult(d.id, h, "pending", datum_files(d))
            todo.append(d)
    job.total = len(results)

    def one(d: Datum) -> DatumResult:
        return run_datum(store, spec, d, job.id or "", out_commit_id)

    try:
        _run_datums(spec, todo, results, one, parallelism)
    except KeyboardInterrupt:
        record.update(state="JOB_KILLED", finished=now_iso(), reason="interrupted; nothing was published")
        record.pop("output_commit_pending", None)
        store.write_json_atomic(jpath, record)
        raise

    job.datums = list(results.values())
    job.processed = sum(r.state == "success" for r in job.datums)
    job.skipped = sum(r.state == "skipped" for r in job.datums)
    job.failed = sum(r.state == "failed" for r in job.datums)
    for r in job.datums:
        if r.state == "failed":
            log.error("%s: datum %s (%s) failed after %d tries: %s", spec.name, short(r.id),
                      ", ".join(r.inputs[:5]) + (" ..." if len(r.inputs) > 5 else ""), r.tries, r.error)

    merged: dict[str, dict] = {}
    if not job.failed and not job.error:
        owner: dict[str, DatumResult] = {}
        for r in sorted(job.datums, key=lambda r: r.id):
            for path, entry in r.files.items():
                if path in merged:
                    job.error = (f"datums {short(owner[path].id)} ({', '.join(owner[path].inputs[:2])}) and "
                                 f"{short(r.id)} ({', '.join(r.inputs[:2])}) both wrote /{path}")
                    break
                merged[path] = entry
                owner[path] = r
            if job.error:
                break
        for path in merged if not job.error else ():
            parent = path.rpartition("/")[0]
            while parent:
                if parent in merged:
                    job.error = (f"datum {short(owner[parent].id)} wrote the file /{parent} and datum "
                                 f"{short(owner[path].id)} wrote /{path} inside it")
                    break
                parent = parent.rpartition("/")[0]
            if job.error:
                break
    crash_point("merge")
    if job.failed or job.error:
        job.state = "JOB_FAILURE"
        if not job.error:
            job.error = f"{job.failed} datum(s) failed; the output repo keeps its previous commit"
        job.output_commit = store.head(spec.name)
    else:
        commit = store.new_commit(spec.name, merged, id=out_commit_id, origin="AUTO", job=job.id,
                                  pipeline=spec.name, salt=spec.salt,
                                  provenance=[{"repo": r, "commit": heads[r]} for r in spec.input_repos],
                                  message=f"job {job.id}")
        store.publish_commit(commit)
        job.state = "JOB_SUCCESS"
        job.output_commit = commit.id
    crash_point("job-record")
    job.seconds = time.monotonic() - started
    job.finished = now_iso()
    record.update(job.to_json())
    record.pop("output_commit_pending", None)
    store.write_json_atomic(jpath, record)
    with contextlib.suppress(OSError):
        shutil.rmtree(store.tmp_dir() / f"job-{job.id}", ignore_errors=True)
    return job


def _run_datums(spec: PipelineSpec, todo: list[Datum], results: dict[str, DatumResult], one, parallelism: int) -> None:
    if todo:
        log.info("%s: %d datums to process, %d skipped", spec.name, len(todo), len(results) - len(todo))
    if parallelism > 1 and len(todo) > 1:
        with ThreadPoolExecutor(max_workers=parallelism) as pool:
            futures = [pool.submit(one, d) for d in todo]
            for fut in progress(as_completed(futures), spec.name, total=len(todo), unit="datum"):
                r = fut.result()
                results[r.hash] = r
    else:
        for d in progress(todo, spec.name, total=len(todo), unit="datum"):
            r = one(d)
            results[r.hash] = r


def _load_datum_record(store: Store, pipeline: str, datum_hash: str) -> dict | None:
    try:
        rec = json.loads(datum_record_path(store, pipeline, datum_hash).read_text())
    except (OSError, ValueError):
        return None
    if not all(store.blobs.has(e["hash"]) for e in rec.get("files", {}).values()):
        return None
    return rec


def read_logs(store: Store, pipeline: str, job: str | None = None, datum: str | None = None) -> list[tuple[str, str]]:
    """(datum id, log text) of a job's datums (the pipeline's latest job by default), optionally one datum."""
    jobs = list_jobs(store, pipeline)
    if job:
        rec = find_job(store, f"{pipeline}@{job}")
    elif jobs:
        rec = jobs[0]
    else:
        raise StoreError(f"pipeline {pipeline!r} has no jobs yet")
    out = []
    for dr in rec.get("datums", []):
        if datum and not dr["id"].startswith(datum):
            continue
        src_job = dr.get("job") or rec["id"]
        p = log_path(store, pipeline, src_job, dr["id"])
        try:
            text = p.read_text(errors="replace")
        except OSError:
            text = "(no log kept)\n"
        if dr.get("state") == "skipped":
            text = f"(skipped in job {short(rec['id'])}; log from job {short(src_job)})\n" + text
        out.append((dr["id"], text))
    if datum and not out:
        raise StoreError(f"datum {datum!r} not found in job {short(rec['id'])} of {pipeline}")
    return out
