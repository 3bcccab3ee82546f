"""The bottleneck atlas (analysis.atlas, analysis.atlas_server, analysis.serve): its data,
the live decoder against the model, and the page in a real browser (headless Chromium
through selenium; skipped with one line where they are not installed)."""

import json
import os
import pathlib
import re
import shutil
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest

from analysis import atlas, latent, serve
from analysis.atlas_server import LiveDecoder, make_server
from shg_jax import data
from shg_jax.models import latent_shape
from shg_jax.runs import open_run

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def built(tiny_run, tmp_path_factory):
    """The tiny run's study of its val split with --atlas: (atlas folder, its data)."""
    workdir, _ = tiny_run
    out = tmp_path_factory.mktemp("atlas") / "study"
    assert latent.main(["--ckpt", str(workdir), "--checkpoint", "latest", "--split", "val",
                        "--out", str(out), "--subset", "all", "--components", "1,2,5",
                        "--ks", "2-3", "--n-init", "2", "--batch-size", "8",
                        "--swap-pairs", "16", "--atlas"]) == 0
    folder = out / "atlas" / "all"
    text = (folder / "data.js").read_text()
    prefix = "window.ATLAS_DATA = "
    assert text.startswith(prefix)
    return folder, json.loads(text[len(prefix):].rstrip().rstrip(";"))


def decoded(b64: str, dtype) -> np.ndarray:
    import base64
    return np.frombuffer(base64.b64decode(b64), np.dtype(dtype).newbyteorder("<"))


def test_the_atlas_holds_every_sample_of_the_subset(built, tiny_run):
    folder, d = built
    split = data.Split(json.loads((folder / atlas.RUN_FILE).read_text())["data_dir"], "val")
    assert d["n"] == len(split)
    rows = decoded(d["rows"], np.int32)
    np.testing.assert_array_equal(rows, np.arange(len(split)))
    np.testing.assert_array_equal(decoded(d["image_id"], np.float64),
                                  split.gather(rows)["image_id"])
    assert decoded(d["coords"], np.float32).shape == (2 * d["n"],)
    assert set(d["clusters"]) == {"2", "3"}
    assert {"pck", "labelled", "knee_angle", "factor: pose"} <= set(d["colourings"])
    truth = decoded(d["truth"], np.int16).reshape(d["n"], 17, 3)
    np.testing.assert_allclose(truth[..., :2] / 4, split.gather(rows)["keypoints"][..., :2],
                               atol=0.125)
    assert d["thumbs"]["count"] == d["n"] and (folder / d["thumbs"]["sheets"][0]).is_file()
    frames = d["walks"]["frames"]
    assert set(frames) == {"reference skips", "no skips"}
    assert [len(f) for f in frames["no skips"]] == [len(d["walks"]["steps"])] * 3
    assert frames["no skips"][0][0]["png"].startswith("data:image/png;base64,")
    assert len(d["claims"]) == 5 and d["swap"]["shown"]
    for name in atlas.PAGE_FILES:
        assert (folder / name).is_file()
    index = (folder.parent.parent / "index.html").read_text()
    assert "atlas/all/index.html" in index                  # the report links the atlas


def test_nearest_neighbours_are_the_nearest_others():
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(300, 5)).astype(np.float32)
    found = atlas.nearest_neighbours(coords, chunk=64)
    d = ((coords[:, None] - coords[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    expected = np.argsort(d, axis=1)[:, :atlas.NEIGHBOURS]
    np.testing.assert_array_equal(found, expected)
    few = atlas.nearest_neighbours(coords[:4])
    assert (few[:, 3:] == -1).all() and set(few[0, :3]) == {1, 2, 3}


def test_thumbnails_are_subsampled_beyond_the_limit_and_keep_what_is_shown():
    assert atlas.thumbnail_rows(10, 20, 0).tolist() == list(range(10))
    rows = atlas.thumbnail_rows(1000, 50, 0, keep=[7, 999])
    assert len(rows) == 50 and {7, 999} <= set(rows.tolist())
    np.testing.assert_array_equal(rows, atlas.thumbnail_rows(1000, 50, 0, keep=[7, 999]))


@pytest.fixture(scope="module")
def served(built):
    folder, _ = built
    decoder = LiveDecoder(folder)
    server = make_server(decoder, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield decoder, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def get(url: str) -> tuple[int, dict]:
    try:
        with urllib.request.urlopen(url, timeout=60) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_the_live_answer_equals_the_models_decode(built, served, tiny_run):
    folder, d = built
    decoder, base = served
    workdir, _ = tiny_run
    config, steps, state, _ = open_run(workdir, "latest")
    model = steps.eval_model(state)
    walk = np.load(folder / "walk.npz")
    rows = np.load(folder / "rows.npy")
    split = data.Split(config.data_dir, "val")
    shape = latent_shape(config.model, 3)
    images = split.gather(rows[[3, 5]])["images"]
    latents, skips = model.encode(steps.inputs(images), 3)
    for query, skip_of, use in (("sample=3&skips=own&pc=1:1.5,2:-0.5", 0, True),
                                ("sample=3&skips=none&pc=5:2", 0, False),
                                ("sample=3&skips=5&pc=1:-1,1:0.25", 1, True)):
        status, answer = get(f"{base}/api/decode?{query}")
        assert status == 200, answer
        pcs = dict(item.split(":") for item in query.split("pc=")[1].split(","))
        if query.endswith("1:-1,1:0.25"):
            pcs = {"1": -0.75}
        z = np.asarray(latents[0]).reshape(-1).copy()
        for c, t in pcs.items():
            i = list(walk["components"]).index(int(c))
            z += float(t) * walk["scales"][i] * walk["axes"][i]
        heatmaps = model.decode(z.reshape((1,) + shape), [s[skip_of:skip_of + 1] for s in skips],
                                3, use_skips=use)
        xy, peak = steps.codec.decode(heatmaps)
        np.testing.assert_allclose(answer["keypoints"], np.asarray(xy[0]), atol=0.01)
        np.testing.assert_allclose(answer["peaks"], np.asarray(peak[0]), atol=1e-3)
        assert answer["png"].startswith("data:image/png;base64,")


@pytest.mark.parametrize("query, status, words", [
    ("api/decode?sample=x", 400, "sample must be an integer"),
    ("api/decode?sample=99999", 400, "not in 0.."),
    ("api/decode?sample=1&skips=sideways", 400, "skips must be"),
    ("api/decode?sample=1&pc=1", 400, "COMPONENT:STEPS"),
    ("api/decode?sample=1&pc=4:1", 400, "component 4 was not walked"),
    ("api/decode?sample=1&pc=1:nan", 400, "within"),
    ("api/decode?sample=1&pc=1:50", 400, "within"),
    ("api/nothing", 404, "no such API"),
])
def test_a_malformed_request_gets_a_4xx_and_the_server_goes_on(served, query, status, words):
    _, base = served
    code, answer = get(f"{base}/{query}")
    assert code == status and words in answer["error"]
    assert get(f"{base}/api/decode?sample=0")[0] == 200


def test_serve_refuses_a_folder_without_an_atlas_or_its_latents_in_one_line(
        built, tmp_path, capsys):
    assert serve.main([str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and str(tmp_path) in err
    folder, _ = built
    moved = tmp_path / "moved"
    shutil.copytree(folder, moved)
    run = json.loads((moved / atlas.RUN_FILE).read_text())
    (moved / atlas.RUN_FILE).write_text(json.dumps(dict(run, latents=str(tmp_path / "gone"))))
    assert serve.main([str(moved)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and len(err.splitlines()) == 1 and "gone" in err


# ---- in a real browser ---------------------------------------------------------------

@pytest.fixture(scope="module")
def browser():
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not pathlib.Path(p).is_file()]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("the selenium package")
    if missing:
        why = (f"browser tests need {', '.join(missing)}: apt-get install chromium "
               f"chromium-driver; pip install -e '.[dev]'")
        if os.environ.get("CI"):
            pytest.fail(f"{why} (.ci/run installs them; CI must run these tests)")
        pytest.skip(why)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--window-size=1600,1600",
                "--allow-file-access-from-files"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(60)
    yield driver
    driver.quit()


def open_page(browser, url: str) -> None:
    from selenium.webdriver.support.ui import WebDriverWait
    browser.get(url)
    WebDriverWait(browser, 30).until(
        lambda b: b.execute_script("return !!(window.atlas && window.atlas.ready)"))


def severe(browser) -> list:
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def test_the_page_opens_from_file_with_every_point_and_no_console_error(built, browser):
    folder, d = built
    open_page(browser, (folder / "index.html").as_uri())
    assert browser.execute_script("return window.atlas.n") == d["n"]
    count = browser.find_element("id", "count")
    assert count.get_attribute("data-count") == str(d["n"]) and str(d["n"]) in count.text
    assert not browser.execute_script("return window.atlas.live()")
    assert severe(browser) == []


def test_hovering_a_point_shows_that_samples_id_and_crop(built, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    folder, d = built
    open_page(browser, (folder / "index.html").as_uri())
    canvas = browser.find_element("id", "map")
    size = canvas.size
    thumbs = decoded(d["thumbs"]["index"], np.int32)
    rows = decoded(d["rows"], np.int32)
    for i in (0, d["n"] // 2, d["n"] - 1):
        p = browser.execute_script(f"return window.atlas.screenOf({i})")
        ActionChains(browser).move_to_element_with_offset(
            canvas, int(p["x"] - size["width"] / 2), int(p["y"] - size["height"] / 2)).perform()
        tip = browser.find_element("id", "tooltip")
        shown = int(tip.get_attribute("data-sample"))
        # Points can coincide on the map: the one shown must sit where the mouse is.
        q = browser.execute_script(f"return window.atlas.screenOf({shown})")
        assert abs(q["x"] - p["x"]) < 2 and abs(q["y"] - p["y"]) < 2
        assert tip.is_displayed() and f"split row {rows[shown]}," in tip.text
        crop = tip.find_element("css selector", "canvas.tip-crop")
        assert crop.get_attribute("data-thumb") == str(thumbs[shown])
        assert crop.get_attribute("data-row") == str(rows[shown])
    assert severe(browser) == []


def test_moving_a_slider_draws_the_precomputed_frame_of_that_step(built, browser):
    folder, d = built
    open_page(browser, (folder / "index.html").as_uri())
    walks = d["walks"]
    for ci, j in ((0, 0), (1, len(walks["steps"]) - 1), (2, 2)):
        c = walks["components"][ci]
        browser.execute_script(
            f"const s = document.getElementById('slider-{c}'); s.value = {j};"
            "s.dispatchEvent(new Event('input'));")
        frame = browser.find_element("id", "frame")
        step = walks["steps"][j]
        assert frame.get_attribute("data-frame") == f"reference skips:{c}:{step:g}"
        src = browser.find_element("id", "frame-heatmap").get_attribute("src")
        assert src == walks["frames"]["reference skips"][ci][j]["png"]
    assert severe(browser) == []


def test_the_served_page_decodes_the_sliders_live(built, served, browser):
    from selenium.webdriver.support.ui import WebDriverWait
    _, base = served
    open_page(browser, f"{base}/index.html")
    WebDriverWait(browser, 30).until(lambda b: b.execute_script("return window.atlas.live()"))
    browser.execute_script("window.atlas.select(2);"
                           "const s = document.getElementById('slider-1'); s.value = 1.5;"
                           "s.dispatchEvent(new Event('input'));")
    WebDriverWait(browser, 30).until(lambda b: b.find_element("id", "frame").get_attribute(
        "data-frame").startswith("live:2:own:1:1.5"))
    status, answer = get(f"{base}/api/decode?sample=2&skips=own&pc=1:1.5,2:0,5:0")
    assert status == 200
    src = browser.find_element("id", "frame-heatmap").get_attribute("src")
    assert src == answer["png"]
    assert severe(browser) == []


def test_the_serve_command_answers_then_stops_cleanly_on_ctrl_c(built):
    import signal
    import subprocess
    import sys

    from helpers import REPO

    folder, _ = built
    proc = subprocess.Popen([sys.executable, "-m", "analysis.serve", str(folder), "--port", "0"],
                            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line.startswith(f"serving {folder} at http://127.0.0.1:"), line
        base = line.split(" at ")[1].split("/ ")[0]
        assert get(f"{base}/api/health")[1]["live"] is True
        assert get(f"{base}/api/decode?sample=oops")[0] == 400
        assert get(f"{base}/api/decode?sample=1")[0] == 200       # still serving
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0 and out.strip() == "stopped" and "Traceback" not in err


def test_the_server_benchmark_prints_its_latencies(built, capsys):
    from benchmarks import atlas_server as bench

    folder, _ = built
    bench.main([str(folder), "--requests", "12"])
    out = capsys.readouterr().out
    assert re.search(r"^atlas server slider move .*requests=12 median_ms=\d", out, re.M)
    assert re.search(r"^atlas server first request .*requests=3 median_ms=\d", out, re.M)


def test_a_fault_while_decoding_is_a_500_and_the_server_goes_on(served, monkeypatch, capsys):
    decoder, base = served

    def broken(*args):
        raise FloatingPointError("overflow")

    monkeypatch.setattr(decoder, "decode", broken)
    code, answer = get(f"{base}/api/decode?sample=0")
    assert code == 500 and answer["error"] == "internal error: FloatingPointError: overflow"
    monkeypatch.undo()
    assert get(f"{base}/api/decode?sample=0")[0] == 200
    assert "Traceback" not in capsys.readouterr().err
