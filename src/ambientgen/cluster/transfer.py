"""Files to and from the cluster: MP3s and generation requests in, generated MIDI and rendered audio out."""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path, PurePosixPath
from typing import Any

from .. import env
from ..chain import CONFIG_REPO, INPUT_REPOS, MP3_REPO
from ..chain import GENERATED_REPO as MIDI_REPO
from ..chain import RENDERED_REPO as AUDIO_REPO
from ..pfs import pfs_path
from .pipelines import BRANCH, PachError, repo_ref

CONFIG_SUFFIXES = {".json", ".toml"}
TERMINAL_JOB_STATES = {"JOB_SUCCESS", "JOB_FAILURE", "JOB_KILLED", "JOB_UNRUNNABLE"}

log = logging.getLogger("ambientgen.cluster")


def progress_bar(total: int | None, desc: str, unit: str):
    """A tqdm bar that stays silent with AMBIENTGEN_NO_PROGRESS=1 (bytes scaled to kB/MB)."""
    from tqdm import tqdm

    return tqdm(
        total=total, desc=desc, unit=unit, unit_scale=unit == "B", dynamic_ncols=True, leave=False,
        disable=env.no_progress(),
    )


def _find(root: Path, suffixes: set[str]) -> list[Path]:
    return sorted(
        p for p in root.rglob("*")
        if p.is_file() and p.suffix.lower() in suffixes
        and not any(part.startswith(".") for part in p.relative_to(root).parts)
    )


def put_files(client, repo: str, files: list[tuple[Path, str]], description: str) -> str:
    """Upload (local path, PFS path) pairs in one commit to repo@master; return the commit id."""
    from pachyderm_sdk.api import pfs

    total = sum(p.stat().st_size for p, _ in files)
    bar = progress_bar(total, f"upload to {repo}", unit="B")
    commit = client.pfs.start_commit(branch=pfs.Branch.from_uri(f"{repo}@{BRANCH}"), description=description)
    try:
        for local, dest in files:
            with open(local, "rb") as fh:
                client.pfs.put_file_from_file(commit=commit, path=dest, file=fh)
            bar.update(local.stat().st_size)
            log.debug("%s -> %s@%s:%s", local, repo, BRANCH, dest)
    except BaseException as exc:
        # Close the commit as failed so that no pipeline processes a half-uploaded folder.
        client.pfs.finish_commit(commit=commit, error=f"upload interrupted: {exc!r}"[:500])
        raise
    finally:
        bar.close()
    client.pfs.finish_commit(commit=commit)
    client.pfs.wait_commit(commit)
    return commit.id


def put_mp3(client, folder: str | os.PathLike) -> tuple[str, dict[str, str]]:
    """Every MP3 under folder (subfolders kept) in one commit to audio-unprocessed@master.

    Returns (commit id, local relative path -> PFS path).
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise PachError(f"{root}: not a directory")
    mp3s = _find(root, {".mp3"})
    if not mp3s:
        raise PachError(f"{root}: no .mp3 files found")
    mapping: dict[str, str] = {}
    seen: dict[str, str] = {}
    for p in mp3s:
        rel = p.relative_to(root).as_posix()
        dest = pfs_path(rel)
        if dest in seen:
            raise PachError(f"{p}: maps to {dest}, the same PFS path as {seen[dest]}; rename one of them")
        seen[dest] = rel
        mapping[rel] = dest
        if dest != "/" + rel:
            log.warning("%s: stored as %s (PFS paths allow only ASCII, without *?[]{}!()@+^)", p, dest)
    commit_id = put_files(
        client, MP3_REPO, [(root / rel, dest) for rel, dest in mapping.items()], f"put-mp3: {len(mapping)} files"
    )
    return commit_id, mapping


def check_config(path: Path) -> None:
    """Fail early on a generation config that is not valid JSON/TOML."""
    if path.suffix.lower() not in CONFIG_SUFFIXES:
        raise PachError(f"{path}: a generation config must be .json or .toml")
    try:
        if path.suffix.lower() == ".json":
            json.loads(path.read_text())
        else:
            import tomllib

            tomllib.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as exc:
        raise PachError(f"{path}: not valid {path.suffix[1:].upper()}: {exc}") from exc


def put_config(client, paths: list[str | os.PathLike]) -> str:
    """Generation config files in one commit to generation-config@master (at /<file name>)."""
    files = [Path(p).expanduser() for p in paths]
    for p in files:
        if not p.is_file():
            raise PachError(f"{p}: no such file")
        check_config(p)
    dests = [pfs_path(p.name) for p in files]
    if len(set(dests)) != len(dests):
        raise PachError("two config files have the same name")
    return put_files(client, CONFIG_REPO, list(zip(files, dests)), f"put-config: {', '.join(p.name for p in files)}")


# -------------------------------------------------------------------------------------------------- wait


def latest_input_commit(client) -> str | None:
    """Id of the newest head commit among the user input repos (its jobs make up the newest job set)."""
    from pachyderm_sdk.api import pfs

    newest: tuple[Any, str] | None = None
    for repo in INPUT_REPOS:
        branch = pfs.Branch.from_uri(f"{repo}@{BRANCH}")
        if not client.pfs.branch_exists(branch):
            continue
        head = client.pfs.inspect_branch(branch=branch).head
        info = client.pfs.inspect_commit(commit=head)
        key = (info.started.timestamp() if info.started else 0.0, head.id)
        if newest is None or key > newest:
            newest = key
    return newest[1] if newest else None


def job_state(job) -> str:
    """The job's state name (the SDK may hand the enum back as a plain int)."""
    from pachyderm_sdk.api import pps

    try:
        return pps.JobState(int(job.state)).name
    except ValueError:
        return str(job.state)


def job_line(job) -> str:
    state = job_state(job)
    done = job.data_processed + job.data_skipped + job.data_failed + job.data_recovered
    return f"{job.job.pipeline.name:<28} {state:<15} {done}/{job.data_total} datums" + (
        f" ({job.data_failed} failed)" if job.data_failed else ""
    )


def wait_jobs(client, commit_id: str | None = None, timeout: float = 0.0, poll: float = 5.0,
              no_jobs_after: float = 15.0) -> list:
    """Follow the jobs of one commit set (default: the newest input commit) until all finish.

    Shows a progress bar over all datums and a line whenever a job changes state. Returns the final JobInfos;
    raises PachError on timeout (timeout <= 0 waits forever).
    """
    from pachyderm_sdk.api import pps

    commit_id = commit_id or latest_input_commit(client)
    if not commit_id:
        raise PachError(f"nothing to wait for: no commits in {' or '.join(INPUT_REPOS)}")
    start = time.monotonic()
    states: dict[str, str] = {}
    bar = progress_bar(None, f"jobs {commit_id[:8]}", unit="datum")
    try:
        while True:
            jobs = sorted(
                client.pps.inspect_job_set(job_set=pps.JobSet(id=commit_id), wait=False, details=False),
                key=lambda j: j.created.timestamp() if j.created else 0.0,
            )
            total = sum(j.data_total for j in jobs)
            done = sum(j.data_processed + j.data_skipped + j.data_failed + j.data_recovered for j in jobs)
            bar.total = total
            bar.n = done
            bar.refresh()
            for j in jobs:
                state = job_state(j)
                if states.get(j.job.pipeline.name) != state:
                    states[j.job.pipeline.name] = state
                    bar.write(job_line(j))
            if jobs and all(states[j.job.pipeline.name] in TERMINAL_JOB_STATES for j in jobs):
                return jobs
            if not jobs and time.monotonic() - start > max(poll * 3, no_jobs_after):
                raise PachError(f"commit set {commit_id} has no jobs: are the pipelines deployed (make deploy-pipelines)?")
            if timeout > 0 and time.monotonic() - start > timeout:
                raise PachError(f"timed out after {timeout:.0f} s waiting for the jobs of {commit_id}")
            time.sleep(poll)
    finally:
        bar.close()


def report_jobs(jobs: list) -> int:
    """Print a summary; 0 when every job succeeded, else 1 (with how to read the logs)."""
    failed = [j for j in jobs if job_state(j) != "JOB_SUCCESS"]
    for j in jobs:
        print(job_line(j))
    for j in failed:
        print(
            f"{j.job.pipeline.name}: {job_state(j)}: {j.reason or 'see the logs'}\n"
            f"  pachctl logs --job={j.job.pipeline.name}@{j.job.id}",
            file=sys.stderr,
        )
    return 1 if failed else 0


# ------------------------------------------------------------------------------------------- get results


def _safe_local(out: Path, pfs_file_path: str) -> Path:
    rel = PurePosixPath(pfs_file_path.lstrip("/"))
    if not rel.parts or any(part in ("..", "") for part in rel.parts):
        raise PachError(f"refusing to write outside {out}: {pfs_file_path!r}")
    return out.joinpath(*rel.parts)


def download_repo(client, repo: str, out: Path, ref: str = BRANCH) -> list[Path]:
    """Every file of repo@ref into out/ (atomically, one file at a time)."""
    import grpc
    from pachyderm_sdk.api import pfs

    from ..util import atomic_path

    root = pfs.File.from_uri(f"{repo}@{ref}:/")
    try:
        infos = [i for i in client.pfs.walk_file(file=root) if i.file_type == pfs.FileType.FILE]
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        log.warning("%s@%s: nothing there yet (%s)", repo, ref, exc.details())
        return []
    bar = progress_bar(sum(i.size_bytes for i in infos), f"download {repo}", unit="B")
    written: list[Path] = []
    for info in infos:
        dest = _safe_local(out, info.file.path)
        with atomic_path(dest) as tmp, open(tmp, "wb") as fh, client.pfs.pfs_file(file=info.file) as src:
            while chunk := src.read(1 << 20):
                fh.write(chunk)
                bar.update(len(chunk))
        written.append(dest)
    bar.close()
    return written


def get_results(client, out: str | os.PathLike, ref: str = BRANCH) -> dict[str, list[Path]]:
    """Generated MIDI (+ sidecars) into OUT/midi/, rendered audio and piano rolls into OUT/audio/."""
    out = Path(out).expanduser()
    got: dict[str, list[Path]] = {}
    for repo, sub in ((MIDI_REPO, "midi"), (AUDIO_REPO, "audio")):
        if not client.pfs.repo_exists(repo_ref(repo)):
            raise PachError(f"repo {repo} does not exist: deploy the pipelines first (make deploy-pipelines)")
        got[sub] = download_repo(client, repo, out / sub, ref)
    return got
