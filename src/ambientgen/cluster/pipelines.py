"""Deploy the chain's pipelines on a Pachyderm 2.12 cluster and take them down (pachyderm-sdk 2.12.2).

The specs are read and ordered by the rules the embedded runner uses (``ambientgen.local.specs``): a spec that
runs locally is the spec that is deployed.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..chain import INPUT_REPOS
from ..local import specs as rules
from ..local.records import StoreError

BRANCH = "master"
IMAGE_PREFIX = "ambientgen/"  # the specs' transform.image is ambientgen/<stage>:<version>

log = logging.getLogger("ambientgen.cluster")


class PachError(Exception):
    """A failure with a message for the user (no traceback)."""


# ----------------------------------------------------------------------------------------------- specs
def load_specs(pipelines_dir: str | os.PathLike | None = None) -> dict[str, dict]:
    """Pipeline name -> spec, for every pipelines/*.json, checked as the local runner checks them."""
    folder = Path(pipelines_dir) if pipelines_dir else rules.default_pipelines_dir()
    try:
        specs = rules.load_specs(folder)
    except StoreError as exc:
        raise PachError(str(exc)) from None
    if not specs:
        raise PachError(f"{folder}: no pipeline specs (*.json)")
    return {name: ps.spec for name, ps in specs.items()}


def input_repos(node: dict | None) -> set[str]:
    """Every repo an input tree reads (pfs inputs inside cross and union)."""
    return rules.input_repos(node) if node else set()


def dependency_order(specs: dict[str, dict]) -> list[str]:
    """Pipelines ordered so that each comes after the pipelines whose output it reads (PachError on a cycle)."""
    try:
        return rules.topo_order({name: rules.parse_spec(spec) for name, spec in specs.items()})
    except StoreError as exc:
        raise PachError(str(exc)) from None


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


def pipeline_ref(name: str):
    from pachyderm_sdk.api import pps

    return pps.Pipeline(name=name)


def repo_ref(name: str):
    from pachyderm_sdk.api import pfs

    return pfs.Repo(name=name)


# ---------------------------------------------------------------------------------------------- deploy


@dataclass
class DeployResult:
    repos_created: list[str] = field(default_factory=list)
    actions: dict[str, str] = field(default_factory=dict)  # pipeline -> created | updated | unchanged | reprocessed


def deploy(
    client, pipelines_dir: str | os.PathLike | None = None, reprocess: bool = False, registry: str | None = None
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
        if not client.pfs.repo_exists(repo_ref(name)):
            client.pfs.create_repo(repo=repo_ref(name), description="ambientgen user input")
            result.repos_created.append(name)
            log.info("created repo %s", name)
    for name in order:
        spec = specs[name]
        exists = client.pps.pipeline_exists(pipeline_ref(name))
        if exists and not reprocess:
            info = client.pps.inspect_pipeline(pipeline=pipeline_ref(name), details=True)
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


def undeploy(client, pipelines_dir: str | os.PathLike | None = None, purge: bool = False,
             keep_outputs: bool = False) -> list[str]:
    """Delete the pipelines, downstream first; purge also deletes the input repos (your MP3s and configs).

    Output repos go with their pipelines (their content is derived and is made again by a deploy), unless
    keep_outputs. Returns what was deleted.
    """
    specs = load_specs(pipelines_dir)
    deleted: list[str] = []
    for name in reversed(dependency_order(specs)):
        if client.pps.pipeline_exists(pipeline_ref(name)):
            client.pps.delete_pipeline(pipeline=pipeline_ref(name), keep_repo=keep_outputs and not purge)
            deleted.append(name)
            log.info("deleted pipeline %s", name)
    if purge:
        for name in INPUT_REPOS:
            if client.pfs.repo_exists(repo_ref(name)):
                client.pfs.delete_repo(repo=repo_ref(name), force=True)
                deleted.append(name)
                log.info("deleted repo %s", name)
    return deleted
