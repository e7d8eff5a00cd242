"""Static checks of pipelines/*.json: schema, commands, DAG, resources (no cluster needed)."""

from __future__ import annotations

import graphlib
import importlib
import json
import re
from pathlib import Path

import pytest
from conftest import PIPELINES_DIR, pachyderm_schema

from ambientgen.chain import INPUT_REPOS, REPOS
from ambientgen.cli import COMMANDS

USER_INPUT_REPOS = set(INPUT_REPOS)
# the chain (the README's table): pipeline -> (command, {input repo: glob})
CHAIN = {
    "audio-processed": ("normalize", {"audio-unprocessed": "/*"}),
    "audio-processed-wav": ("mp3-to-wav", {"audio-processed": "/*"}),
    "midi": ("transcribe", {"audio-processed-wav": "/*"}),
    "transformer-preprocess": ("make-dataset", {"midi": "/"}),
    "music-transformer": ("train", {"transformer-preprocess": "/"}),
    "music-transformer-generate": ("generate", {"music-transformer": "/", "generation-config": "/*"}),
    "ambient-render": ("render", {"music-transformer-generate": "/*"}),
}
GPU_PIPELINES = {"music-transformer", "music-transformer-generate"}
SPEC_FILES = sorted(PIPELINES_DIR.glob("*.json"))


def load(path: Path) -> dict:
    return json.loads(path.read_text())


def pfs_inputs(node: dict) -> list[dict]:
    if "pfs" in node:
        return [node["pfs"]]
    return [p for key in ("cross", "union", "join", "group") for child in node.get(key, []) for p in pfs_inputs(child)]


@pytest.fixture(scope="module")
def validator():
    from jsonschema import Draft4Validator

    schema = pachyderm_schema()
    Draft4Validator.check_schema(schema)
    return Draft4Validator(schema)


def test_one_spec_per_pipeline_of_the_chain():
    assert {load(p)["pipeline"]["name"] for p in SPEC_FILES} == set(CHAIN)
    for path in SPEC_FILES:
        assert path.stem == load(path)["pipeline"]["name"], f"{path.name}: file name != pipeline name"


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: p.stem)
def test_spec_validates_against_the_pachyderm_schema(path: Path, validator):
    errors = [f"{'/'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(load(path))]
    assert not errors, f"{path.name}: " + "; ".join(errors)


def test_schema_is_strict_about_our_kind_of_mistakes(validator):
    spec = load(PIPELINES_DIR / "music-transformer.json")
    assert not list(validator.iter_errors(spec))
    assert list(validator.iter_errors({**spec, "datum_tries": 3}))
    assert list(validator.iter_errors({**spec, "datumTries": "3"}))
    assert list(validator.iter_errors({**spec, "datumTimeout": "10m"}))
    assert list(validator.iter_errors({**spec, "resourceLimits": {"gpu": {"type": "nvidia.com/gpu", "number": "1"}}}))


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: p.stem)
def test_transform_runs_an_existing_ambientgen_stage(path: Path):
    spec = load(path)
    name = spec["pipeline"]["name"]
    cmd = spec["transform"]["cmd"]
    assert cmd[0] == "ambientgen" and cmd[1] in COMMANDS, f"{path.name}: {cmd[:2]} is not an ambientgen command"
    assert cmd[1] == CHAIN[name][0]
    inputs = pfs_inputs(spec["input"])
    mounts = {f"/pfs/{p.get('name', p['repo'])}" for p in inputs}
    assert cmd[2] == f"/pfs/{inputs[0].get('name', inputs[0]['repo'])}" and cmd[3] == "/pfs/out", \
        f"{path.name}: the stage contract is `ambientgen STAGE /pfs/<input> /pfs/out`"
    for arg in cmd:
        if arg.startswith("/pfs/") and arg != "/pfs/out":
            assert arg in mounts, f"{path.name}: {arg} is not one of the inputs {sorted(mounts)}"
    assert mounts <= set(cmd), f"{path.name}: every input should reach the command"


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: p.stem)
def test_stage_accepts_the_spec_command_line(path: Path):
    """Where the stage module is present, its own parser accepts the spec's arguments."""
    from ambientgen.cli import build_parser

    cmd = load(path)["transform"]["cmd"]
    importlib.import_module(COMMANDS[cmd[1]])  # every spec's stage is in the package
    args = build_parser().parse_args(cmd[1:])
    assert args.command == cmd[1]


def test_dag_is_acyclic_and_every_input_exists():
    specs = {load(p)["pipeline"]["name"]: load(p) for p in SPEC_FILES}
    graph = {}
    for name, spec in specs.items():
        repos = {p["repo"] for p in pfs_inputs(spec["input"])}
        unknown = repos - USER_INPUT_REPOS - set(specs)
        assert not unknown, f"{name} reads {unknown}, which is neither a user input repo nor a pipeline output"
        graph[name] = repos & set(specs)
    order = list(graphlib.TopologicalSorter(graph).static_order())  # CycleError on a cycle
    assert order.index("audio-processed") < order.index("music-transformer") < order.index("ambient-render")
    reached, frontier = set(), {"audio-unprocessed"}
    while frontier:  # everything flows from the MP3s
        frontier = {n for n, deps in graph.items() if n not in reached and
                    ({p["repo"] for p in pfs_inputs(specs[n]["input"])} & (frontier | reached))}
        reached |= frontier
    assert reached == set(specs)


def test_the_chain_module_names_every_repo_in_dependency_order():
    """ambientgen.chain.REPOS (what the demo, compose and the report list) is the specs' repos in an order that
    puts every repo after its inputs."""
    specs = {load(p)["pipeline"]["name"]: {i["repo"] for i in pfs_inputs(load(p)["input"])} for p in SPEC_FILES}
    assert set(REPOS) == set(specs) | set(INPUT_REPOS)
    for name, inputs in specs.items():
        assert all(REPOS.index(i) < REPOS.index(name) for i in inputs), name


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: p.stem)
def test_inputs_and_globs_follow_the_design(path: Path):
    spec = load(path)
    name = spec["pipeline"]["name"]
    got = {p["repo"]: p["glob"] for p in pfs_inputs(spec["input"])}
    assert got == CHAIN[name][1]
    if len(got) > 1:
        assert "cross" in spec["input"], f"{name}: several inputs should be crossed (model x each config)"


@pytest.mark.parametrize("path", SPEC_FILES, ids=lambda p: p.stem)
def test_resources_retries_and_scaling(path: Path):
    spec = load(path)
    name = spec["pipeline"]["name"]
    gpu = spec.get("resourceLimits", {}).get("gpu")
    if name in GPU_PIPELINES:
        assert gpu and gpu.get("type") == "nvidia.com/gpu" and gpu.get("number") == 1
        assert spec.get("autoscaling") is True, f"{name}: an idle GPU pipeline should release its node"
        assert any(t.get("key") == "nvidia.com/gpu" for t in spec.get("tolerations", []))
    else:
        assert gpu is None, f"{name} does not need a GPU"
    for spec_key in ("resourceLimits", "resourceRequests"):
        for key, value in spec.get(spec_key, {}).items():
            if key == "gpu":
                assert "type" in value, f"{name}: {spec_key}.gpu needs a type"
    req = spec.get("resourceRequests", {})
    assert req.get("cpu", 0) > 0 and re.fullmatch(r"\d+(\.\d+)?[MG]i?", req.get("memory", "")), \
        f"{name}: request CPU and memory so the scheduler can pack workers"
    assert 1 <= spec.get("datumTries", 3) <= 3
    if "datumTimeout" in spec:
        assert re.fullmatch(r"\d+s", spec["datumTimeout"])
    if all(p["glob"] == "/*" for p in pfs_inputs(spec["input"])):  # one datum per file: spread over workers
        assert spec.get("parallelismSpec", {}).get("constant", 1) > 1, f"{name}: per-file stage without parallelism"
    assert spec["transform"].get("env", {}).get("AMBIENTGEN_NO_PROGRESS") == "1"
