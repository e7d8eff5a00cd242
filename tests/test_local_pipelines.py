"""Local runner jobs: the real normalize spec on real MP3s, incremental datums, salts, failures, globs, cross, union."""

from __future__ import annotations

import json
import shutil

import pytest
from conftest import PIPELINES_DIR
from test_local_helpers import local_cli, manifest, pfs, write_spec

from ambientgen.local import Store, StoreError, glob_matches, list_jobs, read_logs, run_pipelines
from ambientgen.pfs import pfs_path
from ambientgen.stages.normalize import safe_name

NAMES = ["Forêt de nuit – pluie douce.mp3", "ocean_waves.mp3", "Chorale 2.MP3"]


@pytest.fixture
def three_mp3s(sample_mp3s, tmp_path):
    """Three real MP3s (FluidSynth-rendered chorales), one name with spaces and accents."""
    d = tmp_path / "incoming"
    d.mkdir()
    for name, src in zip(NAMES, [sample_mp3s[0], sample_mp3s[1], sample_mp3s[0]]):
        shutil.copyfile(src, d / name)
    return d


def by_pipeline(results):
    return {r.pipeline: r for r in results}


def test_normalize_pipeline_incremental_and_salt(three_mp3s, sample_mp3s, tmp_path):
    store = Store(tmp_path / "store")
    inp = store.put_files("audio-unprocessed", sorted(three_mp3s.iterdir()))
    assert len(inp.files) == 3  # one commit for all three

    res = by_pipeline(run_pipelines(store, PIPELINES_DIR, only=["audio-processed"]))
    job = res["audio-processed"]
    assert job.state == "JOB_SUCCESS" and (job.total, job.processed, job.skipped) == (3, 3, 0)
    out = store.resolve("audio-processed")
    assert out.id == job.output_commit
    stored = {n: pfs_path(n)[1:] for n in NAMES}  # the names the repo holds, as on a cluster
    assert sorted(out.files) == sorted(safe_name(stored[n]) for n in NAMES)
    for name in NAMES:  # the real stage copied the real bytes
        assert store.read_file("audio-processed", safe_name(stored[name])) == (three_mp3s / name).read_bytes()
    info = store.inspect_commit("audio-processed")
    assert info["provenance"] == [{"repo": "audio-unprocessed", "commit": inp.id}]
    assert info["origin"] == "AUTO" and info["job"] == job.id
    logs = dict(read_logs(store, "audio-processed"))
    assert any(f"{stored[NAMES[0]]} -> {safe_name(stored[NAMES[0]])}" in t for t in logs.values())

    # nothing changed: no job at all
    assert run_pipelines(store, PIPELINES_DIR, only=["audio-processed"])[0].state == "UP_TO_DATE"

    # one more file: one datum runs, three are skipped and their output reused
    extra = tmp_path / "Nouveau morceau.mp3"
    shutil.copyfile(sample_mp3s[1], extra)
    inp2 = store.put_files("audio-unprocessed", [extra])
    job2 = run_pipelines(store, PIPELINES_DIR, only=["audio-processed"])[0]
    assert (job2.state, job2.total, job2.processed, job2.skipped) == ("JOB_SUCCESS", 4, 1, 3)
    out2 = store.resolve("audio-processed")
    assert out2.parent == out.id and len(out2.files) == 4
    assert store.inspect_commit("audio-processed")["provenance"][0]["commit"] == inp2.id
    # the earlier output commit stays readable
    assert sorted(store.resolve("audio-processed", out.id).files) == sorted(out.files)

    # a changed spec (copy, edit) has a new salt: everything reruns; its output is the same
    specs = tmp_path / "pipelines"
    specs.mkdir()
    spec = json.loads((PIPELINES_DIR / "audio-processed.json").read_text())
    spec["transform"]["env"] = {"AMBIENTGEN_NORMALIZE_DRY_RUN": "0"}
    (specs / "audio-processed.json").write_text(json.dumps(spec))
    job3 = run_pipelines(store, specs)[0]
    assert (job3.state, job3.total, job3.processed, job3.skipped) == ("JOB_SUCCESS", 4, 4, 0)
    assert manifest(store, "audio-processed") == {p: e["hash"] for p, e in out2.files.items()}
    # editing only the description keeps the salt: the job is not rerun
    spec["description"] = "edited"
    (specs / "audio-processed.json").write_text(json.dumps(spec))
    assert run_pipelines(store, specs)[0].state == "UP_TO_DATE"

    # deleting an input file removes its output in the next commit
    store.delete_files("audio-unprocessed", ["/ocean_waves.mp3"])
    job4 = run_pipelines(store, specs)[0]
    assert (job4.processed, job4.skipped) == (0, 3)
    assert "ocean_waves.mp3" not in store.resolve("audio-processed").files


# (the case matches the file name only: the staging path holds hex ids, which may well contain "bad")
SHOUT = ["sh", "-c", 'for f in /pfs/in/*; do case "$(basename "$f")" in *bad*) echo "cannot decode $f" >&2; exit 3;; esac; '
         'tr a-z A-Z < "$f" > /pfs/out/"$(basename "$f")"; done']


def test_failing_datum_keeps_previous_commit_and_downstream_uses_it(tmp_path):
    store = Store(tmp_path / "store")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("alpha")
    (src / "b.txt").write_text("beta")
    store.put_files("in", sorted(src.iterdir()))
    specs = tmp_path / "specs"
    write_spec(specs, "shout", pfs("in"), SHOUT, datumTries=2)
    write_spec(specs, "count", pfs("shout", "/"), ["sh", "-c", "ls /pfs/shout | wc -l > /pfs/out/n"])
    res = by_pipeline(run_pipelines(store, specs))
    assert res["shout"].state == res["count"].state == "JOB_SUCCESS"
    good = store.resolve("shout")
    assert store.read_file("count", "n").strip() == b"2"

    (src / "bad.txt").write_text("broken")
    (src / "c.txt").write_text("gamma")
    store.put_files("in", [src / "bad.txt", src / "c.txt"])
    res = by_pipeline(run_pipelines(store, specs))
    job = res["shout"]
    assert job.state == "JOB_FAILURE" and (job.total, job.processed, job.skipped, job.failed) == (4, 1, 2, 1)
    failed = [d for d in job.datums if d.state == "failed"][0]
    assert failed.inputs == ["in:/bad.txt"] and failed.tries == 2
    assert "exit status 3" in failed.error and "cannot decode /pfs/in/bad.txt" in failed.error
    # nothing published: the head and its files are the last good commit, still readable
    assert store.head("shout") == good.id and job.output_commit == good.id
    assert store.read_file("shout", "a.txt") == b"ALPHA"
    # downstream ran (or stayed) on the last good commit
    assert res["count"].state == "UP_TO_DATE"
    assert store.inspect_commit("count")["provenance"] == [{"repo": "shout", "commit": good.id}]
    rec = list_jobs(store, "shout")[0]
    assert rec["state"] == "JOB_FAILURE" and rec["id"] == job.id
    log_text = dict(read_logs(store, "shout", datum=failed.id[:8]))[failed.id]
    assert "try 2/2" in log_text and "cannot decode /pfs/in/bad.txt" in log_text
    r = local_cli("run", "--store", str(store.root), "--pipelines", str(specs))
    assert r.returncode == 1 and "in:/bad.txt" in r.stderr and "shout: job" in r.stdout

    # fixed input: the succeeded datums are skipped, the job publishes
    store.delete_files("in", ["/bad.txt"])
    res = by_pipeline(run_pipelines(store, specs))
    assert (res["shout"].state, res["shout"].processed, res["shout"].skipped) == ("JOB_SUCCESS", 0, 3)
    assert store.read_file("count", "n").strip() == b"3"


def test_same_output_path_from_two_datums_fails_the_job(tmp_path):
    store = Store(tmp_path / "store")
    for n in ("x", "y"):
        (tmp_path / n).write_text(n)
    store.put_files("in", [tmp_path / "x", tmp_path / "y"])
    write_spec(tmp_path / "specs", "clash", pfs("in"), ["sh", "-c", "cat /pfs/in/* > /pfs/out/same.txt"])
    job = run_pipelines(store, tmp_path / "specs")[0]
    assert job.state == "JOB_FAILURE" and "both wrote /same.txt" in job.error
    assert store.head("clash") is None
    write_spec(tmp_path / "specs", "clash", pfs("in"),
               ["sh", "-c", 'case "$in" in *x) echo 1 > /pfs/out/d;; *) mkdir /pfs/out/d; echo 2 > /pfs/out/d/f;; esac'])
    job = run_pipelines(store, tmp_path / "specs")[0]
    assert job.state == "JOB_FAILURE" and "wrote the file /d" in job.error and "/d/f inside it" in job.error


def test_retries_timeout_stdin_env(tmp_path):
    store = Store(tmp_path / "store")
    (tmp_path / "f.txt").write_text("data")
    store.put_files("in", [tmp_path / "f.txt"])
    counter = tmp_path / "count"
    flaky = ('n=$(cat "$COUNTER" 2>/dev/null || echo 0); n=$((n+1)); echo $n > "$COUNTER"; '
             '[ $n -ge 3 ] || { echo "try $n failed" >&2; exit 1; }; cp "$in" /pfs/out/')
    specs = tmp_path / "specs"
    write_spec(specs, "flaky", pfs("in"), ["sh", "-c", flaky], transform={"env": {"COUNTER": str(counter)}})
    write_spec(specs, "slow", pfs("in"), ["sh", "-c", "sleep 20"], datumTries=1, datumTimeout="1s")
    write_spec(specs, "piped", pfs("in", name="docs"), ["sh"], transform={
        "stdin": ["cp /pfs/docs/f.txt /pfs/out/copy.txt",
                  'printf "%s %s %s" "$GREETING" "$docs" "$PACH_OUTPUT_COMMIT_ID" > /pfs/out/env.txt'],
        "env": {"GREETING": "hello"}})
    res = by_pipeline(run_pipelines(store, specs))
    assert res["flaky"].state == "JOB_SUCCESS" and res["flaky"].datums[0].tries == 3
    assert res["slow"].state == "JOB_FAILURE" and "timed out after 1 s" in res["slow"].datums[0].error
    piped = res["piped"]
    assert store.read_file("piped", "copy.txt") == b"data"
    greeting, path, commit = store.read_file("piped", "env.txt").decode().split(" ")
    assert greeting == "hello" and path.endswith("/pfs/docs/f.txt") and commit == piped.output_commit


def test_glob_patterns_match_files_and_folders():
    files = {p: {"hash": "0" * 64, "size": 1} for p in ["a/x.txt", "a/y.mp3", "b/z.txt", "top.txt", "b/c/d.txt"]}

    def paths(g):
        return [p for p, _ in glob_matches(files, g)]

    assert paths("/") == [""] and len(glob_matches(files, "/")[0][1]) == 5
    assert paths("/*") == ["a", "b", "top.txt"]
    assert sorted(glob_matches(files, "/*")[0][1]) == ["a/x.txt", "a/y.mp3"]  # a folder datum holds its files
    assert paths("/*/*") == ["a/x.txt", "a/y.mp3", "b/c", "b/z.txt"]
    assert paths("/**") == ["a", "a/x.txt", "a/y.mp3", "b", "b/c", "b/c/d.txt", "b/z.txt", "top.txt"]
    assert paths("/**.txt") == ["a/x.txt", "b/c/d.txt", "b/z.txt", "top.txt"]
    assert paths("/*.txt") == ["top.txt"]
    assert paths("/a/*.{mp3,wav}") == ["a/y.mp3"]
    assert paths("/[ab]") == ["a", "b"] and paths("/[!a]") == ["b"]
    assert paths("/?/?.txt") == ["a/x.txt", "b/z.txt"]
    assert glob_matches({}, "/") == []
    with pytest.raises(StoreError, match="starts with '/'"):
        glob_matches(files, "*")


def test_glob_cross_union_through_the_runner(tmp_path):
    store = Store(tmp_path / "store")
    for rel in ["a/x.txt", "a/y.txt", "b/z.txt", "top.txt"]:
        p = tmp_path / "tree" / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(rel)
    store.put_files("tree", [tmp_path / "tree"], dest="/tree")
    store.put_files("left", [tmp_path / "tree" / "a"], dest="a")  # /a/x.txt, /a/y.txt
    store.put_files("right", [tmp_path / "tree" / "b" / "z.txt", tmp_path / "tree" / "top.txt"])
    specs = tmp_path / "specs"
    listing = ["sh", "-c", 'cd /pfs/tree && find . -type f | sort > /pfs/out/"$PACH_DATUM_ID"']
    for name, glob in [("g-root", "/"), ("g-top", "/tree/*"), ("g-two", "/tree/*/*"), ("g-all", "/**")]:
        write_spec(specs, name, pfs("tree", glob), listing)
    write_spec(specs, "crossed", {"cross": [pfs("left", "/a/*", name="L"), pfs("right")]},
               ["sh", "-c", 'echo "$L + $right" > /pfs/out/"$(basename "$L")-$(basename "$right")"'])
    write_spec(specs, "unioned", {"union": [pfs("left", "/a/*"), pfs("right")]},
               ["sh", "-c", 'ls /pfs > /pfs/out/"$PACH_DATUM_ID"'])
    res = by_pipeline(run_pipelines(store, specs))
    assert all(r.state == "JOB_SUCCESS" for r in res.values()), [r.summary() for r in res.values()]
    assert {k: res[k].total for k in ("g-root", "g-top", "g-two", "g-all")} == {
        "g-root": 1, "g-top": 3, "g-two": 3, "g-all": 7}  # /** : 3 folders (tree, a, b) + 4 files

    def contents(repo):
        return sorted(store.read_file(repo, p).decode() for p in store.resolve(repo).files)

    assert contents("g-top") == ["./tree/a/x.txt\n./tree/a/y.txt\n", "./tree/b/z.txt\n", "./tree/top.txt\n"]
    assert contents("g-root") == ["./tree/a/x.txt\n./tree/a/y.txt\n./tree/b/z.txt\n./tree/top.txt\n"]
    assert sorted(store.resolve("crossed").files) == ["x.txt-top.txt", "x.txt-z.txt", "y.txt-top.txt", "y.txt-z.txt"]
    left_path, right_path = store.read_file("crossed", "x.txt-z.txt").decode().strip().split(" + ")
    assert left_path.endswith("/pfs/L/a/x.txt") and right_path.endswith("/pfs/right/z.txt")
    assert res["crossed"].total == 4
    assert sorted(contents("unioned")) == ["left\nout\n"] * 2 + ["out\nright\n"] * 2
    prov = {p["repo"] for p in store.inspect_commit("crossed")["provenance"]}
    assert prov == {"left", "right"}


def test_bad_specs_are_reported(tmp_path):
    store = Store(tmp_path / "store")
    specs = tmp_path / "specs"
    write_spec(specs, "j", {"join": [pfs("a"), pfs("b")]}, ["true"])
    with pytest.raises(StoreError, match="'join' is not supported"):
        run_pipelines(store, specs)
    shutil.rmtree(specs)
    write_spec(specs, "p1", pfs("p2"), ["true"])
    write_spec(specs, "p2", pfs("p1"), ["true"])
    with pytest.raises(StoreError, match="cycle"):
        run_pipelines(store, specs)
    with pytest.raises(StoreError, match="no such pipeline"):
        run_pipelines(store, PIPELINES_DIR, only=["nope"])
    res = by_pipeline(run_pipelines(store, PIPELINES_DIR, only=["audio-processed", "midi"]))
    assert res["audio-processed"].state == "WAITING" and "audio-unprocessed" in res["audio-processed"].error


def test_parallel_datums_give_the_same_commit(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(6):
        (src / f"f{i}.txt").write_text(f"text {i}")
    specs = tmp_path / "specs"
    write_spec(specs, "shout", pfs("in"), SHOUT)
    manifests = []
    for par in (1, 3):
        store = Store(tmp_path / f"store{par}")
        store.put_files("in", sorted(src.iterdir()))
        job = run_pipelines(store, specs, parallelism=par)[0]
        assert (job.state, job.processed) == ("JOB_SUCCESS", 6)
        manifests.append(manifest(store, "shout"))
    assert manifests[0] == manifests[1] and len(manifests[0]) == 6


def test_cli_walkthrough(tmp_path):
    st = ["--store", str(tmp_path / "st")]
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.txt").write_text("alpha")
    (src / "bad.txt").write_text("x")
    specs = tmp_path / "specs"
    write_spec(specs, "shout", pfs("in"), SHOUT)
    assert local_cli("create-repo", "in", *st).returncode == 0
    r = local_cli("put-file", "in", str(src / "a.txt"), *st)
    assert r.returncode == 0 and r.stdout.startswith("in@")
    r = local_cli("run", "--pipelines", str(specs), "--json", *st)
    assert r.returncode == 0, r.stderr
    job = json.loads(r.stdout)[0]
    assert job["state"] == "JOB_SUCCESS" and job["processed"] == 1
    r = local_cli("list-commit", "shout", *st)
    assert job["output_commit"] in r.stdout and "AUTO" in r.stdout
    r = local_cli("inspect-commit", f"shout@{job['output_commit'][:8]}", *st)
    assert "Provenance" in r.stdout and "in@" in r.stdout
    r = local_cli("list-file", "shout@master:/", *st)
    assert "/a.txt" in r.stdout
    r = local_cli("export", "shout", str(tmp_path / "exp"), *st)
    assert r.returncode == 0 and (tmp_path / "exp" / "a.txt").read_text() == "ALPHA"
    r = local_cli("put-file", "in", str(src / "bad.txt"), *st)
    r = local_cli("run", "--pipelines", str(specs), *st)
    assert r.returncode == 1 and "failure" in r.stdout
    r = local_cli("list-job", *st)
    assert "FAILURE" in r.stdout and "SUCCESS" in r.stdout and "0/1/1/2" in r.stdout
    failed_job = list_jobs(Store(tmp_path / "st"), "shout")[0]["id"]
    r = local_cli("inspect-job", f"shout@{failed_job[:10]}", *st)
    assert "in:/bad.txt" in r.stdout and "cannot decode /pfs/in/bad.txt" in r.stdout
    r = local_cli("logs", "shout", *st)
    assert "cannot decode /pfs/in/bad.txt" in r.stdout and "skipped in job" in r.stdout
    r = local_cli("list-pipeline", "--pipelines", str(specs), *st)
    assert "shout" in r.stdout and "last job failure" in r.stdout
    r = local_cli("delete-file", "in@master:/bad.txt", *st)
    assert r.returncode == 0
    assert local_cli("run", "--pipelines", str(specs), *st).returncode == 0
    r = local_cli("list-pipeline", "--pipelines", str(specs), "--json", *st)
    assert json.loads(r.stdout)[0]["state"] == "up to date"


def test_store_path_with_spaces_and_symlinked_outputs(tmp_path):
    store = Store(tmp_path / "My Music $HOME" / "store")
    (tmp_path / "a.txt").write_text("alpha")
    store.put_files("in", [tmp_path / "a.txt"])
    specs = tmp_path / "specs"
    # unquoted /pfs paths, as commands written for Pachyderm have them
    write_spec(specs, "plain", pfs("in"), ["sh", "-c", "cat /pfs/in/a.txt > /pfs/out/copy.txt; ln -s /pfs/in/a.txt "
                                                       "/pfs/out/link.txt"])
    write_spec(specs, "escape", pfs("in"), ["sh", "-c", "ln -s /etc/hostname /pfs/out/stolen"], datumTries=1)
    write_spec(specs, "empty", pfs("in", "/*.mp3"), ["sh", "-c", "exit 1"])
    write_spec(specs, "globby", pfs("in"), ["sh", "-c", "echo x > '/pfs/out/take (1).txt'"], datumTries=1)
    res = by_pipeline(run_pipelines(store, specs))
    assert res["plain"].state == "JOB_SUCCESS", res["plain"].datums[0].error
    assert store.read_file("plain", "copy.txt") == store.read_file("plain", "link.txt") == b"alpha"
    assert res["escape"].state == "JOB_FAILURE"
    assert "symlink leaving the datum's folders" in res["escape"].datums[0].error
    assert "PFS refuses the characters" in res["globby"].datums[0].error
    # no datum matched: the job succeeds with an empty commit, as in Pachyderm
    assert (res["empty"].state, res["empty"].total) == ("JOB_SUCCESS", 0)
    assert store.resolve("empty").files == {}


def test_reprocess_spec_every_job_disables_skipping(tmp_path):
    store = Store(tmp_path / "store")
    for n in ("a", "b"):
        (tmp_path / n).write_text(n)
    store.put_files("in", [tmp_path / "a"])
    write_spec(tmp_path / "specs", "shout", pfs("in"), SHOUT, reprocessSpec="every_job")
    assert run_pipelines(store, tmp_path / "specs")[0].processed == 1
    store.put_files("in", [tmp_path / "b"])
    job = run_pipelines(store, tmp_path / "specs")[0]
    assert (job.processed, job.skipped) == (2, 0)
