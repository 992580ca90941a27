"""End to end in a real headless browser: the Streamlit app served as users get it.

Starts ``streamlit run app.py`` on a free port (runs go to a temporary folder through
``RESNET_VIZ_RUNS``, never to the repository's ``runs/``), drives Debian's Chromium with
Playwright, and walks every page: build a deeper net, train a 40-step run to the end,
compare, inspect, run the experiments (signal, convolution, lesion, loss landscape, skip &
branch, sanity check), download the HTML report and open it, explain an uploaded PNG, and
refuse four hostile uploads.

Chromium comes from the Debian package (``apt-get install -y chromium``; ``.ci/run``
installs it); Playwright never downloads a browser here. Without /usr/bin/chromium the
whole module is skipped. Screenshots go to ``$RESNET_VIZ_SCREENSHOTS`` (else a pytest
temporary folder) as 01-home.png ... 15-report-file.png, for a person to look at.

The tests run in file order and share one browser page and one server: Train needs no
earlier test, but Compare, Skip & branch and the report use the run that Train made, and
the report holds the experiments the tests before it ran (the server keeps their results).
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from io import BytesIO
from pathlib import Path

import numpy as np
import pytest
from download_standin import closed_port_url
from PIL import Image
from test_images import (  # tests/ is on sys.path under pytest's default import mode
    SVG,
    _png_header_only,
)

pytestmark = pytest.mark.e2e  # a real server and browser: ./scripts/test -m "not e2e" leaves them out

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    # Without these Chromium phones home at start, and this machine's closed network refuses it.
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 1000}
SERVER_START_S = 60
RUN_TIMEOUT_MS = 60_000  # one script run; the first data load decodes CIFAR-10 (10-25 s) when the cache is cold
TRAIN_TIMEOUT_MS = 180_000  # 40 steps of batch 32 plus the final test-set evaluation, on 2 shared cores
EXPERIMENT_TIMEOUT_MS = 300_000  # a 7 x 7 loss surface of ResNet-8 on 500 images: under a minute on 2 loaded cores
UNTRAINED = "Untrained model from the Build page"
PAGES = {"": "ResNet Lab", "build": "Build a CIFAR ResNet", "train": "Train", "compare": "Compare runs",
         "inspect": "Look inside", "explain": "Explain a prediction", "experiments": "Experiments",
         "imagenet": "ImageNet ResNets"}
NOT_IMAGES = "is not a PNG, JPEG, WebP, GIF or BMP image"

if not CHROMIUM.exists():
    pytest.skip("Debian chromium is not installed (apt-get install -y chromium); .ci/run installs it",
                allow_module_level=True)
playwright_sync = pytest.importorskip("playwright.sync_api")
expect = playwright_sync.expect


# ------------------------------------------------------------------ files to upload


def png(size: tuple[int, int] = (48, 40)) -> bytes:
    """A small good PNG: a red square on a blue-green gradient."""
    y, x = np.mgrid[0 : size[1], 0 : size[0]]
    a = np.stack([x * 255 // size[0], y * 255 // size[1], np.full_like(x, 160)], -1).astype(np.uint8)
    a[size[1] // 4 : 3 * size[1] // 4, size[0] // 4 : 3 * size[0] // 4] = (220, 30, 30)
    buf = BytesIO()
    Image.fromarray(a).save(buf, "PNG")
    return buf.getvalue()


def truncated_png() -> bytes:
    noisy = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)  # incompressible
    buf = BytesIO()
    Image.fromarray(noisy).save(buf, "PNG")
    data = buf.getvalue()
    return data[: len(data) // 2]


def upload(name: str, data: bytes) -> dict:
    return {"name": name, "mimeType": "image/png", "buffer": data}


GOOD = upload("good.png", png())
# (file, what the app's st.error must say: "<name>: <ImageError message>")
BAD = {
    "text": (upload("fake.png", b"just some text, not a picture\n" * 4), f"fake.png: the file {NOT_IMAGES}"),
    "svg": (upload("x.png", SVG), f"x.png: the file {NOT_IMAGES}"),
    "truncated": (upload("truncated.png", truncated_png()), "truncated.png: the PNG file is truncated or damaged"),
    "bomb": (upload("bomb.png", _png_header_only(20000, 20000)),
             "bomb.png: the image is too large (400.0 megapixels); the limit is 40.0 megapixels"),
}


# ------------------------------------------------------------------ fixtures


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _health(url: str) -> str | None:
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return r.read().decode().strip()
    except OSError:
        return None


@pytest.fixture(scope="module", params=["default", "synthetic"])
def data_kind(request: pytest.FixtureRequest) -> str:
    """Every test runs twice: on the app's default data (the CIFAR-10 copy where it is
    here) and on the synthetic set that a machine without CIFAR-10 falls back to."""
    return request.param


@contextmanager
def streamlit_server(script: Path, tmp: Path, env: dict[str, str] | None = None) -> Iterator[str]:
    """``streamlit run script`` on a free port (from the repository root, runs going to
    ``tmp``); yields its base URL. Its log is printed if it fails to start or has a traceback."""
    port = _free_port()
    env = {**os.environ, "RESNET_VIZ_RUNS": str(tmp / "runs"), "PYTHONUNBUFFERED": "1",
           "RESNET_VIZ_CIFAR_URL": closed_port_url(), **(env or {})}  # the download offer asks no real server
    log_path = tmp / "streamlit.log"
    cmd = [sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
           "--server.address", "127.0.0.1", "--server.headless", "true", "--server.fileWatcherType", "none",
           "--browser.gatherUsageStats", "false"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own process group: teardown ends its children too
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while _health(f"{base}/_stcore/health") != "ok":
            if proc.poll() is not None or time.monotonic() > deadline:
                why = (f"exited with {proc.returncode}" if proc.poll() is not None
                       else f"not healthy in {SERVER_START_S} s")
                pytest.fail(f"streamlit {why}:\n{log_path.read_text(errors='replace')[-4000:]}")
            time.sleep(0.25)
        yield base
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
        log = log_path.read_text(errors="replace")
        if "Traceback" in log:
            print(f"\n--- streamlit log (has a traceback) ---\n{log[-4000:]}")


SERVER_RUNS: dict[str, Path] = {}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, data_kind: str) -> Iterator[str]:
    """The app on a free port; yields its base URL."""
    env = {"RESNET_VIZ_DEFAULT_DATA": "synthetic"} if data_kind == "synthetic" else {}
    # The server measures this machine itself, as on a first start (the unit tests' made-up figures stay out).
    env["RESNET_VIZ_SPEED_FILE"] = str(tmp_path_factory.mktemp("speed") / "machine-speed.json")
    tmp = tmp_path_factory.mktemp("e2e-server")
    SERVER_RUNS[data_kind] = tmp / "runs"  # a test may add a run the server lists
    with streamlit_server(ROOT / "app.py", tmp, env) as base:
        yield base


@pytest.fixture(scope="module")
def shots(tmp_path_factory: pytest.TempPathFactory, data_kind: str) -> Path:
    env = os.environ.get("RESNET_VIZ_SCREENSHOTS")
    folder = Path(env) if env else tmp_path_factory.mktemp("screenshots")
    if data_kind != "default":
        folder = folder / data_kind
    folder.mkdir(parents=True, exist_ok=True)
    return folder


@contextmanager
def browser_tab() -> Iterator:
    """One headless Chromium tab; JavaScript errors on it are collected in ``tab.js_errors``."""
    profile = tempfile.mkdtemp(prefix="resnet-viz-chromium-")
    try:
        with playwright_sync.sync_playwright() as p:
            ctx = p.chromium.launch_persistent_context(
                profile, executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS, viewport=VIEWPORT)
            pg = ctx.pages[0] if ctx.pages else ctx.new_page()
            pg.set_default_timeout(30_000)
            pg.js_errors = []
            pg.on("pageerror", lambda e: pg.js_errors.append(str(e)))
            pg.playwright = p  # for a second browser beside this one (``other_browser``)
            try:
                yield pg
            finally:
                ctx.close()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture(scope="module")
def page(server: str) -> Iterator:
    """One Chromium tab for the whole module; JavaScript errors on it fail the test that caused them."""
    with browser_tab() as pg:
        yield pg


# ------------------------------------------------------------------ helpers


def wait_for_app(page, timeout: int = RUN_TIMEOUT_MS) -> None:
    """Until the script run is over: connected, not running, no "Running..." status widget."""
    page.wait_for_selector("[data-testid='stApp'][data-test-connection-state='CONNECTED']", timeout=timeout)
    page.wait_for_selector("[data-testid='stApp'][data-test-script-state='notRunning']", timeout=timeout)
    expect(page.locator("[data-testid='stStatusWidget']")).to_be_hidden(timeout=timeout)


def open_page(page, base: str, path: str) -> None:
    page.goto(f"{base}/{path}")
    expect(page.locator("h1").first).to_have_text(PAGES[path], timeout=RUN_TIMEOUT_MS)
    wait_for_app(page)
    assert_healthy(page)


def assert_healthy(page) -> None:
    expect(page.locator("[data-testid='stException']")).to_have_count(0)
    body = page.inner_text("body")
    assert "Traceback" not in body, body[:2000]
    errors, page.js_errors[:] = list(page.js_errors), []
    assert not errors, errors  # uncaught JavaScript errors since the last check


def shoot(page, shots: Path, name: str) -> None:
    """The whole page. Streamlit scrolls inside <main>, not the document, so ``full_page``
    alone stops at the viewport: grow the viewport to the content's height for the shot."""
    height = page.evaluate("() => document.querySelector(\"[data-testid='stMain']\").scrollHeight")
    page.set_viewport_size({"width": VIEWPORT["width"], "height": min(max(height, VIEWPORT["height"]), 8000)})
    page.evaluate("() => new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))")
    try:
        page.screenshot(path=str(shots / name), full_page=True)
    finally:
        page.set_viewport_size(VIEWPORT)


def main(page):
    return page.locator("[data-testid='stMain']")


def charts(page):
    return main(page).locator("[data-testid='stPlotlyChart'] .js-plotly-plot")


# ------------------------------------------------------------------ tests


def test_home_and_navigation(page, server: str, shots: Path, record_property) -> None:
    open_page(page, server, "")
    nav = page.locator("[data-testid='stSidebarNav'] a")
    expect(nav).to_have_count(len(PAGES))
    hrefs = [re.sub(r"^https?://[^/]+/?", "", nav.nth(i).get_attribute("href") or "") for i in range(len(PAGES))]
    assert hrefs == list(PAGES), hrefs  # st.navigation names each page by its file: /build, /train, ...
    expect(main(page).locator("[data-testid='stPageLink']")).to_have_count(8)
    sidebar = page.locator("[data-testid='stSidebar'] [data-testid='stAlert']").first
    expect(sidebar).to_contain_text("Data:")
    label = "Data: " + sidebar.inner_text().split("Data:", 1)[1].strip()  # drop the icon's ligature text
    record_property("data_set", label)
    print(f"\ndata set in use: {label}")
    shoot(page, shots, "01-home.png")


def test_build_slider_changes_depth(page, server: str, shots: Path) -> None:
    open_page(page, server, "build")
    layers = main(page).locator("[data-testid='stMetric']").filter(has_text="Layers").locator(
        "[data-testid='stMetricValue']")
    expect(layers).to_have_text("20")
    thumb = main(page).locator("[data-testid='stSlider']").filter(has_text="Blocks per stage").get_by_role("slider")
    thumb.focus()
    thumb.press("ArrowRight")
    expect(layers).to_have_text("26")  # n = 3 -> 4: 6n + 2
    expect(main(page).get_by_text("26 layers", exact=True)).to_be_visible()  # "26 layers = 6 x 4 + 2"
    wait_for_app(page)
    expect(charts(page)).to_have_count(1)
    assert_healthy(page)
    shoot(page, shots, "02-build.png")


def test_train_a_short_run(page, server: str, shots: Path) -> None:
    open_page(page, server, "train")
    expect(main(page).get_by_text("No runs yet")).to_be_visible()
    form = main(page).locator(".st-key-train_form")
    # Before Start, how long the run takes here: the server measured this machine on the first visit.
    estimate = form.get_by_text(re.compile(r"About .* on this machine \(ResNet-20 trains at [\d,]+ images/s"))
    expect(estimate).to_be_visible(timeout=RUN_TIMEOUT_MS)
    before = estimate.inner_text()
    form.locator("[data-testid='stRadio']").filter(has_text="Budget in").get_by_text("steps", exact=True).click()
    budget = form.get_by_label("Budget", exact=True)
    budget.fill("40")
    budget.press("Tab")
    form.get_by_label("Batch size").click()
    page.get_by_role("option", name="32", exact=True).click()
    expect(form.get_by_label("Batch size")).to_have_value("32")
    expect(estimate).not_to_have_text(before)  # 40 steps of 32, not a 5-minute run: the estimate followed the form
    shoot(page, shots, "03-train-estimate.png")
    form.get_by_role("button", name="Start training").click()

    progress = main(page).locator("[data-testid='stProgress']")
    expect(progress).to_contain_text("of 40", timeout=RUN_TIMEOUT_MS)  # the budget reached the trainer
    # Let a few steps land so the live curves have something to draw (a fast machine may finish first).
    deadline = time.monotonic() + TRAIN_TIMEOUT_MS / 1000
    while time.monotonic() < deadline and (texts := progress.all_inner_texts()):  # all_*: no waiting
        m = re.search(r"step (\d+) of 40", " ".join(texts))
        if m and int(m.group(1)) >= 10:
            expect(main(page).locator(".st-key-live_curves .js-plotly-plot")).to_have_count(1)
            # "Watch it learn": the feature maps of one test image, as recorded a few steps ago.
            expect(main(page).locator(".st-key-live_watch_maps .js-plotly-plot")).to_have_count(1)
            # The sidebar follows the run too (it said "loading · 0%" to the end, drawn once at Start).
            expect(page.locator("[data-testid='stSidebar']")).to_contain_text(
                re.compile(r"Watching: .* · (running|finished) · \d+%"))
            break
        page.wait_for_timeout(250)
    assert_healthy(page)
    shoot(page, shots, "03-train-live.png")

    # The run ends: the live fragment redraws the page once with the result line.
    expect(main(page).get_by_text(re.compile(r"· finished · test accuracy \d"))).to_be_visible(
        timeout=TRAIN_TIMEOUT_MS)
    wait_for_app(page)
    assert_healthy(page)
    expect(main(page).get_by_text(re.compile(r"\b40 steps\b"))).to_be_visible()
    expect(progress).to_have_count(0)
    expect(charts(page)).to_have_count(1)
    expect(main(page).get_by_role("button", name="Metrics (CSV)")).to_be_visible()
    expect(main(page).get_by_role("button", name="Checkpoint (safetensors)")).to_be_visible()
    shoot(page, shots, "04-train-done.png")


def test_compare(page, server: str, shots: Path) -> None:
    open_page(page, server, "compare")
    expect(main(page).get_by_role("button", name=re.compile(r"Quick replay \([\d,]+ steps per net\)"))).to_be_visible()
    expect(main(page).get_by_text(re.compile("About .* on this machine")).first).to_be_visible()
    if (ROOT / "assets" / "degradation.json").exists():  # the project's own run, until the user has one
        expect(main(page).get_by_text(re.compile(r"trained worse by .* \(degradation\)"))).to_be_visible()
        expect(main(page).get_by_text("plain-56").first).to_be_visible()  # the curves' legend
    shoot(page, shots, "05-compare.png")


def test_inspect_a_test_image(page, server: str, shots: Path) -> None:
    open_page(page, server, "inspect")
    expect(charts(page).first).to_be_visible()  # feature maps of the default test image
    assert_healthy(page)
    shoot(page, shots, "06-inspect.png")


def test_experiments_signal_at_init(page, server: str, shots: Path) -> None:
    open_page(page, server, "experiments")
    page.get_by_role("tab", name="Signal at init").click()
    start_task(page, main(page), "Measure signal propagation")
    # The sweep runs in the background with a progress bar; its figure replaces the button.
    # (exact: the Report tab lists the finished sweep as "Signal propagation at initialization: depths ...")
    expect(main(page).get_by_text("Signal propagation at initialization", exact=True)).to_be_visible(
        timeout=TRAIN_TIMEOUT_MS)
    wait_for_app(page)
    assert_healthy(page)
    shoot(page, shots, "09-experiments.png")


def test_experiments_convolution_by_hand(page, server: str) -> None:
    open_page(page, server, "experiments")
    page.get_by_role("tab", name="Convolution by hand").click()
    expect(main(page).get_by_text(re.compile(r"the layer computed .* the same number"))).to_be_visible()
    assert_healthy(page)


def test_experiments_lesion_of_the_shipped_resnet(page, server: str, shots: Path, data_kind: str) -> None:
    if data_kind == "synthetic":
        pytest.skip("the shipped models are CIFAR-10 models; on the synthetic set the page says so instead")
    open_page(page, server, "experiments")
    # "Computed in" is counted in the Lesion tab alone: another tab's finished task (the
    # signal sweep of an earlier test: tasks are the server's) says it too.
    panel = open_tab(page, "Lesion")
    thumb = panel.locator("[data-testid='stSlider']").filter(has_text="Test images").get_by_role("slider")
    thumb.focus()
    thumb.press("ArrowLeft")  # 1,000 -> 500 test images: a lesion study of ResNet-20 in seconds
    wait_for_app(page)
    start_task(page, panel, re.compile(r"Lesion study: ResNet\(A\)-20"))
    expect(panel.get_by_text("Computed in")).to_have_count(1, timeout=TRAIN_TIMEOUT_MS)  # ran in the background
    wait_for_app(page)
    # The plain net beside it (the "Compare with" model): both curves in one figure.
    start_task(page, panel, re.compile(r"Lesion study: plain-20"))
    expect(panel.get_by_text("Computed in")).to_have_count(2, timeout=TRAIN_TIMEOUT_MS)
    wait_for_app(page)
    expect(main(page).get_by_text("Run the lesion study to see")).to_have_count(0)
    expect(main(page).locator("[data-testid='stException']")).to_have_count(0)
    assert_healthy(page)
    shoot(page, shots, "10-lesion.png")


def open_tab(page, name: str):
    """Select an Experiments tab; returns its panel (the hidden panels are not in the role tree)."""
    page.get_by_role("tab", name=name).click()
    panel = main(page).get_by_role("tabpanel")
    expect(panel).to_have_count(1)
    return panel


def pick_option(page, field, option) -> None:
    """Choose ``option`` (a name, or a pattern) in a Streamlit selectbox and wait for the rerun."""
    field.click()
    page.get_by_role("option", name=option, exact=isinstance(option, str)).click()
    wait_for_app(page)


def models_for_experiments(page, server: str, option, smallest_build: bool = False) -> None:
    """The Experiments page with ``option`` as both models (one model: one task per experiment);
    ``smallest_build`` first sets the Build page's net (the untrained model) to one block per
    stage, ResNet-8; the sidebar link keeps that session, where a page load would start anew."""
    if smallest_build:
        open_page(page, server, "build")
        thumb = main(page).locator("[data-testid='stSlider']").filter(has_text="Blocks per stage").get_by_role(
            "slider")
        thumb.focus()
        thumb.press("Home")  # n = 1
        expect(main(page).locator("[data-testid='stMetric']").filter(has_text="Layers").locator(
            "[data-testid='stMetricValue']")).to_have_text("8", timeout=RUN_TIMEOUT_MS)
        wait_for_app(page)
        page.locator("[data-testid='stSidebarNav'] a[href$='/experiments']").click()
        expect(page.locator("h1").first).to_have_text(PAGES["experiments"], timeout=RUN_TIMEOUT_MS)
        wait_for_app(page)
    else:
        open_page(page, server, "experiments")
    for label in ("Model", "Compare with"):
        pick_option(page, main(page).get_by_label(label, exact=True), option)


def step_slider(panel, name: str, key: str) -> None:
    thumb = panel.locator("[data-testid='stSlider']").filter(has_text=name).get_by_role("slider")
    thumb.focus()
    thumb.press(key)


def start_task(page, panel, name, tries: int = 3) -> None:
    """Click a background task's Run button: it gives way to the task's progress bar.

    The task starts in the click's callback (``tasks.run_task``), so a rerun on the server
    cannot drop a click that reached it. A click can still be lost in the browser: one that
    lands while Streamlit replaces the button in a rerun never reaches the server (seen in
    full-suite runs only, a few times, never with the browser tests alone). So the button
    is clicked again while it is still there after a while, and a page that never starts
    the task fails with a screenshot beside the others.
    """
    button = panel.get_by_role("button", name=name)
    for _ in range(tries):
        wait_for_app(page)
        button.click()
        try:
            expect(button).to_have_count(0, timeout=20_000)
            return
        except AssertionError:
            continue
    page.screenshot(path=str(Path(tempfile.gettempdir()) / "e2e-start-task-failed.png"), full_page=True)
    pytest.fail(f"the task behind {name!r} did not start after {tries} clicks; page text:\n"
                f"{main(page).inner_text()[-2000:]}")


def test_experiments_loss_landscape(page, server: str, shots: Path) -> None:
    # The untrained ResNet-8 fits either data set and needs no training: 7 + 49 passes over 500 images.
    models_for_experiments(page, server, UNTRAINED, smallest_build=True)
    panel = open_tab(page, "Loss landscape")
    step_slider(panel, "Training images", "ArrowLeft")  # 1,000 -> 500
    wait_for_app(page)
    step_slider(panel, "Grid points per axis", "ArrowLeft")  # 11 -> 7: 7 points, then a 7 x 7 grid
    wait_for_app(page)
    # Both at once, as a person would start them: the slice's progress fragment ends in a full
    # rerun while the surface's fragment still polls.
    for name in (r"2D surface: Untrained .*\(7x7\)", r"1D slice: Untrained"):
        start_task(page, panel, re.compile(name))
    try:
        expect(panel.get_by_text("Computed in")).to_have_count(2, timeout=EXPERIMENT_TIMEOUT_MS)
        expect(panel.locator("[data-testid='stProgress']")).to_have_count(0, timeout=10_000)
    except AssertionError:
        shoot(page, shots, "FAILED-landscape.png")  # what the page showed, for the person reading the log
        raise
    wait_for_app(page)
    expect(panel.locator(".js-plotly-plot")).to_have_count(3)  # the slice, the contour, the 3-D surface
    expect(panel.get_by_text("Loss along a direction")).to_be_visible()
    expect(panel.get_by_text(re.compile(r"^Untrained ResNet\(A\)-8 \(Build page\) · filter-normalized directions, "
                                        r"seed 0$"))).to_have_count(2)
    expect(panel.get_by_text("No slices yet")).to_have_count(0)
    assert_healthy(page)
    shoot(page, shots, "11-landscape.png")


def test_experiments_skip_and_branch_of_the_trained_run(page, server: str, shots: Path) -> None:
    open_page(page, server, "experiments")
    panel = open_tab(page, "Skip & branch")  # the run that test_train_a_short_run made
    expect(panel.locator("[data-testid='stAlert']")).to_contain_text(
        re.compile(r"At step [\d,]+ the residual branches add on average \d+% of the signal"))  # last probe
    expect(panel.locator(".js-plotly-plot")).to_have_count(2)
    expect(panel.get_by_text(re.compile(r"per block over training"))).to_have_count(2)  # ratio, cosine
    assert_healthy(page)
    shoot(page, shots, "12-skip-branch.png")


def test_experiments_sanity_check_of_the_trained_run(page, server: str, shots: Path) -> None:
    models_for_experiments(page, server, re.compile(r"· \d+\.\d%$"))  # the run: "label · id · 12.5%"
    panel = open_tab(page, "Sanity check")
    panel.get_by_label("Class", exact=True).click()
    page.get_by_role("option").nth(1).click()  # a test image of the second class
    wait_for_app(page)
    start_task(page, panel, re.compile(r"Sanity check: "))
    expect(panel.get_by_text(re.compile(r"Sanity check: saliency under cascading randomization"))).to_be_visible(
        timeout=EXPERIMENT_TIMEOUT_MS)
    wait_for_app(page)
    expect(panel.locator(".js-plotly-plot")).to_have_count(1)
    expect(panel.get_by_text(re.compile(r"^saliency: ρ = .* the check|^saliency: ρ = .* only in part"))).to_be_visible()
    assert_healthy(page)
    shoot(page, shots, "13-sanity.png")


def test_experiments_report_download(page, server: str, shots: Path, tmp_path: Path) -> None:
    open_page(page, server, "experiments")
    panel = open_tab(page, "Report")
    picked = panel.locator("[data-testid='stMultiSelect']").filter(has_text="Experiments in the report")
    expect(picked).to_contain_text("Signal propagation at initialization")  # run by the tests above
    expect(picked).to_contain_text("Loss surface")
    panel.get_by_role("button", name="Build the report").click()
    download = panel.get_by_role("button", name=re.compile(r"Download report \(HTML\)"))
    expect(download).to_be_visible(timeout=RUN_TIMEOUT_MS)
    wait_for_app(page)
    assert_healthy(page)
    shoot(page, shots, "14-report-tab.png")
    with page.expect_download(timeout=RUN_TIMEOUT_MS) as info:
        download.click()
    path = tmp_path / "report.html"
    info.value.save_as(path)
    html = path.read_text(encoding="utf-8")
    assert html.startswith("<!doctype html>") and html.rstrip().endswith("</html>")
    assert "<h2>Runs</h2><table>" in html and "<th>test error %</th>" in html  # the runs table
    assert "<h2>Experiments</h2>" in html
    assert re.search(r"<h3>Signal propagation at initialization: depths [\d, ]+</h3>", html)
    assert "<h3>Loss surface: Untrained ResNet(A)-8 (Build page) (500 training images, 7x7, seed 0)</h3>" in html
    assert not re.search(r"<script[^>]*\bsrc=", html)  # self-contained: plotly.js is inside
    assert html.count("window.PlotlyConfig") == 1
    # The file as a person opens it: every figure draws, offline, with no JavaScript error.
    view = page.context.new_page()
    errors: list[str] = []
    view.on("pageerror", lambda e: errors.append(str(e)))
    try:
        view.set_viewport_size({"width": 1280, "height": 900})
        view.goto(path.as_uri())
        expect(view.locator(".js-plotly-plot .main-svg").first).to_be_visible()
        expect(view.locator(".js-plotly-plot")).to_have_count(html.count("Plotly.newPlot"))
        view.screenshot(path=str(shots / "15-report-file.png"), full_page=True)
    finally:
        view.close()
    assert not errors, errors


def choose_upload(page) -> None:
    main(page).locator("[data-testid='stRadio']").filter(has_text="Input").get_by_text("Upload", exact=True).click()
    expect(page.locator("[data-testid='stFileUploaderDropzoneInput']")).to_have_count(1)
    wait_for_app(page)


def upload_files(page, files: list[dict]) -> None:
    """Upload through the file input, once more if the uploader was re-rendering and dropped it.

    Under load, an upload made while the uploader re-renders (right after a delete) can be
    lost (seen once in CI: no chip, no rerun); the chips say whether the files arrived.
    """
    chips = main(page).locator("[data-testid='stFileChip']")
    for attempt in range(3):
        page.set_input_files("[data-testid='stFileUploaderDropzoneInput']", files)
        try:
            expect(chips).to_have_count(len(files), timeout=15_000)
            break
        except AssertionError:
            if attempt == 2:
                raise
            clear_uploads(page)
    wait_for_app(page)


def clear_uploads(page) -> None:
    """Remove every uploaded file with its delete button (the uploader keeps them across reruns)."""
    delete = main(page).locator("[data-testid='stFileChipDeleteBtn'] button")
    deadline = time.monotonic() + 60
    while delete.count():
        if time.monotonic() > deadline:
            pytest.fail(f"{delete.count()} uploaded files are still listed after 60 s of deleting them")
        delete.first.click()
        wait_for_app(page)
    expect(main(page).locator("[data-testid='stFileChip']")).to_have_count(0)


def test_explain_an_uploaded_png(page, server: str, shots: Path) -> None:
    open_page(page, server, "explain")
    choose_upload(page)
    expect(main(page).get_by_text("Pick a model and one or more images.")).to_be_visible()
    upload_files(page, [GOOD])
    expect(main(page).locator("[data-testid='stFileChipName']")).to_have_text("good.png")
    expect(charts(page).first).to_be_visible(timeout=RUN_TIMEOUT_MS)
    wait_for_app(page)
    assert charts(page).count() >= 2  # an overlay and a top-5 bar per model
    assert_healthy(page)
    shoot(page, shots, "07-explain.png")


@pytest.mark.parametrize("case", list(BAD))
def test_bad_upload_is_refused_and_page_still_works(page, server: str, case: str) -> None:
    if not page.url.endswith("/explain"):
        open_page(page, server, "explain")
        choose_upload(page)
    clear_uploads(page)
    file, message = BAD[case]
    upload_files(page, [file])
    error = main(page).locator("[data-testid='stAlertContentError']")
    expect(error).to_have_count(1, timeout=RUN_TIMEOUT_MS)
    expect(error).to_contain_text(message)
    wait_for_app(page)
    assert_healthy(page)
    expect(charts(page)).to_have_count(0)
    expect(main(page).get_by_text("Pick a model and one or more images.")).to_be_visible()
    # The page still works: a good image replaces the bad one and is explained.
    clear_uploads(page)
    expect(error).to_have_count(0)
    upload_files(page, [GOOD])
    expect(charts(page).first).to_be_visible(timeout=RUN_TIMEOUT_MS)
    wait_for_app(page)
    assert_healthy(page)


def test_bad_uploads_beside_a_good_one(page, server: str, shots: Path) -> None:
    """All four refused files in one batch with a good one: four messages, and the good one is explained."""
    if not page.url.endswith("/explain"):
        open_page(page, server, "explain")
        choose_upload(page)
    clear_uploads(page)
    upload_files(page, [file for file, _ in BAD.values()] + [GOOD])
    error = main(page).locator("[data-testid='stAlertContentError']")
    expect(error).to_have_count(len(BAD), timeout=RUN_TIMEOUT_MS)
    for i, (_, message) in enumerate(BAD.values()):
        expect(error.nth(i)).to_contain_text(message)
    expect(charts(page).first).to_be_visible(timeout=RUN_TIMEOUT_MS)
    wait_for_app(page)
    assert_healthy(page)
    shoot(page, shots, "08-bad-upload.png")


@contextmanager
def other_browser(page) -> Iterator:
    """A tab in a second Chromium beside ``page``'s: its own cookies, so another visitor."""
    browser = page.playwright.chromium.launch(executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS)
    try:
        other = browser.new_context(viewport=VIEWPORT).new_page()
        other.set_default_timeout(30_000)
        other.js_errors = []
        other.on("pageerror", lambda e: other.js_errors.append(str(e)))
        yield other
    finally:
        browser.close()


def test_a_shared_link_opens_the_same_view(page, server: str, shots: Path) -> None:
    """A teacher sets up a plain-56 on Build; the address bar's link, opened in another browser
    (another visitor, nothing shared but the URL), shows the same network."""
    open_page(page, server, "build")
    thumb = main(page).locator("[data-testid='stSlider']").filter(has_text="Blocks per stage").get_by_role("slider")
    layers = main(page).locator("[data-testid='stMetric']").filter(has_text="Layers").locator(
        "[data-testid='stMetricValue']")
    # n = 3 -> 9 (ResNet-56) a step at a time: the keyed slider keeps its identity, so every
    # key press counts (a keyless one was remounted after each step and dropped presses).
    for n in range(4, 10):
        thumb.focus()
        thumb.press("ArrowRight")
        expect(layers).to_have_text(str(6 * n + 2))
        wait_for_app(page)
    main(page).locator("[data-testid='stRadio']").filter(has_text="Shortcut").get_by_text(
        "none (plain net)", exact=True).click()
    expect(page).to_have_url(re.compile(r"/build\?(?=.*depth=56)(?=.*shortcut=none)"), timeout=RUN_TIMEOUT_MS)
    wait_for_app(page)
    link = page.url
    with other_browser(page) as other:
        other.goto(link)
        expect(other.locator("h1").first).to_have_text(PAGES["build"], timeout=RUN_TIMEOUT_MS)
        wait_for_app(other)
        assert_healthy(other)
        shown = main(other).locator("[data-testid='stMetric']")
        expect(shown.filter(has_text="Layers").locator("[data-testid='stMetricValue']")).to_have_text("56")
        expect(shown.filter(has_text="Parameters").locator("[data-testid='stMetricValue']")).to_have_text("853,018")
        expect(main(other).get_by_role("radio", name="none (plain net)")).to_be_checked()
        expect(main(other).get_by_text("Train this plain-56")).to_be_visible()
        assert other.url == link, (other.url, link)  # the page (the path) and its parameters stay
        shoot(other, shots, "18-shared-link.png")
        # A link with a value the page cannot use: the default, a note naming it, no exception.
        other.goto(f"{server}/build?depth=21&shortcut=none")
        expect(main(other).get_by_text("The link's depth=21 was not used")).to_be_visible(timeout=RUN_TIMEOUT_MS)
        wait_for_app(other)
        assert_healthy(other)
        expect(shown.filter(has_text="Layers").locator("[data-testid='stMetricValue']")).to_have_text("20")
        expect(main(other).get_by_text("Train this plain-20")).to_be_visible()
        shoot(other, shots, "19-link-note.png")


def test_an_oversize_upload_is_explained_in_words(page, server: str, shots: Path) -> None:
    """The browser refuses a file over the size limit before it reaches the app (a red chip):
    the caption beside the uploader says so in words."""
    open_page(page, server, "explain")
    choose_upload(page)
    caption = main(page).get_by_text(re.compile(r"A file over \d+ MB never reaches this page"))
    expect(caption).to_be_visible()
    limit_mb = int(re.search(r"up to (\d+) MB each", main(page).inner_text()).group(1))
    big = upload("holiday.png", png() + bytes((limit_mb + 1) * 2**20))  # a PNG with a long tail, over the limit
    page.set_input_files("[data-testid='stFileUploaderDropzoneInput']", [big])
    chip = main(page).locator("[data-testid='stFileChip']")
    expect(chip).to_have_count(1)
    wait_for_app(page)
    expect(main(page).locator("[data-testid='stAlertContentError']")).to_have_count(0)  # Python never saw it
    expect(main(page).get_by_text("Pick a model and one or more images.")).to_be_visible()
    expect(caption).to_be_visible()
    assert_healthy(page)
    shoot(page, shots, "20-oversize-upload.png")
    clear_uploads(page)


def test_experiments_effective_paths(page, server: str, shots: Path) -> None:
    # The untrained ResNet-8 fits either data set: 3 blocks, 8 paths, 16 images, seconds.
    models_for_experiments(page, server, UNTRAINED, smallest_build=True)
    panel = open_tab(page, "Effective paths")
    step_slider(panel, "Training images", "Home")  # 64 -> 16
    wait_for_app(page)
    step_slider(panel, "Random paths per length", "Home")  # 8 -> 2
    wait_for_app(page)
    start_task(page, panel, re.compile(r"Effective paths: Untrained"))
    expect(panel.get_by_text("Computed in")).to_have_count(1, timeout=EXPERIMENT_TIMEOUT_MS)
    wait_for_app(page)
    expect(panel.get_by_text(re.compile(r"3 blocks make 2\^3 = 8 paths"))).to_be_visible()
    expect(panel.locator(".js-plotly-plot")).to_have_count(1)
    expect(panel.get_by_text("Gradient magnitude of one path (log)")).to_be_visible()
    assert_healthy(page)
    shoot(page, shots, "21-effective-paths.png")


def test_explain_a_cam_of_plain_and_residual(page, server: str, shots: Path) -> None:
    """Grad-CAM++ (from grad-cam) at the last block of the shipped plain-20 and ResNet-20, opened from a link."""
    page.goto(f"{server}/explain?model=plain20&vs=resnet20&method=gradcam_plusplus&block=stage3.block2")
    expect(page.locator("h1").first).to_have_text(PAGES["explain"], timeout=RUN_TIMEOUT_MS)
    expect(charts(page).first).to_be_visible(timeout=RUN_TIMEOUT_MS)
    wait_for_app(page)
    assert_healthy(page)
    expect(main(page).get_by_text("Grad-CAM++ at block")).to_be_visible()
    assert charts(page).count() >= 4  # an overlay and a top-5 bar per model
    shoot(page, shots, "21-explain-cam.png")


def _server_data(data_kind: str):
    """The data config the ``data_kind`` server uses, for a run made here that must match its
    classes (the app reads a run's class names from its config: store.models.class_names)."""
    from resnet_viz.config import DataConfig
    from resnet_viz.data.sources import default_source

    return DataConfig(source="synthetic") if data_kind == "synthetic" else default_source()


def test_experiments_training_path_section(page, server: str, shots: Path, data_kind: str) -> None:
    """The Loss landscape tab's "Training path": first without a run that has enough snapshots
    (test_train_a_short_run's 40 steps keep two), then on a run made here with five (8 steps of
    a ResNet-8 on synthetic images, snapshots every 2 steps, its config naming the server's data
    set: the path's loss is then taken on the server's own images), computed as a task and drawn."""
    from resnet_viz.config import ModelConfig, RunConfig, TrainConfig
    from resnet_viz.data.sources import make_synthetic
    from resnet_viz.store.rundir import RunDir
    from resnet_viz.training.loop import fit

    open_page(page, server, "experiments")
    panel = open_tab(page, "Loss landscape")
    expect(panel.get_by_role("heading", name="Training path")).to_be_visible()
    expect(panel.get_by_text(re.compile(r"No run on this data set has 4 or more weight snapshots yet"))).to_be_visible()
    shoot(page, shots, "20-training-path-none.png")

    cfg = RunConfig(model=ModelConfig(depth=8, shortcut="A"), data=_server_data(data_kind),
                    train=TrainConfig(steps=8, epochs=None, batch_size=16, snapshot_every=2, eval_every=1000))
    data = make_synthetic(200, 40, seed=0)  # ten classes, as the server's set has (the run's config names them)
    fit(cfg, data=data, run=RunDir.create(SERVER_RUNS[data_kind], cfg, "path-e2e"))
    open_page(page, server, "experiments")
    panel = open_tab(page, "Loss landscape")
    try:
        step_slider(panel, "Training images", "ArrowLeft")  # 1,000 -> 500
        wait_for_app(page)
        step_slider(panel, "Contour grid points per axis", "ArrowLeft")  # 11 -> 7
        wait_for_app(page)
        start_task(page, panel, re.compile(r"Training path: .*path-e2e.* \(5 snapshots\)"))
        expect(panel.locator(".st-key-tp_fig .js-plotly-plot")).to_have_count(1, timeout=EXPERIMENT_TIMEOUT_MS)
    except Exception:  # a timed-out locator too
        shoot(page, shots, "FAILED-training-path.png")
        raise
    wait_for_app(page)
    expect(panel.get_by_text(re.compile(r"The two directions hold [\d.]+% \+ [\d.]+% = [\d.]+% of the path"))
           ).to_be_visible()
    assert_healthy(page)
    shoot(page, shots, "20-training-path.png")


def test_experiments_sharpness(page, server: str, shots: Path) -> None:
    # The untrained ResNet-8 on 32 training images: 1 gradient graph, then at most 3 x 10 + 10 products.
    models_for_experiments(page, server, UNTRAINED, smallest_build=True)
    panel = open_tab(page, "Sharpness")
    for name, presses in (("Training images", 2), ("Products per eigenvalue", 1), ("Trace samples", 1)):
        for _ in range(presses):
            step_slider(panel, name, "ArrowLeft")  # 128 -> 32 images, 20 -> 10 products, 20 -> 10 samples
            wait_for_app(page)
    try:
        # the time estimate (or, on a server's first start on a busy machine, the measuring that precedes it)
        expect(panel.get_by_text(re.compile(r"on this machine|Measuring this machine's speed"))).to_be_visible()
        start_task(page, panel, re.compile(r"Sharpness: Untrained"))
        expect(panel.get_by_text("Computed in")).to_have_count(1, timeout=EXPERIMENT_TIMEOUT_MS)
    except AssertionError:
        shoot(page, shots, "FAILED-sharpness.png")  # what the page showed, for the person reading the log
        raise
    wait_for_app(page)
    expect(panel.locator(".js-plotly-plot")).to_have_count(1)
    expect(panel.get_by_text("loss on 32 training images", exact=False)).to_be_visible()
    expect(panel.locator("[data-testid='stAlert']")).to_contain_text(re.compile(r"top eigenvalue -?[\d.]+"))
    assert_healthy(page)
    shoot(page, shots, "30-sharpness.png")


def test_watch_it_learn_plays_a_run_back(page, server: str, shots: Path, data_kind: str) -> None:
    """Inspect's "Watch it learn" on a run with frames (made here: 8 steps of a synthetic ResNet-8,
    so this step also runs alone): the step slider moves and the maps and histograms follow."""
    from resnet_viz.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from resnet_viz.data.sources import make_synthetic
    from resnet_viz.store.rundir import RunDir
    from resnet_viz.training.loop import fit

    cfg = RunConfig(model=ModelConfig(depth=8, shortcut="A"), data=DataConfig(source="synthetic"),
                    train=TrainConfig(steps=8, epochs=None, batch_size=16, watch_every=2, eval_every=1000))
    fit(cfg, data=make_synthetic(200, 40, seed=0), run=RunDir.create(SERVER_RUNS[data_kind], cfg, "watch-e2e"))
    open_page(page, server, "inspect")
    view = main(page).get_by_text("Watch it learn", exact=True)
    expect(view).to_be_visible()
    view.scroll_into_view_if_needed()
    expect(main(page).locator(".st-key-watch_maps .js-plotly-plot")).to_have_count(1)
    expect(main(page).locator(".st-key-watch_hist .js-plotly-plot")).to_have_count(1)
    shoot(page, shots, "30-watch-last-step.png")
    thumb = main(page).locator("[data-testid='stSlider']").filter(has_text="Step").get_by_role("slider")
    thumb.focus()
    for _ in range(4):  # back to the first frame (steps 0, 2, 4, 6, 7): the initial weights
        thumb.press("ArrowLeft")
    wait_for_app(page)
    expect(main(page).locator(".st-key-watch_maps[data-stale='false']")).to_contain_text("step 0")
    assert_healthy(page)
    shoot(page, shots, "31-watch-step-0.png")

def test_experiments_layer_responses_fig7(page, server: str, shots: Path) -> None:
    """Fig. 7 of the paper for the shipped ResNet-20 and plain-20: one task each, one figure."""
    open_page(page, server, "experiments")
    panel = open_tab(page, "Layer responses (Fig. 7)")
    buttons = panel.get_by_role("button", name="Measure layer responses")
    # The two picked nets (the shipped ResNet-20 and plain-20) come first; a run trained above follows.
    expect(buttons.first).to_be_visible()
    offered = buttons.count()
    assert offered >= 2, offered
    for done in (1, 2):
        wait_for_app(page)
        buttons.first.click()
        expect(buttons).to_have_count(offered - done, timeout=20_000)
        expect(panel.get_by_text("Computed in")).to_have_count(done, timeout=EXPERIMENT_TIMEOUT_MS)
    expect(panel.get_by_text(re.compile(r"Mean response std per layer: ResNet\(A\)-20"))).to_be_visible()
    expect(panel.locator("[data-testid='stPlotlyChart'] .js-plotly-plot")).to_have_count(1)
    wait_for_app(page)
    assert_healthy(page)
    shoot(page, shots, "22-layer-responses.png")


def test_explain_faithfulness_of_every_method(page, server: str, shots: Path, data_kind: str) -> None:
    """A score under each map, then every method scored on 5 test images for the shipped ResNet-20
    (one task: the plain net's button is the same code, and each takes minutes on 2 loaded cores)."""
    if data_kind == "synthetic":
        pytest.skip("the shipped models are CIFAR-10 models; on the synthetic set the page says so instead")
    open_page(page, server, "explain")
    expect(main(page).get_by_text("Faithfulness on this image").first).to_be_visible(timeout=RUN_TIMEOUT_MS)
    step_slider(main(page), "Test images (the first of each class", "Home")  # 10 -> 5 images
    wait_for_app(page)
    start_task(page, main(page), re.compile(r"Score every method: ResNet\(A\)-20"))
    expect(main(page).get_by_text("Computed in")).to_have_count(1, timeout=2 * EXPERIMENT_TIMEOUT_MS)
    wait_for_app(page)
    expect(main(page).get_by_text("How faithful is each map?")).to_be_visible()
    expect(main(page).get_by_text(re.compile("Deletion AUC \\(lower = more faithful\\)")).first).to_be_visible()
    assert_healthy(page)
    shoot(page, shots, "21-faithfulness.png")
