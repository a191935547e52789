"""Research cards shipped with agentx: short notes, in our own words, on the ideas recipes use.

Each card is a markdown file in `knowledge/cards/` with a small header, a `---` line and
a body:

    id: dcn_v2
    title: DCN-v2 cross network
    source: Wang et al., DCN V2 (WWW 2021)
    tags: interaction, architecture
    ---
    A cross network builds feature interactions ... (80-200 words)

The header is `key: value` lines (keys id, title, source, tags; tags comma-separated); the
id must equal the file name. `seed_cards(kb)` upserts every card into the knowledge base,
where the Brainstorm agent reads them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CARDS_DIR = Path(__file__).with_name("cards")
HEADER_KEYS = ("id", "title", "source", "tags")
_ID = re.compile(r"[a-z0-9][a-z0-9_]*")


class CardError(ValueError):
    """A card file that cannot be parsed; the message names the file and the problem."""


@dataclass(frozen=True)
class Card:
    id: str
    title: str
    source: str
    tags: tuple[str, ...]
    summary: str        # the body's first sentence
    body: str

    @property
    def words(self) -> int:
        return len(self.body.split())


def first_sentence(text: str) -> str:
    """Up to and including the first '.', '!' or '?' followed by whitespace or the end."""
    flat = " ".join(text.split())
    match = re.search(r"[.!?](?=\s|$)", flat)
    return flat[: match.end()] if match else flat


def parse_card(text: str, origin: str = "<card>") -> Card:
    lines = text.splitlines()
    try:
        cut = next(i for i, line in enumerate(lines) if line.strip() == "---")
    except StopIteration:
        raise CardError(f"{origin}: no '---' line between the header and the body") from None
    header: dict[str, str] = {}
    for number, line in enumerate(lines[:cut], start=1):
        if not line.strip():
            continue
        key, sep, value = line.partition(":")
        key = key.strip()
        if not sep or key not in HEADER_KEYS:
            raise CardError(f"{origin}:{number}: expected one of {', '.join(HEADER_KEYS)} as 'key: value', "
                            f"got {line!r}")
        if key in header:
            raise CardError(f"{origin}:{number}: {key} is given twice")
        header[key] = value.strip()
    missing = [k for k in HEADER_KEYS if not header.get(k)]
    if missing:
        raise CardError(f"{origin}: header lacks {', '.join(missing)}")
    if not _ID.fullmatch(header["id"]):
        raise CardError(f"{origin}: id {header['id']!r} must be lowercase letters, digits and '_'")
    body = "\n".join(lines[cut + 1:]).strip()
    if not body:
        raise CardError(f"{origin}: the body is empty")
    tags = tuple(t.strip() for t in header["tags"].split(",") if t.strip())
    return Card(id=header["id"], title=header["title"], source=header["source"], tags=tags,
                summary=first_sentence(body), body=body)


def load_cards(folder: Path = CARDS_DIR) -> list[Card]:
    """Every `*.md` card in `folder`, sorted by id; each id must match its file name."""
    cards = []
    for path in sorted(Path(folder).glob("*.md")):
        card = parse_card(path.read_text(encoding="utf-8"), origin=str(path))
        if card.id != path.stem:
            raise CardError(f"{path}: id {card.id!r} differs from the file name {path.stem!r}")
        cards.append(card)
    return cards


def seed_cards(kb, folder: Path = CARDS_DIR) -> int:
    """Upsert every shipped card into the knowledge base; return how many."""
    cards = load_cards(folder)
    with kb.session() as s:
        for card in cards:
            s.upsert_research_card(id=card.id, title=card.title, source=card.source,
                                   summary=card.summary, tags=list(card.tags), body=card.body)
    return len(cards)
