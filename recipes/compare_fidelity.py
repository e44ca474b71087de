"""How sure is the fidelity claim? Bootstrap the DP run against its public baseline.

    python recipes/compare_fidelity.py runs/sms-spam-text [--rounds 30]

Reads the run's ``synthetic/`` and ``public_only/`` records and its recipe's held-out test split,
embeds them with the offline MiniLM model, and prints the Fréchet distance and k-NN precision and
recall of both sets with the bootstrap standard deviation of each difference (the test set and
both synthetic sets resampled with replacement, every round; duplicates shift the k-NN values a
little, so read the spread of the difference, and the point values from the run's report).

Owner-only: it reads the private test split and writes nothing.
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--k", type=int, default=5)
    args = parser.parse_args()

    from pathlib import Path

    from hf_dpsynth.evaluation.embeddings import embed_texts
    from hf_dpsynth.evaluation.text import frechet_distance, knn_precision_recall
    from hf_dpsynth.pipeline.data import load_test_data
    from hf_dpsynth.generation.io import load_synthetic
    from hf_dpsynth.pipeline.folder import load_run_recipe

    run = Path(args.run_dir)
    recipe = load_run_recipe(run)
    test = load_test_data(recipe)
    column = recipe.data.text_column
    real = embed_texts(list(test[column]))
    sets = {name: embed_texts(list(load_synthetic(run / name)[column])) for name in ("synthetic", "public_only")}

    def scores(r: np.ndarray, s: np.ndarray) -> np.ndarray:
        pr = knn_precision_recall(r, s, k=args.k)
        return np.array([frechet_distance(r, s), pr.precision, pr.recall])

    point = {name: scores(real, s) for name, s in sets.items()}
    rng = np.random.default_rng(0)
    diffs = []
    for _ in range(args.rounds):
        r = real[rng.integers(0, len(real), len(real))]
        boot = {name: scores(r, s[rng.integers(0, len(s), len(s))]) for name, s in sets.items()}
        diffs.append(boot["synthetic"] - boot["public_only"])
    sd = np.std(diffs, axis=0)
    print(f"{'metric':<18}{'DP':>8}{'public':>13}{'difference':>12}{'bootstrap s.d.':>16}")
    for i, name in enumerate(("Fréchet distance", "k-NN precision", "k-NN recall")):
        dp, pub = point["synthetic"][i], point["public_only"][i]
        print(f"{name:<18}{dp:>8.3f}{pub:>13.3f}{dp - pub:>+12.3f}{sd[i]:>16.3f}")


if __name__ == "__main__":
    main()
