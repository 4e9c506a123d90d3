"""The HTML report in a real browser: Debian's headless Chromium driven by Playwright (no browser
download: ``executable_path`` is the system's /usr/bin/chromium). The page loads with no console
or page error and no request leaving it; the cells the browser shows carry the JSON's numbers;
clicking a header re-orders the rows numerically; a full-page screenshot is written."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")
if not CHROMIUM.exists():
    pytest.skip(f"{CHROMIUM} is absent: install Debian's browser with `apt-get install -y chromium`",
                allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api", reason="the Python driver is absent: pip install playwright "
                               "(no `playwright install`: the system's /usr/bin/chromium is used)")

from stratalab.experiments import result_from_dict  # noqa: E402
from stratalab.report.html import write_html  # noqa: E402

from . import _dicts  # noqa: E402

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]

# every table as the browser renders it: header labels, and per row its class and its cells' text and data-value
READ_TABLES = """() => Array.from(document.querySelectorAll("table")).map(t => ({
  kind: t.closest("section").dataset.kind,
  cls: t.className,
  title: (t.closest(".group-table") || {querySelector: () => null}).querySelector("h4")?.textContent || "",
  head: Array.from(t.tHead.rows[0].cells).map(c => c.textContent.trim()),
  rows: Array.from(t.tBodies[0].rows).map(r => ({
    cls: r.className,
    cells: Array.from(r.cells).map(c => ({text: c.innerText.trim(), value: c.getAttribute("data-value"),
                                         std: c.getAttribute("data-std")}))
  }))
}))"""


@pytest.fixture(scope="module")
def browser():
    assert shutil.which(str(CHROMIUM))
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), args=ARGS)
        yield b
        b.close()


def test_report_in_headless_chromium(browser, tmp_path):
    george, d3m, audit = _dicts.george(), _dicts.d3m(), _dicts.audit()
    # two groups whose accuracies print alike (12.3) but differ, in the wrong order: only a numeric
    # sort on data-value orders them (a sort on the shown text keeps them as they are)
    audit["groups"][0]["accuracy"], audit["groups"][1]["accuracy"] = 0.12349, 0.12341
    out = write_html(tmp_path / "report.html", [result_from_dict(george, "george.json"),
                                                result_from_dict(d3m, "d3m.json"), result_from_dict(audit, "audit.json")])
    page = browser.new_page(viewport={"width": 1200, "height": 900})
    problems, requests = [], []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("request", lambda r: requests.append(r.url))
    page.goto(out.as_uri())
    page.wait_for_load_state("load")
    assert problems == []
    assert all(u.startswith(("file://", "data:")) for u in requests), requests
    assert page.title() == "stratalab report: 3 results"
    assert page.evaluate("Array.from(document.images).every(i => i.complete && i.naturalWidth > 300)")

    tables = page.evaluate(READ_TABLES)
    # the summary rows of D3M Table 1 and GEORGE Table 1, as rendered
    (d,) = [t for t in tables if t["kind"] == "run d3m" and "summary" in t["cls"]]
    col = d["head"].index("test worst-group (%)")
    shown = {r["cells"][0]["text"]: r["cells"][col] for r in d["rows"]}
    for row in d3m["table"]:
        cell = shown[row["name"]]
        assert float(cell["value"]) == pytest.approx(row["wga_mean"], abs=1e-15)
        assert float(cell["std"]) == pytest.approx(row["wga_std"], abs=1e-15)
        assert cell["text"] == f"{100 * row['wga_mean']:.1f} ± {100 * row['wga_std']:.1f}"
    (g,) = [t for t in tables if t["kind"] == "run george" and "summary" in t["cls"]]
    col = g["head"].index("robust accuracy (test worst-group) (%)")
    shown = {r["cells"][0]["text"]: float(r["cells"][col]["value"]) for r in g["rows"]}
    assert shown == pytest.approx({r["method"]: r["robust_mean"] for r in george["table"]}, abs=1e-15)
    # every cell of the audit's group table: text and value from the JSON, the worst row marked
    (a,) = [t for t in tables if t["kind"] == "audit" and "per-group" in t["cls"]]
    acc, n = a["head"].index("accuracy (%)"), a["head"].index("n")
    for r, grp in zip(a["rows"], audit["groups"]):
        assert (float(r["cells"][acc]["value"]), r["cells"][acc]["text"]) == (grp["accuracy"], f"{100 * grp['accuracy']:.1f}")
        assert (float(r["cells"][n]["value"]), r["cells"][n]["text"]) == (grp["n"], str(grp["n"]))
        assert r["cells"][1]["text"] == grp["group_name"]
    worst = [r for r in a["rows"] if "worst" in r["cls"].split()]
    assert len(worst) == 1 and float(worst[0]["cells"][acc]["value"]) == audit["worst_group_accuracy"]
    assert "worst" in worst[0]["cells"][0]["text"]
    assert page.evaluate("getComputedStyle(document.querySelector('tr.worst')).backgroundColor") != "rgba(0, 0, 0, 0)"

    # sorting: click "accuracy (%)" of the audit's group table -> ascending, again -> descending
    table = page.locator("section[data-kind='audit'] table.per-group")
    header = table.locator("thead th", has_text="accuracy (%)").first
    values = lambda: [float(v) for v in table.locator(f"tbody tr td:nth-child({acc + 1})").evaluate_all(  # noqa: E731
        "cells => cells.map(c => c.getAttribute('data-value'))")]
    before = values()
    header.click()
    asc = values()
    assert asc == sorted(before) and asc[:2] == [0.12341, 0.12349] and header.get_attribute("aria-sort") == "ascending"
    header.click()
    assert values() == sorted(before, reverse=True) and header.get_attribute("aria-sort") == "descending"
    # a numeric column sorts as numbers, not as text ("100.0" after "27.8"): accuracy of the first D3M table
    d3m_table = page.locator("section[data-kind='run d3m'] table.per-group").first
    d3m_table.locator("thead th", has_text="accuracy (%)").first.click()
    shown_text = d3m_table.locator("tbody tr td:nth-child(4)").all_inner_texts()
    assert [float(t) for t in shown_text] == sorted(float(t) for t in shown_text)
    # the worst row keeps its mark wherever it moves
    assert table.locator("tr.worst").count() == 1
    assert problems == []

    shot = tmp_path / "report.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000
    page.close()
