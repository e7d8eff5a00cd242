"""`ambientgen cluster` (ambientgen.cluster) against the real pachyderm-sdk 2.12.2 client, over gRPC, with an in-process pachd stand-in.

The stand-in registers ``pfs_v2.API`` and ``pps_v2.API`` handlers whose request/response classes are taken from
the SDK's own generated stubs (the method kind and the response class the client deserializes are read from
the stub; the request class is the generated ``<Method>Request``), so every call the script makes is
serialized by the SDK, sent over a real socket and decoded by the same message classes a pachd would speak.
Only the RPCs the script uses are implemented, over an in-memory store, with pachd's rules that matter here
(no writes to a finished commit, no glob characters in paths, inputs must exist, downstream pipelines must
go first when deleting, specs must be valid).
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import re
import shlex
import shutil
import threading
import uuid
from concurrent import futures
from datetime import datetime, timezone
from pathlib import Path

import grpc
import pytest
from betterproto import which_one_of
from betterproto.lib.google.protobuf import BytesValue, Empty
from conftest import PIPELINES_DIR, REPO_ROOT, pachyderm_schema
from jsonschema import Draft4Validator
from pachyderm_sdk.api import pfs, pps

from ambientgen import cluster as pach
from ambientgen.cli import build_parser
from ambientgen.cli import main as cli_main


def cluster_cli(argv: list[str]) -> int:
    """`ambientgen cluster ARGV...` in this process: its exit status."""
    return cli_main(["cluster", *argv])


SOURCES = sorted((REPO_ROOT / "src" / "ambientgen" / "cluster").glob("*.py"))


# --------------------------------------------------------------------------------------- pachd stand-in


def stub_rpcs(stub_cls) -> dict[str, tuple[str, type]]:
    """'/svc/Method' -> (grpc kind, response class), read from an SDK stub's own channel registrations."""
    found: dict[str, tuple[str, type]] = {}

    class RecordingChannel:
        def _register(kind):
            def register(self, path, request_serializer=None, response_deserializer=None, **_):
                found[path] = (kind, response_deserializer.__self__)
                return None

            return register

        unary_unary = _register("unary_unary")
        unary_stream = _register("unary_stream")
        stream_unary = _register("stream_unary")
        stream_stream = _register("stream_stream")

    stub_cls(RecordingChannel())
    return found


def generic_handler(module, service: str, impls: dict) -> grpc.GenericRpcHandler:
    rpcs = stub_rpcs(module.ApiStub)
    handlers = {}
    for method, fn in impls.items():
        kind, response_cls = rpcs[f"/{service}/{method}"]  # KeyError: the SDK has no such RPC
        request_cls = getattr(module, f"{method}Request", None) or Empty

        def checked(fn=fn, response_cls=response_cls, streaming=kind.endswith("_stream")):
            def check(obj):
                assert isinstance(obj, response_cls), f"{fn.__name__} returned {type(obj).__name__}"
                return obj

            if streaming:
                return lambda req, ctx: (check(o) for o in fn(req, ctx))
            return lambda req, ctx: check(fn(req, ctx))

        factory = getattr(grpc, f"{kind}_rpc_method_handler")
        handlers[method] = factory(
            checked(), request_deserializer=request_cls.FromString, response_serializer=response_cls.SerializeToString
        )
    return grpc.method_handlers_generic_handler(service, handlers)


class FakePachd:
    """In-memory PFS/PPS with the RPCs ambientgen.cluster uses."""

    GLOB = set("*?[]{}!()@+^")  # pachd's storage.ValidateFilename: printable ASCII, no glob characters
    JOB_STEPS = (pps.JobState.JOB_CREATED, pps.JobState.JOB_RUNNING, pps.JobState.JOB_SUCCESS)

    def __init__(self):
        self.lock = threading.RLock()
        self.repos: dict[str, dict] = {}  # name -> {"head": id|None}
        self.commits: dict[str, dict] = {}  # id -> {"repo", "files", "finished", "error", "started"}
        self.pipelines: dict[str, dict] = {}  # name -> {"spec", "user_spec_json", "version"}
        self.job_sets: dict[str, list[dict]] = {}
        self.calls: list[tuple[str, object]] = []
        self.fail_modify_after: int | None = None
        # how the stand-in's jobs end: a pipeline -> reason to fail with, jobs that never finish, or no jobs at all
        self.fail_jobs: dict[str, str] = {}
        self.hold_jobs = False
        self.no_jobs = False
        self.schema = Draft4Validator(pachyderm_schema())

    # helpers -------------------------------------------------------------------------------------
    def log(self, name, req):
        self.calls.append((name, req))

    def _commit_id(self, commit: pfs.Commit, ctx) -> str:
        if commit.id:
            if commit.id not in self.commits:
                ctx.abort(grpc.StatusCode.NOT_FOUND, f"commit {commit.id} not found")
            return commit.id
        repo = (commit.branch.repo.name if commit.branch and commit.branch.repo else "") or commit.repo.name
        if repo not in self.repos or not self.repos[repo]["head"]:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"branch {repo}@{commit.branch.name} not found")
        return self.repos[repo]["head"]

    def write_files(self, repo: str, files: dict[str, bytes]) -> str:
        """Commit files straight into a repo (what a pipeline worker would write to its output)."""
        with self.lock:
            cid = self._new_commit(repo)
            self.commits[cid]["files"].update(files)
            self.commits[cid]["finished"] = True
            return cid

    def _new_commit(self, repo: str) -> str:
        cid = uuid.uuid4().hex
        head = self.repos[repo]["head"]
        files = dict(self.commits[head]["files"]) if head else {}
        self.commits[cid] = {"repo": repo, "files": files, "finished": False, "error": "",
                             "started": datetime.now(timezone.utc)}
        self.repos[repo]["head"] = cid
        return cid

    def files(self, repo: str) -> dict[str, bytes]:
        head = self.repos[repo]["head"]
        return dict(self.commits[head]["files"]) if head else {}

    @staticmethod
    def _reads(node: dict) -> set[str]:
        """The repos a spec's input reads, worked out here, not with the script's own helper."""
        found = {node["pfs"]["repo"]} if "pfs" in node else set()
        for key in ("cross", "union", "join", "group"):
            for child in node.get(key, []):
                found |= FakePachd._reads(child)
        return found

    def _downstream(self, repo: str) -> list[str]:
        reached, frontier = [], {repo}
        while frontier:
            new = [n for n, p in self.pipelines.items()
                   if n not in reached and self._reads(p["spec"]["input"]) & frontier]
            reached += new
            frontier = set(new)
        return reached

    # pfs_v2.API ----------------------------------------------------------------------------------
    def CreateRepo(self, req: pfs.CreateRepoRequest, ctx):
        self.log("CreateRepo", req)
        with self.lock:
            if req.repo.name in self.repos and not req.update:
                ctx.abort(grpc.StatusCode.ALREADY_EXISTS, f"repo {req.repo.name} already exists")
            self.repos.setdefault(req.repo.name, {"head": None})
        return Empty()

    def InspectRepo(self, req: pfs.InspectRepoRequest, ctx):
        if req.repo.name not in self.repos:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"repo {req.repo.name} not found")
        return pfs.RepoInfo(repo=pfs.Repo(name=req.repo.name), created=datetime.now(timezone.utc))

    def DeleteRepo(self, req: pfs.DeleteRepoRequest, ctx):
        self.log("DeleteRepo", req)
        with self.lock:
            name = req.repo.name
            if name not in self.repos:
                ctx.abort(grpc.StatusCode.NOT_FOUND, f"repo {name} not found")
            users = [n for n, p in self.pipelines.items() if name in pach.input_repos(p["spec"]["input"])]
            if users:
                ctx.abort(grpc.StatusCode.FAILED_PRECONDITION, f"repo {name} is an input of {users}")
            del self.repos[name]
        return pfs.DeleteRepoResponse(deleted=True)

    def StartCommit(self, req: pfs.StartCommitRequest, ctx):
        self.log("StartCommit", req)
        with self.lock:
            repo = req.branch.repo.name
            if repo not in self.repos:
                ctx.abort(grpc.StatusCode.NOT_FOUND, f"repo {repo} not found")
            if repo in self.pipelines:
                ctx.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{repo} is a pipeline's output repo")
            cid = self._new_commit(repo)
        return pfs.Commit(id=cid, repo=pfs.Repo(name=repo), branch=req.branch)

    def ModifyFile(self, requests, ctx):
        cid = None
        for n, req in enumerate(requests):
            if self.fail_modify_after is not None and n >= self.fail_modify_after:
                ctx.abort(grpc.StatusCode.UNAVAILABLE, "connection reset (injected)")
            kind, body = which_one_of(req, "body")
            with self.lock:
                if kind == "set_commit":
                    cid = self._commit_id(body, ctx)
                    if self.commits[cid]["finished"]:
                        ctx.abort(grpc.StatusCode.FAILED_PRECONDITION, f"commit {cid} is finished")
                    continue
                if cid is None:
                    ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, "no commit set")
                path = "/" + body.path.strip("/")
                if set(path) & self.GLOB or not all(" " <= ch <= "~" for ch in path) or \
                        any(part in (".", "..") for part in path.split("/")):
                    ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, f"path ({path}) invalid")
                files = self.commits[cid]["files"]
                if kind == "delete_file":
                    files.pop(path, None)
                elif kind == "add_file":
                    source, data = which_one_of(body, "source")
                    assert source == "raw", source
                    files[path] = files.get(path, b"") + data
                else:
                    ctx.abort(grpc.StatusCode.UNIMPLEMENTED, kind)
        self.log("ModifyFile", cid)
        return Empty()

    def FinishCommit(self, req: pfs.FinishCommitRequest, ctx):
        self.log("FinishCommit", req)
        with self.lock:
            cid = self._commit_id(req.commit, ctx)
            info = self.commits[cid]
            info["finished"], info["error"] = True, req.error
            if not req.error and not self.no_jobs:
                self.job_sets[cid] = [{"pipeline": n, "step": 0} for n in self._downstream(info["repo"])]
        return Empty()

    def InspectCommit(self, req: pfs.InspectCommitRequest, ctx):
        with self.lock:
            cid = self._commit_id(req.commit, ctx)
            info = self.commits[cid]
            if req.wait == pfs.CommitState.FINISHED and not info["finished"]:
                ctx.abort(grpc.StatusCode.DEADLINE_EXCEEDED, "commit never finishes in this test")
            return pfs.CommitInfo(
                commit=pfs.Commit(id=cid, repo=pfs.Repo(name=info["repo"])), started=info["started"],
                finished=info["started"] if info["finished"] else None, error=info["error"],
            )

    def InspectBranch(self, req: pfs.InspectBranchRequest, ctx):
        repo = req.branch.repo.name
        if repo not in self.repos or not self.repos[repo]["head"]:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"branch {repo}@{req.branch.name} not found")
        return pfs.BranchInfo(branch=req.branch, head=pfs.Commit(id=self.repos[repo]["head"], repo=pfs.Repo(name=repo)))

    def WalkFile(self, req: pfs.WalkFileRequest, ctx):
        with self.lock:
            cid = self._commit_id(req.file.commit, ctx)
            files = dict(self.commits[cid]["files"])
        prefix = "/" + req.file.path.strip("/")
        commit = pfs.Commit(id=cid, repo=pfs.Repo(name=self.commits[cid]["repo"]))
        dirs = sorted({str(Path(p).parent) for p in files})
        for path in sorted(set(dirs) | set(files)):
            if path == prefix or path.startswith(prefix.rstrip("/") + "/"):
                kind = pfs.FileType.FILE if path in files else pfs.FileType.DIR
                yield pfs.FileInfo(file=pfs.File(commit=commit, path=path), file_type=kind,
                                   size_bytes=len(files.get(path, b"")))

    def GetFile(self, req: pfs.GetFileRequest, ctx):
        with self.lock:
            cid = self._commit_id(req.file.commit, ctx)
            data = self.commits[cid]["files"].get("/" + req.file.path.strip("/"))
        if data is None:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"file {req.file.path} not found")
        chunk = 2 * 1024 ** 2  # several messages for a large file, like pachd
        for i in range(0, max(len(data), 1), chunk):
            yield BytesValue(value=data[i:i + chunk])

    # pps_v2.API ----------------------------------------------------------------------------------
    def CreatePipelineV2(self, req: pps.CreatePipelineV2Request, ctx):
        self.log("CreatePipelineV2", req)
        spec = json.loads(req.create_pipeline_request_json)
        errors = [e.message for e in self.schema.iter_errors(spec)]
        if errors:
            ctx.abort(grpc.StatusCode.INVALID_ARGUMENT, f"invalid spec: {errors}")
        name = spec["pipeline"]["name"]
        with self.lock:
            if name in self.pipelines and not req.update:
                ctx.abort(grpc.StatusCode.ALREADY_EXISTS, f"pipeline {name} already exists")
            missing = self._reads(spec["input"]) - set(self.repos)
            if missing:
                ctx.abort(grpc.StatusCode.NOT_FOUND, f"input repos {sorted(missing)} not found")
            if name in self.repos and name not in self.pipelines:
                ctx.abort(grpc.StatusCode.ALREADY_EXISTS, f"repo {name} already exists")
            # pachd keeps the request as protojson (int64 as strings), not the bytes the user sent
            stored = pps.CreatePipelineRequest().from_json(req.create_pipeline_request_json).to_json()
            old = self.pipelines.get(name, {"version": 0})
            self.pipelines[name] = {"spec": spec, "user_spec_json": stored, "version": old["version"] + 1}
            self.repos.setdefault(name, {"head": None})
        return pps.CreatePipelineV2Response(effective_create_pipeline_request_json=stored)

    def InspectPipeline(self, req: pps.InspectPipelineRequest, ctx):
        p = self.pipelines.get(req.pipeline.name)
        if p is None:
            ctx.abort(grpc.StatusCode.NOT_FOUND, f"pipeline {req.pipeline.name} not found")
        return pps.PipelineInfo(pipeline=pps.Pipeline(name=req.pipeline.name), version=p["version"],
                                state=pps.PipelineState.PIPELINE_RUNNING, user_spec_json=p["user_spec_json"])

    def DeletePipeline(self, req: pps.DeletePipelineRequest, ctx):
        self.log("DeletePipeline", req)
        with self.lock:
            name = req.pipeline.name
            if name not in self.pipelines:
                ctx.abort(grpc.StatusCode.NOT_FOUND, f"pipeline {name} not found")
            readers = [n for n, p in self.pipelines.items() if name in pach.input_repos(p["spec"]["input"])]
            if readers:
                ctx.abort(grpc.StatusCode.FAILED_PRECONDITION, f"{readers} read the output of {name}")
            del self.pipelines[name]
            if not req.keep_repo:
                self.repos.pop(name, None)
        return Empty()

    def InspectJobSet(self, req: pps.InspectJobSetRequest, ctx):
        with self.lock:
            jobs = self.job_sets.get(req.job_set.id, [])
            out = []
            for job in jobs:
                last = len(self.JOB_STEPS) - (2 if self.hold_jobs else 1)  # held jobs stay running
                job["step"] = min(job["step"] + 1, last)
                state = self.JOB_STEPS[job["step"]]
                reason = ""
                if state == pps.JobState.JOB_SUCCESS and job["pipeline"] in self.fail_jobs:
                    state, reason = pps.JobState.JOB_FAILURE, self.fail_jobs[job["pipeline"]]
                done = state in (pps.JobState.JOB_SUCCESS, pps.JobState.JOB_FAILURE)
                out.append(pps.JobInfo(
                    job=pps.Job(pipeline=pps.Pipeline(name=job["pipeline"]), id=req.job_set.id), state=state,
                    data_total=2, data_processed=2 if done and not reason else 1, data_failed=1 if reason else 0,
                    reason=reason, created=datetime.now(timezone.utc),
                ))
        yield from out


PFS_RPCS = ("CreateRepo", "InspectRepo", "DeleteRepo", "StartCommit", "ModifyFile", "FinishCommit", "InspectCommit",
            "InspectBranch", "WalkFile", "GetFile")
PPS_RPCS = ("CreatePipelineV2", "InspectPipeline", "DeletePipeline", "InspectJobSet")


def start_server(fake: FakePachd) -> tuple[grpc.Server, int]:
    """A gRPC server on 127.0.0.1:<random port> serving the stand-in (pachd's 20 MB message limit)."""
    limit = 20 * 1024 ** 2
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8), options=[
        ("grpc.max_receive_message_length", limit), ("grpc.max_send_message_length", limit)])
    server.add_generic_rpc_handlers((
        generic_handler(pfs, "pfs_v2.API", {m: getattr(fake, m) for m in PFS_RPCS}),
        generic_handler(pps, "pps_v2.API", {m: getattr(fake, m) for m in PPS_RPCS}),
    ))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    return server, port


@pytest.fixture()
def pachd():
    fake = FakePachd()
    server, port = start_server(fake)
    fake.args = ["--host", "127.0.0.1", "--port", str(port)]
    try:
        yield fake
    finally:
        server.stop(grace=None)


def run(pachd: FakePachd, *argv: str) -> int:
    """`ambientgen cluster ACTION`, as `make deploy-pipelines` etc. run it (connection options after the action)."""
    return cluster_cli([argv[0], *pachd.args, *argv[1:]])


def created(pachd: FakePachd) -> list[tuple[str, bool, bool]]:
    out = []
    for name, req in pachd.calls:
        if name == "CreatePipelineV2":
            spec = json.loads(req.create_pipeline_request_json)
            out.append((spec["pipeline"]["name"], req.update, req.reprocess))
    return out


# ------------------------------------------------------------------------------------------------- tests


def test_sdk_calls_exist_with_these_signatures():
    """Every client.pfs.* / client.pps.* call in the script binds to the installed SDK's method signature."""
    from pachyderm_sdk import Client
    from pachyderm_sdk.api.pfs.extension import ApiStub as PfsStub
    from pachyderm_sdk.api.pps.extension import ApiStub as PpsStub

    stubs = {"pfs": PfsStub, "pps": PpsStub}
    trees = [ast.parse(path.read_text()) for path in SOURCES]
    checked = set()
    for node in (n for tree in trees for n in ast.walk(tree)):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value
        if isinstance(owner, ast.Attribute) and isinstance(owner.value, ast.Name) and owner.value.id == "client":
            method = getattr(stubs[owner.attr], node.func.attr)  # AttributeError: no such SDK method
        elif isinstance(owner, ast.Name) and owner.id == "Client":
            method = getattr(Client, node.func.attr)
        else:
            continue
        sig = inspect.signature(method)
        args = [None] * len(node.args)
        kwargs = {kw.arg: None for kw in node.keywords}
        if inspect.ismethod(method):  # classmethod, already bound to its class
            sig.bind(*args, **kwargs)
        else:
            sig.bind(None, *args, **kwargs)  # self
        checked.add(f"{getattr(owner, 'attr', 'Client')}.{node.func.attr}")
    expected = {"pfs.repo_exists", "pfs.create_repo", "pfs.start_commit", "pfs.put_file_from_file",
                "pfs.finish_commit", "pfs.wait_commit", "pfs.walk_file", "pfs.pfs_file", "pfs.inspect_branch",
                "pfs.inspect_commit", "pfs.delete_repo", "pps.pipeline_exists", "pps.inspect_pipeline",
                "pps.create_pipeline_v2", "pps.delete_pipeline", "pps.inspect_job_set", "Client.from_config"}
    assert expected <= checked, expected - checked
    # the Client constructor takes host/port keywords
    inspect.signature(Client).bind(host="h", port=1)


def test_stub_recorder_sees_the_sdk_rpcs():
    rpcs = stub_rpcs(pfs.ApiStub)
    assert rpcs["/pfs_v2.API/ModifyFile"] == ("stream_unary", Empty)
    assert rpcs["/pfs_v2.API/GetFile"] == ("unary_stream", BytesValue)
    assert stub_rpcs(pps.ApiStub)["/pps_v2.API/InspectJobSet"] == ("unary_stream", pps.JobInfo)


def test_deploy_creates_repos_and_pipelines_in_order_and_is_idempotent(pachd, tmp_path, capsys):
    assert run(pachd, "deploy") == 0
    assert {"audio-unprocessed", "generation-config"} <= set(pachd.repos)
    specs = pach.load_specs(PIPELINES_DIR)
    assert set(pachd.pipelines) == set(specs)
    order = [name for name, _, _ in created(pachd)]
    for name in order:  # each pipeline is created after the ones it reads
        for repo in pach.input_repos(specs[name]["input"]) & set(specs):
            assert order.index(repo) < order.index(name)
    assert all(not upd and not rep for _, upd, rep in created(pachd))
    for name, spec in specs.items():
        assert pachd.pipelines[name]["spec"] == spec
    assert "pipeline music-transformer: created" in capsys.readouterr().out

    pachd.calls.clear()
    assert run(pachd, "deploy") == 0
    assert created(pachd) == []  # nothing changed, nothing sent
    assert "unchanged" in capsys.readouterr().out

    changed = tmp_path / "pipelines"
    shutil.copytree(PIPELINES_DIR, changed)
    spec = json.loads((changed / "ambient-render.json").read_text())
    spec["parallelismSpec"] = {"constant": 5}
    (changed / "ambient-render.json").write_text(json.dumps(spec))
    assert run(pachd, "deploy", "--pipelines-dir", str(changed)) == 0
    assert created(pachd) == [("ambient-render", True, False)]
    assert pachd.pipelines["ambient-render"]["spec"]["parallelismSpec"] == {"constant": 5}

    pachd.calls.clear()
    assert run(pachd, "deploy", "--reprocess") == 0
    assert sorted(created(pachd)) == sorted((n, True, True) for n in specs)

    pachd.calls.clear()
    assert run(pachd, "deploy", "--registry", "ghcr.io/me/") == 0
    assert pachd.pipelines["music-transformer"]["spec"]["transform"]["image"] == "ghcr.io/me/train:0.1.0"
    assert len(created(pachd)) == len(specs)


def test_put_mp3_wait_and_get_results(pachd, tmp_path, sample_mp3s, capsys):
    assert run(pachd, "deploy") == 0
    music = tmp_path / "music"
    (music / "album").mkdir(parents=True)
    shutil.copy(sample_mp3s[0], music / "Rain (live) [2019].mp3")
    shutil.copy(sample_mp3s[1], music / "album" / "forest.MP3")
    shutil.copy(sample_mp3s[1], music / "album" / "Forêt n°1.mp3")
    big = os.urandom(21 * 1024 ** 2)  # more than one 19 MB upload chunk
    (music / "album" / "long-night.mp3").write_bytes(big)
    (music / "notes.txt").write_text("not audio")
    (music / ".hidden.mp3").write_bytes(b"x")

    assert run(pachd, "put-mp3", str(music)) == 0
    stored = pachd.files("audio-unprocessed")
    assert stored == {
        pach.transfer.pfs_path("Rain (live) [2019].mp3"): sample_mp3s[0].read_bytes(),
        "/album/forest.MP3": sample_mp3s[1].read_bytes(),
        pach.transfer.pfs_path("album/Forêt n°1.mp3"): sample_mp3s[1].read_bytes(),
        "/album/long-night.mp3": big,
    }
    commits = [r for n, r in pachd.calls if n == "StartCommit"]
    assert len(commits) == 1  # one commit for the whole folder
    head = pachd.repos["audio-unprocessed"]["head"]
    assert head in capsys.readouterr().out
    assert {j["pipeline"] for j in pachd.job_sets[head]} == set(pach.load_specs(PIPELINES_DIR))

    assert run(pachd, "wait", "--poll", "0.01") == 0
    summary = capsys.readouterr().out
    assert "ambient-render" in summary and "JOB_SUCCESS" in summary

    empty = tmp_path / "empty"
    assert run(pachd, "get-results", str(empty), "--no-wait") == 0  # no output yet: nothing, and no error
    assert not empty.exists() or not any(empty.rglob("*.*"))

    # what the generate and render workers would have written
    midi = {"/night-0001.mid": b"MThd" + bytes(range(200)), "/night-0001.json": b'{"seed": 1}'}
    audio = {"/night-0001.mp3": bytes(300_000), "/rolls/night-0001.png": b"\x89PNG" + b"\x01" * 100}
    pachd.write_files("music-transformer-generate", midi)
    pachd.write_files("ambient-render", audio)
    out = tmp_path / "results"
    assert run(pachd, "get-results", str(out), "--poll", "0.01") == 0
    for sub, files in (("midi", midi), ("audio", audio)):
        got = {"/" + p.relative_to(out / sub).as_posix(): p.read_bytes() for p in (out / sub).rglob("*") if p.is_file()}
        assert got == files


def test_put_config_validates_and_commits(pachd, tmp_path, capsys):
    assert run(pachd, "deploy") == 0
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert run(pachd, "put-config", str(bad)) == 1
    assert "bad.json: not valid JSON" in capsys.readouterr().err
    assert pachd.files("generation-config") == {}
    good = tmp_path / "night.toml"
    good.write_text('minutes = 10\ntemperature = 0.9\n')
    assert run(pachd, "put-config", str(good), "--wait", "--poll", "0.01") == 0
    assert pachd.files("generation-config") == {"/night.toml": good.read_bytes()}
    head = pachd.repos["generation-config"]["head"]
    assert {j["pipeline"] for j in pachd.job_sets[head]} == {"music-transformer-generate", "ambient-render"}


def test_interrupted_upload_closes_the_commit_with_an_error(pachd, tmp_path, sample_mp3s, capsys):
    assert run(pachd, "deploy") == 0
    for i in range(3):
        shutil.copy(sample_mp3s[0], tmp_path / f"t{i}.mp3")
    pachd.fail_modify_after = 3
    assert run(pachd, "put-mp3", str(tmp_path)) == 1
    assert "UNAVAILABLE" in capsys.readouterr().err
    head = pachd.repos["audio-unprocessed"]["head"]
    assert pachd.commits[head]["finished"] and "interrupted" in pachd.commits[head]["error"]
    assert head not in pachd.job_sets  # no job processes a half-uploaded folder


def test_undeploy_goes_downstream_first_and_purge_removes_inputs(pachd, capsys):
    assert run(pachd, "deploy") == 0
    assert run(pachd, "undeploy") == 0  # the stand-in refuses to delete a pipeline that others read
    assert pachd.pipelines == {}
    assert set(pachd.repos) == {"audio-unprocessed", "generation-config"}
    assert run(pachd, "deploy") == 0
    assert run(pachd, "undeploy", "--purge") == 0
    assert pachd.repos == {}
    assert run(pachd, "undeploy") == 0
    assert "nothing" in capsys.readouterr().out


def test_errors_are_one_line_without_traceback(pachd, tmp_path, capsys):
    assert run(pachd, "put-mp3", str(tmp_path)) == 1
    assert "no .mp3 files" in capsys.readouterr().err
    assert run(pachd, "wait") == 1
    assert "nothing to wait for" in capsys.readouterr().err
    assert cluster_cli(["deploy", "--host", "127.0.0.1", "--port", "1"]) == 1
    assert "pachctl port-forward" in capsys.readouterr().err


@pytest.fixture()
def deployed_with_mp3(pachd, tmp_path, sample_mp3s):
    assert run(pachd, "deploy") == 0
    music = tmp_path / "music"
    music.mkdir()
    shutil.copy(sample_mp3s[0], music / "a.mp3")
    return pachd, music


def test_a_failed_job_fails_wait_with_its_reason(deployed_with_mp3, capsys):
    pachd, music = deployed_with_mp3
    pachd.fail_jobs = {"midi": "1 datum failed: a.wav: cannot read audio"}
    assert run(pachd, "put-mp3", str(music)) == 0
    assert run(pachd, "wait", "--poll", "0.01") == 1
    err = capsys.readouterr().err
    assert "midi: JOB_FAILURE: 1 datum failed: a.wav: cannot read audio" in err
    assert "pachctl logs --job=midi@" in err
    assert "ambient-render: JOB_FAILURE" not in err  # only the job that failed is reported as failed


def test_wait_gives_up_after_its_timeout(deployed_with_mp3, capsys):
    pachd, music = deployed_with_mp3
    pachd.hold_jobs = True
    assert run(pachd, "put-mp3", str(music)) == 0
    assert run(pachd, "wait", "--poll", "0.01", "--timeout", "0.3") == 1
    assert "timed out after 0 s waiting for the jobs of" in capsys.readouterr().err


def test_a_commit_without_jobs_is_a_clear_error(deployed_with_mp3, capsys):
    pachd, music = deployed_with_mp3
    pachd.no_jobs = True
    assert run(pachd, "put-mp3", str(music)) == 0
    assert run(pachd, "wait", "--poll", "0.01", "--no-jobs-after", "0.2") == 1
    assert "has no jobs: are the pipelines deployed" in capsys.readouterr().err


def test_get_results_never_writes_outside_its_folder(deployed_with_mp3, tmp_path, capsys):
    pachd, _ = deployed_with_mp3
    pachd.write_files("ambient-render", {"/../../escape.mp3": b"x", "/ok.mp3": b"y"})
    out = tmp_path / "deep" / "results"
    assert run(pachd, "get-results", str(out), "--no-wait") == 1
    assert "refusing to write outside" in capsys.readouterr().err
    assert not list(tmp_path.rglob("escape.mp3"))


def test_pfs_paths_are_valid_and_distinct():
    assert pach.transfer.pfs_path("album/forest.mp3") == "/album/forest.mp3"  # safe names are kept
    a, b = pach.transfer.pfs_path("Forêt (live).mp3"), pach.transfer.pfs_path("Foret (live).mp3")
    assert a != b and a.startswith("/Foret _live_-") and a.endswith(".mp3")
    for path in (a, b, pach.transfer.pfs_path("Été/雨 [2019]*?.MP3"), pach.transfer.pfs_path("x!@+^{}")):
        assert all(" " <= ch <= "~" for ch in path) and not set(path) & FakePachd.GLOB, path


def test_dependency_order_and_cycles():
    specs = pach.load_specs(PIPELINES_DIR)
    order = pach.dependency_order(specs)
    assert order[0] == "audio-processed" and order[-1] == "ambient-render"
    a = {"pipeline": {"name": "a"}, "input": {"pfs": {"repo": "b", "glob": "/"}}, "transform": {"cmd": ["true"]}}
    b = {"pipeline": {"name": "b"}, "input": {"cross": [{"pfs": {"repo": "a", "glob": "/"}}]},
         "transform": {"cmd": ["true"]}}
    with pytest.raises(pach.PachError, match="cycle: a -> b -> a"):
        pach.dependency_order({"a": a, "b": b})


def test_same_spec_ignores_protojson_spelling():
    spec = json.loads((PIPELINES_DIR / "music-transformer.json").read_text())
    stored = pps.CreatePipelineRequest().from_json(json.dumps(spec)).to_json()
    assert '"datumTries": "2"' in stored.replace(":\"", ": \"") or '"datumTries":"2"' in stored
    assert pach.same_spec(stored, spec)
    assert not pach.same_spec(stored, {**spec, "datumTries": 1})


@pytest.mark.parametrize("command", ["deploy", "put-mp3", "put-config", "wait", "get-results", "undeploy"])
def test_every_subcommand_has_help_with_examples(command, capsys):
    with pytest.raises(SystemExit) as exc:
        cluster_cli([command, "--help"])
    assert exc.value.code == 0
    text = capsys.readouterr().out
    assert "Examples:" in text and f"ambientgen cluster {command}" in text and "--host" in text


@pytest.mark.parametrize("flags", [{}, {"REPROCESS": "1", "PURGE": "1"}])
def test_makefile_targets_call_the_script_with_valid_arguments(flags):
    """The `ambientgen cluster` command lines in the Makefile parse with its own parser."""
    make_vars = {"PY": ".venv/bin/python", "PACH_ARGS": "--host pachd.example --port 30650", "DIR": "music",
                 "OUT": "results", "REGISTRY": "ghcr.io/you", "FILE": "night.toml", **flags}
    lines = [line.strip() for line in (REPO_ROOT / "Makefile").read_text().splitlines()
             if "ambientgen cluster" in line]
    commands = set()
    for line in lines:
        expanded = re.sub(r"\$\(if \$\((\w+)\),([^,]*),\)", lambda m: m.group(2) if make_vars.get(m.group(1)) else "",
                           line)
        expanded = re.sub(r"\$\(or \$\((\w+)\),(\w+)\)", lambda m: make_vars.get(m.group(1)) or m.group(2), expanded)
        expanded = re.sub(r"\$\((\w+)\)", lambda m: make_vars.get(m.group(1), ""), expanded)
        argv = shlex.split(expanded)
        argv = argv[argv.index("cluster"):]
        args = build_parser(only="cluster").parse_args(argv)
        assert args.host == "pachd.example" and args.port == 30650
        commands.add(args.action)
        if args.action == "deploy":
            assert args.reprocess == bool(flags)
        if args.action == "undeploy":
            assert args.purge == bool(flags)
    assert {"deploy", "put-mp3", "get-results", "undeploy"} <= commands


def test_the_same_awkward_names_get_the_same_paths_locally_and_on_the_cluster(pachd, tmp_path):
    """One PFS naming rule (ambientgen.pfs): the local store and `ambientgen cluster put-mp3` agree on every path."""
    from ambientgen.local import Store

    music = tmp_path / "music"
    (music / "Été 2019").mkdir(parents=True)
    names = ["Forêt (live).mp3", "what?.mp3", "rain*[2].mp3", "a+b^c!.mp3", "雨の夜.mp3", "Été 2019/océan @ nuit.mp3",
             "plain-name.mp3"]
    for i, name in enumerate(names):
        (music / name).write_bytes(b"ID3" + bytes([i]) * 50)
    assert run(pachd, "deploy") == 0
    assert run(pachd, "put-mp3", str(music)) == 0
    on_cluster = pachd.files("audio-unprocessed")
    local = Store(tmp_path / "store").put_files("audio-unprocessed", [music]).files
    assert sorted(on_cluster) == sorted("/" + path for path in local)
    assert len(on_cluster) == len(names) and "/plain-name.mp3" in on_cluster  # a safe name is kept
    for path in on_cluster:
        assert all(" " <= ch <= "~" for ch in path) and not set(path) & FakePachd.GLOB, path
