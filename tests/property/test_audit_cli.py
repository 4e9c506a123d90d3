"""Properties of ``stratalab audit FILE --y ... --pred ... --group ... --json`` on random prediction
files: exit code 0 with JSON numbers equal to the loop reference, or exit code 2 with one line of
error naming the problem and no traceback."""

from __future__ import annotations

import json
import math
import re
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from stratalab.cli.main import app
from stratalab.metrics import group_report
from tests.property._support import close, examples, labelled_sample, ref_report, tick

runner = CliRunner()

COLUMN_NAMES = st.sampled_from(["label", "y", "true class", "prediction", "pred", "ŷ", "grp", "group id", "cls", "p1", "score"])


@st.composite
def prediction_file(draw: st.DrawFn) -> dict:
    """A valid predictions table with distinct column names, and the audit options for it."""
    s = draw(labelled_sample(max_n=50))
    names = draw(st.lists(COLUMN_NAMES, min_size=5, max_size=5, unique=True))
    cols = dict(zip(("y", "p", "g", "c", "s"), names))
    n = len(s["y"])
    df = pd.DataFrame({cols["y"]: s["y"], cols["p"]: s["p"], cols["g"]: s["g"]})
    opts = ["--y", cols["y"], "--pred", cols["p"], "--group", cols["g"]]
    case = {"y": s["y"], "p": s["p"], "g": s["g"], "c": None, "score": None}
    if draw(st.booleans(), label="--class"):
        case["c"] = draw(st.lists(st.integers(0, 2), min_size=n, max_size=n))
        df[cols["c"]] = case["c"]
        opts += ["--class", cols["c"]]
    if max(s["y"] + s["p"]) <= 1 and draw(st.booleans(), label="--score"):  # the CLI takes --score for 0/1 labels only
        # Probabilities as a CSV writes and reads them back exactly (shortest repr round-trips).
        case["score"] = draw(st.lists(st.floats(0, 1), min_size=n, max_size=n))
        df[cols["s"]] = case["score"]
        opts += ["--score", cols["s"]]
    boot = draw(st.sampled_from([0, 0, 0, 25]))
    if boot:
        opts += ["--bootstrap", str(boot), "--seed", str(draw(st.integers(0, 2**31)))]
    fmt = draw(st.sampled_from(["csv", "csv", "csv", "parquet"]))
    return {"df": df, "opts": opts, "case": case, "fmt": fmt, "cols": cols, "boot": boot}


def _audit(df: pd.DataFrame | None, opts: list[str], fmt: str = "csv", raw: bytes | None = None, name: str | None = None):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / (name or f"preds.{fmt}")
        if raw is not None:
            path.write_bytes(raw)
        elif fmt == "csv":
            df.to_csv(path, index=False)
        else:
            df.to_parquet(path)
        return runner.invoke(app, ["audit", str(path), "--json", *opts])


def _error_line(res) -> str:
    """The CLI contract for bad input: exit code 2, a SystemExit (no other exception escaped),
    no traceback, exactly one non-empty line on stderr, starting with 'error:'."""
    assert res.exit_code == 2, (res.exit_code, res.output)
    assert isinstance(res.exception, SystemExit), repr(res.exception)
    assert "Traceback" not in res.output
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr
    return lines[0]


@settings(max_examples=examples(0.5))
@given(prediction_file())
def test_audit_json_equals_loop_reference(f):
    tick("audit valid")
    res = _audit(f["df"], f["opts"], f["fmt"])
    assert res.exit_code == 0, res.output
    assert res.exception is None
    d = json.loads(res.stdout)
    c = f["case"]
    ref = ref_report(c["y"], c["p"], c["g"], c["c"], score=c["score"])
    for key in ("average_accuracy", "balanced_accuracy", "worst_group_accuracy", "worst_class_accuracy",
                "weighted_std", "macro_std"):
        assert close(d[key], ref[key]), (key, d[key], ref[key])
    assert d["train_weighted_accuracy"] is None
    assert d["n"] == len(c["y"])
    assert (d["worst_group"]["class"], d["worst_group"]["group"]) == ref["worst_group"]
    assert [(r["class"], r["group"], r["n"], r["correct"]) for r in d["groups"]] == [
        (r["class"], r["group"], r["n"], r["correct"]) for r in ref["rows"]]
    for got, want in zip(d["groups"], ref["rows"]):
        assert close(got["accuracy"], want["accuracy"])
        if "loss" in want:
            assert close(got["loss"], want["loss"])
        if "auroc" in want:
            assert close(got["auroc"], None if math.isnan(want["auroc"]) else want["auroc"])
    for got, want in zip(d["classes"], ref["classes"]):
        assert (got["class"], got["n"], got["n_groups"], got["worst_group"]) == (want["class"], want["n"], want["n_groups"], want["worst_group"])
        assert close(got["accuracy"], want["accuracy"]) and close(got["weighted_std"], want["weighted_std"])
    if f["boot"]:
        seed = int(f["opts"][f["opts"].index("--seed") + 1])
        direct = group_report(c["y"], c["p"], c["g"], classes=c["c"], y_score=c["score"], n_bootstrap=f["boot"], random_state=seed)
        assert d["n_bootstrap"] == f["boot"]
        assert {k: tuple(v) for k, v in d["intervals"].items()} == direct.intervals
    else:
        assert "intervals" not in d


# (A whole float beyond int64, e.g. 1e20, was a bug (fixed), pinned by test_regression_audit_huge_label.)
BREAKS = ["no_column", "missing_value", "fraction", "string", "negative", "inf", "no_rows", "empty_file",
          "score_range", "score_string", "score_inf", "score_multiclass", "no_file", "suffix", "garbage", "bootstrap"]


@settings(max_examples=examples(0.6))
@given(prediction_file(), st.sampled_from(BREAKS), st.sampled_from(["y", "p", "g"]), st.data())
def test_audit_bad_input_is_one_line_and_exit_2(f, how, target, data):
    tick("audit bad input")
    df, opts, cols = f["df"].copy(), list(f["opts"]), f["cols"]
    col = cols[target]
    n = len(df)
    i = data.draw(st.integers(0, n - 1), label="row")
    raw = None
    name = None
    fmt = "csv"  # the text format: what users' files break in
    names: tuple[str, ...] = (col,)
    if how == "no_column":
        opts[opts.index(col)] = "no such column"
        names = ("no such column",)
    elif how == "missing_value":
        df[col] = df[col].astype(float)
        df.loc[i, col] = np.nan
    elif how == "fraction":
        df[col] = df[col].astype(float)
        df.loc[i, col] = df.loc[i, col] + 0.5
    elif how == "string":
        df[col] = df[col].astype(object)
        df.loc[i, col] = data.draw(st.sampled_from(["x", "cat", "1,5", "--"]), label="text")
    elif how == "negative":
        df.loc[i, col] = -data.draw(st.integers(1, 100), label="negative")
        names = (col, {"y": "y_true", "p": "y_pred", "g": "groups"}[target])
        if "--score" in opts:  # labels are validated before the --score binary check: test_regression_audit_negative_label_with_score
            k = opts.index("--score")
            del opts[k:k + 2]
    elif how == "inf":
        df[col] = df[col].astype(float)
        df.loc[i, col] = data.draw(st.sampled_from([np.inf, -np.inf]), label="inf")
    elif how == "no_rows":
        df = df.iloc[:0]
        names = ("no rows",)
    elif how == "empty_file":
        raw = b""
        names = ("preds.csv", "columns", "empty", "no data")
    elif how.startswith("score"):
        s = cols["s"]
        if s not in df:
            df[s] = 0.5
            opts += ["--score", s]
        names = (s, "y_score", "--score")
        if how == "score_range":
            df[s] = df[s].astype(float)
            df.loc[i, s] = data.draw(st.sampled_from([1.5, -0.1, 100.0]), label="score")
        elif how == "score_string":
            df[s] = df[s].astype(object)
            df.loc[i, s] = "high"
        elif how == "score_inf":
            df.loc[i, s] = np.inf
        else:
            df.loc[i, cols["y"]] = 2 + data.draw(st.integers(0, 3), label="class")  # (n,) scores need y in {0, 1}
    elif how == "no_file":
        with tempfile.TemporaryDirectory() as tmp:
            res = runner.invoke(app, ["audit", str(Path(tmp) / "absent.csv"), "--json", *opts])
        assert "absent.csv" in _error_line(res)
        return
    elif how == "suffix":
        name = "preds.txt"
        names = (".txt",)
    elif how == "garbage":
        raw = data.draw(st.sampled_from([b"\xff\xfe\x00\x01garbage", b"a,b\n1,2,3,4\n\"unterminated", b"\x89PNG\r\n\x1a\n"]), label="bytes")
        names = ("preds.csv", "column")
    else:
        opts += ["--bootstrap", str(-data.draw(st.integers(1, 10), label="resamples"))]
        names = ("n_bootstrap", "--bootstrap")
    res = _audit(df, opts, fmt, raw=raw, name=name)
    line = _error_line(res)
    assert any(nm in line for nm in names), (names, line)


@pytest.mark.parametrize("value", ["1e20", "-1e20", "1e300", "18446744073709551615"])
def test_regression_audit_huge_label(value):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "preds.csv"
        path.write_text(f"label,prediction,grp\n0,0,0\n{value},1,1\n")
        res = runner.invoke(app, ["audit", str(path), "--json", "--y", "label", "--pred", "prediction", "--group", "grp"])
    line = _error_line(res)
    assert "'label'" in line and not re.search(r"is -\d", line), line  # names the column; no wrapped-around value


def test_regression_audit_negative_label_with_score():
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "preds.csv"
        path.write_text("label,prediction,grp,p1\n0,0,0,0.2\n-1,1,1,0.9\n1,1,1,0.7\n")
        res = runner.invoke(app, ["audit", str(path), "--json", "--y", "label", "--pred", "prediction", "--group", "grp",
                                  "--score", "p1"])
    line = _error_line(res)
    assert "negative" in line, line
    assert "drop --score" not in line, line
