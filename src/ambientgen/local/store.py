"""The local store: repos, immutable commits, content-addressed blobs, one `master` branch per repo.

Layout under the store root (every file is published by write, fsync, rename, so a crash at any
moment leaves each earlier commit readable)::

    objects/ab/cdef...            file contents, named by their sha256
    repos/<repo>/repo.json        name, created, description, the pipeline that owns it (if any)
    repos/<repo>/commits/<id>.json  one immutable commit: parent, files {path: {hash, size}}, provenance
    repos/<repo>/master           the branch head: a commit id (absent until the first commit)
    jobs/<pipeline>/<job>.json    one job record (see runner.py)
    datums/<pipeline>/<hash>.json output of a successful datum, for skipping and reuse
    logs/<pipeline>/<job>/<datum>.log
    tmp/                          staging; emptied whenever a writer takes the lock
    lock                          fcntl lock file: one writer at a time; readers never lock

Paths inside a repo are kept without the leading ``/`` ("a/b.mp3") and shown with it ("/a/b.mp3").
They never become paths in the store itself (contents live under their hash), and every path is
checked before it is written out to a folder (export, get-file, a datum's staging directory).

The parts: records.py (commits, ids, the path rules), blobs.py (objects/), lock.py (the writer lock); this
module puts them together as repos and commits.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from ..pfs import pfs_path
from .blobs import Blobs
from .lock import WriterLock
from .records import (
    BRANCH,
    Commit,
    FileInfo,
    StoreError,
    _inside_real,
    check_repo_name,
    clean_repo_path,
    crash_point,
    fsync_dir,
    new_id,
    now_iso,
    safe_join,
)

log = logging.getLogger(__name__)

class Store:
    """A directory holding repos, commits and blobs. Reads never lock; writes take the writer lock."""

    def __init__(self, root: str | os.PathLike, create: bool = True):
        self.root = Path(root).absolute()
        if self.root.exists() and not self.root.is_dir():
            raise StoreError("the store must be a folder, and this is a file", self.root)
        if create:
            for sub in ("objects", "repos", "jobs", "datums", "logs", "tmp"):
                (self.root / sub).mkdir(parents=True, exist_ok=True)
        elif not (self.root / "repos").is_dir():
            raise StoreError("no store here (put a file first: ambientgen local put-file REPO FILE...)", self.root)
        self.blobs = Blobs(self.root, self.tmp_dir)
        self._lock = WriterLock(self.root / "lock", on_acquire=self._recover)

    def __repr__(self) -> str:
        return f"Store({str(self.root)!r})"

    # ------------------------------------------------------------------ writer lock
    @contextlib.contextmanager
    def writer(self, wait: bool = False, what: str = "write") -> Iterator[Store]:
        """Hold the store's writer lock (re-entrant in this object).

        Another process holding it: wait (with a message) when ``wait``, else raise StoreBusy.
        Taking the lock also clears what a killed writer left behind (tmp/, jobs marked running).
        """
        with self._lock.hold(wait, what):
            yield self

    def _recover(self) -> None:
        """After a crash: drop staging leftovers and mark jobs that were running as killed."""
        tmp = self.root / "tmp"
        if tmp.exists():
            for child in tmp.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    with contextlib.suppress(OSError):
                        child.unlink()
        tmp.mkdir(parents=True, exist_ok=True)
        for sub in ("repos", "jobs", "datums", "logs"):  # half-written records (their rename never happened)
            for leftover in (self.root / sub).rglob(".*.tmp") if (self.root / sub).exists() else []:
                with contextlib.suppress(OSError):
                    leftover.unlink()
        jobs = self.root / "jobs"
        for jf in jobs.glob("*/*.json") if jobs.exists() else []:
            try:
                job = json.loads(jf.read_text())
            except (OSError, ValueError):
                continue
            if job.get("state") in ("JOB_RUNNING", "JOB_CREATED"):
                job["state"] = "JOB_KILLED"
                job["reason"] = "the runner stopped (crash or kill) before the job finished; nothing was published"
                job["finished"] = now_iso()
                self.write_json_atomic(jf, job)
                log.warning("job %s of %s was interrupted earlier; marked killed", job.get("id"), job.get("pipeline"))

    def _require_lock(self) -> None:
        if not self._lock.held:
            raise RuntimeError("store write without the writer lock")

    # ------------------------------------------------------------------ atomic files
    def tmp_dir(self) -> Path:
        d = self.root / "tmp"
        d.mkdir(parents=True, exist_ok=True)
        return d

    def write_json_atomic(self, path: Path, obj: object) -> None:
        """Write JSON to a temporary file beside path, fsync, rename, fsync the folder."""
        self.write_text_atomic(path, json.dumps(obj, indent=1, sort_keys=True) + "\n")

    def write_text_atomic(self, path: Path, text: str) -> None:
        """Write text to a temporary file beside path, fsync, rename, fsync the folder."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise
        fsync_dir(path.parent)

    def fsck(self) -> dict:
        """Hash every object; list the damaged or missing ones with the repo@commit:/path entries that use them."""
        objects = self.blobs.listing()
        damaged = {d for d in objects if not self.blobs.ok(d)}
        present = set(objects)
        users: dict[str, list[str]] = {}
        for info in self.list_repos():
            for c in self.list_commits(info["name"]):
                for path, e in c.files.items():
                    if e["hash"] in damaged or e["hash"] not in present:
                        users.setdefault(e["hash"], []).append(f"{info['name']}@{c.id[:12]}:/{path}")
        missing = sorted(h for h in users if h not in present)
        return {"objects": len(objects), "damaged": sorted(damaged), "missing": missing, "used_by": users}

    # ------------------------------------------------------------------ repos
    def repo_dir(self, repo: str) -> Path:
        return self.root / "repos" / check_repo_name(repo)

    def repo_exists(self, repo: str) -> bool:
        return (self.repo_dir(repo) / "repo.json").is_file()

    def repo_info(self, repo: str) -> dict:
        try:
            return json.loads((self.repo_dir(repo) / "repo.json").read_text())
        except FileNotFoundError:
            raise StoreError(f"repo {repo!r} not found (create it with: ambientgen local create-repo {repo})") from None

    def create_repo(self, repo: str, description: str = "", pipeline: str | None = None,
                    exist_ok: bool = False) -> dict:
        """Create a repo; ``pipeline`` marks it as that pipeline's output repo."""
        check_repo_name(repo)
        with self.writer(what=f"create-repo {repo}"):
            if self.repo_exists(repo):
                info = self.repo_info(repo)
                if pipeline and info.get("pipeline") != pipeline:
                    info["pipeline"] = pipeline
                    self.write_json_atomic(self.repo_dir(repo) / "repo.json", info)
                if exist_ok:
                    return info
                raise StoreError(f"repo {repo!r} already exists")
            info = {"name": repo, "created": now_iso(), "description": description, "pipeline": pipeline}
            (self.repo_dir(repo) / "commits").mkdir(parents=True, exist_ok=True)
            self.write_json_atomic(self.repo_dir(repo) / "repo.json", info)
            return info

    def list_repos(self) -> list[dict]:
        out = []
        for d in sorted((self.root / "repos").iterdir()):
            if not (d / "repo.json").is_file():
                continue
            info = json.loads((d / "repo.json").read_text())
            head = self.head(info["name"])
            c = self.get_commit(info["name"], head) if head else None
            info["head"] = head
            info["size"] = c.size if c else 0
            info["files"] = len(c.files) if c else 0
            out.append(info)
        return out

    # ------------------------------------------------------------------ commits
    def head(self, repo: str) -> str | None:
        try:
            text = (self.repo_dir(repo) / BRANCH).read_text().strip()
        except FileNotFoundError:
            return None
        return text or None

    def get_commit(self, repo: str, commit_id: str) -> Commit:
        if not re.fullmatch(r"[0-9a-f]{32}", commit_id or ""):
            raise StoreError(f"invalid commit id {commit_id!r}")
        try:
            return Commit.from_json(json.loads((self.repo_dir(repo) / "commits" / f"{commit_id}.json").read_text()))
        except FileNotFoundError:
            raise StoreError(f"commit {repo}@{commit_id} not found") from None

    def resolve(self, repo: str, ref: str | None = None) -> Commit:
        """A commit from a ref: None/"master" (the head), "master^", "master~N", a commit id or a unique prefix."""
        if not self.repo_exists(repo):
            raise StoreError(f"repo {repo!r} not found")
        ref = ref or BRANCH
        m = re.fullmatch(rf"{BRANCH}(?:(\^+)|~(\d+))?", ref)
        if m:
            head = self.head(repo)
            if not head:
                raise StoreError(f"repo {repo!r} has no commits yet")
            back = len(m.group(1) or "") + int(m.group(2) or 0)
            c = self.get_commit(repo, head)
            for _ in range(back):
                if not c.parent:
                    raise StoreError(f"{repo}@{ref}: the branch has fewer commits than that")
                c = self.get_commit(repo, c.parent)
            return c
        if not re.fullmatch(r"[0-9a-f]{4,32}", ref):
            raise StoreError(f"invalid commit reference {repo}@{ref!r}: use master, master^, master~N or a commit id")
        matches = [p.stem for p in (self.repo_dir(repo) / "commits").glob(f"{ref}*.json")]
        if len(matches) > 1:
            raise StoreError(f"commit prefix {ref!r} is ambiguous in repo {repo!r}")
        if not matches:
            raise StoreError(f"commit {repo}@{ref} not found")
        return self.get_commit(repo, matches[0])

    def list_commits(self, repo: str) -> list[Commit]:
        """The branch's commits, newest first (commits never published to the branch are not shown)."""
        out: list[Commit] = []
        cid = self.head(repo) if self.repo_exists(repo) else None
        if not self.repo_exists(repo):
            raise StoreError(f"repo {repo!r} not found")
        while cid:
            c = self.get_commit(repo, cid)
            out.append(c)
            cid = c.parent
        return out

    def publish_commit(self, commit: Commit) -> Commit:
        """Write the commit file, then move the branch head to it (each step atomic)."""
        self._require_lock()
        for entry in commit.files.values():
            if not self.blobs.has(entry["hash"]):
                raise StoreError(f"commit {commit.id} refers to missing content {entry['hash']}")
        cdir = self.repo_dir(commit.repo) / "commits"
        cdir.mkdir(parents=True, exist_ok=True)
        self.write_json_atomic(cdir / f"{commit.id}.json", commit.to_json())
        crash_point("commit")
        self.write_text_atomic(self.repo_dir(commit.repo) / BRANCH, commit.id + "\n")
        return commit

    def new_commit(self, repo: str, files: dict[str, dict], **kw) -> Commit:
        return Commit(repo=repo, id=kw.pop("id", None) or new_id(), parent=self.head(repo), created=now_iso(),
                      files=files, **kw)

    # ------------------------------------------------------------------ put / delete
    def put_files(self, repo: str, paths: Iterable[str | os.PathLike], dest: str = "/", message: str = "",
                  wait: bool = False, create: bool = True, replace: bool = False) -> Commit:
        """Put files in ONE new commit (like one ``pachctl put file`` commit); returns the commit.

        A file goes to ``dest/<its name>``; a folder puts every file under it (hidden ones skipped) at
        ``dest/<path relative to the folder>``, as ``make put-mp3`` does on a cluster, so that a ``/*`` glob
        gives one datum per file. Characters PFS refuses in paths (``*?[]{}!()@+^``) become ``_``, as
        there. Existing paths are overwritten. With ``replace`` the commit holds exactly these files (the repo
        mirrors a folder), and when that is what the head already holds no commit is made: the head is returned.
        """
        check_repo_name(repo)
        dest_clean = clean_repo_path(dest, "destination")
        plan: list[tuple[str, Path]] = []
        for p in paths:
            raw = os.fspath(p)
            if "\x00" in raw:
                raise StoreError(f"invalid file name {raw!r}: contains a NUL byte")
            src = Path(raw)
            try:
                src.stat()
            except OSError as exc:
                raise StoreError(f"cannot read: {exc.strerror}", raw) from None
            if src.is_dir():
                for dirpath, dirnames, filenames in os.walk(src):
                    dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                    for fn in sorted(filenames):
                        if fn.startswith("."):
                            continue
                        fp = Path(dirpath) / fn
                        if not fp.is_file():
                            log.warning("%s: not a regular file, skipped", fp)
                            continue
                        rel = fp.relative_to(src).as_posix()
                        plan.append((self._target(dest_clean, rel, fp), fp))
            elif not src.is_file():
                raise StoreError("not a regular file", raw)
            else:
                plan.append((self._target(dest_clean, src.resolve().name, src), src))
        if not plan:
            raise StoreError("nothing to put: no files given or the folders are empty")
        targets = [t for t, _ in plan]
        dupes = {t for t in targets if targets.count(t) > 1}
        if dupes:
            clash = sorted(str(s) for t, s in plan if t in dupes)[:4]
            raise StoreError(f"these files would be stored at the same path ({sorted(dupes)[0]}): {clash}; "
                             "rename one of them")
        with self.writer(wait=wait, what=f"put-file {repo}"):
            if not self.repo_exists(repo):
                if not create:
                    raise StoreError(f"repo {repo!r} not found")
                self.create_repo(repo)
            info = self.repo_info(repo)
            if info.get("pipeline"):
                raise StoreError(f"repo {repo!r} is the output repo of pipeline {info['pipeline']!r}; "
                                 "only its pipeline writes to it")
            head = self.head(repo)
            before = dict(self.get_commit(repo, head).files) if head else {}
            files = {} if replace else dict(before)
            for target, src in plan:
                for existing in list(files):
                    if existing.startswith(target + "/"):
                        raise StoreError(f"cannot put file /{target}: it is a directory in {repo}")
                parent = target
                while "/" in parent:
                    parent = parent.rsplit("/", 1)[0]
                    if parent in files:
                        raise StoreError(f"cannot put /{target}: /{parent} is a file in {repo}")
                try:
                    digest, size = self.blobs.add(src)
                except OSError as exc:  # publishing the object (rename, folder) failed
                    raise StoreError(f"cannot write into the store {self.root}: {exc.strerror or exc}",
                                     src) from None
                files[target] = {"hash": digest, "size": size}
            if replace and head and files == before:
                return self.get_commit(repo, head)
            commit = self.new_commit(repo, files, message=message or f"put {len(plan)} file(s)")
            return self.publish_commit(commit)

    @staticmethod
    def _target(dest: str, rel: str, src: Path) -> str:
        try:
            target = clean_repo_path(f"{dest}/{rel}" if dest else rel, "file name")
        except StoreError as exc:
            raise StoreError(exc.cause, src) from None
        mapped = pfs_path(target)[1:]
        if mapped != target:
            log.warning("%s: stored as /%s (the name a Pachyderm cluster gives it: PFS refuses non-ASCII and "
                        "the characters *?[]{}!()@+^ in paths)", src, mapped)
        return mapped

    def delete_files(self, repo: str, paths: Iterable[str], wait: bool = False) -> Commit:
        """A new commit without the given paths (a directory path deletes everything under it)."""
        with self.writer(wait=wait, what=f"delete-file {repo}"):
            if self.repo_info(repo).get("pipeline"):
                raise StoreError(f"repo {repo!r} is a pipeline's output repo; only its pipeline writes to it")
            head = self.head(repo)
            if not head:
                raise StoreError(f"repo {repo!r} has no commits")
            files = dict(self.get_commit(repo, head).files)
            for p in paths:
                target = clean_repo_path(p)
                gone = [f for f in files if not target or f == target or f.startswith(target + "/")]
                if not gone:
                    raise StoreError(f"{repo}@{head[:12]}:/{target} not found")
                for f in gone:
                    del files[f]
            commit = self.new_commit(repo, files, message=f"delete {', '.join(paths)}")
            return self.publish_commit(commit)

    # ------------------------------------------------------------------ reading files
    def list_files(self, repo: str, ref: str | None = None, path: str = "/") -> list[FileInfo]:
        """Entries directly under path (files and folders, like ``pachctl list file``); a file path lists itself."""
        c = self.resolve(repo, ref)
        target = clean_repo_path(path)
        if target in c.files:
            e = c.files[target]
            return [FileInfo(target, e["hash"], int(e["size"]))]
        prefix = target + "/" if target else ""
        entries: dict[str, FileInfo] = {}
        for fp, e in sorted(c.files.items()):
            if not fp.startswith(prefix):
                continue
            rest = fp[len(prefix):]
            head, sep, _ = rest.partition("/")
            if sep:
                d = entries.setdefault(prefix + head, FileInfo(prefix + head, "", 0, "dir"))
                d.size += int(e["size"])
            else:
                entries[fp] = FileInfo(fp, e["hash"], int(e["size"]))
        if not entries and target:
            raise StoreError(f"{repo}@{c.id[:12]}:/{target} not found")
        return sorted(entries.values(), key=lambda f: f.path)

    def walk(self, repo: str, ref: str | None = None) -> dict[str, dict]:
        return dict(self.resolve(repo, ref).files)

    def read_file(self, repo: str, path: str, ref: str | None = None) -> bytes:
        c = self.resolve(repo, ref)
        target = clean_repo_path(path)
        if target not in c.files:
            raise StoreError(f"{repo}@{c.id[:12]}:/{target} not found (or it is a folder)")
        return self.blobs.read(c.files[target]["hash"], f"{repo}@{c.id[:12]}:/{target}")

    def get_file(self, repo: str, path: str, dest: str | os.PathLike, ref: str | None = None) -> Path:
        """Copy one file out of a commit to dest (written atomically)."""
        c = self.resolve(repo, ref)
        target = clean_repo_path(path)
        if target not in c.files:
            raise StoreError(f"{repo}@{c.id[:12]}:/{target} not found (or it is a folder)")
        dest = Path(dest)
        self.blobs.copy(c.files[target]["hash"], dest, what=f"{repo}@{c.id[:12]}:/{target}")
        return dest

    def export(self, repo: str, dest_dir: str | os.PathLike, commit: str | None = None, path: str = "/") -> list[Path]:
        """Copy a commit's files (below path) into dest_dir, keeping their paths; returns the written files."""
        c = self.resolve(repo, commit)
        dest_dir = Path(dest_dir)
        dest_dir.mkdir(parents=True, exist_ok=True)
        prefix = clean_repo_path(path)
        out = []
        for fp, e in sorted(c.files.items()):
            if prefix and not (fp == prefix or fp.startswith(prefix + "/")):
                continue
            dest = safe_join(dest_dir, fp)
            _inside_real(dest_dir, dest)
            self.blobs.copy(e["hash"], dest, what=f"{repo}@{c.id[:12]}:/{fp}")
            out.append(dest)
        return out

    def inspect_commit(self, repo: str, ref: str | None = None) -> dict:
        """The commit's metadata with its direct provenance and the full chain of commits that made it."""
        c = self.resolve(repo, ref)
        d = c.to_json()
        d["size"] = c.size
        d["file_count"] = len(c.files)
        d.pop("files")
        full: list[dict] = []
        seen: set[tuple[str, str]] = set()
        stack = list(c.provenance)
        while stack:
            p = stack.pop(0)
            key = (p["repo"], p["commit"])
            if key in seen:
                continue
            seen.add(key)
            full.append(p)
            with contextlib.suppress(StoreError):
                stack.extend(self.get_commit(p["repo"], p["commit"]).provenance)
        d["full_provenance"] = full
        return d
