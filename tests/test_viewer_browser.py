"""``medfoundry view`` in a real headless Chromium (Debian's chromium + chromium-driver, driven by Selenium).

Opens the page on the bundled PET demo case, drags a box with mouse events on the axial view, waits for the mask
overlay, clicks save, and checks the file against :func:`medfoundry.api.segment` with the same box (DSC 1.0, same
geometry). With ``MEDFOUNDRY_SCREENSHOT=1`` it also refreshes docs/images/viewer.png, the README's screenshot
(off by default, so a test run never modifies the checkout). ``.ci/run`` installs Chromium, so in CI
this runs; it is skipped (loudly) only where /usr/bin/chromium or /usr/bin/chromedriver is missing.
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest

from medfoundry.api import segment
from medfoundry.demo import sample_dir
from medfoundry.evaluation.overlap import dice
from medfoundry.inference.predictor import LiteMedSAMPredictor
from medfoundry.inference.prompts import ObjectPrompt
from medfoundry.io import read_image, read_mask
from medfoundry.viewer import ViewerSession
from medfoundry.viewer.server import ViewerServer

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"
SCREENSHOT = Path(__file__).resolve().parents[1] / "docs" / "images" / "viewer.png"
LESION_BOX = (11, 11, 18, 17)  # voxels (x0, y0, x1, y1) around the demo lesion on axial slice 25
SLICE = 25

pytestmark = pytest.mark.skipif(
    not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()),
    reason="BROWSER TEST NOT RUN: /usr/bin/chromium and /usr/bin/chromedriver are missing; "
    "install them with 'apt-get install -y chromium chromium-driver' (.ci/run does this)",
)


@pytest.fixture()
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[test])")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-background-networking",
        "--disable-sync",
        "--disable-component-update",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
        "--use-angle=swiftshader",
        "--enable-unsafe-swiftshader",
    ):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(60)
    yield driver
    driver.quit()


def wait_for(driver, script: str, timeout: float = 120.0):
    """Poll a JS expression until it is truthy; fail with the page's status line otherwise."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = driver.execute_script(f"return {script}")
        if value:
            return value
        time.sleep(0.2)
    status = driver.execute_script("return document.getElementById('status').textContent")
    logs = [e["message"] for e in driver.get_log("browser")][-10:]
    pytest.fail(f"timed out waiting for {script!r}; page status: {status!r}; console: {logs}")


VOXEL_TO_FRAC = """
const voxelToFrac = (voxel) => {  // voxel (x, y, z) -> NiiVue texture fraction, through the served affine
  const m = viewer.info.ras_to_voxel;
  const a = [0, 1, 2].map((r) => [m[r][0], m[r][1], m[r][2]]);
  const b = [0, 1, 2].map((r) => voxel[r] - m[r][3]);
  const det = (q) => q[0][0] * (q[1][1] * q[2][2] - q[1][2] * q[2][1])
    - q[0][1] * (q[1][0] * q[2][2] - q[1][2] * q[2][0]) + q[0][2] * (q[1][0] * q[2][1] - q[1][1] * q[2][0]);
  const mm = [0, 1, 2].map((c) => det(a.map((row, r) => row.map((v, k) => (k === c ? b[r] : v)))) / det(a));
  return viewer.nv.mm2frac(mm);
};
"""


def show_slice(driver, voxel: tuple[float, float, float]) -> None:
    """Move the crosshair (so the axial view shows the voxel's slice)."""
    driver.execute_script(
        VOXEL_TO_FRAC + "viewer.nv.scene.crosshairPos = voxelToFrac(arguments[0]);viewer.nv.drawScene();", list(voxel)
    )


def canvas_point(driver, voxel: tuple[float, float, float]) -> tuple[float, float]:
    """CSS pixel offset from the canvas centre of a voxel's centre on the axial view (NiiVue's own mapping)."""
    return driver.execute_script(
        VOXEL_TO_FRAC
        + """
        const hit = viewer.nv.frac2canvasPosWithTile(voxelToFrac(arguments[0]), 0);
        const canvas = document.getElementById('gl');
        const rect = canvas.getBoundingClientRect();
        const scale = rect.width / canvas.width;
        return [hit.pos[0] * scale - rect.width / 2, hit.pos[1] * scale - rect.height / 2];
        """,
        list(voxel),
    )


def test_draw_a_box_in_chromium_save_propagate_and_match_segment(browser, real_model, tmp_path):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.expected_conditions import alert_is_present
    from selenium.webdriver.support.ui import WebDriverWait

    image_path = sample_dir() / "STS_008_PET_image.nii.gz"
    image = read_image(image_path, modality="PET")
    predictor = LiteMedSAMPredictor(model=real_model, backend="torch")
    out = tmp_path / "from_viewer.nii.gz"
    server = ViewerServer(ViewerSession(image, out=out, predictor=predictor)).start()
    try:
        browser.get(server.url)
        wait_for(browser, "document.body.dataset.state === 'ready' && viewer.nv.volumes.length === 2")
        # the axial view on slice 25, then the box tool, as a user would
        select_layout(browser, "axial")
        show_slice(browser, ((LESION_BOX[0] + LESION_BOX[2]) / 2, (LESION_BOX[1] + LESION_BOX[3]) / 2, SLICE))
        browser.find_element(By.CSS_SELECTOR, 'input[name="tool"][value="box"]').click()
        canvas = browser.find_element(By.ID, "gl")
        x0, y0 = canvas_point(browser, (LESION_BOX[0], LESION_BOX[1], SLICE))
        x1, y1 = canvas_point(browser, (LESION_BOX[2], LESION_BOX[3], SLICE))
        drag = ActionChains(browser).move_to_element_with_offset(canvas, round(x0), round(y0)).click_and_hold()
        for step in range(1, 6):
            drag.move_by_offset(round((x1 - x0) * step / 5) - round((x1 - x0) * (step - 1) / 5), 0)
        drag.move_by_offset(0, round(y1 - y0)).release().perform()
        wait_for(browser, "viewer.prompts.length === 1 && document.body.dataset.state === 'ready'")
        # the overlay on the page holds the mask
        overlay_voxels = wait_for(
            browser, "viewer.nv.volumes.length === 2 && viewer.nv.volumes[1].img.filter(v => v > 0).length"
        )
        first = browser.execute_script("return viewer.prompts[0]")
        request = first["request"]
        assert request["axis"] == "z" and request["index"] == SLICE
        assert np.allclose(request["box"], LESION_BOX, atol=1), request  # the drag landed on the intended voxels

        # a second prompt on the same slice reuses the embedding
        browser.execute_script("guarded('segmenting', sendPrompt)")  # what a second box on this slice does
        wait_for(browser, "viewer.prompts.length === 2")
        second = browser.execute_script("return viewer.prompts[1]")
        assert first["embedded"] and not second["embedded"]

        browser.find_element(By.ID, "save").click()
        wait_for(browser, "viewer.saved && viewer.saved.path && document.body.dataset.state === 'ready'")
        saved = read_mask(out, reference=image)  # raises unless spacing / origin / direction match the image
        assert saved.same_grid(image)
        x0, y0, x1, y1 = request["box"]
        expected = segment(
            image_path,
            [ObjectPrompt(box=[x0, y0, SLICE, x1, y1, SLICE])],
            tmp_path / "from_segment.nii.gz",
            modality="PET",
            predictor=predictor,
            progress=False,
        )
        assert saved.array.sum() == overlay_voxels > 0
        assert dice(saved.array > 0, expected.array > 0) == 1.0
        assert np.array_equal(saved.array, read_mask(tmp_path / "from_segment.nii.gz").array)

        # propagate the box within slices 24..26 (25 is their middle, as segment starts), save over the file
        for field, value in (("prop-z0", SLICE - 1), ("prop-z1", SLICE + 1)):
            browser.find_element(By.ID, field).clear()
            browser.find_element(By.ID, field).send_keys(str(value))
        browser.find_element(By.ID, "propagate").click()
        wait_for(browser, "viewer.propagated && document.body.dataset.state === 'ready'")
        browser.execute_script("viewer.saved = null")
        browser.find_element(By.ID, "save").click()
        confirm = WebDriverWait(browser, 30).until(alert_is_present())
        assert "exists" in confirm.text
        confirm.accept()
        wait_for(browser, "viewer.saved && viewer.saved.path && document.body.dataset.state === 'ready'")
        box3d = [x0, y0, SLICE - 1, x1, y1, SLICE + 1]
        expected3d = segment(
            image_path,
            [ObjectPrompt(box=box3d)],
            tmp_path / "3d.nii.gz",
            modality="PET",
            predictor=predictor,
            progress=False,
        )
        propagated = read_mask(out, reference=image).array
        assert dice(propagated > 0, expected3d.array > 0) == 1.0 and propagated.sum() > saved.array.sum()

        select_layout(browser, "mpr3d")
        time.sleep(0.5)
        shot = tmp_path / "viewer.png"
        browser.save_screenshot(str(shot))
        assert shot.stat().st_size > 0
        if os.environ.get("MEDFOUNDRY_SCREENSHOT") == "1":
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(shot, SCREENSHOT)
    finally:
        server.stop()
    print(
        f"\nbox to mask: cold {first['round_trip_ms']} ms (model {first['seconds'] * 1000:.0f} ms), "
        f"warm {second['round_trip_ms']} ms (model {second['seconds'] * 1000:.0f} ms)"
    )


def select_layout(driver, name: str) -> None:
    """Choose a layout in the page's select box."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    Select(driver.find_element(By.ID, "layout")).select_by_value(name)
