"""Reading a DP card and validating it: its YAML front matter, its ``differential_privacy`` block,
its tags and its title.

Privacy: a card is accepted only when its block validates against the schema and the ledger's
invariants, its title says "NOT differentially private" exactly when the block does, its
owner-only section is present exactly when the block says owner-only values are included, and it
mentions no seed anywhere. The push gates read a card through here.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from hf_dpsynth.errors import CardError
from hf_dpsynth.hub.card_block import DP_BLOCK_KEY, SECRET_TEXT, validate_block
from hf_dpsynth.hub.card_text import NOT_PRIVATE_TITLE
from hf_dpsynth.privacy.disclosure import OWNER_ONLY_HEADING

__all__ = ["read_dp_block", "validate_card"]


class _FrontMatter(NamedTuple):
    metadata: dict[str, Any]
    body: str
    """The Markdown after the metadata block."""


def validate_card(card_or_text: Any) -> dict[str, Any]:
    """The metadata of a DP card, once every check passes; CardError saying what is wrong otherwise.

    Checks: YAML front matter; the ``differential-privacy`` tag (and ``synthetic`` for a dataset card,
    ``base_model`` for an adapter card, i.e. ``library_name: peft``); the ``differential_privacy``
    block against the schema and the ledger's invariants; a title that says "NOT differentially
    private" exactly when the block does; the owner-only section present exactly when the block
    says owner-only values are included; no mention of a seed anywhere.
    """
    text = _card_text(card_or_text)
    metadata, body = _front_matter(text)
    tags = metadata.get("tags")
    if not isinstance(tags, list) or "differential-privacy" not in tags:
        raise CardError(f"A DP card carries the tag 'differential-privacy'; its tags are {tags!r}.")
    if metadata.get("library_name") == "peft":
        if not isinstance(metadata.get("base_model"), str) or not metadata["base_model"]:
            raise CardError("An adapter card (library_name: peft) names its base_model (a Hub id).")
    elif "synthetic" not in tags:
        raise CardError(f"A synthetic dataset card carries the tag 'synthetic'; its tags are {tags!r}.")
    if DP_BLOCK_KEY not in metadata:
        raise CardError(f"The card has no {DP_BLOCK_KEY!r} block in its metadata: render it with hf_dpsynth.hub.cards.")
    block = metadata[DP_BLOCK_KEY]
    validate_block(block)
    title = _title_of(body)
    if title is None:
        raise CardError("The card has no title (a '# ' heading).")
    if (NOT_PRIVATE_TITLE in title) == bool(block["private"]):
        expected = "must not say" if block["private"] else "must say"
        raise CardError(f"The title {title!r} {expected} {NOT_PRIVATE_TITLE!r}: the block says private = {block['private']}.")
    has_owner_section = f"## {OWNER_ONLY_HEADING}" in body
    if has_owner_section != block["owner_only_included"]:
        raise CardError(
            f"The card {'has' if has_owner_section else 'lacks'} the section {OWNER_ONLY_HEADING!r} but its block says "
            f"owner_only_included = {block['owner_only_included']}."
        )
    found = SECRET_TEXT.search(text)
    if found:
        start = max(0, found.start() - 40)
        raise CardError(
            f"The card mentions a seed ({text[start:found.end() + 40]!r}): a mechanism's random state never "
            "enters a card. Remove it from the inputs."
        )
    return metadata


def read_dp_block(card_text: Any) -> dict[str, Any]:
    """The ``differential_privacy`` block of a card (text or RepoCard), validated against the schema."""
    metadata, _ = _front_matter(_card_text(card_text))
    if DP_BLOCK_KEY not in metadata:
        raise CardError(f"The card has no {DP_BLOCK_KEY!r} block in its metadata.")
    block = metadata[DP_BLOCK_KEY]
    validate_block(block)
    return block


def _title_of(body: str) -> str | None:
    """The first level-1 heading outside code blocks."""
    in_code = False
    for line in body.splitlines():
        if line.lstrip().startswith("```"):
            in_code = not in_code
        elif not in_code and line.startswith("# "):
            return line[2:].strip()
    return None


def _card_text(card_or_text: Any) -> str:
    if isinstance(card_or_text, str):
        return card_or_text
    from huggingface_hub import RepoCard

    if isinstance(card_or_text, RepoCard):
        return str(card_or_text)
    raise CardError(f"Expected a card's text or a huggingface_hub RepoCard; got {type(card_or_text).__name__}.")


def _front_matter(text: str) -> _FrontMatter:
    import yaml
    from huggingface_hub.repocard import (
        REGEX_YAML_BLOCK,  # the Hub's own front-matter rule
    )

    match = REGEX_YAML_BLOCK.search(text)
    if match is None:
        raise CardError("The card has no YAML metadata block (--- ... ---) at its top.")
    try:
        metadata = yaml.safe_load(match.group(2))
    except yaml.YAMLError as exc:
        raise CardError(f"The card's YAML metadata does not parse: {exc}") from exc
    if not isinstance(metadata, dict):
        raise CardError(f"The card's YAML metadata must be a mapping; got {type(metadata).__name__}.")
    return _FrontMatter(metadata, text[match.end():])
