"""``xbar evaluate``: accuracy over time on programmed, drifting devices, run in-process through ``main``.

Every run is real (torch.export, the 8-bit preset, xbar.program / xbar.drift); the
figures the command prints are recomputed here with the library, independently.
"""

import argparse
import contextlib
import hashlib
import io
import json
import statistics
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from xbar import (
    BaseNoiseModel,
    PCMLikeNoiseModel,
    ReRamWan2022NoiseModel,
    StateIndependentNoiseModel,
    accuracy,
    calibrate,
    convert,
    drift,
    prepare,
    preset_config,
    program,
)
from xbar.compiler.cli import arguments as cli_arguments
from xbar.compiler.cli.arguments import Time, parse_times
from xbar.compiler.cli.commands import evaluate as cli_evaluate
from xbar.compiler.cli.evaluation_view import accuracy_figure, accuracy_table, plot_accuracy, time_axis
from xbar.compiler.cli.figures import image_type, pyplot
from xbar.compiler.cli.main import main
from xbar.compiler.devices.arrays import DriftCompensation
from xbar.compiler.devices.evaluation import Evaluation, TimePoint
from xbar.compiler.devices.programming import MAX_SEED
from xbar.compiler.devices.registry import NOISE_MODELS, noise_model_class
from xbar.compiler.inspection.archive import save_graph
from xbar.compiler.metrics import metric
from xbar.compiler.pipeline.distributed import rank_share
from xbar.models import load_digits_split, load_pretrained
from xbar.passes.errors import UsageError

from conftest import NET, load_net_class, run

FAST = ["--seeds", "2", "--times", "1s,1d"]
BATCH = 64  # the command line's default batch size


def run_quietly(*argv) -> tuple[int, str]:
    """``main(argv)`` with stdout captured (for module-scoped runs, where capsys is unavailable)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        status = main(list(argv))
    return status, out.getvalue()


def documented_read_seed(seed: int, seconds: float) -> int:
    """The read seed as the help and the README describe it, written out again."""
    return int.from_bytes(hashlib.blake2b(f"{seed}@{float(seconds)!r}".encode(), digest_size=8).digest(), "big") >> 1


@pytest.fixture(scope="module")
def mlp_json(tmp_path_factory):
    """The shipped MLP at 8 bits, PCM-like devices, 2 seeds, 1 s and 1 day: the JSON and the plot it drew."""
    plot = tmp_path_factory.mktemp("evaluate") / "acc.png"
    status, out = run_quietly("evaluate", "mlp", *FAST, "--json", "--plot", str(plot))
    assert status == 0
    return json.loads(out), plot


@pytest.fixture(scope="module")
def mlp_converted():
    """The MLP compiled with the library as the command line compiles it."""
    digits = load_digits_split()
    config = preset_config("8bit")
    prepared = prepare(load_pretrained("mlp"), (digits.train_x[:1],), config)
    calibrate(prepared, digits.train_x.split(BATCH)[:config.pre_post.input_range.init_from_data])
    return convert(prepared), digits


def library_accuracies(converted, noise_model, seeds, seconds, x, y, compensation):
    programmed = [program(converted, noise_model, seed=seed) for seed in seeds]
    return [accuracy(drift(p, seconds, seed=documented_read_seed(seed, seconds), compensation=compensation),
                     x, y, BATCH) for seed, p in zip(seeds, programmed)]


# -- what it reports ------------------------------------------------------------------------------

def test_json_is_what_program_and_drift_give_with_the_same_seeds(mlp_json, mlp_converted):
    report, _ = mlp_json
    converted, digits = mlp_converted
    x, y = digits.test_x, digits.test_y
    assert report["model"] == "mlp" and report["data"] == {"name": "digits", "split": "test", "samples": 450}
    assert report["noise_model"] == PCMLikeNoiseModel().to_dict() and report["compensation"] == "global"
    assert report["seeds"] == [0, 1] and report["hardware"] == preset_config("8bit").to_dict()
    assert report["ideal_accuracy"] == accuracy(converted, x, y, BATCH)
    assert [(t["label"], t["seconds"]) for t in report["times"]] == [("1s", 1.0), ("1d", 86400.0)]
    for point in report["times"]:
        assert point["read_seeds"] == [documented_read_seed(seed, point["seconds"]) for seed in (0, 1)]
        assert point["accuracies"] == library_accuracies(converted, PCMLikeNoiseModel(), (0, 1), point["seconds"],
                                                         x, y, "global")
        assert point["mean"] == statistics.fmean(point["accuracies"])
        assert point["std"] == statistics.stdev(point["accuracies"])
    # the devices are noisy: the programmed model is not the converted one, for some seed and time
    assert any(a != report["ideal_accuracy"] for point in report["times"] for a in point["accuracies"])


def test_the_same_seeds_give_identical_json(mlp_json):
    status, out = run_quietly("evaluate", "mlp", *FAST, "--json")
    assert status == 0 and json.loads(out) == mlp_json[0]


def test_the_table_shows_mean_and_std_per_time_after_the_ideal_row(mlp_json, capsys):
    report, _ = mlp_json
    status, out, err = run(capsys, "evaluate", "mlp", *FAST)
    assert status == 0, err
    assert "mlp: accuracy on the digits test split (450 samples), 2 programming seeds" in out
    assert "devices: PCMLikeNoiseModel(prog_coeff=[0.26348, 1.965, -1.1731], g_max=25," in out
    assert "global drift compensation" in out and "hardware: forward.inp_res=254" in out
    rows = [line for line in out.splitlines() if line.startswith("│")]
    cells = [[cell.strip() for cell in row.strip("│").split("│")] for row in rows]
    assert cells[0] == ["ideal (converted, no noise)", "", f"{report['ideal_accuracy']:.2%}", "", "", ""]
    for row, point in zip(cells[1:], report["times"], strict=True):
        accuracies = point["accuracies"]
        assert row == [point["label"], f"{point['seconds']:g}", f"{point['mean']:.2%}", f"{point['std']:.2%}",
                       f"{min(accuracies):.2%}", f"{max(accuracies):.2%}"]
    assert "programming and reading: 2 seeds x 2 times" in err


def test_the_plot_is_written(mlp_json):
    _, plot = mlp_json
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert [p.name for p in plot.parent.iterdir()] == ["acc.png"]  # no temporary file left behind


def test_noise_model_from_the_config_file(workspace, capsys):
    (workspace / "hw.toml").write_text(textwrap.dedent("""
        [forward]
        inp_res = 254
        out_res = 254
        out_bound = 10

        [noise]
        model = "state-independent"
        prog_noise_scale = 0.5
        drift_nu_mean = 0.05
    """))
    status, out, err = run(capsys, "evaluate", "mlp", "--config", "hw.toml", "--seeds", "1", "--times", "1h",
                           "--compensation", "none", "--json")
    assert status == 0, err
    report = json.loads(out)
    assert report["noise_model"] == StateIndependentNoiseModel(prog_noise_scale=0.5, drift_nu_mean=0.05).to_dict()
    assert report["compensation"] is None and report["hardware"]["forward"]["out_bound"] == 10


def test_a_labelled_data_file_is_evaluated_on_its_samples(workspace, capsys):
    """A user's model and labelled samples, ReRAM devices, per-column compensation: the library agrees."""
    x = torch.from_numpy(np.load(workspace / "inputs.npz")["x"])
    y = torch.arange(len(x)) % 3
    np.savez(workspace / "labelled.npz", x=x.numpy(), y=y.numpy())
    status, out, err = run(capsys, "evaluate", *NET, "--calib", "labelled.npz", "--noise", "reram",
                           "--times", "1s,1d,2d", "--seeds", "3", "--compensation", "per-column", "--json")
    assert status == 0, err
    report = json.loads(out)
    assert report["data"] == {"name": "labelled.npz", "split": "calibration", "samples": 40}
    net = load_net_class(workspace / "net.py")()
    net.load_state_dict(torch.load(workspace / "net.pt"))
    config = preset_config("8bit")
    prepared = prepare(net.eval(), (x[:1],), config)
    calibrate(prepared, x.split(BATCH)[:config.pre_post.input_range.init_from_data])
    converted = convert(prepared)
    for point in report["times"]:
        assert point["accuracies"] == library_accuracies(converted, ReRamWan2022NoiseModel(), (0, 1, 2),
                                                         point["seconds"], x, y, "per_column")
    status, out, err = run(capsys, "evaluate", *NET, "--calib", "labelled.npz", "--seeds", "1", "--times", "1s",
                           "--finetune", "1", "--plot", "acc.svg")
    assert status == 0, err
    assert "net: accuracy on the 40 labelled calibration samples of labelled.npz, 1 programming seed" in out
    plot = (workspace / "acc.svg").read_text()  # matplotlib writes each text as a comment beside its glyphs
    assert "<!-- accuracy (%) on the calibration samples -->" in plot and "test" not in plot
    assert "fine-tuned on 40 labelled samples from labelled.npz" in out


# -- bad input ------------------------------------------------------------------------------------

NOISE_SECTIONS = {
    "unknown.toml": '[noise]\nmodel = "gaussian"\n',
    "nameless.toml": '[noise]\nprog_noise_scale = 0.5\n',
    "typo.toml": '[noise]\nmodel = "pcm"\nprog_noise_scal = 0.5\n',
    "negative.toml": '[noise]\nmodel = "pcm"\nprog_noise_scale = -1\n',
    "text.toml": '[noise]\nmodel = "pcm"\nprog_noise_scale = "high"\n',
    "pcm.toml": '[noise]\nmodel = "pcm"\n',
}
BAD_INPUTS = {
    "negative time": (["--times=1s,-1h"], "the time '-1h' is not a time after programming: give a finite number >= 0"),
    "unparsable time": (["--times", "1s,2w"], "cannot read the time '2w': give seconds or a number with one of "
                        "the units s, m, h, d, y"),
    "infinite time": (["--times", "1e999"], "the time '1e999' is not a time after programming"),
    "empty time": (["--times", "1s,,1d"], "cannot read the time ''"),
    "one time twice": (["--times", "1h,60m"], "1h and 60m are the same time; list each time once"),
    "unknown noise model": (["--noise", "gaussian"], "argument --noise: invalid choice: 'gaussian'"),
    "unknown noise model in the config": (["--config", "unknown.toml"],
                                          "unknown noise model 'gaussian' in --config unknown.toml; choose one of "
                                          "pcm, state-independent, reram"),
    "noise section without a model": (["--config", "nameless.toml"], "needs model = one of pcm"),
    "unknown noise field": (["--config", "typo.toml"], "pcm has no field 'prog_noise_scal'; its fields are "
                            "prog_coeff, g_max"),
    "noise field out of range": (["--config", "negative.toml"],
                                 "PCMLikeNoiseModel: prog_noise_scale must be >= 0, got -1"),
    "noise field of another type": (["--config", "text.toml"], "pcm cannot take these values"),
    "noise chosen twice": (["--config", "pcm.toml", "--noise", "reram"], "--noise reram and the [noise] section "
                           "of --config pcm.toml both choose a device model"),
    "no seeds": (["--seeds", "0"], "argument --seeds: expected a number of seeds from 1 to 2**63 - 1, got '0'"),
    "more seeds than there are": (["--seeds", "100000000000000000000"], "argument --seeds: expected a number of "
                                  "seeds from 1 to 2**63 - 1, got '100000000000000000000'"),
    "a time ReRAM has no fit for": (["--noise", "reram", "--times", "1s,1h", "--plot", "acc.png"],
                                    "ReRamWan2022NoiseModel is fitted at t_inference = 1, 86400, 172800 s only"),
    "unknown compensation": (["--compensation", "per_row"], "argument --compensation: invalid choice"),
    "unlabelled data": ([*NET, "--calib", "inputs.npz"], "xbar evaluate needs labelled data: --calib digits, or "
                        "a .npz / .pt file with the class indices under 'y'"),
    "labels that are not classes": ([*NET, "--calib", "badlabels.npz"],
                                    "net on badlabels.npz: the metric 'accuracy': the targets run from 7 to 7, but "
                                    "the outputs have 3 classes (0 to 2)"),
    "a metric that does not fit the outputs": ([*NET, "--calib", "badlabels.npz", "--metric", "perplexity"],
                                               "the metric 'perplexity' takes outputs [batch, sequence, vocabulary]"),
    "a language model scored as a classifier": (["charlm", "--metric", "accuracy"], "charlm on pysource: the "
                                                "metric 'accuracy' takes outputs [batch, classes]"),
    "test data without labels": ([*NET, "--test", "inputs.npz"], "--test inputs.npz has no labels"),
    "test data that is not there": ([*NET, "--test", "nothere.npz"], "test data 'nothere.npz' is neither a file "
                                    "nor a built-in data set"),
    "unknown metric": (["--metric", "bleu"], "argument --metric: invalid choice: 'bleu'"),
    "plot under a file": (["--plot", "blocker/acc.png"], "is not a directory"),
    "plot of an unknown image type": (["--plot", "acc.txt"], "cannot draw acc.txt: unknown image type 'txt'"),
}


@pytest.mark.parametrize("case", sorted(BAD_INPUTS))
def test_bad_input_is_one_line_with_status_2_and_writes_nothing(workspace, capsys, case):
    options, message = BAD_INPUTS[case]
    for name, text in NOISE_SECTIONS.items():
        (workspace / name).write_text("[forward]\ninp_res = 254\n" + text)
    (workspace / "blocker").write_text("a file where a directory should be")
    np.savez(workspace / "badlabels.npz", x=np.zeros((10, 6), dtype=np.float32), y=np.full(10, 7))
    model = [] if options[:1] in (NET[:1], ["charlm"]) else ["mlp"]
    before = sorted(p.name for p in workspace.rglob("*"))
    status, out, err = run(capsys, "evaluate", *model, *options)
    assert status == 2
    assert len(err.splitlines()) == 1 and err.startswith("xbar: error: ") and message in err, err
    assert out == "" and "Traceback" not in err
    assert sorted(p.name for p in workspace.rglob("*")) == before


# -- the parts ------------------------------------------------------------------------------------

def test_times_are_seconds_or_numbers_with_a_unit_earliest_first():
    assert parse_times("10m,2d,30,1y,0,.5h,1.5e3") == (
        Time("0s", 0.0), Time("30s", 30.0), Time("10m", 600.0), Time("1.5e3s", 1500.0), Time(".5h", 1800.0),
        Time("2d", 172800.0), Time("1y", 365 * 86400.0))
    assert parse_times(" 1s , 1h ") == (Time("1s", 1.0), Time("1h", 3600.0))
    assert [t.seconds for t in parse_times(cli_arguments.DEFAULT_TIMES)] == [1.0, 3600.0, 86400.0, 31536000.0]


@pytest.mark.parametrize("text", ["-1", "1 week", "1M", "h", "nan", "inf", "1e400d", "1s;1h", "2d,48h"])
def test_times_that_are_refused(text):
    with pytest.raises(argparse.ArgumentTypeError):
        parse_times(text)


def test_the_most_seeds_are_every_seed_program_takes():
    parse = cli_arguments.build_parser().parse_args
    assert parse(["evaluate", "--seeds", str(cli_arguments.MAX_SEEDS)]).seeds == cli_arguments.MAX_SEEDS
    with pytest.raises(UsageError, match="from 1 to 2"):
        parse(["evaluate", "--seeds", str(cli_arguments.MAX_SEEDS + 1)])
    assert cli_arguments.MAX_SEEDS - 1 <= MAX_SEED  # the last seed is one program() takes
    assert len(rank_share(cli_arguments.MAX_SEEDS, None)) == cli_arguments.MAX_SEEDS


def test_a_graph_archive_or_weights_given_as_the_model_say_what_they_are(workspace, capsys):
    """A graph archive is for `xbar inspect`; weights go with --weights. Neither is suggested as the other."""
    converted = convert(prepare(torch.nn.Linear(6, 3).eval(), (torch.randn(2, 6),)))
    save_graph(converted, workspace / "net.graph.pt")
    for command in ("evaluate", "compile"):
        status, out, err = run(capsys, command, "net.graph.pt")
        assert status == 2 and out == "" and len(err.splitlines()) == 1, err
        assert "net.graph.pt is a graph archive (--save-graph)" in err and "`xbar inspect net.graph.pt`" in err
        assert "--weights" not in err
    status, out, err = run(capsys, "evaluate", "net.pt")
    assert status == 2 and "to use it as weights: FILE.py:FACTORY --weights net.pt" in err, err


def test_the_names_the_help_lists_are_the_registrys():
    help_text = cli_arguments.EVALUATE_EPILOG
    for name, entry in NOISE_MODELS.items():
        assert name in cli_arguments.NOISE_MODEL_NAMES
        model_class = noise_model_class(name)
        assert issubclass(model_class, BaseNoiseModel) and model_class.__name__ == entry.class_name
        assert f"  {name:<19} {entry.class_name}" in help_text
    assert cli_arguments.COMPENSATIONS == tuple(cli_evaluate.COMPENSATIONS)
    assert set(cli_evaluate.COMPENSATIONS.values()) == {c.value for c in DriftCompensation} | {None}


def test_help_has_examples(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["evaluate", "--help"])
    assert exit_.value.code == 0
    help_text = capsys.readouterr().out
    assert "xbar evaluate mlp --seeds 3 --times 10m,2d" in help_text and "[noise]" in help_text
    for option in ("--times", "--seeds", "--noise", "--compensation", "--json", "--plot", "--finetune", "--calib"):
        assert option in help_text


def test_evaluate_help_does_not_import_torch():
    script = textwrap.dedent("""
        import sys
        from xbar.compiler.cli.main import main
        try:
            main(["evaluate", "--help"])
        except SystemExit as exit_:
            assert exit_.code == 0
        heavy = sorted(name for name in ("torch", "onnx", "numpy", "matplotlib") if name in sys.modules)
        assert not heavy, heavy
    """)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("seconds, scale", [([1.0, 3600.0], "log"), ([0.0, 3600.0], "symlog")])
def test_the_time_axis_is_logarithmic_and_shows_time_zero(seconds, scale):
    figure, axes = pyplot().subplots()
    try:
        time_axis(axes, seconds, ["a", "b"])
        axes.plot(seconds, [1, 2])
        assert axes.get_xscale() == scale
        assert [t.get_text() for t in axes.get_xticklabels()] == ["a", "b"]
        assert axes.get_xlim()[0] <= seconds[0] and seconds[0] in axes.get_xticks()
    finally:
        pyplot().close(figure)


def two_times() -> Evaluation:
    points = tuple(TimePoint(label, seconds, (0.9, 0.8), (1, 2)) for label, seconds in (("0s", 0.0), ("1h", 3600.0)))
    return Evaluation(0.95, points, (0, 1), PCMLikeNoiseModel().to_dict(), "global")


@pytest.mark.parametrize("title", ["a title that is long: " + "accuracy on the 200 labelled calibration samples "
                                   "of a_file_with_a_long_name.npz, 10 programming seeds", "W" * 150])
def test_the_plot_shows_its_whole_title_and_what_it_measured_on(title):
    figure = accuracy_figure(two_times(), title, "calibration")
    try:
        figure.canvas.draw()
        (axes,), (title_text,) = figure.axes, figure.texts
        for text in (title_text, axes.yaxis.label):
            box = text.get_window_extent()
            assert 0 <= box.x0 and box.x1 <= figure.bbox.width and 0 <= box.y0 and box.y1 <= figure.bbox.height
        assert axes.get_ylabel() == "accuracy (%) on the calibration samples"
        assert "".join(title_text.get_text().split()) == "".join(title.split())  # wrapped, not cut
    finally:
        pyplot().close(figure)


def test_a_metric_other_than_accuracy_is_plotted_and_tabled_as_itself():
    points = tuple(TimePoint(label, seconds, (8.25, 9.5), (1, 2)) for label, seconds in (("1s", 1.0), ("1y", 3e7)))
    evaluation = Evaluation(7.5, points, (0, 1), PCMLikeNoiseModel().to_dict(), "global", metric("perplexity"))
    figure = accuracy_figure(evaluation, "charlm", "test")
    try:
        (axes,) = figure.axes
        assert axes.get_ylabel() == "perplexity on the test samples"
        assert list(axes.lines[0].get_ydata()) == [7.5, 7.5]  # the ideal line, not in percent
    finally:
        pyplot().close(figure)
    rows = [[cell for cell in column.cells] for column in accuracy_table(evaluation).columns]
    assert rows[2] == ["7.500", "8.875", "8.875"] and rows[4] == ["", "8.250", "8.250"]
    assert evaluation.as_dict()["times"][0]["perplexities"] == [8.25, 9.5]


def test_a_plot_of_any_image_type(tmp_path):
    path = plot_accuracy(two_times(), tmp_path / "acc.svg", image_type(tmp_path / "acc.svg"), "two times", "test")
    assert path.read_text().startswith("<?xml") and [p.name for p in tmp_path.iterdir()] == ["acc.svg"]
