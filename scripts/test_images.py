#!/usr/bin/env python3
"""Build every stage image and run the chain inside them on sample data, the way Pachyderm workers would.

  scripts/test_images.py                          # what `make test-images` runs: base, images, chain, sizes
  scripts/test_images.py --skip-build             # the images are built: run the chain in them again
  scripts/test_images.py --no-cuda                # skip the CUDA base (GPU stages then run in the CPU base)
  scripts/test_images.py --runtime docker --python-image python:3.11.13-slim-bookworm

Steps, each logged with its duration into WORK/test-images.log:
1. a Python base: with no registry at hand, `mmdebstrap` makes a Debian bookworm root file system with Python,
   imported as localhost/ambientgen/python-base:bookworm (or --python-image names one);
2. scripts/build_images.sh builds ambientgen/base, ambientgen/base-cuda and every stage image;
3. sample MP3s (Bach chorales rendered with FluidSynth) go into WORK/pfs/audio-unprocessed and the example
   requests of data/generation-config/ into WORK/pfs/generation-config;
4. every pipeline of pipelines/, in dependency order, runs once per datum in a container of its spec's image:
   the datum's files (hard links in a staging folder) read-only at /pfs/<input>, an empty /pfs/out, the spec's transform.cmd and env;
   the datums' outputs are merged into WORK/pfs/<pipeline>, and every output file is read back (MP3, WAV, MIDI,
   TFRecord, safetensors, JSON, PNG) and must belong to the image's non-root user;
5. a table of image sizes and of the layers each stage image shares with its base.

Runtimes: buildah (as root: overlay storage, chroot isolation, host network for the builds), podman or docker.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from ambientgen.chain import CONFIG_REPO, MP3_REPO  # noqa: E402
from ambientgen.local.specs import input_datums, load_specs, topo_order  # noqa: E402

LOCAL_BASE = "localhost/ambientgen/python-base:bookworm"
CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")
STAGE_USER = 1000  # images/base/Dockerfile: the user `ambientgen`
# What each pipeline must produce, by suffix: the chain MP3 -> WAV -> MIDI -> TFRecord -> checkpoint -> MIDI -> audio.
EXPECTED = {
    "audio-processed": {".mp3"}, "audio-processed-wav": {".wav"}, "midi": {".mid"},
    "transformer-preprocess": {".tfrecord"}, "music-transformer": {".safetensors", ".json"},
    "music-transformer-generate": {".mid"}, "ambient-render": {".mp3", ".png"},
}


class Log:
    """Print and append to the log file, each line with the seconds since the start."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.f = open(path, "a", encoding="utf-8")
        self.t0 = time.monotonic()

    def __call__(self, msg: str) -> None:
        line = f"[{time.monotonic() - self.t0:7.1f}s] {msg}"
        print(line, flush=True)
        self.f.write(line + "\n")
        self.f.flush()

    def run(self, cmd: list[str], env: dict | None = None, check: bool = True) -> subprocess.CompletedProcess:
        """Run a command, its output streamed into the log."""
        self(f"+ {' '.join(cmd)}")
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, **(env or {})})
        tail: list[str] = []
        for line in proc.stdout:
            self.f.write("    " + line)
            tail = (tail + [line.rstrip()])[-20:]
        rc = proc.wait()
        self.f.flush()
        if check and rc != 0:
            raise SystemExit(f"failed (exit {rc}): {' '.join(cmd)}\n" + "\n".join(tail))
        return subprocess.CompletedProcess(cmd, rc, "\n".join(tail), "")


class Runtime:
    """buildah, podman or docker: build environment, image queries and one-shot containers."""

    def __init__(self, name: str):
        self.name = name
        if not shutil.which(name):
            raise SystemExit(f"{name} not found: install it (Debian: apt-get install buildah) or pick --runtime")
        self.env = {}
        if name == "buildah":  # as root without a container engine: no daemon, no user namespaces needed
            self.env = {"STORAGE_DRIVER": os.environ.get("STORAGE_DRIVER", "overlay"),
                        "BUILDAH_ISOLATION": os.environ.get("BUILDAH_ISOLATION", "chroot"),
                        "BUILDAH_LAYERS": "true"}
        os.environ.update(self.env)

    def query(self, *args: str) -> str:
        return subprocess.run([self.name, *args], check=True, capture_output=True, text=True).stdout

    def has_image(self, ref: str) -> bool:
        kind = ["--type", "image"] if self.name == "buildah" else []
        return subprocess.run([self.name, "inspect", *kind, ref], capture_output=True).returncode == 0

    def inspect(self, ref: str) -> dict:
        """(size in bytes, layer digests) of an image."""
        if self.name == "buildah":  # local storage keeps layers uncompressed: the manifest's sizes are on disk
            info = json.loads(self.query("inspect", "--type", "image", ref))
            layers = info["OCIv1"]["rootfs"]["diff_ids"]
            sizes = [int(layer["size"]) for layer in json.loads(info["Manifest"])["layers"]]
        else:
            info = json.loads(self.query("image", "inspect", ref))[0]
            layers, sizes = info["RootFS"]["Layers"], [int(info["Size"])]
        return {"size": sum(sizes), "layers": layers}

    def run(self, log: Log, image: str, cmd: list[str], mounts: list[tuple[Path, str, bool]],
            env: dict[str, str], name: str) -> int:
        """Run `cmd` in a new container of `image` with its own user, no network; return the exit status."""
        vols = [a for host, inner, ro in mounts for a in ("-v", f"{host}:{inner}{':ro' if ro else ''}")]
        envs = [a for k, v in env.items() for a in ("-e", f"{k}={v}")]
        if self.name != "buildah":
            return log.run([self.name, "run", "--rm", "--network", "none", *vols, *envs, image, *cmd],
                           check=False).returncode
        subprocess.run(["buildah", "rm", name], capture_output=True)
        log.run(["buildah", "from", "--pull-never", "--name", name, image])
        try:
            return log.run(["buildah", "run", "--network", "none", *vols, *envs, name, "--", *cmd],
                           check=False).returncode
        finally:
            subprocess.run(["buildah", "rm", name], capture_output=True)


def python_base(rt: Runtime, log: Log, work: Path, wanted: str | None) -> str:
    """The Python image the bases build on: --python-image, or a local Debian bookworm made with mmdebstrap."""
    if wanted:
        return wanted
    if rt.has_image(LOCAL_BASE):
        log(f"python base: {LOCAL_BASE} (already made)")
        return LOCAL_BASE
    if not shutil.which("mmdebstrap"):
        raise SystemExit("mmdebstrap not found (apt-get install mmdebstrap), or pass --python-image")
    tar = work / "rootfs.tar"
    log.run(["mmdebstrap", "--variant=minbase",
             "--include=python3,python3-venv,python-is-python3,ca-certificates", "bookworm", str(tar)])
    (work / "Containerfile").write_text("FROM scratch\nADD rootfs.tar /\nCMD [\"python3\"]\n")
    log.run([rt.name, "build", "-t", LOCAL_BASE, "-f", str(work / "Containerfile"), str(work)])
    tar.unlink()
    return LOCAL_BASE


def torch_wheels() -> str:
    """A folder of pip's --find-links that holds the pinned CPU torch wheel (none: the index is used)."""
    pin = next(line.split("==")[1].strip() for line in (ROOT / "requirements.txt").read_text().splitlines()
               if line.startswith("torch=="))
    for folder in os.environ.get("PIP_FIND_LINKS", "").split():
        if list(Path(folder).glob(f"torch-{pin}+cpu-*.whl")):
            return folder
    return ""


def build_images(rt: Runtime, log: Log, python_image: str, cuda: bool) -> None:
    env = {"DOCKER": rt.name, "PYTHON_IMAGE": python_image, "NO_CUDA": "0" if cuda else "1",
           "TORCH_WHEELS": torch_wheels()}
    opts = ["--network", "host"] if rt.name == "buildah" else []
    if CA_BUNDLE.is_file():  # a network whose proxy signs its own certificates: the builds trust what the host does
        opts += ["-v", f"{CA_BUNDLE.parent}:{CA_BUNDLE.parent}:ro", "--build-arg", f"PIP_CERT={CA_BUNDLE}"]
    env["BUILD_OPTS"] = " ".join(opts)
    version = _version()
    log.run(["bash", str(ROOT / "scripts/build_images.sh"), "docker.io/ambientgen", version], env=env)


def _version() -> str:
    for line in (ROOT / "pyproject.toml").read_text().splitlines():
        if line.startswith("version = "):
            return line.split('"')[1]
    raise SystemExit("pyproject.toml has no version")


def sample_data(log: Log, pfs: Path, pieces: int, seconds: float) -> None:
    from ambientgen.sample_data import make_samples

    mp3s = pfs / MP3_REPO
    if not any(mp3s.glob("*.mp3")):
        made = make_samples(pfs / ".samples", count=pieces, seconds=seconds, mp3=True)
        mp3s.mkdir(parents=True, exist_ok=True)
        for i, f in enumerate(p for p in made if p.suffix == ".mp3"):
            shutil.move(f, mp3s / f"Chorale n°{i + 1} – evening.mp3")  # a name normalize has to fix
        shutil.rmtree(pfs / ".samples")
    configs = pfs / CONFIG_REPO
    configs.mkdir(parents=True, exist_ok=True)
    for f in (ROOT / "data/generation-config").iterdir():
        shutil.copy(f, configs / f.name)
    log(f"sample data: {len(list(mp3s.iterdir()))} MP3s, {len(list(configs.iterdir()))} generation configs")


def listing(pfs: Path):
    """input_datums' view of a folder: every file below it (hidden ones too, as PFS has them)."""
    def files_of(repo: str) -> tuple[str, dict[str, dict]]:
        root = pfs / repo
        files = {p.relative_to(root).as_posix(): {} for p in sorted(root.rglob("*")) if p.is_file()}
        return "local", files
    return files_of


def run_pipeline(rt: Runtime, log: Log, spec, pfs: Path, image: str, env_extra: dict[str, str]) -> dict:
    """Run every datum of one pipeline in its own container; merge the outputs into pfs/<name>."""
    datums = input_datums(spec.spec["input"], listing(pfs))
    out_repo = pfs / spec.name
    shutil.rmtree(out_repo, ignore_errors=True)
    out_repo.mkdir(parents=True)
    failed, t0 = 0, time.monotonic()
    for i, d in enumerate(datums, 1):
        work = pfs.parent / "datums" / spec.name / str(i)
        shutil.rmtree(work, ignore_errors=True)
        out = work / "out"
        out.mkdir(parents=True)
        os.chown(out, STAGE_USER, STAGE_USER)
        mounts: list[tuple[Path, str, bool]] = [(out, "/pfs/out", False)]
        env = dict(spec.transform.get("env", {}))
        for di in d.inputs:  # the datum's files alone, under their repo paths (any name: no mount syntax to break)
            staged = work / "in" / di.name
            staged.mkdir(parents=True)
            for rel in di.files:
                (staged / rel).parent.mkdir(parents=True, exist_ok=True)
                os.link(pfs / di.repo / rel, staged / rel)
            mounts.append((staged, f"/pfs/{di.name}", True))
            env[di.name] = f"/pfs/{di.name}" + (f"/{di.path}" if di.path else "")
        env.update(env_extra)
        log(f"{spec.name}: datum {i}/{len(datums)} ({d.describe()}) in {image}")
        rc = rt.run(log, image, spec.transform["cmd"], mounts, env, name=f"ag-{spec.name}")
        if rc != 0:
            log(f"{spec.name}: datum {i} FAILED (exit {rc})")
            failed += 1
            continue
        merge(out, out_repo)
    return {"datums": len(datums), "failed": failed, "seconds": time.monotonic() - t0}


def merge(src: Path, dest: Path) -> None:
    """Pachyderm merges the datums' /pfs/out; two datums writing one path with different bytes is an error."""
    for f in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = f.relative_to(src)
        target = dest / rel
        if target.exists() and target.read_bytes() != f.read_bytes():
            raise SystemExit(f"{dest.name}: two datums wrote {rel} with different content")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(f, target)
        os.chown(target, f.stat().st_uid, f.stat().st_gid)


def check_file(path: Path) -> str:
    """Read one output back with the library the next stage uses; return a short description."""
    suffix = path.suffix.lower()
    if suffix in (".mp3", ".wav", ".flac"):
        import soundfile
        info = soundfile.info(str(path))
        if info.frames <= 0:
            raise ValueError("no audio frames")
        return f"{info.duration:.1f} s"
    if suffix in (".mid", ".midi"):
        from ambientgen.music.midi_io import load_midi
        ns = load_midi(path)
        return f"{len(ns.notes)} notes"
    if suffix == ".tfrecord":
        from ambientgen.music.tfrecord_io import read_records
        n = sum(1 for _ in read_records(path))  # every record's CRCs checked; a few files leave eval/test empty
        if n == 0 and path.name == "train.tfrecord":
            raise ValueError("an empty training split")
        return f"{n} records"
    if suffix == ".safetensors":
        from safetensors import safe_open
        with safe_open(str(path), framework="pt") as f:
            return f"{len(list(f.keys()))} tensors"
    if suffix == ".json":
        json.loads(path.read_text())
        return "JSON"
    if suffix == ".png":
        head = path.read_bytes()[:24]
        if head[:8] != b"\x89PNG\r\n\x1a\n":
            raise ValueError("not a PNG")
        w, h = struct.unpack(">II", head[16:24])
        return f"{w}x{h} PNG"
    return f"{path.stat().st_size} bytes"


def check_outputs(log: Log, name: str, repo: Path) -> list[str]:
    """Every output readable and owned by the stage user; the suffixes the next stage needs are there."""
    problems = []
    files = sorted(p for p in repo.rglob("*") if p.is_file())
    for f in files:
        rel = f.relative_to(repo)
        try:
            what = check_file(f)
        except Exception as exc:  # any reader's error is a finding, reported with the file's name
            problems.append(f"{name}/{rel}: unreadable ({exc})")
            continue
        if f.stat().st_uid != STAGE_USER:
            problems.append(f"{name}/{rel}: written by uid {f.stat().st_uid}, not the stage user {STAGE_USER}")
        log(f"  {name}/{rel}: {what}")
    missing = EXPECTED.get(name, set()) - {f.suffix.lower() for f in files}
    if missing:
        problems.append(f"{name}: no {', '.join(sorted(missing))} output")
    return problems


def check_user(rt: Runtime, log: Log, image: str) -> str | None:
    """The image runs as its non-root user (a Pachyderm worker runs the image's own USER)."""
    probe = Path(f"/tmp/ag-user-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    os.chmod(probe, 0o777)
    rc = rt.run(log, image, ["sh", "-c", "id -u > /probe/uid"], [(probe, "/probe", False)], {}, name="ag-user")
    uid = (probe / "uid").read_text().strip() if rc == 0 and (probe / "uid").exists() else "?"
    shutil.rmtree(probe)
    return None if uid == str(STAGE_USER) else f"{image}: runs as uid {uid}, not {STAGE_USER}"


def size_table(rt: Runtime, version: str) -> list[str]:
    """Markdown rows: each image's size and how much of it is the base's shared layers."""
    rows = ["| image | size | own layers | shares the base's layers |", "|---|---|---|---|"]
    bases = {b: rt.inspect(f"ambientgen/{b}:{version}") for b in ("base", "base-cuda")
             if rt.has_image(f"ambientgen/{b}:{version}")}
    for b, info in bases.items():
        rows.append(f"| ambientgen/{b} | {info['size'] / 1e9:.2f} GB | – | – |")
    for dockerfile in sorted(ROOT.glob("images/*/Dockerfile")):
        stage = dockerfile.parent.name
        ref = f"ambientgen/{stage}:{version}"
        if stage == "base" or not rt.has_image(ref):
            continue
        info = rt.inspect(ref)
        base = "base-cuda" if "FROM ambientgen/base-cuda" in dockerfile.read_text() else "base"
        shared = base in bases and info["layers"][:len(bases[base]["layers"])] == bases[base]["layers"]
        own = info["size"] - bases[base]["size"] if base in bases else info["size"]
        rows.append(f"| ambientgen/{stage} | {info['size'] / 1e9:.2f} GB | {own / 1e6:.0f} MB | "
                    f"{'yes, ' + base if shared else 'NO'} |")
    return rows


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                epilog=__doc__[__doc__.index("\n\n"):], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--runtime", default=os.environ.get("DOCKER", "buildah"), help="buildah (default), podman or docker")
    p.add_argument("--work", type=Path, default=ROOT / "runs/test-images", help="work folder (default runs/test-images)")
    p.add_argument("--python-image", help="Python base for the images (default: made locally with mmdebstrap)")
    p.add_argument("--skip-build", action="store_true", help="use the images already built")
    p.add_argument("--no-cuda", action="store_true", help="skip the CUDA base; its stages run in ambientgen/base")
    p.add_argument("--pieces", type=int, default=3, help="sample MP3s (default 3)")
    p.add_argument("--seconds", type=float, default=16.0, help="length of each sample (default 16 s)")
    p.add_argument("--train-minutes", type=float, default=1.0, help="training budget (default 1 minute)")
    args = p.parse_args()
    if os.geteuid() != 0 and args.runtime == "buildah":
        raise SystemExit("buildah without a container engine needs root here (or use --runtime podman/docker)")

    work = args.work.resolve()
    shutil.rmtree(work / "pfs", ignore_errors=True)
    shutil.rmtree(work / "datums", ignore_errors=True)
    log = Log(work / "test-images.log")
    rt = Runtime(args.runtime)
    version = _version()
    log(f"test-images: ambientgen {version}, runtime {rt.name}, work {work}")
    t = time.monotonic()
    if not args.skip_build:
        build_images(rt, log, python_base(rt, log, work, args.python_image), cuda=not args.no_cuda)
        log(f"images built in {time.monotonic() - t:.0f} s")

    pfs = work / "pfs"
    sample_data(log, pfs, args.pieces, args.seconds)
    specs = load_specs(ROOT / "pipelines")
    problems: list[str] = []
    results: dict[str, dict] = {}
    for name in topo_order(specs):
        spec = specs[name]
        image = spec.transform["image"]
        if not rt.has_image(image):
            if not args.no_cuda:
                raise SystemExit(f"{name}: image {image} is not built")
            image = f"ambientgen/base:{version}"
            log(f"{name}: {spec.transform['image']} not built (--no-cuda): running in {image}")
        if (issue := check_user(rt, log, image)) is not None:
            problems.append(issue)
        # the spec's command as it is; only the training budget comes from the environment, as in `ambientgen demo`
        res = run_pipeline(rt, log, spec, pfs, image, {"AMBIENTGEN_TRAIN_MINUTES": f"{args.train_minutes:g}"})
        results[name] = res
        log(f"{name}: {res['datums']} datums, {res['failed']} failed, {res['seconds']:.0f} s")
        if res["failed"]:
            problems.append(f"{name}: {res['failed']} of {res['datums']} datums failed")
        problems += check_outputs(log, name, pfs / name)

    summary = ["| pipeline | image | datums | seconds |", "|---|---|---|---|"]
    summary += [f"| {n} | {specs[n].transform['image']} | {r['datums']} | {r['seconds']:.0f} |"
                for n, r in results.items()]
    summary += [""] + size_table(rt, version)
    (work / "summary.md").write_text("\n".join(summary) + "\n")
    for line in summary:
        log(line)
    for problem in problems:
        log(f"PROBLEM {problem}")
    log(f"test-images: {'FAILED' if problems else 'passed'} in {time.monotonic() - t:.0f} s")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
