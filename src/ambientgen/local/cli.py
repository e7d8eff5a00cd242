"""`ambientgen local ...`: the embedded Pachyderm-compatible runner (pachctl-like commands on a local store)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .. import env

HELP = "run the Pachyderm pipeline specs on this machine (embedded store, repos, commits, jobs)"
DESCRIPTION = (
    "An embedded, Pachyderm-compatible runner: versioned repos with immutable commits in a local store\n"
    "(default ./.ambientgen-store, or --store / $AMBIENTGEN_STORE), and the pipelines/*.json specs run as\n"
    "incremental jobs, datum by datum, exactly as a cluster would run them."
)
EXAMPLES = """
  ambientgen local put-file audio-unprocessed ~/Music/sleep/
  ambientgen local run
  ambientgen local run audio-processed --pipelines pipelines/
  ambientgen local list-repo
  ambientgen local list-commit audio-processed
  ambientgen local list-file audio-processed@master:/
  ambientgen local get-file midi@master:/song.mid -o song.mid
  ambientgen local export ambient-render results/
  ambientgen local inspect-commit audio-processed@master
  ambientgen local list-job
  ambientgen local logs audio-processed --datum 3f2a
  ambientgen local fsck                 # hash every stored object; exit 1 if any is damaged
"""
DEFAULT_STORE = ".ambientgen-store"


def _store_parent() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--store", default=None,
                   help=f"store folder (default: $AMBIENTGEN_STORE or ./{DEFAULT_STORE})")
    return p


def add_arguments(parser: argparse.ArgumentParser) -> None:
    common = _store_parent()
    sub = parser.add_subparsers(dest="local_command", metavar="ACTION")
    sub.required = True

    def add(name: str, help_: str, json_flag: bool = False, wait: bool = False) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_, parents=[common])
        if json_flag:
            p.add_argument("--json", action="store_true", help="print JSON instead of a table")
        if wait:
            p.add_argument("--wait", action="store_true",
                           help="wait for another writer on the store to finish instead of failing")
        return p

    p = add("create-repo", "create an input repo", wait=True)
    p.add_argument("repo")
    p.add_argument("--description", default="")

    add("list-repo", "list repos with their head commit and size", json_flag=True)

    p = add("list-commit", "list a repo's commits, newest first", json_flag=True)
    p.add_argument("repo")

    p = add("inspect-commit", "show a commit and its provenance (the input commits that made it)", json_flag=True)
    p.add_argument("ref", metavar="REPO[@COMMIT]")

    p = add("list-file", "list files and folders in a commit", json_flag=True)
    p.add_argument("ref", metavar="REPO[@COMMIT][:PATH]")
    p.add_argument("-r", "--recursive", action="store_true", help="every file below PATH")

    p = add("get-file", "copy one file out of a commit")
    p.add_argument("ref", metavar="REPO[@COMMIT]:PATH")
    p.add_argument("-o", "--output", help="file to write (default: standard output)")

    p = add("put-file", "put files (a folder puts all its files) into a repo, all in one commit", wait=True)
    p.add_argument("repo")
    p.add_argument("paths", nargs="+", metavar="PATH")
    p.add_argument("--dest", default="/", help="folder inside the repo (default /)")
    p.add_argument("-m", "--message", default="")

    p = add("delete-file", "delete files or folders from a repo in a new commit", wait=True)
    p.add_argument("ref", metavar="REPO[@master]:PATH", nargs="+")

    p = add("export", "copy a commit's files out to a folder")
    p.add_argument("ref", metavar="REPO[@COMMIT][:PATH]")
    p.add_argument("dest", metavar="DIR")

    p = add("run", "bring every pipeline's output repo up to date with its inputs", json_flag=True, wait=True)
    p.add_argument("pipelines", nargs="*", metavar="PIPELINE", help="only these pipelines (default: all)")
    p.add_argument("--pipelines", dest="pipelines_dir", default=None,
                   help="folder of pipeline specs (default: $AMBIENTGEN_PIPELINES, ./pipelines, or the "
                        "checkout's pipelines/)")
    p.add_argument("--parallelism", type=int, default=1, help="datums run at the same time (default 1)")

    p = add("list-pipeline", "list the pipeline specs and their state", json_flag=True)
    p.add_argument("--pipelines", dest="pipelines_dir", default=None)

    p = add("list-job", "list jobs, newest first", json_flag=True)
    p.add_argument("pipeline", nargs="?")

    p = add("inspect-job", "show one job: inputs, datums, errors", json_flag=True)
    p.add_argument("job", metavar="[PIPELINE@]JOB")

    add("fsck", "check every stored object against its hash; name the files a damaged one belongs to",
        json_flag=True)

    p = add("logs", "show the per-datum logs of a pipeline's latest job (or --job)")
    p.add_argument("pipeline")
    p.add_argument("--job", default=None, help="job id (or prefix)")
    p.add_argument("--datum", default=None, help="only this datum id (or prefix)")


def store_root(args: argparse.Namespace) -> Path:
    return Path(getattr(args, "store", None) or env.get("AMBIENTGEN_STORE") or DEFAULT_STORE)


def pipelines_root(args: argparse.Namespace) -> Path:
    from .specs import default_pipelines_dir

    given = getattr(args, "pipelines_dir", None)
    return Path(given) if given else default_pipelines_dir()


def parse_ref(ref: str, need_path: bool = False) -> tuple[str, str | None, str]:
    """'repo@commit:/path' -> (repo, commit or None, path)."""
    head, sep, path = ref.partition(":")
    repo, _, commit = head.partition("@")
    if need_path and not sep:
        from .records import StoreError

        raise StoreError(f"{ref!r}: give a path, as REPO@COMMIT:PATH")
    return repo, commit or None, path or "/"


def table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(x)) for x in col) for col in zip(header, *rows)]
    lines = ["  ".join(str(x).ljust(w) for x, w in zip(r, widths)).rstrip() for r in [header, *rows]]
    return "\n".join(lines)


def human_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


def _print_json(obj: object) -> None:
    print(json.dumps(obj, indent=2, sort_keys=True, default=str))


def main(args: argparse.Namespace) -> int:
    from .runner import find_job, list_jobs, read_logs, run_pipelines
    from .specs import load_specs, topo_order
    from .store import Store

    cmd = args.local_command
    readonly = cmd not in ("create-repo", "put-file", "delete-file", "run")
    if cmd == "list-pipeline" and not (store_root(args) / "repos").is_dir():
        store = None  # nothing has run yet: the specs are still listed
    else:
        store = Store(store_root(args), create=not readonly)

    if store is None:
        pass
    elif cmd == "create-repo":
        with store.writer(wait=args.wait, what="create-repo"):
            store.create_repo(args.repo, description=args.description)
        print(f"created repo {args.repo}")
    elif cmd == "list-repo":
        repos = store.list_repos()
        if args.json:
            _print_json(repos)
        else:
            print(table([[r["name"], r["created"][:19].replace("T", " "), (r["head"] or "-")[:12], str(r["files"]),
                          human_size(r["size"]), r.get("pipeline") or "(input)"] for r in repos],
                        ["NAME", "CREATED", "HEAD", "FILES", "SIZE", "PIPELINE"]))
    elif cmd == "list-commit":
        commits = store.list_commits(args.repo)
        if args.json:
            _print_json([{**c.to_json(), "files": len(c.files), "size": c.size} for c in commits])
        else:
            print(table([[c.repo, c.id, c.created[:19].replace("T", " "), c.origin, str(len(c.files)),
                          human_size(c.size), c.message[:40]] for c in commits],
                        ["REPO", "COMMIT", "CREATED", "ORIGIN", "FILES", "SIZE", "MESSAGE"]))
    elif cmd == "inspect-commit":
        repo, commit, _ = parse_ref(args.ref)
        info = store.inspect_commit(repo, commit)
        if args.json:
            _print_json(info)
        else:
            for key in ("repo", "id", "branch", "parent", "created", "origin", "pipeline", "job", "message"):
                print(f"{key.capitalize() + ':':<11}{info.get(key) or '-'}")
            print(f"{'Files:':<11}{info['file_count']} ({human_size(info['size'])})")
            print("Provenance (direct inputs):")
            for p in info["provenance"] or [{"repo": "-", "commit": "(none: files put by a user)"}]:
                print(f"  {p['repo']}@{p['commit']}")
            if len(info["full_provenance"]) > len(info["provenance"]):
                print("Full provenance:")
                for p in info["full_provenance"]:
                    print(f"  {p['repo']}@{p['commit']}")
    elif cmd == "list-file":
        repo, commit, path = parse_ref(args.ref)
        if args.recursive:
            from .records import clean_repo_path

            c = store.resolve(repo, commit)
            prefix = clean_repo_path(path)
            entries = [{"path": "/" + f, "type": "file", "size": e["size"], "hash": e["hash"]}
                       for f, e in sorted(c.files.items())
                       if not prefix or f == prefix or f.startswith(prefix + "/")]
        else:
            entries = [{"path": f.display(), "type": f.type, "size": f.size, "hash": f.hash}
                       for f in store.list_files(repo, commit, path)]
        if args.json:
            _print_json(entries)
        else:
            print(table([[e["path"], e["type"], human_size(e["size"])] for e in entries], ["NAME", "TYPE", "SIZE"]))
    elif cmd == "get-file":
        repo, commit, path = parse_ref(args.ref, need_path=True)
        if args.output:
            store.get_file(repo, path, args.output, commit)
        else:
            sys.stdout.buffer.write(store.read_file(repo, path, commit))
            sys.stdout.flush()
    elif cmd == "put-file":
        c = store.put_files(args.repo, args.paths, dest=args.dest, message=args.message, wait=args.wait)
        print(f"{args.repo}@{c.id}: {len(c.files)} file(s), {human_size(c.size)}")
    elif cmd == "delete-file":
        by_repo: dict[str, list[str]] = {}
        for ref in args.ref:
            repo, commit, path = parse_ref(ref, need_path=True)
            if commit not in (None, "master"):
                from .records import StoreError

                raise StoreError(f"{ref}: files are deleted on the branch (REPO@master:PATH), not in a commit")
            by_repo.setdefault(repo, []).append(path)
        for repo, paths in by_repo.items():
            c = store.delete_files(repo, paths, wait=args.wait)
            print(f"{repo}@{c.id}: {len(c.files)} file(s) left")
    elif cmd == "export":
        repo, commit, path = parse_ref(args.ref)
        written = store.export(repo, args.dest, commit, path=path)
        print(f"exported {len(written)} file(s) from {repo}@{store.resolve(repo, commit).id[:12]} to {args.dest}")
    elif cmd == "run":
        results = run_pipelines(store, pipelines_root(args), only=args.pipelines or None,
                                parallelism=max(1, args.parallelism), wait=args.wait)
        if args.json:
            _print_json([{k: v for k, v in r.to_json().items() if k != "datums"} for r in results])
        else:
            for r in results:
                print(r.summary())
        return 0 if all(r.ok for r in results) else 1
    if cmd == "list-pipeline":
        specs = load_specs(pipelines_root(args))
        rows, out = [], []
        for name in topo_order(specs):
            s = specs[name]
            jobs = list_jobs(store, name) if store else []
            head = store.head(name) if store and store.repo_exists(name) else None
            state = "never run"
            if head:
                c = store.get_commit(name, head)
                current = {r: store.head(r) for r in s.input_repos if store.repo_exists(r)}
                fresh = c.salt == s.salt and {p["repo"]: p["commit"] for p in c.provenance} == current
                state = "up to date" if fresh else "stale"
            if jobs and jobs[0].get("state") != "JOB_SUCCESS":
                state += f" (last job {jobs[0].get('state', '?').removeprefix('JOB_').lower()})"
            out.append({"name": name, "input": s.describe_input(), "state": state, "head": head,
                        "last_job": jobs[0]["id"] if jobs else None, "spec": str(s.path)})
            rows.append([name, s.describe_input(), state, (jobs[0]["id"][:12] if jobs else "-")])
        if args.json:
            _print_json(out)
        else:
            print(table(rows, ["NAME", "INPUT", "STATE", "LAST JOB"]))
    elif cmd == "list-job":
        jobs = list_jobs(store, args.pipeline)
        if args.json:
            _print_json([{k: v for k, v in j.items() if k != "datums"} for j in jobs])
        else:
            print(table([[j["id"][:12], j["pipeline"], j.get("state", "?").removeprefix("JOB_"),
                          j.get("started", "")[:19].replace("T", " "), f"{j.get('seconds', 0):.1f} s",
                          f"{j.get('processed', 0)}/{j.get('skipped', 0)}/{j.get('failed', 0)}/{j.get('total', 0)}",
                          (j.get("output_commit") or "-")[:12]] for j in jobs],
                        ["JOB", "PIPELINE", "STATE", "STARTED", "DURATION", "DONE/SKIP/FAIL/TOTAL", "OUTPUT"]))
    elif cmd == "inspect-job":
        j = find_job(store, args.job)
        if args.json:
            _print_json(j)
        else:
            for key in ("id", "pipeline", "state", "started", "finished", "output_commit", "error", "reason"):
                if j.get(key):
                    print(f"{key.replace('_', ' ').capitalize() + ':':<15}{j[key]}")
            print("Inputs:        " + ", ".join(f"{r}@{c}" for r, c in j.get("input_commits", {}).items()))
            print(f"Datums:        {j.get('total', 0)} total, {j.get('processed', 0)} processed, "
                  f"{j.get('skipped', 0)} skipped, {j.get('failed', 0)} failed")
            for d in j.get("datums", []):
                line = f"  {d['id'][:12]}  {d['state']:<8} {', '.join(d['inputs'][:3])}"
                print(line + (f"\n      error: {d['error']}" if d.get("error") else ""))
    elif cmd == "fsck":
        report = store.fsck()
        if args.json:
            _print_json(report)
        else:
            print(f"{report['objects']} object(s) checked: {len(report['damaged'])} damaged, "
                  f"{len(report['missing'])} missing")
            for digest in report["damaged"] + report["missing"]:
                state = "damaged" if digest in report["damaged"] else "missing"
                users = report["used_by"].get(digest, [])
                print(f"  {state} {digest[:12]}: " + (", ".join(users[:5]) or "used by no commit")
                      + (f" and {len(users) - 5} more" if len(users) > 5 else ""))
            if report["damaged"] or report["missing"]:
                print("put the original files again (put-file replaces a damaged object) and rerun the pipelines")
        return 1 if report["damaged"] or report["missing"] else 0
    elif cmd == "logs":
        for datum_id, text in read_logs(store, args.pipeline, job=args.job, datum=args.datum):
            print(f"### datum {datum_id[:12]}")
            print(text.rstrip("\n"))
    return 0
