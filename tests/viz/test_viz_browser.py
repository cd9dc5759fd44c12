"""The report in headless Chromium: no console errors, a click changes the attention map.

Chromium comes from ``make test`` (it installs Debian's ``chromium`` where missing, as a declared
set-up step); the test never installs anything. Without it the test fails under CI (``CI=true``)
and is skipped, with the reason, elsewhere. The page is driven over
the DevTools protocol (``websocket-client``). A screenshot is saved next to the report; set
``IJEPA_REPORT_SCREENSHOT=docs/images/report.png`` to also write it there, and
``IJEPA_REPORT_HTML=runs/demo/report.html`` to check (and photograph) an existing report
instead of the tiny test run's.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from cdp_client import Browser, find_chromium

from ijepa.viz.report import build_report
from ijepa.viz.runs import SampleImages

pytestmark = [pytest.mark.browser, pytest.mark.slow]

_STATE = """(() => {
  const item = document.querySelector('.explorer-item');
  return {patch: item.getAttribute('data-patch'), layer: item.getAttribute('data-layer'),
          head: item.getAttribute('data-head'),
          map: item.querySelector('canvas.explorer-map').toDataURL(),
          items: document.querySelectorAll('.explorer-item').length,
          title: document.title};
})()"""

_PATCH_XY = """(() => {
  const c = document.querySelector('.explorer-item canvas.explorer-image');
  c.scrollIntoView({block: 'center'});
  const r = c.getBoundingClientRect();
  return [r.left + r.width * %f, r.top + r.height * %f];
})()"""


@pytest.fixture(scope="module")
def chromium() -> str:
    found = find_chromium()
    if found is not None:
        return found
    why = "chromium is not installed (`make test` installs it: make browser)"
    if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
        pytest.fail(f"{why}; under CI the browser test must run, never skip")
    pytest.skip(why)


@pytest.fixture(scope="module")
def report_path(
    tiny_run: Path, samples: SampleImages, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    given = os.environ.get("IJEPA_REPORT_HTML")
    if given:
        return Path(given).resolve()
    out = tmp_path_factory.mktemp("browser") / "report.html"
    return build_report(
        tiny_run, out, samples=samples, embedding_method="pca", predictor_steps=10, mask_batches=5
    )


@pytest.fixture
def browser(chromium: str, tmp_path: Path) -> Iterator[Browser]:
    b = Browser(chromium, tmp_path / "profile")
    try:
        yield b
    finally:
        b.close()


def _open(browser: Browser, path: Path) -> None:
    browser.call("Page.navigate", url=path.as_uri())
    browser.wait_event("Page.loadEventFired")
    # images are decoded asynchronously: wait until every explorer canvas has been drawn
    browser.evaluate(
        """new Promise(done => { const t = () => { const imgs = [...document.images];
           if (imgs.every(i => i.complete)) { setTimeout(done, 200); } else { setTimeout(t, 50); } };
           t(); })"""
    )


def test_report_loads_without_errors_and_click_changes_map(
    browser: Browser, report_path: Path, tmp_path: Path
) -> None:
    _open(browser, report_path)
    before = browser.evaluate(_STATE)
    assert before["items"] >= 1
    assert before["title"].startswith("I-JEPA report")
    x, y = browser.evaluate(_PATCH_XY % (0.1, 0.1))  # top-left patch
    browser.click(x, y)
    after = browser.evaluate(_STATE)
    assert after["patch"] == "0" != before["patch"]
    assert after["map"] != before["map"]
    x, y = browser.evaluate(_PATCH_XY % (0.95, 0.95))  # bottom-right patch
    browser.click(x, y)
    last = browser.evaluate(_STATE)
    assert int(last["patch"]) > int(after["patch"]) and last["map"] != after["map"]
    # another layer redraws the map of the same patch
    browser.evaluate(
        "(() => { const s = document.getElementById('layer-select'); s.value = '0';"
        " s.dispatchEvent(new Event('change')); })()"
    )
    other = browser.evaluate(_STATE)
    assert other["layer"] == "0" and other["patch"] == last["patch"]
    assert other["map"] != last["map"]
    assert browser.errors() == []
    shot = tmp_path / "report.png"
    browser.screenshot(shot)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    target = os.environ.get("IJEPA_REPORT_SCREENSHOT")
    if target:
        Path(target).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(shot, target)


def test_injected_script_does_not_run(browser: Browser, tmp_path: Path) -> None:
    # the escaped XSS label is displayed as text; nothing sets the marker
    from ijepa.viz.report_page import esc, page

    body = f"<p id='x'>{esc('<script>window.pwned = 1</script>')}</p>"
    path = tmp_path / "x.html"
    path.write_text(page("t", body, explorer_data=None))
    _open(browser, path)
    assert browser.evaluate("window.pwned === undefined") is True
    assert browser.evaluate("document.getElementById('x').textContent") == (
        "<script>window.pwned = 1</script>"
    )
    assert browser.errors() == []
