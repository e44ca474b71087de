"""``hf-dpsynth push RUN_DIR``: publish a run's synthetic dataset (and adapter) behind the safety gates."""

from __future__ import annotations

import argparse

NAME = "push"
HELP = "Publish a run's synthetic dataset (and its DP adapter) to the Hub, after every safety gate passed."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="The output folder of `hf-dpsynth run`.")
    parser.add_argument("--repo-id", required=True, help="The dataset repo (namespace/name).")
    parser.add_argument("--adapter-repo-id", default=None, help="Also push the DP adapter to this model repo.")
    parser.add_argument("--public", action="store_true", help="Create public repos (default: private).")
    parser.add_argument("--allow-non-private", action="store_true",
                        help="Publish a release whose ledger says DP was off (the card says so).")
    parser.add_argument("--allow-refuted-audit", action="store_true",
                        help="Publish although the charged audit refuted ε (ε̂ > ε); the cards must say so "
                             "(run with audit.publish_if_refuted: true).")


def _refuted_audit(folder, ledger, allowed: bool) -> str | None:
    """Why the push is refused by the run's own charged audit (read from audit/, not from the card), or None."""
    from hf_dpsynth.pipeline.audit_run import load_audit

    if not ledger.charge_ids("audit"):
        return None
    folder.reuse(folder.audit, ledger)  # the audit its charge paid for
    audit = load_audit(folder.audit)
    if audit.refuted and not allowed:
        return (f"{audit.main_verdict} The run's charged audit refuted its ε: do not release; find the bug. To publish "
                "anyway, labelled, run with audit.publish_if_refuted: true and push with --allow-refuted-audit.")
    return None


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hf_dpsynth.errors import PublishRefusedError
    from hf_dpsynth.hub.publish import push_adapter, push_synthetic_dataset
    from hf_dpsynth.pipeline.audit_run import audit_canaries
    from hf_dpsynth.pipeline.build import recipe_codec
    from hf_dpsynth.pipeline.data import private_texts
    from hf_dpsynth.pipeline.folder import RunFolder, load_run_recipe
    from hf_dpsynth.pipeline.outputs import RunLock
    from hf_dpsynth.privacy import PrivacyLedger

    folder = RunFolder(Path(args.run_dir))
    recipe = load_run_recipe(folder.root)
    with RunLock(folder.root):  # no run may charge this folder's ledger while its release is checked and uploaded
        ledger = PrivacyLedger.load(folder.ledger_file)
        # What goes up must be what the ledger paid for (not data of another run or of a replaced ledger).
        folder.reuse(folder.synthetic, ledger)
        if args.adapter_repo_id:
            folder.reuse(folder.adapter, ledger)
        refused = _refuted_audit(folder, ledger, args.allow_refuted_audit)
        if refused:
            print(f"refused: {refused}")
            return 1
        codec = recipe_codec(recipe)
        canaries = audit_canaries(recipe, codec) if "audit" in recipe.privacy.shares else ()
        card = folder.dataset_card.read_text(encoding="utf-8") if folder.dataset_card.is_file() else None
        allow = {"allow_non_private": args.allow_non_private, "allow_refuted_audit": args.allow_refuted_audit}
        try:
            result = push_synthetic_dataset(
                folder.synthetic, args.repo_id, card=card, ledger_report=ledger, private_texts=private_texts(recipe),
                canaries=canaries, codec=codec, private=not args.public, **allow,
            )
            print(f"pushed the synthetic dataset to {result.repo_id} ({'private' if result.private else 'public'}); "
                  f"gates passed: {', '.join(result.gates_passed)}")
            if args.adapter_repo_id:
                adapter_card = folder.adapter_card
                pushed = push_adapter(
                    folder.adapter, args.adapter_repo_id, ledger_report=ledger, private=not args.public,
                    card=adapter_card.read_text(encoding="utf-8") if adapter_card.is_file() else None, **allow,
                )
                print(f"pushed the DP adapter to {pushed.repo_id}")
        except PublishRefusedError as exc:
            print(f"refused: {exc}")
            return 1
    return 0
