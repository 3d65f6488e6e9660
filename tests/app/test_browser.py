"""partgen-app in a real headless browser: Debian's chromium (/usr/bin/chromium, driven through
/usr/bin/chromedriver by selenium; `make test` installs both) against the app started as
`python -m partgen.app` on a free loopback port, with debug-sized generation settings (4 layout
steps, 2 stage-2 steps, coarse meshes: these tests are about the page, not the models).

The tests share one server and one browser tab and run in file order: generate (3D view drawn, parts
listed, GLB download valid, explode and toggles serve new GLBs, the pipeline's stages in the progress
bar), segment, inspect, bad input (one line in the page, nothing left behind, the next request
works), queue and cancel, the session's folder removed when the tab goes, no request beyond
127.0.0.1, and the temp root removed when the server stops.

With PARTGEN_SCREENSHOTS=DIR the screenshots of the three tabs are saved in DIR (the README's are
docs/images/app-*.png: `PARTGEN_SCREENSHOTS=docs/images .venv/bin/python -m pytest tests/app/test_browser.py`).
"""

import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import zipfile
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import pytest
import trimesh
from PIL import Image

from conftest import REPO_ROOT

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
EXAMPLE_IMAGE = REPO_ROOT / "examples" / "images" / "table.png"
EXAMPLE_MESH = REPO_ROOT / "examples" / "table.obj"
# debug-sized generation (guidance stays at its default: 2 unguided steps decode almost no surface)
DEBUG_SETTINGS = ["generate.layout_steps=4", "generate.steps=2", "generate.mesh_subdiv=1"]
MAX_UPLOAD_MB = 2  # the test server's upload limit (the default is 100): an oversized upload is cheap to make
BACKGROUND = 245  # the 3D view's clear colour, 0.96 grey
JOB_TIMEOUT = 300  # seconds: a debug-sized generation takes ~30 s on 2 idle cores


def _require(path: Path) -> None:
    if not path.exists():
        if os.environ.get("CI"):
            pytest.fail(f"{path} is missing on CI (`make test` installs chromium and chromium-driver)")
        pytest.skip(f"{path} not installed (apt-get install chromium chromium-driver, or `make test`)")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(condition, timeout: float, what: str, every: float = 0.25):
    """condition()'s first truthy value within timeout seconds, else fail saying what was awaited."""
    end = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > end:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(every)


def glb_node_names(data: bytes) -> list[str]:
    """The names of a GLB's mesh nodes, after checking its header, length and JSON chunk."""
    magic, version, length = struct.unpack("<4sII", data[:12])
    assert magic == b"glTF" and version == 2 and length == len(data), "not a valid GLB"
    chunk_length, chunk_type = struct.unpack("<II", data[12:20])
    assert chunk_type == 0x4E4F534A, "the GLB's first chunk is not JSON"
    gltf = json.loads(data[20 : 20 + chunk_length])
    return [node.get("name", "") for node in gltf["nodes"] if "mesh" in node]


def glb_centroids(data: bytes) -> dict[str, np.ndarray]:
    """Each mesh node's vertex centroid in the scene's frame (its node transform applied)."""
    scene = trimesh.load(io.BytesIO(data), file_type="glb", force="scene")
    centroids = {}
    for name in scene.graph.nodes_geometry:
        transform, geometry = scene.graph[name]
        centroids[name] = trimesh.transform_points(scene.geometry[geometry].vertices, transform).mean(0)
    return centroids


class Server:
    def __init__(self, work: Path):
        self.work, self.port = work, _free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.temp = work / "tmp"
        args = [f"port={self.port}", f"temp_dir={self.temp}", f"max_upload_mb={MAX_UPLOAD_MB}", *DEBUG_SETTINGS]
        self.log = open(work / "server.log", "w")  # noqa: SIM115 (closed in stop)
        env = os.environ | {"GRADIO_ANALYTICS_ENABLED": "False"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "partgen.app", *args], cwd=work, stdout=self.log, stderr=subprocess.STDOUT, env=env
        )

    def up(self) -> bool:
        if self.proc.poll() is not None:
            pytest.fail(
                f"partgen-app exited with {self.proc.returncode}:\n{(self.work / 'server.log').read_text()[-3000:]}"
            )
        try:
            with urllib.request.urlopen(self.url, timeout=2) as response:
                return response.status == 200
        except OSError:
            return False

    def root(self) -> Path:
        roots = list(self.temp.glob("partgen-app-*"))
        assert len(roots) == 1, roots
        return roots[0]

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        self.log.close()
        return self.proc.returncode


class Page:
    """The browser tab, with the page's own element ids (partgen/app/ui.py: <tab>-status, -view, ...)."""

    def __init__(self, driver, url: str, shots: Path):
        from selenium.webdriver.common.by import By

        self.driver, self.url, self.shots, self.by = driver, url, shots, By
        self.requests: list[str] = []

    def open(self) -> None:
        self.driver.get(self.url)
        _wait(lambda: self.driver.find_elements(self.by.ID, "gen-run"), 60, "the page")

    def collect_requests(self) -> list[str]:
        """Every URL the page has requested so far (chromium's performance log)."""
        for entry in self.driver.get_log("performance"):
            message = json.loads(entry["message"])["message"]
            if message["method"] == "Network.requestWillBeSent":
                self.requests.append(message["params"]["request"]["url"])
            elif message["method"] == "Network.webSocketCreated":
                self.requests.append(message["params"]["url"])
        return self.requests

    def css(self, selector: str):
        return self.driver.find_element(self.by.CSS_SELECTOR, selector)

    def tab(self, name: str) -> None:
        buttons = [b for b in self.driver.find_elements(self.by.CSS_SELECTOR, "button[role=tab]") if b.text == name]
        buttons[0].click()
        time.sleep(0.5)

    def upload(self, elem_id: str, path: Path) -> None:
        self.css(f"#{elem_id} input[type=file]").send_keys(str(path))
        time.sleep(1.0)

    def clear_upload(self, elem_id: str) -> None:
        """Remove the component's file (its Clear button), so that its file input is back."""
        selector = f"#{elem_id} button[aria-label='Clear'], #{elem_id} button[aria-label='Remove Image']"
        for button in self.driver.find_elements(self.by.CSS_SELECTOR, selector):
            self.driver.execute_script("arguments[0].click()", button)
        _wait(
            lambda: self.driver.find_elements(self.by.CSS_SELECTOR, f"#{elem_id} input[type=file]"),
            10,
            "an empty upload",
        )

    def texts(self, selector: str) -> list[str]:
        """The text of every element the selector matches, read in one go (the page changes under us)."""
        script = "return Array.from(document.querySelectorAll(arguments[0])).map(e => e.innerText.trim())"
        return self.driver.execute_script(script, selector)

    def status(self, prefix: str) -> str:
        return "\n".join(self.texts(f"#{prefix}-status [data-testid=markdown]"))

    def run(self, prefix: str, timeout: float = JOB_TIMEOUT) -> str:
        """Click the tab's button and wait for a new status line."""
        before = self.status(prefix)
        self.css(f"#{prefix}-run").click()
        return _wait(lambda: (s := self.status(prefix)) != before and s, timeout, f"{prefix}'s result")

    def parts(self, prefix: str) -> list[str]:
        return self.texts(f"#{prefix}-parts label")

    def view_url(self, prefix: str) -> str | None:
        links = self.driver.find_elements(
            self.by.CSS_SELECTOR, f"#{prefix}-view a[data-testid='model3d-download-link']"
        )
        return links[0].get_attribute("href") if links else None

    def files(self, prefix: str) -> dict[str, str]:
        links = self.driver.find_elements(self.by.CSS_SELECTOR, f"#{prefix}-files a[href]")
        return {Path(urlparse(a.get_attribute("href")).path).name: a.get_attribute("href") for a in links}

    def set_slider(self, elem_id: str, value: float) -> None:
        """Set a slider as a user dragging it does: its range input's value and an input event."""
        self.driver.execute_script(
            "const r = document.querySelector(arguments[0]); r.value = arguments[1];"
            "r.dispatchEvent(new Event('input', {bubbles: true})); r.dispatchEvent(new Event('change', {bubbles: true}));",
            f"#{elem_id} input[type=range]",
            str(value),
        )

    def drawn_fraction(self, prefix: str) -> float:
        """The share of the 3D canvas's pixels that differ from its background."""
        canvas = self.css(f"#{prefix}-view canvas")
        pixels = np.asarray(Image.open(io.BytesIO(canvas.screenshot_as_png)).convert("RGB"), np.int16)
        return float((np.abs(pixels - BACKGROUND).max(-1) > 30).mean())

    def screenshot(self, name: str) -> None:
        self.shots.mkdir(parents=True, exist_ok=True)
        self.driver.execute_script("window.scrollTo(0, 0)")
        self.driver.save_screenshot(str(self.shots / name))


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=30) as response:
        return response.read()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    try:
        import gradio  # noqa: F401
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail("gradio is missing on CI (`make test` installs the app extra)")
        pytest.skip("gradio not installed (pip install -e '.[app]')")
    server = Server(tmp_path_factory.mktemp("app"))
    try:
        _wait(server.up, 240, "partgen-app to serve")
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def page(server, tmp_path_factory):
    _require(CHROMIUM)
    _require(CHROMEDRIVER)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    profile = tempfile.mkdtemp(prefix="chromium-", dir=tmp_path_factory.mktemp("browser"))
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--enable-unsafe-swiftshader",  # WebGL on the CPU (the 3D view) without a GPU
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-crash-reporter",  # no crashpad handler writing under ~/.config
        "--disable-breakpad",
        "--disable-dev-shm-usage",
        "--window-size=1400,1500",
        f"--user-data-dir={profile}",
    ):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    shots = Path(os.environ.get("PARTGEN_SCREENSHOTS") or tmp_path_factory.mktemp("screenshots"))
    page = Page(driver, server.url, shots)
    try:
        page.open()
        yield page
    finally:
        driver.quit()


def test_generate_draws_the_parts_lists_them_and_serves_a_valid_glb(page):
    page.upload("gen-image", EXAMPLE_IMAGE)
    page.css("#gen-dimensions textarea, #gen-dimensions input").send_keys("150 x 75 x 74")  # the table's, in cm
    before = page.status("gen")
    page.css("#gen-run").click()
    stages = set()

    def finished():
        for text in page.texts("#gen-view .progress-level"):
            stages.update(s for s in ("stage 1", "parts", "stage 2", "decode") if text.startswith(s))
        status = page.status("gen")
        return status != before and status

    status = _wait(finished, JOB_TIMEOUT, "the generation", every=0.2)
    assert not status.startswith("Error"), status
    assert {"stage 1", "stage 2"} <= stages, stages  # the bar showed the pipeline's own stages
    parts = page.parts("gen")
    names = [label.split(" (")[0] for label in parts]
    assert len(parts) >= 1 and all(names) and all("voxels" in p and "faces" in p for p in parts), parts

    assert _wait(lambda: page.drawn_fraction("gen") > 0.005, 60, "the 3D view to draw the parts")
    files = page.files("gen")
    assert {"parts.glb", "mesh.obj", "parts.zip", "report.json"} <= set(files), files
    glb = fetch(files["parts.glb"])
    assert sorted(glb_node_names(glb)) == sorted(names)
    with zipfile.ZipFile(io.BytesIO(fetch(files["parts.zip"]))) as archive:
        assert sorted(archive.namelist()) == sorted(f"{n}.obj" for n in names)
    report = json.loads(fetch(files["report.json"]))
    assert report["input"] == EXAMPLE_IMAGE.name and [p["name"] for p in report["parts"]] == names
    assert report["settings"]["dimensions"] == [150.0, 75.0, 74.0]
    assert page.css("#gen-preview img").get_attribute("src")
    page.screenshot("app-generate.png")


def test_explode_and_toggles_serve_new_glbs(page):
    names = [label.split(" (")[0] for label in page.parts("gen")]
    # the example table comes out of the bundled models in several parts (top, frame, legs); a single
    # part would have nowhere to move, and this test would prove nothing
    assert len(names) >= 2, names
    first = page.view_url("gen")
    whole = fetch(first)
    page.set_slider("gen-explode", 1.0)
    exploded_url = _wait(lambda: (u := page.view_url("gen")) != first and u, 60, "an exploded view")
    exploded = fetch(exploded_url)
    assert sorted(glb_node_names(exploded)) == sorted(names) and exploded != whole
    before, after = glb_centroids(whole), glb_centroids(exploded)
    assert max(np.linalg.norm(after[n] - before[n]) for n in names) > 1e-3
    # untick the first part: the served GLB loses its node, the others stay exploded
    page.css("#gen-parts label input").click()
    hidden_url = _wait(lambda: (u := page.view_url("gen")) != exploded_url and u, 60, "the view without a part")
    hidden = fetch(hidden_url)
    assert sorted(glb_node_names(hidden)) == sorted(names[1:])
    kept = glb_centroids(hidden)
    assert all(np.allclose(kept[n], after[n], atol=1e-5) for n in names[1:])


def test_segment_tab(page):
    page.tab("Segment")
    page.upload("seg-mesh", EXAMPLE_MESH)
    status = page.run("seg")
    assert not status.startswith("Error") and "table.obj" in status, status
    parts = page.parts("seg")
    assert len(parts) >= 2, parts
    files = page.files("seg")
    assert {"parts.glb", "labels.json"} <= set(files), files
    names = glb_node_names(fetch(files["parts.glb"]))
    assert sorted(names) == sorted(p.split(" (")[0] for p in parts)
    assert len(json.loads(fetch(files["labels.json"]))["part"]) == 72  # per face (the example has 72)
    assert _wait(lambda: page.drawn_fraction("seg") > 0.005, 60, "the 3D view to draw the parts")
    first = page.view_url("seg")
    page.set_slider("seg-explode", 1.0)
    exploded = _wait(lambda: (u := page.view_url("seg")) != first and u, 60, "an exploded view")
    before, after = glb_centroids(fetch(first)), glb_centroids(fetch(exploded))
    assert max(np.linalg.norm(after[n] - before[n]) for n in names) > 1e-3
    page.screenshot("app-segment.png")


def test_inspect_tab(page):
    page.tab("Inspect")
    page.upload("ins-mesh", EXAMPLE_MESH)
    status = page.run("ins")
    assert "surface voxels at R=64" in status and "6 parts (authored)" in status, status
    assert len(page.parts("ins")) == 6
    assert "meta.json" in page.css("#ins-details").text
    with zipfile.ZipFile(io.BytesIO(fetch(page.files("ins")["record.zip"]))) as archive:
        listed = archive.namelist()
    assert any(n.endswith("voxels.npz") for n in listed) and any(n.startswith("manifest") for n in listed), listed
    assert _wait(lambda: page.drawn_fraction("ins") > 0.005, 60, "the voxels to be drawn")
    page.screenshot("app-inspect.png")


@pytest.fixture(scope="module")
def bad_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bad")
    (folder / "notes.png").write_text("this is text, not an image\n")
    data = EXAMPLE_IMAGE.read_bytes()
    (folder / "truncated.png").write_bytes(data[: len(data) // 2])
    Image.new("L", (12000, 12000), 255).save(folder / "huge.png", optimize=False, compress_level=1)
    (folder / "empty.obj").write_bytes(b"")
    (folder / "corrupt.glb").write_bytes(b"glTF" + os.urandom(4000))
    (folder / "big.obj").write_bytes(b"v 0 0 0\n" * ((MAX_UPLOAD_MB + 1) * 2**20 // 8))
    return folder


def _jobs(server) -> list[Path]:
    return sorted(server.root().glob("sessions/*/*"))


def test_bad_input_says_why_in_one_line_leaves_nothing_and_the_next_request_works(page, server, bad_files):
    page.tab("Generate")
    jobs = _jobs(server)
    for name, reason in (
        ("notes.png", "not a readable image"),
        ("truncated.png", "not a readable image"),
        ("huge.png", "12000 x 12000 pixels, over the limit of 4096"),
    ):
        page.clear_upload("gen-image")
        page.upload("gen-image", bad_files / name)
        status = page.run("gen", timeout=60)
        assert status.startswith("Error:") and name in status and reason in status, status
        assert "\n" not in status and str(server.temp) not in status
    page.tab("Segment")
    for name, reason in (("empty.obj", "empty"), ("corrupt.glb", "corrupt.glb")):
        page.clear_upload("seg-mesh")
        page.upload("seg-mesh", bad_files / name)
        status = page.run("seg", timeout=60)
        assert status.startswith("Error:") and reason in status and "\n" not in status, status
    # over max_upload_mb: the server refuses the upload itself, and the page says so
    page.clear_upload("seg-mesh")
    page.upload("seg-mesh", bad_files / "big.obj")
    body = page.driver.find_element(page.by.TAG_NAME, "body")
    _wait(lambda: "exceed the maximum allowed size" in body.text and "big.obj" in body.text, 30, "the size error")
    assert _jobs(server) == jobs  # failed jobs leave no folder behind
    # outside the session folders: gradio's cache of uploads and samples (a folder per file) only
    outside = [p for p in server.root().rglob("*") if p.is_file() and "sessions" not in p.parts]
    assert all(p.parent.parent == server.root() and p.suffix in (".png", ".obj", ".glb") for p in outside), outside
    assert sorted(p.name for p in server.work.iterdir()) == ["runs", "server.log", "tmp"]

    # the next request works: a sample clicked in the Generate tab
    page.tab("Generate")
    page.clear_upload("gen-image")
    samples = page.driver.find_elements(page.by.CSS_SELECTOR, "button.gallery-item:has(img[src$='/chair.png'])")
    assert samples and samples[0].is_displayed(), "no clickable sample"
    samples[0].click()
    _wait(lambda: page.driver.find_elements(page.by.CSS_SELECTOR, "#gen-image img"), 10, "the sample in the image box")
    status = page.run("gen")
    assert not status.startswith("Error") and len(page.parts("gen")) >= 1, status


def test_jobs_queue_one_at_a_time_and_a_running_job_can_be_cancelled(page, server):
    generations = {p.name for p in server.root().glob("sessions/*/generate-*")}
    page.tab("Generate")
    page.upload("gen-image", EXAMPLE_IMAGE)
    # the slider's most stage-2 steps: a warm debug-sized job (2 steps) can end before the segment
    # job is queued and the cancel clicked, and then there is nothing left to cancel
    steps = page.css("#gen-steps input[type=range]").get_attribute("value")
    page.set_slider("gen-steps", 50)
    page.css("#gen-run").click()
    _wait(lambda: page.driver.find_elements(page.by.CSS_SELECTOR, "#gen-view .progress-level"), 60, "the job to run")
    page.tab("Segment")
    page.upload("seg-mesh", EXAMPLE_MESH)
    before = page.status("seg")
    page.css("#seg-run").click()
    queued = _wait(lambda: any("queue" in t for t in page.texts("#seg-view")), 30, "the segment job's queue position")
    assert queued
    page.tab("Generate")
    start = time.monotonic()
    page.css("#gen-cancel").click()
    _wait(lambda: page.status("gen") == "Cancelled.", 30, "the cancellation")
    page.tab("Segment")
    status = _wait(lambda: (s := page.status("seg")) != before and s, 120, "the queued segment job")
    assert not status.startswith("Error"), status
    assert time.monotonic() - start < 60
    # the cancelled generation stopped (a cancelled job's folder goes) rather than running to its end
    assert {p.name for p in server.root().glob("sessions/*/generate-*")} == generations
    page.tab("Generate")
    page.set_slider("gen-steps", steps)


def test_closing_the_tab_removes_the_sessions_files(page, server, bad_files):
    sessions = server.root() / "sessions"
    assert any(sessions.iterdir())
    assert any(server.root().rglob("notes.png"))  # an upload this session's job read
    page.collect_requests()
    page.driver.get("about:blank")  # the session ends: gradio's unload event
    # (the server removes the session's uploads, then its folder: wait for the folder, then look)
    _wait(lambda: not any(sessions.iterdir()), 60, "the session's folder to be removed")
    left = sorted(p.name for p in server.root().rglob("*") if p.is_file())
    # the samples' copies stay (other sessions' samples), nothing else
    assert {"chair.png", "table.obj"} <= set(left) <= {"chair.png", "scopia_chair3.png", "table.png", "table.obj"}, left


def test_neither_the_page_nor_the_server_requests_anything_beyond_127_0_0_1(page, server):
    requested = page.collect_requests()
    assert any(url.startswith(server.url) for url in requested)
    # the server's own requests: gradio's HTTP client (httpx) logs each one
    log = (server.work / "server.log").read_text()
    requested += [line.split("HTTP Request: ")[1].split()[1] for line in log.splitlines() if "HTTP Request: " in line]
    foreign = [u for u in requested if urlparse(u).scheme in ("http", "https", "ws", "wss")]
    foreign = [u for u in foreign if urlparse(u).hostname not in ("127.0.0.1", "localhost")]
    assert not foreign, foreign


def test_stopping_the_server_removes_its_temp_root(server):
    root = server.root()
    assert server.stop() == 0
    assert not root.exists()
