"""`ambientgen report`: a run folder with real renders and hostile file names -> one portable HTML page.

The page is checked by parsing it (every URL relative, resolving to a file, names escaped) and, where Debian's
chromium is installed, by loading it in headless chromium over the DevTools protocol (``--remote-debugging-pipe``:
no port, no extra package): every image decodes (naturalWidth > 0), every audio element loads its metadata
without error, and the console shows no errors.
"""

from __future__ import annotations

import html
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from ambientgen.cli import main as cli_main
from ambientgen.report.html import build_report
from ambientgen.report.page import number

CHROMIUM = "/usr/bin/chromium"
HOSTILE = "Forêt <b>n°1<∕b> & \"rain\" 'x' %20 #1 ?"  # markup, quotes, percent, hash (no '/' in names)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory, sample_midis, sample_mp3s) -> Path:
    """A run folder as the chain leaves it, with every repo, rendered audio and hostile names."""
    from ambientgen.stages.render import RenderOptions, render

    run = tmp_path_factory.mktemp("run")
    (run / "audio-unprocessed").mkdir()
    shutil.copy(sample_mp3s[0], run / "audio-unprocessed" / f"{HOSTILE}.mp3")
    shutil.copy(sample_mp3s[1], run / "audio-unprocessed" / sample_mp3s[1].name)
    (run / "audio-processed").mkdir()
    shutil.copy(sample_mp3s[1], run / "audio-processed" / sample_mp3s[1].name)
    midi = run / "midi"
    midi.mkdir()
    for m in sample_midis[:2]:
        shutil.copy(m, midi / m.name)
        (midi / m.with_suffix(".json").name).write_text(json.dumps({"source": m.stem + ".wav", "notes": 42,
                                                                    "backend": "basic-pitch"}))
    shutil.copy(sample_midis[2], midi / f"{HOSTILE}.mid")
    prep = run / "transformer-preprocess"
    prep.mkdir()
    (prep / "summary.json").write_text(json.dumps({"splits": {"train": {"pieces": 3}, "eval": {"pieces": 1}},
                                                   "note": "<script>alert(1)</script>"}))
    (prep / "train-00000.tfrecord").write_bytes(b"\0" * 100)
    model = run / "music-transformer"
    model.mkdir()
    rows = ["step,epoch,train_loss,eval_nll,eval_accuracy,lr,tokens_per_s"]
    for s in range(1, 61):
        ev = s % 20 == 0
        rows.append(f"{s},0,{5 - s / 20:.3f},{(5.2 - s / 20) if ev else ''},{(0.1 + s / 200) if ev else ''},"
                    f"{1e-4 * min(1, s / 10):.6f},1000")
    (model / "metrics.csv").write_text("\n".join(rows) + "\n")
    (model / "config.json").write_text(json.dumps({"d_model": 64, "num_layers": 2}))
    gen = run / "music-transformer-generate"
    gen.mkdir()
    shutil.copy(sample_midis[3], gen / f"{HOSTILE}.mid")
    (gen / f"{HOSTILE}.json").write_text(json.dumps({"request": {"temperature": 0.9, "seed": 3}, "notes": 10}))
    shutil.copy(sample_midis[0], gen / "plain-0.mid")
    res = render(gen, run / "ambient-render", RenderOptions(fade_out=2.0))
    assert len(res.done) == 2, res.failed
    (run / "run.json").write_text(json.dumps({
        "count": 4, "preset": "warm-piano", "title": "<i>evil</i>", "fresh": False,
        "jobs": [{"pipeline": "midi", "state": "JOB_SUCCESS", "datums": [{"id": "a" * 64}] * 3},
                 {"pipeline": "ambient-render", "state": "JOB_FAILURE", "error": "<script>x</script>"}]}))
    (run / "generation-config").mkdir()
    (run / "generation-config" / "night.toml").write_text('name = "night"\nnote = "<script>bad</script>"\n')
    return run


class _Refs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[tuple[str, str]] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        for k, v in attrs:
            if k in ("src", "href") and v and not v.startswith("#") and not v.startswith("data:"):
                self.refs.append((tag, v))


def test_report_page_structure(run_dir, tmp_path):
    out = build_report(run_dir)
    assert out == run_dir / "report.html"
    page = out.read_text(encoding="utf-8")
    parser = _Refs()
    parser.feed(page)
    # the hostile names appear only escaped: no injected tags
    assert "<b>n°1" not in page and "<script>" not in page and "<i>evil</i>" not in page
    assert "b" not in parser.tags and "script" not in parser.tags and "i" not in parser.tags
    assert html.escape(HOSTILE) in page
    kinds = [t for t, _ in parser.refs]
    assert kinds.count("audio") == 2 + 2  # two inputs, two renders
    assert kinds.count("img") == 3 + 1 + 2  # three transcriptions, the curves, two generated pieces
    for tag, ref in parser.refs:
        assert not urlparse(ref).scheme and not ref.startswith("/"), ref
        assert (out.parent / unquote(ref)).is_file(), f"{tag} {ref} does not resolve"
    titles = ("Your new music", "How close to your music", "Your music", "Training", "Technical details")
    for title in titles:
        assert f">{title}</h2>" in page
    assert [page.index(f">{t}</h2>") for t in titles] == sorted(page.index(f">{t}</h2>") for t in titles)
    # a piece's facts in words with units; how to ask for more like it
    assert "preset warm-piano" in page and "temperature 0.9" in page and "seed 3" in page and "10 notes" in page
    assert "--more-like plain-0" in page and 'name = &quot;more-like-plain-0&quot;' in page
    assert "primer_seconds = " in page  # the same primer as compose --more-like
    # training in a sentence, its figures folded away with the other technical details
    assert "for 60 steps" in page and "a best of 2.200 nats per event" in page
    assert "<th>best eval nll</th><td>2.2</td>" in page and "<th>last step</th><td>60</td>" in page
    technical = page[page.index('<section id="technical">'):]
    assert technical.count("<details>") >= 4 and "splits › train › pieces" in technical
    # no raw dictionary keys outside the folded details
    visible = page[:page.index('<section id="technical">')]
    while "<details>" in visible:
        a = visible.index("<details>")
        visible = visible[:a] + visible[visible.index("</details>", a) + len("</details>"):]
    for raw in ("eval_nll", "duration_p90", "first_tokens", "settings.", "top_p", "loudness_lufs", "splits"):
        assert raw not in visible, raw
    # the quality table holds the very figures evaluate-generation gives for this run, rounded for reading
    from ambientgen.stages.evaluate_generation import evaluate_generation

    q = evaluate_generation(run_dir / "music-transformer-generate", run_dir / "midi")
    for key, unit in (("polyphony", ""), ("duration_p90", "s"), ("notes_per_s", "notes/s")):
        assert f"<td class=num>{number(q['generated'][key], unit, 2)}</td><td class=num>" \
               f"{number(q['reference'][key], unit, 2)}</td>" in page, key
    stuck = number(q["generated"]["stuck_rate"] * 100, "%", 1)
    assert f"<td class=num>{stuck}</td><td class=num></td>" in page  # no reference figure: an empty cell
    from ambientgen.music.pianoroll import note_name

    registers = [note_name(q[side]["pitch_median"]) for side in ("generated", "reference")]
    assert "<td class=num>{}</td><td class=num>{}</td>".format(*registers) in page  # the register by name
    assert "<td>JOB_FAILURE</td>" in page and "<td>3 items</td>" in page  # job records as a table
    assert "<th>fresh</th><td>false</td>" in page  # JSON values as JSON spells them
    assert "night.toml" in page and 'note = &quot;&lt;script&gt;bad' in page  # the generation requests

    # the page is portable: move the whole folder, the references still resolve
    moved = tmp_path / "moved"
    shutil.copytree(run_dir, moved)
    for _, ref in parser.refs:
        assert (moved / unquote(ref)).is_file()


def test_report_missing_folders_and_output_elsewhere(tmp_path, sample_midis):
    run = tmp_path / "partial"
    (run / "midi").mkdir(parents=True)
    shutil.copy(sample_midis[0], run / "midi" / "only.mid")
    (run / "midi" / "broken.mid").write_bytes(b"MThd not really")
    out = tmp_path / "elsewhere" / "page.html"
    assert cli_main(["report", str(run), "-o", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert "audio-unprocessed/ is not in this run" in page
    assert "music-transformer/ is not in this run" in page
    assert "no run.json" in page
    assert "broken.mid" in page and "not a usable MIDI file" in page  # the bad file is named, the rest shown
    parser = _Refs()
    parser.feed(page)
    imgs = [r for t, r in parser.refs if t == "img"]
    assert len(imgs) == 1 and imgs[0].startswith("page_files/")
    assert (out.parent / unquote(imgs[0])).is_file()


def test_report_missing_run_dir(tmp_path, capsys):
    assert cli_main(["report", str(tmp_path / "nope")]) == 1
    assert "nope: run directory does not exist" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ chromium
class DevTools:
    """Chromium's DevTools protocol over --remote-debugging-pipe (NUL-separated JSON on fds 3 and 4)."""

    def __init__(self, profile: str):
        self._to_child_r, self._to_child_w = os.pipe()
        self._from_child_r, self._from_child_w = os.pipe()
        high_r = os.dup(self._to_child_r)
        high_w = os.dup(self._from_child_w)

        def child_fds() -> None:
            os.dup2(high_r, 3)
            os.dup2(high_w, 4)

        cmd = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
               "--disable-background-networking", "--disable-component-update", "--disable-sync",
               "--autoplay-policy=no-user-gesture-required", "--remote-debugging-pipe",
               f"--user-data-dir={profile}", "about:blank"]
        self.proc = subprocess.Popen(cmd, pass_fds=(3, 4, high_r, high_w), preexec_fn=child_fds,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for fd in (self._to_child_r, self._from_child_w, high_r, high_w):
            os.close(fd)
        self._buf = b""
        self._id = 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30):
        self._id += 1
        msg = {"id": self._id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child_w, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self.receive(timeout)
            if reply.get("id") == self._id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def receive(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self._from_child_r], [], [], left)[0]:
                raise TimeoutError("no answer from chromium")
            chunk = os.read(self._from_child_r, 1 << 16)
            if not chunk:
                raise RuntimeError("chromium closed the DevTools pipe")
            self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        return json.loads(raw)

    def wait_event(self, method: str, timeout: float = 30) -> dict:
        for i, ev in enumerate(self.events):
            if ev.get("method") == method:
                return self.events.pop(i)
        deadline = time.monotonic() + timeout
        while True:
            ev = self.receive(max(0.1, deadline - time.monotonic()))
            if ev.get("method") == method:
                return ev
            self.events.append(ev)

    def close(self) -> None:
        try:
            os.write(self._to_child_w, json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        os.close(self._to_child_w)
        os.close(self._from_child_r)


CHECK_JS = """
(async () => {
  const wait = (el, ok, events) => ok(el) ? null : new Promise(r => {
    for (const e of events) el.addEventListener(e, r, {once: true});
    setTimeout(r, 15000);
  });
  const imgs = [...document.images];
  const auds = [...document.querySelectorAll('audio')];
  await Promise.all(imgs.map(i => wait(i, x => x.complete, ['load', 'error'])));
  await Promise.all(auds.map(a => wait(a, x => x.readyState >= 1 || x.error, ['loadedmetadata', 'error'])));
  const root = document.documentElement;
  return {
    title: document.title,
    width: {scroll: root.scrollWidth, client: root.clientWidth},
    images: imgs.map(i => ({src: i.getAttribute('src'), width: i.naturalWidth})),
    audio: auds.map(a => ({src: a.getAttribute('src'), ready: a.readyState, error: a.error && a.error.code,
                           duration: a.duration})),
  };
})()
"""


LAPTOP = (1366, 768)  # the most common laptop screen


def load_in_chromium(page: Path, screenshot: Path | None = None) -> tuple[dict, list[str]]:
    """Open page in headless chromium at a laptop's width; return the check script's result and the console/log
    errors (and save a screenshot of the whole page)."""
    with tempfile.TemporaryDirectory(prefix="ambientgen-chromium-") as profile:
        dt = DevTools(profile)
        try:
            target = dt.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            session = dt.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Page", "Runtime", "Log"):
                dt.send(f"{domain}.enable", session=session)
            dt.send("Emulation.setDeviceMetricsOverride", {"width": LAPTOP[0], "height": LAPTOP[1],
                                                            "deviceScaleFactor": 1, "mobile": False}, session=session)
            dt.send("Page.navigate", {"url": page.resolve().as_uri()}, session=session)
            dt.wait_event("Page.loadEventFired", timeout=60)
            result = dt.send("Runtime.evaluate", {"expression": CHECK_JS, "awaitPromise": True,
                                                  "returnByValue": True}, session=session, timeout=60)
            if "exceptionDetails" in result:
                raise AssertionError(f"check script failed: {result['exceptionDetails']}")
            if screenshot is not None:
                import base64

                shot = dt.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                               session=session, timeout=60)
                screenshot.write_bytes(base64.b64decode(shot["data"]))
            time.sleep(0.3)
            errors = []
            for ev in dt.events:
                params = ev.get("params", {})
                if ev.get("method") == "Runtime.consoleAPICalled" and params.get("type") in ("error", "assert"):
                    errors.append(json.dumps(params.get("args")))
                elif ev.get("method") == "Runtime.exceptionThrown":
                    errors.append(json.dumps(params.get("exceptionDetails")))
                elif ev.get("method") == "Log.entryAdded" and params.get("entry", {}).get("level") == "error":
                    errors.append(f"{params['entry'].get('text')} {params['entry'].get('url', '')}")
            return result["result"]["value"], errors
        finally:
            dt.close()


needs_chromium = pytest.mark.skipif(not Path(CHROMIUM).exists(),
                                    reason=f"{CHROMIUM} not installed (Debian: apt-get install chromium)")


@needs_chromium
def test_report_loads_in_chromium(run_dir):
    page = build_report(run_dir, run_dir / "view" / "report.html")  # page one level below the repos
    shot = run_dir / "view" / "screenshot.png"
    value, errors = load_in_chromium(page, shot)
    assert errors == []
    # at a laptop's width nothing sticks out sideways (wide tables scroll inside their own box)
    width = value["width"]
    assert width["scroll"] <= width["client"] and LAPTOP[0] - 20 <= width["client"] <= LAPTOP[0], width
    assert shot.stat().st_size > 10_000 and shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert value["title"].startswith("ambientgen run")
    assert len(value["images"]) == 6
    for img in value["images"]:
        assert img["width"] > 0, img
    assert len(value["audio"]) == 4
    for aud in value["audio"]:
        assert aud["error"] is None and aud["ready"] >= 1 and aud["duration"] > 5, aud


@needs_chromium
def test_chromium_check_catches_a_broken_page(tmp_path):
    """The browser check is not vacuous: a missing image and audio file are reported."""
    page = tmp_path / "broken.html"
    page.write_text('<!DOCTYPE html><html><head><link rel="icon" href="data:,"><title>t</title></head><body>'
                    '<img src="missing.png"><audio preload="metadata" src="missing.mp3"></audio>'
                    '<table><tr><td style="min-width:3000px">too wide</td></tr></table></body></html>')
    value, errors = load_in_chromium(page)
    assert value["width"]["scroll"] > value["width"]["client"]
    assert value["images"][0]["width"] == 0
    assert value["audio"][0]["error"] is not None
    assert any("missing.png" in e for e in errors)
