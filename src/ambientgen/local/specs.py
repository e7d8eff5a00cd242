"""Pipeline specs (Pachyderm 2.x JSON), the DAG between them, glob patterns and datums."""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

from .records import StoreError, check_repo_name
from .store import Store

# Keys the runner understands; others in a spec are accepted (Pachyderm validates them) but have no effect here.
SUPPORTED_INPUTS = ("pfs", "cross", "union")
# Spec parts that change what a datum produces; editing anything else (description, resources) keeps the salt.
SALT_KEYS = ("pipeline", "input", "transform")


@dataclass
class PfsInput:
    name: str
    repo: str
    glob: str
    branch: str = "master"


@dataclass
class PipelineSpec:
    name: str
    spec: dict
    path: Path | None = None
    inputs: list[PfsInput] = field(default_factory=list)

    @property
    def salt(self) -> str:
        canonical = json.dumps({k: self.spec.get(k) for k in SALT_KEYS}, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()

    @property
    def input_repos(self) -> list[str]:
        return sorted({i.repo for i in self.inputs})

    @property
    def datum_tries(self) -> int:
        return max(1, int(self.spec.get("datumTries", 3)))

    @property
    def datum_timeout(self) -> float | None:
        return parse_duration(self.spec.get("datumTimeout"))

    @property
    def transform(self) -> dict:
        return self.spec.get("transform") or {}

    @property
    def skip_datums(self) -> bool:
        """False with ``reprocessSpec: "every_job"`` (Pachyderm's way to turn off datum skipping)."""
        return str(self.spec.get("reprocessSpec", "until_success")).lower() != "every_job"

    def describe_input(self, node: dict | None = None) -> str:
        node = self.spec["input"] if node is None else node
        if "pfs" in node:
            p = node["pfs"]
            name = p.get("name") or p["repo"]
            return f"{p['repo']}:{p['glob']}" + (f" as {name}" if name != p["repo"] else "")
        kind = next(iter(node))
        return f"{kind}(" + ", ".join(self.describe_input(n) for n in node[kind]) + ")"


def parse_duration(value: object) -> float | None:
    """'600s', '1.5m', '2h', '1h30m' or a number of seconds -> seconds."""
    if value in (None, "", 0):
        return None
    if isinstance(value, int | float):
        return float(value)
    total, pos = 0.0, 0
    text = str(value).strip()
    for m in re.finditer(r"(\d+(?:\.\d+)?)(ms|s|m|h)", text):
        if m.start() != pos:
            break
        total += float(m.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m.group(2)]
        pos = m.end()
    if pos != len(text) or not text:
        raise StoreError(f"invalid duration {value!r} (use e.g. '600s' or '1h30m')")
    return total


def _collect_inputs(node: object, where: str, out: list[PfsInput]) -> None:
    if not isinstance(node, dict) or len(node) != 1:
        raise StoreError(f"{where}: an input must have exactly one of pfs, cross, union")
    kind, value = next(iter(node.items()))
    if kind == "pfs":
        if not isinstance(value, dict) or "repo" not in value or "glob" not in value:
            raise StoreError(f"{where}: a pfs input needs 'repo' and 'glob'")
        repo = check_repo_name(value["repo"])
        name = value.get("name") or repo
        if not re.fullmatch(r"[A-Za-z0-9_-]+", name) or name == "out":
            raise StoreError(f"{where}: invalid input name {name!r}")
        branch = value.get("branch", "master")
        if branch != "master":
            raise StoreError(f"{where}: only branch 'master' is supported by the local runner (got {branch!r})")
        glob_regex(value["glob"])  # validate now
        out.append(PfsInput(name=name, repo=repo, glob=value["glob"], branch=branch))
    elif kind in ("cross", "union"):
        if not isinstance(value, list) or not value:
            raise StoreError(f"{where}: '{kind}' needs a non-empty list of inputs")
        for i, sub in enumerate(value):
            _collect_inputs(sub, f"{where}.{kind}[{i}]", out)
    else:
        raise StoreError(f"{where}: input type {kind!r} is not supported by the local runner "
                         f"(supported: {', '.join(SUPPORTED_INPUTS)})")


def input_repos(node: dict) -> set[str]:
    """Every repo an input tree reads (StoreError for an input kind the chain does not use)."""
    found: list[PfsInput] = []
    _collect_inputs(node, "input", found)
    return {i.repo for i in found}


def parse_spec(spec: dict, path: Path | None = None) -> PipelineSpec:
    """Check one spec (the parts the runner uses) and return it; errors name the file."""
    where = str(path) if path else "spec"
    try:
        name = spec["pipeline"]["name"]
        check_repo_name(name)
        if "input" not in spec:
            raise StoreError("no 'input'")
        cmd = spec.get("transform", {}).get("cmd")
        if not cmd or not isinstance(cmd, list) or not all(isinstance(a, str) for a in cmd):
            raise StoreError("transform.cmd must be a non-empty list of strings")
        stdin = spec["transform"].get("stdin", [])
        if not isinstance(stdin, list) or not all(isinstance(a, str) for a in stdin):
            raise StoreError("transform.stdin must be a list of strings")
        env = spec["transform"].get("env", {})
        if not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values()):
            raise StoreError("transform.env must map names to strings")
        inputs: list[PfsInput] = []
        _collect_inputs(spec["input"], "input", inputs)
        names = [i.name for i in inputs]
        if len(set(names)) != len(names):
            raise StoreError(f"two inputs share a name ({names}); give one a distinct 'name'")
        if name in {i.repo for i in inputs}:
            raise StoreError("a pipeline cannot read its own output repo")
        parse_duration(spec.get("datumTimeout"))
    except (KeyError, TypeError) as exc:
        raise StoreError(f"invalid pipeline spec: missing or malformed {exc}", where) from None
    except StoreError as exc:
        raise StoreError(exc.cause, where) from None
    return PipelineSpec(name=name, spec=spec, path=path, inputs=inputs)


def default_pipelines_dir() -> Path:
    """$AMBIENTGEN_PIPELINES, else ./pipelines, else the pipelines/ folder of the checkout this package runs from."""
    from .. import env

    given = env.get("AMBIENTGEN_PIPELINES")
    if given:
        return Path(given)
    here = Path("pipelines")
    if here.is_dir():
        return here
    checkout = Path(__file__).resolve().parents[3] / "pipelines"
    return checkout if checkout.is_dir() else here


def load_specs(pipelines_dir: str | os.PathLike) -> dict[str, PipelineSpec]:
    """Every ``*.json`` spec in a folder, by pipeline name."""
    d = Path(pipelines_dir)
    if not d.is_dir():
        raise StoreError("pipelines folder not found", d)
    specs: dict[str, PipelineSpec] = {}
    for f in sorted(d.glob("*.json")):
        try:
            raw = json.loads(f.read_text())
        except ValueError as exc:
            raise StoreError(f"not valid JSON: {exc}", f) from None
        ps = parse_spec(raw, f)
        if ps.name in specs:
            raise StoreError(f"pipeline {ps.name!r} is also defined in {specs[ps.name].path}", f)
        specs[ps.name] = ps
    return specs


def topo_order(specs: dict[str, PipelineSpec]) -> list[str]:
    """Pipeline names with every pipeline after the pipelines producing its inputs; a cycle is an error."""
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(n: str, chain: list[str]) -> None:
        if state.get(n) == 2:
            return
        if state.get(n) == 1:
            raise StoreError(f"pipelines form a cycle: {' -> '.join([*chain, n])}")
        state[n] = 1
        for repo in specs[n].input_repos:
            if repo in specs:
                visit(repo, [*chain, n])
        state[n] = 2
        order.append(n)

    for n in sorted(specs):
        visit(n, [])
    return order


# ---------------------------------------------------------------------- globs
@lru_cache(maxsize=256)
def glob_regex(pattern: str) -> re.Pattern:
    """Pachyderm's glob syntax as a regex over paths without the leading '/'.

    ``*`` any characters but ``/``; ``**`` any characters including ``/``; ``?`` one character but ``/``;
    ``[abc]``, ``[a-z]``, ``[!abc]`` classes; ``{a,b}`` alternatives; ``\\x`` a literal x.
    """
    if not isinstance(pattern, str) or not pattern.startswith("/"):
        raise StoreError(f"invalid glob {pattern!r}: a glob starts with '/'")
    p = pattern.strip("/")
    out, i, depth = [], 0, 0
    while i < len(p):
        c = p[i]
        if c == "*":
            if p.startswith("**", i):
                out.append(".*")
                i += 2
                continue
            out.append("[^/]*")
        elif c == "?":
            out.append("[^/]")
        elif c == "[":
            j = p.find("]", i + 2)
            if j < 0:
                raise StoreError(f"invalid glob {pattern!r}: '[' without ']'")
            body = p[i + 1:j]
            neg = body[:1] in ("!", "^")
            if neg:
                body = body[1:]
            out.append("[" + ("^" if neg else "") + body.replace("\\", "\\\\").replace("^", "\\^") + "]")
            i = j
        elif c == "{":
            out.append("(?:")
            depth += 1
        elif c == "}" and depth:
            out.append(")")
            depth -= 1
        elif c == "," and depth:
            out.append("|")
        elif c == "\\" and i + 1 < len(p):
            i += 1
            out.append(re.escape(p[i]))
        else:
            out.append(re.escape(c))
        i += 1
    if depth:
        raise StoreError(f"invalid glob {pattern!r}: '{{' without '}}'")
    try:
        return re.compile("".join(out) + r"\Z", re.DOTALL)
    except re.error as exc:
        raise StoreError(f"invalid glob {pattern!r}: {exc}") from None


def glob_matches(files: dict[str, dict], pattern: str) -> list[tuple[str, dict[str, dict]]]:
    """Datums of one pfs input: (matched path, the files it holds) for every file or folder the glob matches.

    ``/`` is the whole repo as one datum (only when it has files). A matched folder brings every file
    below it. Matches come in path order.
    """
    if pattern.strip("/") == "":
        return [("", dict(files))] if files else []
    rx = glob_regex(pattern)
    candidates: set[str] = set(files)
    for f in files:
        parts = f.split("/")
        for k in range(1, len(parts)):
            candidates.add("/".join(parts[:k]))
    out = []
    for c in sorted(candidates):
        if rx.match(c):
            if c in files:
                out.append((c, {c: files[c]}))
            else:
                out.append((c, {f: e for f, e in files.items() if f.startswith(c + "/")}))
    return out


@dataclass
class DatumInput:
    name: str
    repo: str
    commit: str
    path: str  # the matched file or folder ("" for the whole repo)
    files: dict[str, dict]  # every file of this input in the datum: path -> {hash, size}
    glob: str = "/"


@dataclass
class Datum:
    inputs: list[DatumInput]

    @property
    def id(self) -> str:
        """Identifies the datum's data: input names, repos, paths and file contents (not the spec)."""
        h = hashlib.sha256()
        for di in sorted(self.inputs, key=lambda d: d.name):
            h.update(f"{di.name}\0{di.repo}\0master\0{di.path}\0".encode())
            for f, e in sorted(di.files.items()):
                h.update(f"{f}\0{e['hash']}\0".encode())
        return h.hexdigest()

    def hash(self, salt: str) -> str:
        """The datum's identity for skipping: its data plus the pipeline salt."""
        return hashlib.sha256(f"{self.id}\0{salt}".encode()).hexdigest()

    def describe(self) -> str:
        return ", ".join(f"{d.repo}:/{d.path}" for d in self.inputs)


def datums_for(node: dict, heads: dict[str, str], store: Store) -> list[Datum]:
    """The datums of an input tree at the given head commits (repo -> commit id)."""
    return input_datums(node, lambda repo: (heads[repo], store.get_commit(repo, heads[repo]).files))


def input_datums(node: dict, listing: Callable[[str], tuple[str, dict[str, dict]]]) -> list[Datum]:
    """The datums of an input tree, given ``listing(repo) -> (commit, {path: entry})``.

    The one statement of how pfs, cross and union inputs become datums: the embedded runner lists its store's
    commits, and scripts/test_images.py lists plain folders for the stage images.
    """
    kind, value = next(iter(node.items()))
    if kind == "pfs":
        repo = value["repo"]
        name = value.get("name") or repo
        commit, files = listing(repo)
        return [Datum([DatumInput(name, repo, commit, path, fs, value["glob"])])
                for path, fs in glob_matches(files, value["glob"])]
    parts = [input_datums(sub, listing) for sub in value]
    if kind == "union":
        return [d for part in parts for d in part]
    # cross: every combination
    return [Datum([di for d in combo for di in d.inputs]) for combo in itertools.product(*parts)]
