"""balsam.plots on reports built by hand: images are written, matplotlib stays optional."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta

import pytest

from balsam import plots
from balsam.analytics import (
    BatchJobUtilization,
    CountBin,
    Errors,
    GroupSummary,
    Summary,
    Throughput,
    Utilization,
    UtilizationBin,
    Window,
)
from balsam.errors import InvalidInput

T0 = datetime(2024, 3, 1, tzinfo=UTC)
WINDOW = Window(T0, T0 + timedelta(hours=1), 600)


def starts():
    return [(T0 + timedelta(minutes=10 * i), T0 + timedelta(minutes=10 * (i + 1)))
            for i in range(6)]


def colours(path) -> int:
    from matplotlib.image import imread

    pixels = imread(path)
    return len({tuple(p) for p in pixels[::5, ::5].reshape(-1, pixels.shape[2]).tolist()})


def test_every_report_draws(tmp_path):
    usage = Utilization(WINDOW, "user", [
        UtilizationBin(s, e, 600.0 * i, 2400.0, {"alice": 400.0 * i, "bob": 200.0 * i},
                       {"alice": 1200.0, "bob": 1200.0})
        for i, (s, e) in enumerate(starts())])
    done = Throughput(WINDOW, None, [CountBin(s, e, i) for i, (s, e) in enumerate(starts())])
    errors = Errors(WINDOW, None, [], [CountBin(s, e, 1, {"RUN_ERROR": 1})
                                       for s, e in starts()])
    job = BatchJobUtilization(7, "alice", "slurm", "99", "debug", "p", "finished", "mpi", 4, 60,
                              T0, T0 + timedelta(hours=1), 14400, 14400, 7200, 12)
    summary = Summary(WINDOW, "user", 12, {"RUN_ERROR": 1}, 7200, 14400,
                      [GroupSummary("alice", 12, 1, 7200, 14400)], [job], {"JOB_FINISHED": 12})
    for name, draw, report in (("u", plots.plot_utilization, usage),
                               ("t", plots.plot_throughput, done),
                               ("e", plots.plot_errors, errors),
                               ("s", plots.plot_summary, summary)):
        target = tmp_path / f"{name}.png"
        assert draw(report, target) == target
        assert target.read_bytes()[:4] == b"\x89PNG"
        assert colours(target) > 10, name


def test_empty_reports_draw(tmp_path):
    bins = [UtilizationBin(s, e) for s, e in starts()]
    plots.plot_utilization(Utilization(WINDOW, "workflow", bins), tmp_path / "u.png")
    plots.plot_errors(Errors(WINDOW, "user", [], [CountBin(s, e) for s, e in starts()]),
                      tmp_path / "e.png")
    plots.plot_summary(Summary(WINDOW, None, 0, {}, 0, 0, [], [], {}), tmp_path / "s.svg")
    assert (tmp_path / "s.svg").read_text().lstrip().startswith("<?xml")
    assert (tmp_path / "u.png").stat().st_size > 1000


def test_bad_targets_are_refused_before_drawing(tmp_path):
    with pytest.raises(InvalidInput, match="no directory"):
        plots.check_target(tmp_path / "missing" / "x.png")
    with pytest.raises(InvalidInput, match="is a directory"):
        plots.check_target(tmp_path)
    report = Throughput(WINDOW, None, [CountBin(s, e) for s, e in starts()])
    for name in ("x.unknown", "x"):
        with pytest.raises(InvalidInput, match=r"extensions .*\.png"):
            plots.plot_throughput(report, tmp_path / name)
    assert not list(tmp_path.iterdir())


def test_without_matplotlib_the_error_says_what_to_install(tmp_path, monkeypatch):
    for name in [m for m in sys.modules if m.split(".")[0] == "matplotlib"] + ["matplotlib"]:
        monkeypatch.setitem(sys.modules, name, None)  # as if not installed
    with pytest.raises(plots.PlotError, match=r"balsam-core\[analytics\]"):
        plots.plot_errors(Errors(WINDOW, None, [], []), tmp_path / "x.png")


def test_labels():
    assert plots.label("") == "(none)" and plots.label("bob") == "bob"
