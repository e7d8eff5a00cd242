"""`ambientgen cluster`: deploy and drive the pipelines on a Pachyderm 2.12 cluster (what the make targets call).

The connection comes from --host/--port, else from the pachctl config (``~/.pachyderm/config.json`` or
$PACH_CONFIG, what ``pachctl connect`` writes), else localhost:30650 (``pachctl port-forward``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from .. import env
from ..chain import CONFIG_REPO, INPUT_REPOS, MP3_REPO
from .pipelines import BRANCH, PachError, connect, deploy, undeploy
from .transfer import get_results, put_config, put_mp3, report_jobs, wait_jobs

HELP = "deploy and drive the pipelines on a Pachyderm cluster (deploy, put-mp3, put-config, wait, get-results, undeploy)"
EXAMPLES = """
  ambientgen cluster deploy --registry ghcr.io/me
  ambientgen cluster put-mp3 ~/Music/sleep --wait
  ambientgen cluster put-config data/generation-config/ambient-night.toml
  ambientgen cluster get-results results/
  ambientgen cluster ACTION --help        (connection options --host, --port go after the action)
"""


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


def add_arguments(parser: argparse.ArgumentParser) -> None:
    conn = argparse.ArgumentParser(add_help=False)
    conn.add_argument("--host", default=env.get("PACHD_HOST"),
                      help="pachd host (default: the pachctl config, else localhost)")
    conn.add_argument("--port", type=int, default=env.pachd_port(),
                      help="pachd gRPC port (default 30650)")
    conn.add_argument("-v", "--verbose", action="count", default=0, help="debug logging")
    waiting = argparse.ArgumentParser(add_help=False)
    waiting.add_argument("--timeout", type=float, default=0.0, help="give up after this many seconds (default: never)")
    waiting.add_argument("--poll", type=float, default=5.0, help="seconds between status checks (default 5)")
    waiting.add_argument("--no-jobs-after", type=float, default=15.0,
                         help="seconds without any job before deciding the commit started none (default 15)")
    specs = argparse.ArgumentParser(add_help=False)
    specs.add_argument("--pipelines-dir", default=None,
                       help="folder of pipeline specs (default: $AMBIENTGEN_PIPELINES, ./pipelines, or the checkout's)")

    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)

    def add(name: str, func, help_: str, examples: str, parents: list) -> argparse.ArgumentParser:
        p = sub.add_parser(name, parents=[conn, *parents], help=help_, description=help_,
                           epilog="Examples:\n" + examples, formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    p = add("deploy", cmd_deploy, "create the input repos and create/update every pipeline (idempotent)",
            "  ambientgen cluster deploy\n  ambientgen cluster deploy --reprocess\n"
            "  ambientgen cluster deploy --registry ghcr.io/me --host pachd.example.org", [specs])
    p.add_argument("--reprocess", action="store_true", help="run every datum again (new pipeline salt)")
    p.add_argument("--registry", default=env.get("AMBIENTGEN_REGISTRY"),
                   help="image registry: ambientgen/<stage>:V becomes REGISTRY/<stage>:V "
                   "(default $AMBIENTGEN_REGISTRY, else the specs' images as written)")

    p = add("put-mp3", cmd_put_mp3, f"put every MP3 of a folder (and its subfolders) in one commit to {MP3_REPO}",
            "  ambientgen cluster put-mp3 ~/Music/sleep\n  ambientgen cluster put-mp3 ~/Music/sleep --wait",
            [waiting])
    p.add_argument("dir", help="folder of MP3 files")
    p.add_argument("--wait", action="store_true", help="then follow the jobs it started")

    p = add("put-config", cmd_put_config, f"put generation config files (JSON/TOML) in one commit to {CONFIG_REPO}",
            "  ambientgen cluster put-config night.json\n  ambientgen cluster put-config a.toml b.json --wait",
            [waiting])
    p.add_argument("files", nargs="+", help="config files (.json or .toml)")
    p.add_argument("--wait", action="store_true", help="then follow the jobs it started")

    p = add("wait", cmd_wait, "follow the jobs of a commit set until they finish (exit 1 if one failed)",
            "  ambientgen cluster wait\n  ambientgen cluster wait --commit 4f1c...e2 --timeout 3600",
            [waiting])
    p.add_argument("--commit", help="commit/job-set id (default: the newest commit to an input repo)")

    p = add("get-results", cmd_get_results, "wait for the jobs, then download generated MIDI and rendered audio",
            "  ambientgen cluster get-results results/\n  ambientgen cluster get-results results/ --no-wait",
            [waiting])
    p.add_argument("out", help="local folder: OUT/midi/ and OUT/audio/")
    p.add_argument("--no-wait", action="store_true", help="download what is there now")
    p.add_argument("--commit", help="commit/job-set id to wait for (default: the newest input commit)")

    p = add("undeploy", cmd_undeploy, "delete the pipelines (and their output repos); --purge also the input repos",
            "  ambientgen cluster undeploy\n  ambientgen cluster undeploy --purge", [specs])
    p.add_argument("--purge", action="store_true", help=f"also delete {' and '.join(INPUT_REPOS)} (your uploads)")
    p.add_argument("--keep-outputs", action="store_true", help="keep the pipelines' output repos")


def main(args: argparse.Namespace) -> int:
    import grpc

    try:
        client = connect(args.host, args.port)
        return int(args.func(args, client) or 0)
    except PachError as exc:
        print(f"ambientgen cluster {args.action}: error: {exc}", file=sys.stderr)
        return 1
    except ConnectionError as exc:
        print(f"ambientgen cluster {args.action}: error: {exc}\n  is pachd reachable? try `pachctl port-forward` "
              "or pass --host/--port", file=sys.stderr)
        return 1
    except grpc.RpcError as exc:
        print(f"ambientgen cluster {args.action}: error: pachd said {exc.code().name}: {exc.details()}",
              file=sys.stderr)
        return 1
