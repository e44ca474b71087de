"""Time to calibrate DP-SGD noise: hf_dpsynth vs plain bisection over dp-accounting's default PLD.

    python benchmarks/bench_calibration.py [--steps 10000] [--sampling-probability 0.01]

For 10,000 steps at q = 0.01 and δ = 1e-5 (ε = 1, 4, 8) it prints both σ, both times and their
ratio, and checks that both σ meet the target under dp-accounting's default PLD accountant.
Target: hf_dpsynth's calibration under 2 s on 2 CPU cores.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from importlib.metadata import version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import dp_accounting  # noqa: E402
from dp_accounting.pld import PLDAccountant  # noqa: E402

from hf_dpsynth.privacy import SIGMA_REL_TOL, calibrate_noise_multiplier  # noqa: E402


def pld_epsilon(sigma: float, q: float, steps: int, delta: float) -> float:
    """ε of ``steps`` Poisson-subsampled Gaussian steps under the default PLD accountant."""
    accountant = PLDAccountant()
    accountant.compose(
        dp_accounting.SelfComposedDpEvent(
            dp_accounting.PoissonSampledDpEvent(q, dp_accounting.GaussianDpEvent(sigma)), steps
        )
    )
    return accountant.get_epsilon(delta)


def naive_calibration(epsilon: float, delta: float, q: float, steps: int) -> tuple[float, int]:
    """The baseline: bracket by doubling from σ = 1, then bisect, every step on the default PLD.

    Stops at the same relative tolerance as hf_dpsynth (hi/lo ≤ 1.005); returns (σ, evaluations).
    """
    calls = 0

    def exceeds(sigma: float) -> bool:
        nonlocal calls
        calls += 1
        return pld_epsilon(sigma, q, steps, delta) > epsilon

    lo, hi = 1.0, 1.0
    if exceeds(hi):
        while exceeds(hi):
            lo, hi = hi, hi * 2
    else:
        while not exceeds(lo):
            hi, lo = lo, lo / 2
    while hi / lo > 1 + SIGMA_REL_TOL:
        mid = (lo + hi) / 2
        if exceeds(mid):
            lo = mid
        else:
            hi = mid
    return hi, calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10_000)
    parser.add_argument("--sampling-probability", type=float, default=0.01)
    parser.add_argument("--delta", type=float, default=1e-5)
    parser.add_argument("--epsilons", type=float, nargs="+", default=[4.0, 1.0, 8.0])
    parser.add_argument("--skip-naive", action="store_true", help="time hf_dpsynth only")
    args = parser.parse_args()
    q, steps, delta = args.sampling_probability, args.steps, args.delta

    print(f"DP-SGD noise calibration: T = {steps} steps, q = {q:g}, δ = {delta:g}, "
          f"tolerance {SIGMA_REL_TOL:.1%}, dp-accounting {version('dp-accounting')} PLD")
    header = (
        f"{'ε':>5} | {'σ ours':>8} {'time':>7} | {'σ naive':>8} {'time':>7} {'evals':>5} | ratio"
    )
    print(header)
    print("-" * len(header))
    for epsilon in args.epsilons:
        start = time.perf_counter()
        ours = calibrate_noise_multiplier(
            target_epsilon=epsilon, target_delta=delta, sampling_probability=q, num_steps=steps
        )
        ours_time = time.perf_counter() - start
        assert pld_epsilon(ours, q, steps, delta) <= epsilon, "σ misses the target"
        if args.skip_naive:
            print(f"{epsilon:5g} | {ours:8.4f} {ours_time:6.2f}s |")
            continue
        start = time.perf_counter()
        naive, evaluations = naive_calibration(epsilon, delta, q, steps)
        naive_time = time.perf_counter() - start
        assert pld_epsilon(naive, q, steps, delta) <= epsilon
        print(
            f"{epsilon:5g} | {ours:8.4f} {ours_time:6.2f}s | {naive:8.4f} {naive_time:6.2f}s "
            f"{evaluations:5d} | {naive_time / ours_time:4.1f}x"
        )
        assert math.isclose(ours, naive, rel_tol=2 * SIGMA_REL_TOL), (ours, naive)
    print("target: hf_dpsynth under 2 s per calibration")


if __name__ == "__main__":
    main()
