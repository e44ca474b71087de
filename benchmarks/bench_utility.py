"""Privacy–utility benchmark: what a classifier trained on the synthetic records reaches on held-out real data.

    python benchmarks/bench_utility.py [--quick] [--recipes recipes/sms_spam_keywords.yaml ...]
        [--records 1000] [--runs 3] [--epsilons 1 4 inf] [--out benchmarks/results/utility]

One table per dataset (the first recipe's data; every recipe given must read the same data):

* one row per method (a recipe) × ε ∈ {1, 4, ∞}. A finite ε runs the recipe itself through
  ``run_recipe`` (its ledger, its stages, its card), with ``privacy.epsilon`` and
  ``generation.num_records`` overridden; ε = ∞ is the same generator without noise, computed here
  and labelled non-private (only for generators whose mechanism is a noisy statistic: DP keywords);
* "public model only (best public prompt)": the base model with no private record, its prompt the
  best of the public candidates (the recipe's own template with its keywords field empty, and the
  same without the label descriptions) on a dev split carved from the training records by a keyed
  hash — never the test split; the number of candidates tried is printed (they are outside any
  guarantee, like every metric here);
* "real data": the same number of real training records (a seeded sample), and all of them.

Columns: TSTR accuracy, macro-F1 and the minority label's F1 with TF-IDF (word 1–2-grams, sublinear
tf) + logistic regression (C = 10) and with MiniLM embeddings + logistic regression (C = 10), MiniLM
k-NN precision / recall (k = 5), records, invalid rate, ε spent, wall time. Each cell is ``--runs``
runs: the mean and the minimum. Everything is scored on the held-out test split only. The table is
printed and saved as JSON and a PNG curve (minority F1 against ε).

Owner-only: every number here reads private data (the test split, the real rows) without DP.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402

from hf_dpsynth.evaluation.embeddings import embed_texts, knn_precision_recall  # noqa: E402
from hf_dpsynth.evaluation.text import tstr_text  # noqa: E402
from hf_dpsynth.pipeline import load_recipe, run_recipe  # noqa: E402
from hf_dpsynth.pipeline.build import recipe_codec  # noqa: E402
from hf_dpsynth.pipeline.data import load_recipe_data, load_test_data, prepare_recipe_data  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
COLUMNS = ("tfidf_acc", "tfidf_macro_f1", "tfidf_minority_f1", "minilm_acc", "minilm_macro_f1", "minilm_minority_f1",
           "knn_precision", "knn_recall", "records", "invalid_rate", "epsilon", "seconds")


def _texts_labels(data, recipe):
    d = recipe.data
    from hf_dpsynth.evaluation._common import get_column

    return [str(t) for t in get_column(data, d.text_column, what="data")], \
        [str(v) for v in get_column(data, d.label_column, what="data")]


def _dev_rows(texts, fraction=0.1):
    """A keyed hash of each record picks the dev split (1-stable: no record's choice depends on another)."""
    salt = b"hf_dpsynth bench_utility dev split"
    return [int.from_bytes(hashlib.sha256(salt + t.encode()).digest()[:8], "big") / 2**64 < fraction for t in texts]


class Scorer:
    """TSTR and k-NN fidelity of one labelled text set against a fixed real set (embedded once)."""

    def __init__(self, texts, labels, minority):
        self.texts, self.labels, self.minority = texts, labels, minority
        self.embedded = embed_texts(texts)

    def score(self, texts, labels):
        row = {}
        for features in ("tfidf", "minilm"):
            if len(set(labels)) < 2:
                row.update({f"{features}_acc": math.nan, f"{features}_macro_f1": math.nan,
                            f"{features}_minority_f1": math.nan})
                continue
            r = tstr_text(texts, labels, self.texts, self.labels, features=features, positive_label=self.minority)
            row.update({f"{features}_acc": r.accuracy, f"{features}_macro_f1": r.macro_f1,
                        f"{features}_minority_f1": r.positive_f1})
        if len(texts) > 5:
            pr = knn_precision_recall(self.embedded, embed_texts(texts), k=5)
            row.update(knn_precision=pr.precision, knn_recall=pr.recall)
        return row


def _run_recipe(recipe, epsilon, records, workdir):
    from hf_dpsynth.generation import generation_info
    from hf_dpsynth.generation.io import load_synthetic

    run = recipe.with_overrides(privacy={"epsilon": float(epsilon)}, generation={"num_records": records},
                                evaluation={"enabled": False})
    out = Path(tempfile.mkdtemp(dir=workdir))
    summary = run_recipe(run, output_dir=out, progress=False, log=lambda _: None)
    data = load_synthetic(out / "synthetic")
    info = generation_info(data)
    return data, {"epsilon": summary.epsilon_spent, "invalid_rate": 1 - info["num_valid"] / max(info["num_generated"], 1)}


def _non_private_keywords(recipe, tokenizer):
    """ε = ∞: the keyword counts without noise or threshold (NOT private: a reference row only)."""
    from hf_dpsynth.data.keywords import DPKeywords, KeywordVocabulary, _pre_noise_counts, released_keywords

    d, kw = recipe.data, recipe.keywords
    _, _, prepared = prepare_recipe_data(recipe)
    vocab = KeywordVocabulary.from_tokenizer(tokenizer, min_length=kw.min_length, skip_most_common=kw.skip_most_common)
    labels = list(d.labels)
    texts = prepared.dataset["completion"]
    index = np.asarray([labels.index(str(v)) for v in prepared.dataset[d.label_column]])
    counts = np.zeros((len(labels), len(vocab)))
    exact = _pre_noise_counts(texts, index, vocab, kw.k, None)
    counts[: exact.shape[0]] = exact
    released = released_keywords(labels, counts, vocab, 0.0)
    return DPKeywords(stage="keywords", column=d.label_column, keywords=released, k=kw.k, noise_multiplier=0.0,
                      sensitivity=math.sqrt(kw.k), noise_std=0.0, threshold=0.0, vocabulary_size=len(vocab),
                      vocabulary_source=vocab.source + " (NO NOISE: not private)", privacy_unit="example",
                      num_units=prepared.num_units)


def _sample(model, tok, codec, recipe, records, seed, keywords=None):
    from hf_dpsynth.generation import AdapterSynthesizer, generation_info

    g, kw, d = recipe.generation, recipe.keywords, recipe.data
    weights = {d.label_column: {label: 1.0 for label in d.labels}}  # public: equal records per label
    options = dict(keywords=keywords, keywords_per_record=kw.per_record, keyword_bias=kw.bias,
                   keyword_weighting=kw.weighting) if keywords is not None else {}
    sampler = AdapterSynthesizer(model, tok, codec=codec, conditioning=weights, batch_size=g.batch_size,
                                 max_new_tokens=g.max_new_tokens, temperature=g.temperature, top_p=g.top_p, **options)
    data = sampler.generate(records, seed=seed, progress=False)
    info = generation_info(data)
    return data, {"invalid_rate": 1 - info["num_valid"] / max(info["num_generated"], 1)}


def _public_candidates(recipe):
    """The public prompts tried for the public-only baseline (all public: the recipe's own declarations)."""
    from hf_dpsynth.data import TextCodec

    d = recipe.data
    own = recipe_codec(recipe)
    bare = TextCodec(d.text_column, conditions={d.label_column: list(d.labels)},
                     prompt_template=(d.prompt_template or "").replace(f"{{{d.label_column}_description}}",
                                                                      f"one {{{d.label_column}}} message")
                     .replace("{keywords}", "") or None)
    return {"recipe prompt (label descriptions)": own, "label name only": bare}


def _aggregate(runs):
    out = {}
    for key in COLUMNS:
        values = [r[key] for r in runs if key in r and r[key] is not None and not (isinstance(r[key], float) and math.isnan(r[key]))]
        out[key] = {"mean": float(np.mean(values)), "min": float(np.min(values))} if values else None
    return out


def _fmt(cell, key):
    if cell is None:
        return "—"
    if key in ("records",):
        return f"{cell['mean']:.0f}"
    if key == "epsilon":
        return "∞" if math.isinf(cell["mean"]) else f"{cell['mean']:.3g}"
    if key == "seconds":
        return f"{cell['mean']:.0f}"
    return f"{cell['mean']:.3f} ({cell['min']:.3f})"


def _table(rows):
    head = ["row", "TF-IDF acc", "TF-IDF macro-F1", "TF-IDF minority F1", "MiniLM acc", "MiniLM macro-F1",
            "MiniLM minority F1", "k-NN precision", "k-NN recall", "records", "invalid", "ε", "s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, cells in rows.items():
        lines.append("| " + " | ".join([name] + [_fmt(cells.get(k), k) for k in COLUMNS]) + " |")
    return "\n".join(lines)


def _plot(rows, path, minority):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    methods: dict[str, list[tuple[float, float]]] = {}
    for name, cells in rows.items():
        if " @ ε" in name and cells.get("tfidf_minority_f1"):
            method, eps = name.split(" @ ε = ")
            x = 16.0 if eps == "∞" else float(eps)
            methods.setdefault(method, []).append((x, cells["tfidf_minority_f1"]["mean"]))
    for method, points in methods.items():
        points.sort()
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label=method)
    styles = iter(["--", ":", "-."])
    for name, cells in rows.items():
        if " @ ε" not in name and cells.get("tfidf_minority_f1"):
            ax.axhline(cells["tfidf_minority_f1"]["mean"], linestyle=next(styles, "--"), color="grey", label=name)
    ax.set_xscale("log")
    ax.set_xticks([1, 4, 16], ["1", "4", "∞"])
    ax.set_xlabel("ε")
    ax.set_ylabel(f"F1 of {minority!r} (TF-IDF + LR, TSTR)")
    ax.set_ylim(0, 1)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--recipes", nargs="+", default=[str(REPO / "recipes" / "sms_spam_keywords.yaml")])
    parser.add_argument("--records", type=int, default=1000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--epsilons", nargs="+", default=["1", "4", "inf"])
    parser.add_argument("--dev-records", type=int, default=200, help="records per public prompt candidate on the dev split")
    parser.add_argument("--quick", action="store_true", help="200 records, 1 run, 100 per public candidate (< 10 min)")
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "results" / "utility"))
    args = parser.parse_args(argv)
    if args.quick:
        args.records, args.runs, args.dev_records = 200, 1, 100
    started = time.time()
    recipes = [load_recipe(p) for p in args.recipes]
    base = recipes[0]
    d = base.data
    test = load_test_data(base)
    train = load_recipe_data(base)
    test_texts, test_labels = _texts_labels(test, base)
    train_texts, train_labels = _texts_labels(train, base)
    minority = min(set(test_labels), key=test_labels.count)
    print(f"{base.name}: {len(train_texts):,} training and {len(test_texts):,} test records; minority label {minority!r}; "
          f"{args.records} records per synthetic set, {args.runs} run(s) per cell")
    scorer = Scorer(test_texts, test_labels, minority)
    from hf_dpsynth.models import load_model_and_tokenizer

    model, tok = load_model_and_tokenizer(None if base.model.name == "default" else base.model.name)
    rows: dict[str, dict] = {}
    workdir = Path(tempfile.mkdtemp(prefix="bench_utility_"))

    # Public model only: choose the public prompt on the dev split (owner-side selection, counted).
    dev = _dev_rows(train_texts)
    dev_scorer = Scorer([t for t, k in zip(train_texts, dev) if k], [l for l, k in zip(train_labels, dev) if k], minority)
    candidates = _public_candidates(base)
    chosen, best = None, -1.0
    for name, codec in candidates.items():
        data, _ = _sample(model, tok, codec, base, args.dev_records, seed=100)
        f1 = dev_scorer.score(*_texts_labels(data, base)).get("tfidf_minority_f1")
        print(f"  public prompt candidate {name!r}: dev {minority} F1 {f1:.3f}")
        if f1 is not None and not math.isnan(f1) and f1 > best:
            chosen, best = name, f1
    chosen = chosen or next(iter(candidates))
    print(f"  {len(candidates)} public prompt configurations tried on the dev split; chosen: {chosen!r}")
    runs = []
    for run in range(args.runs):
        t = time.time()
        data, extra = _sample(model, tok, candidates[chosen], base, args.records, seed=run)
        runs.append({**scorer.score(*_texts_labels(data, base)),
                     "records": len(data), "epsilon": 0.0, "seconds": time.time() - t, **extra})
    rows[f"public model only ({chosen})"] = _aggregate(runs)
    print(_table(rows))

    for recipe in recipes:
        method = f"{recipe.name} ({recipe.generation.method})"
        for eps in args.epsilons:
            runs = []
            for run in range(args.runs):
                t = time.time()
                if eps == "inf":
                    if "keywords" not in recipe.privacy.shares or recipe.generation.method != "prompted":
                        break
                    data, extra = _sample(model, tok, recipe_codec(recipe), recipe, args.records, seed=run,
                                          keywords=_non_private_keywords(recipe, tok))
                    extra["epsilon"] = math.inf
                else:
                    data, extra = _run_recipe(recipe, float(eps), args.records, workdir)
                runs.append({**scorer.score(*_texts_labels(data, recipe)), "records": len(data),
                             "seconds": time.time() - t, **extra})
            if runs:
                rows[f"{method} @ ε = {'∞' if eps == 'inf' else eps}"] = _aggregate(runs)
                print(_table(rows))

    rng = np.random.default_rng(0)
    pick = rng.choice(len(train_texts), size=min(args.records, len(train_texts)), replace=False)
    rows[f"real data ({len(pick)} records)"] = _aggregate([{**scorer.score([train_texts[i] for i in pick],
                                                                           [train_labels[i] for i in pick]),
                                                            "records": len(pick)}])
    rows[f"real data (all {len(train_texts):,})"] = _aggregate([{**scorer.score(train_texts, train_labels),
                                                                 "records": len(train_texts)}])
    table = _table(rows)
    print(f"\n{base.name} ({d.source}), test split only; classifiers: TF-IDF word 1–2-grams + LR (C = 10), MiniLM + "
          f"LR (C = 10); k-NN k = 5; mean (min) of {args.runs} run(s); total {time.time() - started:.0f} s\n")
    print(table)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    stem = f"{base.name}{'-quick' if args.quick else ''}"
    (out / f"{stem}.json").write_text(json.dumps({
        "dataset": d.source, "recipes": args.recipes, "records": args.records, "runs": args.runs,
        "minority_label": minority, "public_prompt_candidates": list(candidates), "public_prompt_chosen": chosen,
        "owner_only": "every number reads private data (the test split, the real rows) without DP",
        "rows": rows,
    }, indent=2, default=float))
    _plot(rows, out / f"{stem}.png", minority)
    print(f"\nsaved {out / (stem + '.json')} and {out / (stem + '.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
