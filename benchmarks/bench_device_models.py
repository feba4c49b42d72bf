"""The HERMES and CMO ReRAM device models beside aihwkit 1.1.0's: statistics of the conductances they give.

    python -m benchmarks.bench_device_models [--samples 200000]

For each model (HermesNoiseModel with one and two devices, ReRamCMONoiseModel), target conductances across
the range and times from programming to a year: mean and std of xbar's samples and of aihwkit's (independent
seeds), and the difference of the means and of the stds in standard errors of that difference (|z| < 5 is
agreement; the tests assert it at 20000 samples). Needs aihwkit (``pip install --no-deps aihwkit==1.1.0``).
"""

from __future__ import annotations

import argparse
import math
import warnings

import torch
from rich.console import Console
from rich.table import Table

from xbar import HermesNoiseModel, ReRamCMONoiseModel

TIMES = (1.0, 86400.0, 3.15e7)


def std_error_of_std(x: torch.Tensor) -> float:
    centred = x.double() - x.double().mean()
    m2, m4 = centred.pow(2).mean().item(), centred.pow(4).mean().item()
    return math.sqrt(max(m4 - m2 * m2, 0.0) / (4 * x.numel() * max(m2, 1e-30)))


def z_scores(ours: torch.Tensor, theirs: torch.Tensor) -> tuple[float, float]:
    """(difference of the means, difference of the stds), each over its standard error."""
    mean_se = math.sqrt((ours.var().item() + theirs.var().item()) / ours.numel()) or 1e-30
    std_se = math.hypot(std_error_of_std(ours), std_error_of_std(theirs)) or 1e-30
    return ((ours.mean().item() - theirs.mean().item()) / mean_se, (ours.std().item() - theirs.std().item()) / std_se)


def samples(model, g: torch.Tensor, seed: int, ours: bool) -> dict[str, torch.Tensor]:
    """Programmed conductances, drift parameters and the conductances read at each of TIMES."""
    generator = torch.Generator().manual_seed(seed)
    extra = (generator,) if ours else ()
    if not ours:
        torch.manual_seed(seed)
    g_prog = model.apply_programming_noise_to_conductance(g, *extra)
    nu = model.generate_drift_coefficients(g, *extra)
    out = {"programmed": g_prog, "nu": nu}
    for t in TIMES:
        out[f"read {t:g} s"] = model.apply_drift_noise_to_conductance(g_prog, nu, t, *extra)
    return out


def table(name: str, ours_model, theirs_model, targets: list[float], count: int) -> Table:
    result = Table(title=f"{name}: xbar vs aihwkit, {count} devices per target")
    for column in ("target uS", "quantity", "mean xbar", "mean aihwkit", "z mean", "std xbar", "std aihwkit",
                   "z std"):
        result.add_column(column, justify="right")
    for index, target in enumerate(targets):  # each target its own seeds: independent rows
        g = torch.full((count,), target)
        ours, theirs = samples(ours_model, g, 2 * index + 1, True), samples(theirs_model, g, 2 * index + 2, False)
        for quantity in ours:
            if quantity == "nu" and name.startswith("ReRamCMO"):
                continue  # the target itself
            a, b = ours[quantity], theirs[quantity]
            z_mean, z_std = z_scores(a, b)
            result.add_row(f"{target:g}", quantity, f"{a.mean():.5g}", f"{b.mean():.5g}", f"{z_mean:+.2f}",
                           f"{a.std():.5g}", f"{b.std():.5g}", f"{z_std:+.2f}")
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200000)
    count = parser.parse_args().samples
    from aihwkit.inference.noise.hermes import HermesNoiseModel as TheirHermes
    from aihwkit.inference.noise.reram import ReRamCMONoiseModel as TheirCMO

    console = Console()
    warnings.filterwarnings("ignore")
    for devices in (1, 2):
        ours = HermesNoiseModel(num_devices=devices)
        targets = [f * ours.g_max for f in (0.0, 0.05, 0.2, 0.5, 1.0)]
        console.print(table(f"HermesNoiseModel(num_devices={devices})", ours, TheirHermes(num_devices=devices),
                            targets, count))
    console.print(table("ReRamCMONoiseModel()", ReRamCMONoiseModel(), TheirCMO(), [9.0, 30.0, 60.0, 88.199997],
                        count))


if __name__ == "__main__":
    main()
