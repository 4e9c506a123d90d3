"""The HTML report, checked as a page: its tables parsed with the stdlib's html.parser and compared
with the JSON the page was made from (the browser test is test_html_browser.py)."""

from __future__ import annotations

import base64
import re
from html.parser import HTMLParser

import pytest

from stratalab.experiments import load_result, result_from_dict
from stratalab.report.html import render_html, write_html

from . import _dicts


class Page(HTMLParser):
    """Sections, tables (rows of cells with their attributes and text), links and scripts of a page."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.sections: list[dict] = []
        self.tables: list[dict] = []
        self.urls: list[tuple[str, str, str]] = []  # (tag, attribute, value)
        self.scripts = 0
        self.tags: list[str] = []
        self._cell: dict | None = None
        self._row: dict | None = None
        self._heading: list[str] | None = None
        self._last_h4 = ""
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        self.tags.append(tag)
        for k in ("src", "href", "action", "data", "poster"):
            if k in a:
                self.urls.append((tag, k, a[k]))
        if tag == "script":
            self.scripts += 1
        elif tag == "section":
            self.sections.append({"id": a.get("id"), "kind": a.get("data-kind"), "source": a.get("data-source")})
        elif tag == "table":
            self.tables.append({"cls": a.get("class", "").split(), "section": self.sections[-1] if self.sections else None,
                                "title": self._last_h4, "head": [], "rows": []})
        elif tag == "tr":
            self._row = {"cls": a.get("class", "").split(), "cells": []}
        elif tag in ("td", "th"):
            self._cell = {"tag": tag, "attrs": a, "text": ""}
        elif tag == "h4":
            self._heading = []

    def handle_endtag(self, tag):
        if tag in ("td", "th") and self._cell is not None:
            self._cell["text"] = " ".join(self._cell["text"].split())
            self._row["cells"].append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            t = self.tables[-1]
            if all(c["tag"] == "th" for c in self._row["cells"]):
                t["head"] = [c["text"] for c in self._row["cells"]]
            else:
                t["rows"].append(self._row)
            self._row = None
        elif tag == "h4" and self._heading is not None:
            self._last_h4 = "".join(self._heading).strip()
            self._heading = None

    def handle_data(self, data):
        if self._cell is not None:
            self._cell["text"] += data
        if self._heading is not None:
            self._heading.append(data)

    def find(self, kind: str, cls: str) -> list[dict]:
        return [t for t in self.tables if t["section"] and t["section"]["kind"] == kind and cls in t["cls"]]


def column(table: dict, label: str) -> int:
    return table["head"].index(label)


def value(cell: dict) -> float:
    return float(cell["attrs"]["data-value"])


def summary_row(table: dict, method_name: str, setting: str | None = None) -> dict[str, dict]:
    rows = [r for r in table["rows"] if r["cells"][0]["text"] == method_name
            and (setting is None or r["cells"][1]["text"] == setting)]
    assert len(rows) == 1, (method_name, [r["cells"][0]["text"] for r in table["rows"]])
    return dict(zip(table["head"], rows[0]["cells"]))


@pytest.fixture(scope="module")
def results():
    return [result_from_dict(_dicts.george(), "george.json"), result_from_dict(_dicts.d3m(), "d3m.json"),
            result_from_dict(_dicts.audit(), "audit.json"), result_from_dict(_dicts.train(), "train.json"),
            result_from_dict(_dicts.scaling(), "scaling.json"), result_from_dict(_dicts.spectral(), "spectral.json")]


@pytest.fixture(scope="module")
def page(results):
    html = render_html(results)
    return html, Page(html)


def test_summary_tables_hold_the_numbers_of_the_json(page):
    html, p = page
    (g,) = p.find("run george", "summary")
    for row in _dicts.george()["table"]:
        cells = summary_row(g, row["method"])
        rob, ova = cells["robust accuracy (test worst-group) (%)"], cells["overall accuracy (test average) (%)"]
        assert value(rob) == pytest.approx(row["robust_mean"], abs=1e-15)
        assert float(rob["attrs"]["data-std"]) == pytest.approx(row["robust_std"], abs=1e-15)
        assert value(ova) == pytest.approx(row["overall_mean"], abs=1e-15)
        assert rob["text"] == f"{100 * row['robust_mean']:.1f} ± {100 * row['robust_std']:.1f}"
        assert cells["seeds"]["text"] == "2"
    (d,) = p.find("run d3m", "summary")
    d3m = _dicts.d3m()
    for row in d3m["table"]:
        cells = summary_row(d, row["name"])
        assert value(cells["test worst-group (%)"]) == pytest.approx(row["wga_mean"], abs=1e-15)
        assert float(cells["test worst-group (%)"]["attrs"]["data-std"]) == pytest.approx(row["wga_std"], abs=1e-15)
        assert value(cells["test balanced (%)"]) == pytest.approx(row["balanced_mean"], abs=1e-15)
        assert value(cells["train examples removed"]) == row["removed_mean"]
        assert cells["labels used"]["text"] == f"group labels train / val: {row['group_info']}"
    (a,) = p.find("audit", "summary")
    aud = _dicts.audit()
    cells = summary_row(a, "audited predictions")
    wga = cells["worst-group (%)"]
    assert value(wga) == aud["worst_group_accuracy"]
    assert [float(wga["attrs"]["data-low"]), float(wga["attrs"]["data-high"])] == aud["intervals"]["worst_group_accuracy"]
    lo, hi = aud["intervals"]["worst_group_accuracy"]
    assert wga["text"] == f"{100 * aud['worst_group_accuracy']:.1f} [{100 * lo:.1f}, {100 * hi:.1f}]"
    assert value(cells["MacroStd (%)"]) == aud["macro_std"] and cells["labels used"]["text"] == "unknown"
    (s,) = p.find("run scaling", "summary")
    for row in _dicts.scaling()["table"]:
        cells = summary_row(s, "none (ERM)" if row["method"] == "erm" else row["method"], f"width={row['width']:g}")
        assert value(cells["test worst-group (%)"]) == pytest.approx(row["wga_mean"], abs=1e-15)
        assert value(cells["test worst-group, last epoch (%)"]) == pytest.approx(row["wga_last_mean"], abs=1e-15)
    (t,) = p.find("train", "summary")
    tr = _dicts.train()
    cells = summary_row(t, "GroupDRO")
    assert value(cells["test worst-group (%)"]) == tr["metrics"]["test"]["worst_group_accuracy"]
    assert value(cells["val worst-group (%)"]) == tr["metrics"]["val"]["worst_group_accuracy"]
    assert "data-std" not in cells["test worst-group (%)"]["attrs"]


def test_group_tables_hold_every_group_and_mark_the_worst(page):
    html, p = page
    aud = _dicts.audit()
    (a,) = p.find("audit", "per-group")
    assert len(a["rows"]) == len(aud["groups"])
    acc, ci = column(a, "accuracy (%)"), column(a, "CI (%)")
    for row, g in zip(a["rows"], aud["groups"]):
        assert value(row["cells"][acc]) == g["accuracy"] and row["cells"][acc]["text"] == f"{100 * g['accuracy']:.1f}"
        assert float(row["cells"][ci]["attrs"]["data-low"]) == g["accuracy_low"]
        assert float(row["cells"][ci]["attrs"]["data-high"]) == g["accuracy_high"]
        assert value(row["cells"][column(a, "n")]) == g["n"]
    worst = [i for i, r in enumerate(a["rows"]) if "worst" in r["cls"]]
    wg = aud["worst_group"]
    assert worst == [next(i for i, g in enumerate(aud["groups"]) if (g["class"], g["group"]) == (wg["class"], wg["group"]))]
    assert value(a["rows"][worst[0]]["cells"][acc]) == aud["worst_group_accuracy"]
    assert "worst" in a["rows"][worst[0]]["cells"][0]["text"]  # the visible marker
    assert all("worst" not in r["cells"][0]["text"] for i, r in enumerate(a["rows"]) if i not in worst)
    # D3M: the first seed's test table of every method, each with its worst group marked
    d3m = _dicts.d3m()
    tables = p.find("run d3m", "per-group")
    assert [t["title"] for t in tables] == [f"{n}, seed 0: test accuracy per group" for n, _ in _dicts.D3M_METHODS.values()]
    for t, m in zip(tables, _dicts.D3M_METHODS):
        rep = d3m["seeds"][0]["metrics"][m]["test"]
        col = column(t, "accuracy (%)")
        assert [value(r["cells"][col]) for r in t["rows"]] == [g["accuracy"] for g in rep["groups"]]
        marked = [value(r["cells"][col]) for r in t["rows"] if "worst" in r["cls"]]
        assert marked == [rep["worst_group_accuracy"]]
    (g,) = p.find("run george", "per-group")
    marked = [r for r in g["rows"] if "worst" in r["cls"]]
    assert len(marked) == 1 and marked[0]["cells"][0]["text"].startswith("eight")
    assert len(p.find("train", "per-group")) == 2 and p.find("run scaling", "per-group") == []


def test_every_percentage_on_the_page_is_its_data_value_at_one_decimal(page):
    """One format everywhere: a column headed (%) shows 100 x data-value with one decimal."""
    html, p = page
    checked = 0
    for t in p.tables:
        for j, label in enumerate(t["head"]):
            if not label.endswith("(%)"):
                continue
            for r in t["rows"]:
                c = r["cells"][j]
                if "data-value" not in c["attrs"]:
                    assert c["text"] == "–"
                    continue
                assert c["text"].split(" ")[0].split("–")[0] == f"{100 * value(c):.1f}", (label, c)
                checked += 1
    assert checked > 80


def test_the_page_is_self_contained(page):
    html, p = page
    assert not re.search(r"https?://|//cdn|@import|url\(", html)
    for tag, attr, v in p.urls:
        assert v.startswith("#") or v.startswith("data:image/svg+xml;base64,"), (tag, attr, v[:60])
    assert p.scripts == 1 and "link" not in p.tags and "iframe" not in p.tags
    figures = [v for tag, attr, v in p.urls if tag == "img"]
    assert len(figures) == 5  # george, d3m, audit, train, scaling; none for spectral
    for uri in figures:
        svg = base64.b64decode(uri.split(",", 1)[1]).decode()
        assert "<svg" in svg and "<script" not in svg
    # the contents list links every section
    assert [v for tag, attr, v in p.urls if attr == "href"] == [f"#{s['id']}" for s in p.sections]
    assert [s["kind"] for s in p.sections] == ["run george", "run d3m", "audit", "train", "run scaling", "spectral"]


def test_names_from_the_files_are_escaped():
    evil = '<script>alert("x")</script> & <b>bold</b> $x_{$'  # and a broken mathtext "$" in the figures' titles
    res = [result_from_dict(_dicts.george(dataset=evil), "g.json"), result_from_dict(_dicts.audit(source=evil), "a.json")]
    html = render_html(res, title="<i>title</i>")
    p = Page(html)
    plain = Page(render_html([result_from_dict(_dicts.george(dataset="plain"), "g.json"),
                              result_from_dict(_dicts.audit(source="plain"), "a.json")], title="title"))
    assert p.tags == plain.tags and p.scripts == 1  # not one tag more: only the page's own sorter script
    assert "&lt;script&gt;alert(" in html and "<script>alert" not in html
    assert "&lt;i&gt;title&lt;/i&gt;" in html
    assert any(s["kind"] == "run george" for s in p.sections)
    assert len([v for tag, attr, v in p.urls if tag == "img"]) == 2 and "could not be drawn" not in html


def test_one_file_has_no_contents_list_and_a_title_naming_it():
    html = render_html([result_from_dict(_dicts.audit(), "a.json")])
    p = Page(html)
    assert "nav" not in p.tags and "<title>stratalab report: audit on preds.csv</title>" in html


def test_write_html_is_atomic(tmp_path):
    src = load_result(_dicts.write(tmp_path, "george.json", _dicts.george()))
    out = write_html(tmp_path / "report.html", [src, load_result(_dicts.write(tmp_path, "d3m.json", _dicts.d3m()))],
                     title="Two runs")
    text = out.read_text(encoding="utf-8")
    assert text.startswith("<!DOCTYPE html>") and "<title>Two runs</title>" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["d3m.json", "george.json", "report.html"]  # no temp left
    with pytest.raises(ValueError, match="use .html"):
        write_html(tmp_path / "report.pdf", [src])
    with pytest.raises(ValueError, match="no result to report"):
        render_html([])
    with pytest.raises(ValueError, match="takes RunResult objects"):
        render_html([_dicts.george()])
    with pytest.raises(ValueError, match="takes RunResult objects"):
        write_html(tmp_path / "r.html", [tmp_path / "george.json"])
