#!/usr/bin/env python3
"""Deploy and drive the ambientgen pipelines on a Pachyderm 2.12 cluster (pachyderm-sdk 2.12.2).

    python scripts/pach.py deploy                  # input repos + every pipeline, in dependency order
    python scripts/pach.py put-mp3 ~/Music/sleep    # one commit to audio-unprocessed@master
    python scripts/pach.py put-config my.json       # ask for music (generation-config@master)
    python scripts/pach.py wait                     # follow the jobs of the newest input commit
    python scripts/pach.py get-results results/     # generated MIDI + rendered audio
    python scripts/pach.py undeploy [--purge]

The connection comes from --host/--port, else from the pachctl config (``~/.pachyderm/config.json`` or
$PACH_CONFIG, what ``pachctl connect`` writes), else localhost:30650 (``pachctl port-forward``).
"""

from __future__ import annotations

import argparse
import graphlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ambientgen.chain import CONFIG_REPO, INPUT_REPOS, MP3_REPO
from ambientgen.chain import GENERATED_REPO as MIDI_REPO
from ambientgen.chain import RENDERED_REPO as AUDIO_REPO
from ambientgen.pfs import pfs_path

REPO_ROOT = Path(__file__).resolve().parents[1]
PIPELINES_DIR = REPO_ROOT / "pipelines"
BRANCH = "master"
IMAGE_PREFIX = "ambientgen/"  # the specs' transform.image is ambientgen/<stage>:<version>
CONFIG_SUFFIXES = {".json", ".toml"}
TERMINAL_JOB_STATES = {"JOB_SUCCESS", "JOB_FAILURE", "JOB_KILLED", "JOB_UNRUNNABLE"}

log = logging.getLogger("ambientgen.pach")


class PachError(Exception):
    """A failure with a message for the user (no traceback)."""


# ----------------------------------------------------------------------------------------------- specs


def load_specs(pipelines_dir: str | os.PathLike = PIPELINES_DIR) -> dict[str, dict]:
    """Pipeline name -> spec, for every pipelines/*.json."""
    specs: dict[str, dict] = {}
    files = sorted(Path(pipelines_dir).glob("*.json"))
    if not files:
        raise PachError(f"{pipelines_dir}: no pipeline specs (*.json)")
    for path in files:
        try:
            spec = json.loads(path.read_text())
            name = spec["pipeline"]["name"]
        except (ValueError, KeyError, TypeError) as exc:
            raise PachError(f"{path}: not a pipeline spec: {exc}") from exc
        if name in specs:
            raise PachError(f"{path}: pipeline {name!r} is defined twice")
        specs[name] = spec
    return specs


def input_repos(node: dict | None) -> set[str]:
    """Every repo an input tree reads (pfs inputs inside cross/union/join/group)."""
    if not node:
        return set()
    found: set[str] = set()
    if "pfs" in node:
        found.add(node["pfs"]["repo"])
    for key in ("cross", "union", "join", "group"):
        for child in node.get(key, []):
            found |= input_repos(child)
    return found


def dependency_order(specs: dict[str, dict]) -> list[str]:
    """Pipelines ordered so that each comes after the pipelines whose output it reads (CycleError on a cycle)."""
    graph = {name: {r for r in input_repos(spec.get("input")) if r in specs} for name, spec in specs.items()}
    sorter = graphlib.TopologicalSorter(graph)
    sorter.prepare()
    order: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready())
        order.extend(ready)
        sorter.done(*ready)
    return order


def downstream_of(specs: dict[str, dict], repos: Iterable[str]) -> set[str]:
    """Pipelines that (transitively) read any of the repos."""
    reached: set[str] = set()
    frontier = set(repos)
    while frontier:
        new = {n for n, s in specs.items() if n not in reached and input_repos(s.get("input")) & frontier}
        reached |= new
        frontier = new
    return reached


def with_registry(spec: dict, registry: str | None) -> dict:
    """The spec with transform.image ambientgen/<stage>:<tag> moved to <registry>/<stage>:<tag>."""
    if not registry:
        return spec
    image = spec["transform"]["image"]
    if not image.startswith(IMAGE_PREFIX):
        return spec
    out = json.loads(json.dumps(spec))
    out["transform"]["image"] = registry.rstrip("/") + "/" + image[len(IMAGE_PREFIX):]
    return out


def same_spec(a: dict | str, b: dict | str) -> bool:
    """Whether two pipeline specs mean the same request (camelCase or snake_case, int64 as string or number)."""
    from pachyderm_sdk.api import pps

    def norm(spec: dict | str) -> dict:
        text = spec if isinstance(spec, str) else json.dumps(spec)
        return pps.CreatePipelineRequest().from_json(text).to_dict()

    try:
        return norm(a) == norm(b)
    except (ValueError, TypeError, KeyError):
        return False


# ---------------------------------------------------------------------------------------------- client


def connect(host: str | None = None, port: int | None = None):
    """A pachyderm_sdk Client: --host/--port, else the pachctl config, else localhost:30650."""
    from pachyderm_sdk import Client
    from pachyderm_sdk.constants import DEFAULT_CONFIG, DEFAULT_HOST, DEFAULT_PORT

    if host or port:
        return Client(host=host or DEFAULT_HOST, port=port or DEFAULT_PORT)
    if Path(DEFAULT_CONFIG).expanduser().is_file():
        return Client.from_config(DEFAULT_CONFIG)
    return Client(port=port or DEFAULT_PORT)


def _pipeline(name: str):
    from pachyderm_sdk.api import pps

    return pps.Pipeline(name=name)


def _repo(name: str):
    from pachyderm_sdk.api import pfs

    return pfs.Repo(name=name)


# ---------------------------------------------------------------------------------------------- deploy


@dataclass
class DeployResult:
    repos_created: list[str] = field(default_factory=list)
    actions: dict[str, str] = field(default_factory=dict)  # pipeline -> created | updated | unchanged | reprocessed


def deploy(
    client, pipelines_dir: str | os.PathLike = PIPELINES_DIR, reprocess: bool = False, registry: str | None = None
) -> DeployResult:
    """Create the user input repos, then create or update every pipeline in dependency order (idempotent).

    An unchanged pipeline is left alone; a changed one is updated and keeps its salt, so datums it already
    processed are skipped; ``reprocess`` gives every pipeline a new salt so all datums run again.
    """
    specs = {n: with_registry(s, registry) for n, s in load_specs(pipelines_dir).items()}
    order = dependency_order(specs)
    result = DeployResult()
    needed = set().union(*(input_repos(s.get("input")) for s in specs.values())) - set(specs)
    unknown = needed - set(INPUT_REPOS)
    if unknown:
        raise PachError(f"pipelines read repos that nothing creates: {sorted(unknown)}")
    for name in INPUT_REPOS:
        if not client.pfs.repo_exists(_repo(name)):
            client.pfs.create_repo(repo=_repo(name), description="ambientgen user input")
            result.repos_created.append(name)
            log.info("created repo %s", name)
    for name in order:
        spec = specs[name]
        exists = client.pps.pipeline_exists(_pipeline(name))
        if exists and not reprocess:
            info = client.pps.inspect_pipeline(pipeline=_pipeline(name), details=True)
            if info.user_spec_json and same_spec(info.user_spec_json, spec):
                result.actions[name] = "unchanged"
                log.info("pipeline %s unchanged", name)
                continue
        client.pps.create_pipeline_v2(
            create_pipeline_request_json=json.dumps(spec), update=exists, reprocess=reprocess and exists
        )
        action = ("reprocessed" if reprocess else "updated") if exists else "created"
        result.actions[name] = action
        log.info("pipeline %s %s (%s)", name, action, spec["transform"]["image"])
    return result


# --------------------------------------------------------------------------------------------- put files


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
    bar = _bar(total, f"upload to {repo}", unit="B")
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
    bar = _bar(None, f"jobs {commit_id[:8]}", unit="datum")
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

    from ambientgen.util import atomic_path

    root = pfs.File.from_uri(f"{repo}@{ref}:/")
    try:
        infos = [i for i in client.pfs.walk_file(file=root) if i.file_type == pfs.FileType.FILE]
    except grpc.RpcError as exc:
        if exc.code() != grpc.StatusCode.NOT_FOUND:
            raise
        log.warning("%s@%s: nothing there yet (%s)", repo, ref, exc.details())
        return []
    bar = _bar(sum(i.size_bytes for i in infos), f"download {repo}", unit="B")
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
        if not client.pfs.repo_exists(_repo(repo)):
            raise PachError(f"repo {repo} does not exist: deploy the pipelines first (make deploy-pipelines)")
        got[sub] = download_repo(client, repo, out / sub, ref)
    return got


# ---------------------------------------------------------------------------------------------- undeploy


def undeploy(client, pipelines_dir: str | os.PathLike = PIPELINES_DIR, purge: bool = False,
             keep_outputs: bool = False) -> list[str]:
    """Delete the pipelines, downstream first; purge also deletes the input repos (your MP3s and configs).

    Output repos go with their pipelines (their content is derived and is made again by a deploy), unless
    keep_outputs. Returns what was deleted.
    """
    specs = load_specs(pipelines_dir)
    deleted: list[str] = []
    for name in reversed(dependency_order(specs)):
        if client.pps.pipeline_exists(_pipeline(name)):
            client.pps.delete_pipeline(pipeline=_pipeline(name), keep_repo=keep_outputs and not purge)
            deleted.append(name)
            log.info("deleted pipeline %s", name)
    if purge:
        for name in INPUT_REPOS:
            if client.pfs.repo_exists(_repo(name)):
                client.pfs.delete_repo(repo=_repo(name), force=True)
                deleted.append(name)
                log.info("deleted repo %s", name)
    return deleted


# --------------------------------------------------------------------------------------------------- CLI


def _bar(total: int | None, desc: str, unit: str):
    from tqdm import tqdm

    return tqdm(
        total=total, desc=desc, unit=unit, unit_scale=unit == "B", dynamic_ncols=True, leave=False,
        disable=os.environ.get("AMBIENTGEN_NO_PROGRESS") == "1",
    )


def cmd_deploy(args, client) -> int:
    res = deploy(client, args.pipelines_dir, reprocess=args.reprocess, registry=args.registry)
    for name in res.repos_created:
        print(f"repo {name}: created")
    for name, action in res.actions.items():
        print(f"pipeline {name}: {action}")
    return 0


def cmd_put_mp3(args, client) -> int:
    commit_id, mapping = put_mp3(client, args.dir)
    print(f"{len(mapping)} MP3 files -> {MP3_REPO}@{BRANCH} commit {commit_id}")
    if args.wait:
        return report_jobs(wait_jobs(client, commit_id, timeout=args.timeout, poll=args.poll,
                                     no_jobs_after=args.no_jobs_after))
    return 0


def cmd_put_config(args, client) -> int:
    commit_id = put_config(client, args.files)
    print(f"{len(args.files)} config file(s) -> {CONFIG_REPO}@{BRANCH} commit {commit_id}")
    if args.wait:
        return report_jobs(wait_jobs(client, commit_id, timeout=args.timeout, poll=args.poll,
                                     no_jobs_after=args.no_jobs_after))
    return 0


def cmd_wait(args, client) -> int:
    return report_jobs(wait_jobs(client, args.commit, timeout=args.timeout, poll=args.poll,
                                 no_jobs_after=args.no_jobs_after))


def cmd_get_results(args, client) -> int:
    rc = 0
    if not args.no_wait:
        rc = report_jobs(wait_jobs(client, args.commit, timeout=args.timeout, poll=args.poll,
                                   no_jobs_after=args.no_jobs_after))
    got = get_results(client, args.out)
    for sub, paths in got.items():
        print(f"{len(paths)} files -> {Path(args.out) / sub}")
    return rc


def cmd_undeploy(args, client) -> int:
    deleted = undeploy(client, args.pipelines_dir, purge=args.purge, keep_outputs=args.keep_outputs)
    print("deleted: " + (", ".join(deleted) if deleted else "nothing (not deployed)"))
    return 0


def build_parser() -> argparse.ArgumentParser:
    conn = argparse.ArgumentParser(add_help=False)
    conn.add_argument("--host", default=os.environ.get("PACHD_HOST"),
                      help="pachd host (default: the pachctl config, else localhost)")
    conn.add_argument("--port", type=int, default=int(os.environ.get("PACHD_PORT", "0")) or None,
                      help="pachd gRPC port (default 30650)")
    conn.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument("--timeout", type=float, default=0.0, help="give up after this many seconds (default: never)")
    waiting.add_argument("--poll", type=float, default=5.0, help="seconds between status checks (default 5)")
    waiting.add_argument("--no-jobs-after", type=float, default=15.0,
                         help="seconds without any job before deciding the commit started none (default 15)")
    specs = argparse.ArgumentParser(add_help=False)
    specs.add_argument("--pipelines-dir", default=str(PIPELINES_DIR), help="folder of pipeline specs (*.json)")

    parser = argparse.ArgumentParser(
        prog="pach.py",
        description="Deploy and drive the ambientgen pipelines on a Pachyderm cluster.",
        epilog="Examples:\n  python scripts/pach.py deploy\n  python scripts/pach.py put-mp3 ~/Music/sleep --wait\n"
        "  python scripts/pach.py get-results results/\n  python scripts/pach.py COMMAND --help\n\n"
        "Connection options (--host, --port) go after the command.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, func, help_: str, examples: str, parents: list) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[conn, *parents], help=help_, description=help_,
                           epilog="Examples:\n" + examples, formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    p = add("deploy", cmd_deploy, "create the input repos and create/update every pipeline (idempotent)",
            "  python scripts/pach.py deploy\n  python scripts/pach.py deploy --reprocess\n"
            "  python scripts/pach.py deploy --registry ghcr.io/me --host pachd.example.org", [specs])
    p.add_argument("--reprocess", action="store_true", help="run every datum again (new pipeline salt)")
    p.add_argument("--registry", default=os.environ.get("AMBIENTGEN_REGISTRY"),
                   help="image registry: ambientgen/<stage>:V becomes REGISTRY/<stage>:V "
                   "(default $AMBIENTGEN_REGISTRY, else the specs' images as written)")

    p = add("put-mp3", cmd_put_mp3, f"put every MP3 of a folder (and its subfolders) in one commit to {MP3_REPO}",
            "  python scripts/pach.py put-mp3 ~/Music/sleep\n  python scripts/pach.py put-mp3 ~/Music/sleep --wait",
            [waiting])
    p.add_argument("dir", help="folder of MP3 files")
    p.add_argument("--wait", action="store_true", help="then follow the jobs it started")

    p = add("put-config", cmd_put_config, f"put generation config files (JSON/TOML) in one commit to {CONFIG_REPO}",
            "  python scripts/pach.py put-config night.json\n  python scripts/pach.py put-config a.toml b.json --wait",
            [waiting])
    p.add_argument("files", nargs="+", help="config files (.json or .toml)")
    p.add_argument("--wait", action="store_true", help="then follow the jobs it started")

    p = add("wait", cmd_wait, "follow the jobs of a commit set until they finish (exit 1 if one failed)",
            "  python scripts/pach.py wait\n  python scripts/pach.py wait --commit 4f1c...e2 --timeout 3600",
            [waiting])
    p.add_argument("--commit", help="commit/job-set id (default: the newest commit to an input repo)")

    p = add("get-results", cmd_get_results, "wait for the jobs, then download generated MIDI and rendered audio",
            "  python scripts/pach.py get-results results/\n  python scripts/pach.py get-results results/ --no-wait",
            [waiting])
    p.add_argument("out", help="local folder: OUT/midi/ and OUT/audio/")
    p.add_argument("--no-wait", action="store_true", help="download what is there now")
    p.add_argument("--commit", help="commit/job-set id to wait for (default: the newest input commit)")

    p = add("undeploy", cmd_undeploy, "delete the pipelines (and their output repos); --purge also the input repos",
            "  python scripts/pach.py undeploy\n  python scripts/pach.py undeploy --purge", [specs])
    p.add_argument("--purge", action="store_true", help=f"also delete {' and '.join(INPUT_REPOS)} (your uploads)")
    p.add_argument("--keep-outputs", action="store_true", help="keep the pipelines' output repos")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(levelname)-7s %(message)s", stream=sys.stderr)
    import grpc

    try:
        client = connect(args.host, args.port)
        return int(args.func(args, client) or 0)
    except PachError as exc:
        print(f"pach.py {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except graphlib.CycleError as exc:
        print(f"pach.py {args.command}: error: the pipelines form a cycle: {exc.args[1]}", file=sys.stderr)
        return 1
    except ConnectionError as exc:
        print(f"pach.py {args.command}: error: {exc}\n  is pachd reachable? try `pachctl port-forward` "
              "or pass --host/--port", file=sys.stderr)
        return 1
    except grpc.RpcError as exc:
        print(f"pach.py {args.command}: error: pachd said {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
