"""Static checks of images/*/Dockerfile and scripts/build_images.sh (there is no Docker engine in CI).

A small Dockerfile parser: line continuations, comments and parser directives, known instructions, ARG
substitution in FROM, stage names, COPY --from, the last USER of the final stage.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import PIPELINES_DIR, REPO_ROOT

from ambientgen.cli import COMMANDS

IMAGES = REPO_ROOT / "images"
VERSION = re.search(r'^version = "(.+)"', (REPO_ROOT / "pyproject.toml").read_text(), re.M).group(1)
OURS = ["normalize", "mp3-to-wav", "transcribe", "transcribe-gpu", "make-dataset", "train", "generate", "render"]
CUDA_STAGES = {"train", "generate", "transcribe-gpu"}
INSTRUCTIONS = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT", "VOLUME", "USER",
                "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL", "MAINTAINER"}


@dataclass
class Stage:
    index: int
    image: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)

    def all(self, kind: str) -> list[str]:
        return [arg for k, arg in self.instructions if k == kind]


def parse_dockerfile(text: str) -> tuple[dict[str, str], list[Stage]]:
    """(global ARG defaults, stages). Raises ValueError on anything malformed."""
    lines: list[str] = []
    current = ""
    for raw in text.splitlines():
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:  # comments and blank lines, also inside continuations
            continue
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        lines.append(current + stripped)
        current = ""
    if current:
        raise ValueError("dangling line continuation at the end")
    global_args: dict[str, str | None] = {}
    stages: list[Stage] = []
    for line in lines:
        kind, _, arg = line.partition(" ")
        kind = kind.upper()
        if kind not in INSTRUCTIONS:
            raise ValueError(f"unknown instruction {kind!r}")
        if kind in ("RUN", "CMD", "ENTRYPOINT", "COPY", "ADD", "USER", "WORKDIR", "ENV", "LABEL") and not stages:
            raise ValueError(f"{kind} before the first FROM")
        if kind == "FROM":
            words = [w for w in arg.split() if not w.startswith("--platform")]
            if len(words) not in (1, 3) or (len(words) == 3 and words[1].upper() != "AS"):
                raise ValueError(f"bad FROM: {arg!r}")
            image = re.sub(r"\$\{(\w+)\}|\$(\w+)",
                           lambda m: global_args.get(m.group(1) or m.group(2)) or "<unset>", words[0])
            if "<unset>" in image:
                raise ValueError(f"FROM uses an ARG without a default: {arg!r}")
            stages.append(Stage(len(stages), image, words[2] if len(words) == 3 else None))
            continue
        if kind == "ARG" and not stages:
            name, eq, default = arg.partition("=")
            global_args[name.strip()] = default.strip() if eq else None
            continue
        if kind in ("CMD", "ENTRYPOINT") and arg.startswith("["):
            json.loads(arg)  # exec form must be valid JSON
        stages[-1].instructions.append((kind, arg))
    if not stages:
        raise ValueError("no FROM")
    return global_args, stages


def copy_from(arg: str) -> str | None:
    m = re.search(r"--from=(\S+)", arg)
    return m.group(1) if m else None


def final_user(stage: Stage) -> str | None:
    users = stage.all("USER")
    return users[-1].split(":")[0] if users else None


def dockerfiles() -> list[Path]:
    return sorted(IMAGES.glob("*/Dockerfile"))


def ours(path: Path) -> bool:
    return path.parent.name in ("base", *OURS)


@pytest.mark.parametrize("path", [p for p in dockerfiles() if ours(p)], ids=lambda p: p.parent.name)
def test_dockerfile_parses_and_is_sound(path: Path):
    global_args, stages = parse_dockerfile(path.read_text())
    names = [s.name for s in stages]
    for stage in stages:
        for arg in stage.all("COPY"):
            src = copy_from(arg)
            if src is not None:  # COPY --from must name an earlier stage
                earlier = names[: stage.index] + [str(i) for i in range(stage.index)]
                assert src in earlier, f"{path}: COPY --from={src} is not an earlier stage"
    final = stages[-1]
    user = final_user(final)
    assert user and user not in ("root", "0"), f"{path}: the final stage must switch to a non-root USER"
    final_apt = " ".join(a for a in final.all("RUN") if "apt-get install" in a)
    for tool in ("build-essential", "gcc", "g++", "make "):
        assert tool not in final_apt, f"{path}: build tool {tool.strip()} left in the final image"
    for instr, arg in final.instructions:
        if instr == "RUN" and "apt-get install" in arg:
            assert "--no-install-recommends" in arg and "rm -rf /var/lib/apt/lists" in arg
            assert "apt-get clean" in arg  # a base without docker-clean keeps the .debs otherwise
    assert global_args.get("VERSION", VERSION) == VERSION


def test_base_is_multi_stage_and_installs_the_pinned_requirements():
    text = (IMAGES / "base" / "Dockerfile").read_text()
    global_args, stages = parse_dockerfile(text)
    by_name = {s.name: s for s in stages}
    assert stages[0].name == "builder" and "package" in by_name and len(stages) == 3
    assert re.fullmatch(r"python:3\.11\.\d+-slim-\w+", global_args["PYTHON_IMAGE"]), "pin a Python 3.11 slim tag"
    runs = " ".join(stages[0].all("RUN"))
    assert "pip install -r /src/requirements.txt" in runs
    assert "pip install --no-deps -r /src/requirements-nodeps.txt" in runs
    assert "requirements-dev" not in text  # the test tools stay out of the images
    copies = " ".join(stages[0].all("COPY"))
    for needed in ("requirements.txt", "requirements-nodeps.txt", "images/base/wheels/"):
        assert needed in copies
    package = by_name["package"]
    assert package.image == "builder"  # the package builds with the venv's pip and setuptools
    assert "pip install --no-deps --no-build-isolation --target /opt/ambientgen /src" in " ".join(package.all("RUN"))
    for needed in ("pyproject.toml", "README.md", "src"):
        assert needed in " ".join(package.all("COPY"))
    final = stages[-1]
    assert any(copy_from(a) == "builder" and "/opt/venv" in a for a in final.all("COPY"))  # venv, then package:
    assert any(copy_from(a) == "package" and "/opt/ambientgen" in a for a in final.all("COPY"))  # two layers
    env = " ".join(final.all("ENV"))
    assert "PATH=/opt/ambientgen/bin:/opt/venv/bin" in env and "PYTHONPATH=/opt/ambientgen" in env
    assert not any("build-essential" in a for s in stages for a in s.all("RUN"))  # every pin has a wheel
    for line in re.findall(r'"(\w[\w.-]*==[^"]+)"', runs):  # tools pinned exactly
        assert re.fullmatch(r"[\w.-]+==[\w.]+", line)


def test_base_context_sends_what_it_copies_and_not_the_venv():
    """images/base/Dockerfile.dockerignore keeps the copied files and drops .venv, runs/, tests/."""
    rules = [r for r in (IMAGES / "base" / "Dockerfile.dockerignore").read_text().splitlines()
             if r.strip() and not r.startswith("#")]

    def included(rel: str) -> bool:
        keep = True
        for rule in rules:
            neg = rule.startswith("!")
            pattern = rule.lstrip("!").rstrip("/").replace("**/", "")
            top = rel.split("/")[0]
            if fnmatch.fnmatch(rel, pattern) or fnmatch.fnmatch(top, pattern) or fnmatch.fnmatch(
                    rel.split("/")[-1], pattern):
                keep = neg
        return keep

    for rel in ("requirements.txt", "requirements-nodeps.txt", "pyproject.toml", "README.md",
                "src/ambientgen/cli.py"):
        assert (REPO_ROOT / rel).exists(), rel
        assert included(rel), rel
    for rel in (".venv/bin/python", "runs/demo/x.wav", "tests/test_pach.py", "data/x.mp3",
                "src/ambientgen/__pycache__/cli.cpython-311.pyc"):
        assert not included(rel), rel


@pytest.mark.parametrize("stage", OURS)
def test_stage_image_builds_on_the_right_base(stage: str):
    _, stages = parse_dockerfile((IMAGES / stage / "Dockerfile").read_text())
    base = "base-cuda" if stage in CUDA_STAGES else "base"
    assert stages[0].image == f"ambientgen/{base}:{VERSION}"
    cmd = json.loads(stages[-1].all("CMD")[-1])
    runs = " ".join(stages[-1].all("RUN"))
    assert cmd[0] == "ambientgen" and cmd[1] in COMMANDS
    assert f"ambientgen {cmd[1]} --help" in runs  # the build fails if this ambientgen lacks the command
    if stage in CUDA_STAGES:
        env = " ".join(stages[-1].all("ENV"))
        assert "NVIDIA_VISIBLE_DEVICES=all" in env and "compute" in env
    assert not any(copy_from(a) is None for a in stages[-1].all("COPY")), "stage images copy nothing from context"


def test_system_packages_where_stages_need_them():
    def apt(stage):
        return " ".join(a for a in parse_dockerfile((IMAGES / stage / "Dockerfile").read_text())[1][-1].all("RUN")
                        if "apt-get install" in a)

    assert "ffmpeg" in apt("mp3-to-wav")
    for pkg in ("ffmpeg", "fluidsynth", "fluid-soundfont-gm"):
        assert pkg in apt("render")
    for stage in ("normalize", "make-dataset", "train", "generate"):
        assert apt(stage) == "", f"{stage} needs no system packages"


def test_every_spec_image_has_a_dockerfile_and_the_package_version():
    for path in sorted(PIPELINES_DIR.glob("*.json")):
        image = json.loads(path.read_text())["transform"]["image"]
        m = re.fullmatch(r"ambientgen/([a-z0-9-]+):(.+)", image)
        assert m, f"{path.name}: image {image!r} is not ambientgen/<stage>:<version>"
        assert m.group(2) == VERSION, f"{path.name}: tag {m.group(2)} != package version {VERSION}"
        assert (IMAGES / m.group(1) / "Dockerfile").is_file(), f"{path.name}: no images/{m.group(1)}/Dockerfile"


def test_gpu_specs_use_cuda_images():
    for path in sorted(PIPELINES_DIR.glob("*.json")):
        spec = json.loads(path.read_text())
        stage = spec["transform"]["image"].split("/")[1].split(":")[0]
        if "gpu" in spec.get("resourceLimits", {}):
            assert stage in CUDA_STAGES, f"{path.name} asks for a GPU but {stage} has CPU torch"


def test_parser_rejects_broken_dockerfiles():
    with pytest.raises(ValueError):
        parse_dockerfile("RUN echo hi\n")
    with pytest.raises(ValueError):
        parse_dockerfile("FROM x\nFOO bar\n")
    with pytest.raises(ValueError):
        parse_dockerfile("ARG B\nFROM ${B}\n")
    with pytest.raises(json.JSONDecodeError):
        parse_dockerfile('FROM x\nCMD ["a", b]\n')
    _, stages = parse_dockerfile("FROM a AS one\nRUN x\nFROM b\nCOPY --from=two /x /y\nUSER root\n")
    assert copy_from(stages[1].all("COPY")[0]) == "two" and final_user(stages[1]) == "root"


def build_script(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    import os

    return subprocess.run(["bash", str(REPO_ROOT / "scripts" / "build_images.sh"), *args], capture_output=True,
                          text=True, env={**os.environ, **(env or {})}, timeout=60)


def test_build_script_order_tags_and_push():
    res = build_script("ghcr.io/me/", VERSION, "--push", "--dry-run", env={"DOCKER": "docker"})
    assert res.returncode == 0, res.stderr
    cmds = [shlex.split(line[2:]) for line in res.stdout.splitlines() if line.startswith("+ ")]
    builds = [c for c in cmds if c[1] == "build"]
    pushes = [c for c in cmds if c[1] == "push"]
    tags = [[c[i + 1] for i, w in enumerate(c) if w == "-t"] for c in builds]
    assert tags[0] == [f"ambientgen/base:{VERSION}"] and tags[1] == [f"ambientgen/base-cuda:{VERSION}"]
    assert builds[0][-1] == str(REPO_ROOT)  # the base needs the repository as context
    assert "TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in builds[0]
    stage_tags = {t[0].split("/")[1].split(":")[0]: t for t in tags[2:]}
    assert set(OURS) <= set(stage_tags)
    for stage in OURS:
        assert stage_tags[stage] == [f"ambientgen/{stage}:{VERSION}", f"ghcr.io/me/{stage}:{VERSION}"]
    for c in builds[2:]:
        assert Path(c[-1]).parent == IMAGES and f"VERSION={VERSION}" in c
        assert c[c.index("-f") + 1] == str(Path(c[-1]) / "Dockerfile")
    assert sorted(c[2] for c in pushes) == sorted(f"ghcr.io/me/{s}:{VERSION}" for s in stage_tags)
    assert cmds.index(pushes[0]) > cmds.index(builds[-1])  # push only after every build


def test_build_script_subset_and_bad_arguments():
    res = build_script("r", VERSION, "--dry-run", env={"STAGES": "train render"})
    built = [line for line in res.stdout.splitlines() if " build " in line]
    assert res.returncode == 0 and len(built) == 4 and "r/train" in res.stdout and "r/render" in res.stdout
    assert "push" not in res.stdout
    assert build_script("r").returncode == 2
    assert build_script("r", "latest").returncode == 2
    assert build_script("r", VERSION, "--bogus").returncode == 2
    res = build_script("r", VERSION, env={"DOCKER": "no-such-docker-binary"})
    assert res.returncode == 1 and "not found" in res.stderr


def test_makefile_targets_call_the_build_script():
    text = (REPO_ROOT / "Makefile").read_text()
    assert "bash scripts/build_images.sh $(REGISTRY) $(VERSION)\n" in text
    assert "bash scripts/build_images.sh $(REGISTRY) $(VERSION) --push" in text
