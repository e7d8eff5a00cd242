"""One datum, as a Pachyderm worker runs it: its input files staged in a folder standing in for ``/pfs``, the
spec's ``transform.cmd`` run there (retried ``datumTries`` times, ``datumTimeout`` enforced, its process group
ended with it), its ``/pfs/out`` stored as blobs, and its log kept."""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..env import CRASH_ENV
from ..pfs import refused
from .records import StoreError, clean_repo_path, crash_point, now_iso, safe_join, short
from .specs import Datum, PipelineSpec
from .store import Store

ERROR_TAIL_LINES = 8
log = logging.getLogger(__name__)
_PFS_RE = re.compile(r"(?<![\w.~/-])/pfs(?=/|$|[\s\"';:,)|&<>])")


@dataclass
class DatumResult:
    id: str
    hash: str
    state: str  # success | skipped | failed
    inputs: list[str]  # "repo:/path" of every file in the datum
    files: dict[str, dict] = field(default_factory=dict)  # output path -> {hash, size}
    error: str = ""
    tries: int = 0
    seconds: float = 0.0
    job: str = ""  # the job that produced the output (an earlier one for a skipped datum)


def log_path(store: Store, pipeline: str, job_id: str, datum_id: str) -> Path:
    return store.root / "logs" / pipeline / job_id / f"{datum_id}.log"


def datum_record_path(store: Store, pipeline: str, datum_hash: str) -> Path:
    return store.root / "datums" / pipeline / f"{datum_hash}.json"


def datum_files(d: Datum) -> list[str]:
    """Every input file of a datum as repo:/path (the datum's folder when it matched no file)."""
    return [f"{di.repo}:/{f}" for di in d.inputs for f in sorted(di.files)] or [
        f"{di.repo}:/{di.path}" for di in d.inputs]


def rewrite_pfs(text: str, pfs_root: Path) -> str:
    """Point every /pfs/... path in a command argument (or stdin line) at the datum's staging folder."""
    return _PFS_RE.sub(lambda _m: str(pfs_root), text)


def transform_command(spec: PipelineSpec, pfs_root: Path) -> list[str]:
    cmd = [rewrite_pfs(a, pfs_root) for a in spec.transform["cmd"]]
    if cmd[0] == "ambientgen":
        cmd = [sys.executable, "-m", "ambientgen", *cmd[1:]]
    return cmd


def _stage_inputs(store: Store, d: Datum, pfs_root: Path) -> None:
    for di in d.inputs:
        base = pfs_root / di.name
        base.mkdir(parents=True, exist_ok=True)
        for f, e in di.files.items():
            store.blobs.copy(e["hash"], safe_join(base, f), atomic=False, what=f"{di.repo}@{di.commit[:12]}:/{f}")


def _collect_outputs(store: Store, out_dir: Path, staging: Path) -> dict[str, dict]:
    """Store every file under out_dir as a blob; a symlink counts when it points at a file in the staging folder."""
    files: dict[str, dict] = {}
    staging_abs = os.path.realpath(staging)
    for dirpath, dirnames, filenames in os.walk(out_dir):
        for dn in dirnames:
            if os.path.islink(os.path.join(dirpath, dn)):
                raise StoreError(f"output {os.path.join(dirpath, dn)} is a symlink to a folder; write real files")
        for fn in sorted(filenames):
            fp = os.path.join(dirpath, fn)
            rel = os.path.relpath(fp, out_dir).replace(os.sep, "/")
            try:
                rel = clean_repo_path(rel, "output file name")
            except StoreError as exc:
                raise StoreError(exc.cause) from None
            why = refused(rel)
            if why:
                raise StoreError(f"output /{rel}: {why} (the job would fail on a cluster too)")
            real = os.path.realpath(fp)
            if os.path.commonpath([staging_abs, real]) != staging_abs:
                raise StoreError(f"output /{rel} is a symlink leaving the datum's folders")
            if not os.path.isfile(real):
                raise StoreError(f"output /{rel} is not a regular file")
            digest, size = store.blobs.add(real)
            files[rel] = {"hash": digest, "size": size}
    return files


def _tail(path: Path, lines: int = ERROR_TAIL_LINES) -> str:
    try:
        text = path.read_bytes()[-8192:].decode("utf-8", "replace")
    except OSError:
        return ""
    return "\n".join([ln for ln in text.splitlines() if ln.strip()][-lines:])


def run_datum(store: Store, spec: PipelineSpec, d: Datum, job_id: str, out_commit_id: str) -> DatumResult:
    """Run one datum (with retries) and record its output; never raises for a datum's own failure."""
    t0 = time.monotonic()
    h = d.hash(spec.salt)
    res = DatumResult(d.id, h, "failed", datum_files(d), job=job_id)
    staging = store.tmp_dir() / f"job-{job_id}" / d.id[:24]
    shutil.rmtree(staging, ignore_errors=True)
    pfs_root = staging / "pfs"
    work = staging / "work"
    log_chunks: list[str] = []
    try:
        work.mkdir(parents=True, exist_ok=True)
        _stage_inputs(store, d, pfs_root)
    except (OSError, StoreError) as exc:
        res.error = f"cannot stage the datum's input files: {exc}"
        log_chunks.append(f"=== staging failed: {exc}\n")
        _save_log(store, spec.name, job_id, d.id, log_chunks)
        shutil.rmtree(staging, ignore_errors=True)
        res.seconds = time.monotonic() - t0
        return res

    mount, alias_dir = _mount_point(pfs_root)
    cmd = transform_command(spec, mount)
    stdin = "".join(rewrite_pfs(line, mount) + "\n" for line in spec.transform.get("stdin", []))
    env = dict(os.environ)
    env.pop(CRASH_ENV, None)
    env.setdefault("AMBIENTGEN_NO_PROGRESS", "1")
    env.update({k: rewrite_pfs(v, mount) for k, v in spec.transform.get("env", {}).items()})
    for di in d.inputs:
        env[di.name] = str(safe_join(mount / di.name, di.path))
    env.update({"PACH_JOB_ID": job_id, "PACH_DATUM_ID": d.id, "PACH_OUTPUT_COMMIT_ID": out_commit_id,
                "PPS_PIPELINE_NAME": spec.name})
    timeout = spec.datum_timeout
    tries = spec.datum_tries
    out_dir = pfs_root / "out"
    for attempt in range(1, tries + 1):
        res.tries = attempt
        shutil.rmtree(out_dir, ignore_errors=True)
        out_dir.mkdir(parents=True)
        out_log, err_log = staging / "stdout.log", staging / "stderr.log"
        rc: int | None = None
        problem = ""
        try:
            with open(out_log, "wb") as fo, open(err_log, "wb") as fe:
                proc = subprocess.Popen(cmd, stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                                        stdout=fo, stderr=fe, cwd=work, env=env, start_new_session=True,
                                        preexec_fn=_die_with_runner)
                try:
                    crash_point("mid-datum")
                    proc.communicate(stdin.encode() if stdin else None, timeout=timeout)
                except subprocess.TimeoutExpired:
                    problem = f"timed out after {timeout:g} s (datumTimeout)"
                finally:  # a timeout, an interrupt or a crash of the runner: the datum's processes end too
                    _end_group(proc)
                rc = proc.returncode
        except OSError as exc:
            problem = f"cannot start {cmd[0]!r}: {exc.strerror or exc}"
        tail = _unmap(_tail(err_log) or _tail(out_log), pfs_root, mount)
        if not problem and rc != 0:
            problem = f"exit status {rc}" + (f" (signal {-rc})" if rc is not None and rc < 0 else "")
        if not problem:
            try:
                files = _collect_outputs(store, out_dir, staging)
            except (OSError, StoreError) as exc:
                problem = f"cannot store the output: {exc}"
                tail = ""
            else:
                crash_point("datum")
                res.files = files
        log_chunks.append(_unmap(_log_chunk(attempt, tries, problem or "success", out_log, err_log),
                                 pfs_root, mount))
        if not problem:
            res.state = "success"
            res.error = ""
            break
        res.error = problem + (f": {tail}" if tail else "")
        log.debug("%s: datum %s try %d/%d failed: %s", spec.name, short(d.id), attempt, tries, res.error)
    res.seconds = time.monotonic() - t0
    if res.state == "success":
        try:
            store.write_json_atomic(datum_record_path(store, spec.name, h), {
                "hash": h, "id": d.id, "job": job_id, "pipeline": spec.name, "created": now_iso(),
                "inputs": res.inputs, "files": res.files})
        except OSError as exc:
            res.state = "failed"
            res.error = f"cannot record the datum: {exc}"
    _save_log(store, spec.name, job_id, d.id, log_chunks)
    shutil.rmtree(staging, ignore_errors=True)
    if alias_dir:
        shutil.rmtree(alias_dir, ignore_errors=True)
    return res


def _load_prctl():
    try:
        import ctypes

        return ctypes.CDLL(None).prctl
    except (OSError, AttributeError):  # not Linux: no parent-death signal
        return None


_PRCTL = _load_prctl()


def _die_with_runner() -> None:
    """In the datum's process, before exec: SIGKILL when the runner dies, even by kill -9 (PR_SET_PDEATHSIG)."""
    if _PRCTL is not None:
        _PRCTL(1, int(signal.SIGKILL))


def _end_group(proc: subprocess.Popen) -> None:
    """Kill whatever is left of the datum's process group, then reap the process."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def _mount_point(pfs_root: Path) -> tuple[Path, Path | None]:
    """The path standing in for /pfs in commands: the staging folder, or, when its path has characters that
    a shell command written for /pfs would split or expand (spaces, quotes, $...), a plain symlink to it."""
    if re.fullmatch(r"[A-Za-z0-9_./+@%=,:-]+", str(pfs_root)):
        return pfs_root, None
    alias_dir = Path(tempfile.mkdtemp(prefix="ambientgen-pfs-"))
    (alias_dir / "pfs").symlink_to(pfs_root, target_is_directory=True)
    return alias_dir / "pfs", alias_dir


def _unmap(text: str, pfs_root: Path, mount: Path) -> str:
    """Show the datum's paths as the transform sees them on Pachyderm (/pfs/...)."""
    return text.replace(str(pfs_root), "/pfs").replace(str(mount), "/pfs")


def _log_chunk(attempt: int, tries: int, outcome: str, out_log: Path, err_log: Path) -> str:
    parts = [f"=== try {attempt}/{tries}: {outcome}\n"]
    for label, p in (("stdout", out_log), ("stderr", err_log)):
        try:
            data = p.read_bytes()
        except OSError:
            continue
        if data:
            if len(data) > 1 << 20:
                data = b"[... earlier output cut ...]\n" + data[-(1 << 20):]
            parts.append(f"--- {label}\n" + data.decode("utf-8", "replace").rstrip("\n") + "\n")
    return "".join(parts)


def _save_log(store: Store, pipeline: str, job_id: str, datum_id: str, chunks: list[str]) -> None:
    try:
        store.write_text_atomic(log_path(store, pipeline, job_id, datum_id), "".join(chunks))
    except OSError as exc:  # a full disk must not hide the datum's own result
        log.warning("%s: cannot save the log of datum %s: %s", pipeline, short(datum_id), exc)
