"""Calibration, fine-tuning and evaluation on two gloo processes equal one process.

One spawn of two local processes runs every calibration method, a few
fine-tuning steps and an evaluation over shared-out seeds; the tests compare
what each rank saved with a single-process run on the global batches (the
ranks' local batches concatenated in rank order). The command line runs under
torchrun for `compile` and for `evaluate`.
"""

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch.utils.data import DistributedSampler

from xbar import (
    FineTuning,
    HardwareConfig,
    PCMLikeNoiseModel,
    UserError,
    accuracy_over_time,
    calibrate,
    convert,
    fine_tune,
    prepare,
)
from xbar.compiler.cli.commands import compile as cli_compile
from xbar.compiler.cli.main import main
from xbar.compiler.pipeline.stages import input_ranges
from xbar.passes.numerics.calibration import CalibrationMethod

from conftest import make_model

WORLD = 2
METHODS = [method.value for method in CalibrationMethod]
RECIPE = FineTuning(epochs=1, batch_size=8, range_lr=0.1, weight_lr=1e-2, seed=3)
SAMPLES = 32


def config() -> HardwareConfig:
    """Output clipping on and a strong range decay (both depend on global-batch fractions), init from data
    over the first 3 steps."""
    return HardwareConfig().with_overrides({"forward.out_bound": 2.0, "pre_post.input_range.init_from_data": 3,
                                            "pre_post.input_range.manage_output_clipping": True,
                                            "pre_post.input_range.decay": 0.05})


def global_batches() -> list[torch.Tensor]:
    """Three batches; the one of 5 splits into unequal shares of 3 and 2."""
    generator = torch.Generator().manual_seed(5)
    return [torch.randn(n, 16, generator=generator) * scale for n, scale in ((6, 1.0), (5, 3.0), (8, 0.5))]


def training_data() -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(7)
    return torch.randn(SAMPLES, 16, generator=generator) * 2, torch.randint(0, 10, (SAMPLES,), generator=generator)


def fresh_prepared():
    return prepare(make_model("mlp"), (torch.randn(2, 16),), config()).train()


def ranges_of(prepared) -> dict[str, float]:
    return {name: float(module.value.detach()) for name, module in input_ranges(prepared).items()}


def evaluation(inputs: torch.Tensor, targets: torch.Tensor, on_step=None):
    """Accuracy over time of the converted MLP, 3 seeds (uneven over 2 ranks) at two times."""
    converted = convert(fresh_prepared().eval())
    return accuracy_over_time(converted, PCMLikeNoiseModel(), {"1s": 1.0, "1d": 86400.0}, 3, inputs, targets,
                              on_step=on_step)


def _worker(rank: int, port: int, folder: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        results = {}
        shares = [batch.tensor_split(WORLD)[rank] for batch in global_batches()]
        for method in METHODS:
            prepared = fresh_prepared()
            calibrate(prepared, shares, method, max_samples=20)
            results[method] = ranges_of(prepared)
        bad = [share.clone() for share in shares]
        bad[1][0, 0] = float("nan") if rank == 1 else 0.0
        for kind, given in (("list", list), ("generator", iter)):  # agreed once, and before every step
            try:
                calibrate(fresh_prepared(), given(shares[: len(shares) - rank]))
            except UserError as exc:
                results["uneven", kind] = str(exc)
            try:
                calibrate(fresh_prepared(), given(bad))
            except UserError as exc:
                results["bad batch", kind] = str(exc)
        inputs, targets = training_data()
        results["tuned"] = fine_tune(fresh_prepared(), inputs, targets, RECIPE).state_dict()
        steps = []
        results["evaluation"] = evaluation(inputs, targets, on_step=lambda: steps.append(1)).as_dict()
        results["evaluation steps"] = len(steps)
        torch.save(results, os.path.join(folder, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
    # The results are saved: leave without the interpreter's finalisation, where gloo's worker threads
    # sometimes abort the process (std::terminate on a thread still joinable), failing a run that passed.
    os._exit(0)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def rank_results(tmp_path_factory) -> list[dict]:
    folder = tmp_path_factory.mktemp("ranks")
    mp.start_processes(_worker, args=(_free_port(), str(folder)), nprocs=WORLD, start_method="spawn")
    return [torch.load(folder / f"rank{rank}.pt") for rank in range(WORLD)]


@pytest.mark.parametrize("method", METHODS)
def test_calibration_across_ranks_equals_one_process_on_the_global_batches(rank_results, method):
    prepared = fresh_prepared()
    calibrate(prepared, global_batches(), method, max_samples=20)
    expected = ranges_of(prepared)
    for results in rank_results:
        assert results[method] == pytest.approx(expected, rel=1e-6)
    assert rank_results[0][method] == rank_results[1][method]
    if method in ("CacheQuantile", "Max", "MovingQuantile"):  # gathered inputs of the first layer: exact
        assert rank_results[0][method]["fc1_input_range"] == expected["fc1_input_range"]


@pytest.mark.parametrize("kind", ["list", "generator"])
def test_ranks_with_different_numbers_of_batches_are_refused_on_every_rank(rank_results, kind):
    for results in rank_results:
        assert "different numbers of batches" in results["uneven", kind]


@pytest.mark.parametrize("kind", ["list", "generator"])
def test_a_bad_batch_on_one_rank_is_raised_on_every_rank(rank_results, kind):
    assert rank_results[0]["bad batch", kind] == "rank 1: calibration batch 1 holds NaN or infinite values; " \
        "remove them from the data"
    assert rank_results[1]["bad batch", kind].startswith("calibration batch 1 holds NaN")


def _global_training_batches() -> list[torch.Tensor]:
    """The global batches of the two-rank run: each step, rank 0's local batch then rank 1's."""
    local = RECIPE.batch_size // WORLD
    shards = []
    for rank in range(WORLD):
        sampler = DistributedSampler(range(SAMPLES), num_replicas=WORLD, rank=rank, shuffle=True, seed=RECIPE.seed)
        shards.append(torch.tensor(list(sampler)).split(local))
    return [torch.cat(step) for step in zip(*shards)]


def test_fine_tuning_across_ranks_equals_one_process_on_the_global_batches(rank_results):
    inputs, targets = training_data()
    order = torch.cat(_global_training_batches())
    # one process draws its batches with randperm(seed): place the global batches where it will look
    place = torch.randperm(SAMPLES, generator=torch.Generator().manual_seed(RECIPE.seed))
    arranged_x, arranged_y = torch.empty_like(inputs), torch.empty_like(targets)
    arranged_x[place], arranged_y[place] = inputs[order], targets[order]
    expected = fine_tune(fresh_prepared(), arranged_x, arranged_y, RECIPE).state_dict()
    untrained = fresh_prepared().state_dict()
    for results in rank_results:
        tuned = results["tuned"]
        assert tuned.keys() == expected.keys()
        for key in expected:
            torch.testing.assert_close(tuned[key], expected[key], rtol=1e-4, atol=1e-5, msg=key)
    assert any(not torch.equal(expected[key], untrained[key]) for key in expected if "input_range" in key)
    for key in expected:
        assert torch.equal(rank_results[0]["tuned"][key], rank_results[1]["tuned"][key]), key


def test_evaluation_across_ranks_shares_the_seeds_and_equals_one_process(rank_results):
    expected = evaluation(*training_data()).as_dict()
    assert [point["accuracies"] for point in expected["times"]] != [[expected["ideal_accuracy"]] * 3] * 2
    for results in rank_results:
        assert results["evaluation"] == expected
    assert [results["evaluation steps"] for results in rank_results] == [2 * 2, 1 * 2]  # seeds 0, 2 and 1


def _torchrun(folder, *argv: str) -> subprocess.CompletedProcess:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={WORLD}",
               "-m", "xbar.compiler.cli", *argv]
    return subprocess.run(command, cwd=folder, capture_output=True, text=True, timeout=240,
                          env=os.environ | {"COLUMNS": "160"})


def test_the_command_line_under_torchrun_reports_and_writes_once(tmp_path):
    done = _torchrun(tmp_path, "compile", "--finetune", "1", "--calib-batches", "2", "-o", "lenet.onnx")
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("wrote lenet.onnx") == 1
    assert done.stdout.count("fine-tuned on") == 1
    assert sorted(path.name for path in tmp_path.iterdir()) == ["lenet.onnx"]


def test_evaluate_under_torchrun_prints_and_plots_once_what_one_process_gets(tmp_path, capsys):
    argv = ["evaluate", "mlp", "--seeds", "3", "--times", "1s,1d", "--calib-batches", "0", "--json"]
    done = _torchrun(tmp_path, *argv, "--plot", "accuracy.png")
    assert done.returncode == 0, done.stderr
    assert main(argv) == 0
    assert json.loads(done.stdout) == json.loads(capsys.readouterr().out)  # one document, one process's figures
    assert sorted(path.name for path in tmp_path.iterdir()) == ["accuracy.png"]


def test_only_rank_zero_reports_an_error(workspace, capsys, monkeypatch):
    for rank, lines in (("0", 1), ("1", 0)):
        monkeypatch.setenv("RANK", rank)
        assert main(["compile", "--calib", "missing.npz"]) == 2
        assert capsys.readouterr().err.count("xbar: error: calibration data 'missing.npz'") == lines


def test_an_unexpected_error_is_reported_by_the_rank_it_happened_on(capsys, monkeypatch):
    def broken(args):
        raise RuntimeError("out of memory")

    monkeypatch.setattr(cli_compile, "run", broken)
    for rank, prefix in (("0", "xbar: error: unexpected"), ("1", "xbar: error: rank 1: unexpected")):
        monkeypatch.setenv("RANK", rank)
        assert main(["compile"]) == 1
        err = capsys.readouterr().err
        assert err.startswith(prefix) and "out of memory" in err and err.count("\n") == 1
