"""Realistic collection content, built only through the real client's API.

:func:`build_rich_collection` fills an (empty) collection with:

* notes of two notetypes: a custom two-template "ankihost Vocab" notetype
  (3 fields, custom CSS) and the stock Cloze notetype (1-3 cloze deletions);
* nested decks (``Languages::French::Verbs`` ...), each note in one of them;
* two custom deck-option presets, assigned to some decks;
* tags (hierarchical and non-ASCII);
* reviewed cards (real v3 scheduler answers -> revlog, learning and review
  cards), flagged and suspended cards;
* a filtered deck pulling cards in;
* a few collection config keys.

The note count is a parameter; notes are added in large batches with
``Collection.add_notes`` so 20,000 notes take a few seconds. Content is
deterministic for a given seed (ids and timestamps are not).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from anki.collection import AddNoteRequest, Collection
from anki.decks import DeckId
from anki.models import NotetypeDict

VOCAB_NOTETYPE = "ankihost Vocab"

DECKS = (
    "Languages",
    "Languages::French",
    "Languages::French::Verbs",
    "Languages::German",
    "Science",
    "Science::Physics",
    "History",
)
NOTE_DECKS = ("Languages::French", "Languages::French::Verbs", "Languages::German", "Science::Physics", "History")

TAGS = ("french", "german", "verb", "noun", "hard", "chapter::1", "chapter::2", "physik", "Übung", "exam_2026")

WORDS = (
    "maison", "chat", "arbre", "Straße", "Mädchen", "Frühstück", "garçon", "été",
    "quantum", "entropy", "photon", "énergie", "cœur", "日本", "дом", "λόγος", "niño", "façade",
)

CONFIG_VALUES: dict[str, object] = {
    "ankihostMarker": {"text": "ß✓ marker", "n": 3},
    "sortType": "noteFld",
    "collapseTime": 1500,
}


@dataclass
class ContentSummary:
    """What :func:`build_rich_collection` created (ids by name)."""

    decks: dict[str, int] = field(default_factory=dict)
    deck_configs: dict[str, int] = field(default_factory=dict)
    notetypes: dict[str, int] = field(default_factory=dict)
    note_count: int = 0
    card_count: int = 0
    review_count: int = 0
    filtered_deck: int = 0


def _words(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


def ensure_vocab_notetype(col: Collection) -> NotetypeDict:
    """A custom notetype with three fields and two card templates."""
    mm = col.models
    existing = mm.by_name(VOCAB_NOTETYPE)
    if existing:
        return existing
    nt = mm.new(VOCAB_NOTETYPE)
    for name in ("Word", "Meaning", "Example"):
        mm.add_field(nt, mm.new_field(name))
    forward = mm.new_template("Recognition")
    forward["qfmt"] = "{{Word}}"
    forward["afmt"] = "{{FrontSide}}<hr id=answer>{{Meaning}}<br><i>{{Example}}</i>"
    mm.add_template(nt, forward)
    reverse = mm.new_template("Recall")
    reverse["qfmt"] = "{{Meaning}}"
    reverse["afmt"] = "{{FrontSide}}<hr id=answer>{{Word}}"
    mm.add_template(nt, reverse)
    nt["css"] += "\n.card { color: navy; }\n"
    mm.add(nt)
    return mm.by_name(VOCAB_NOTETYPE)


def add_deck_options(col: Collection, name: str, *, new_per_day: int, rev_per_day: int,
                     learn_steps: list[float], max_taken: int = 60) -> int:
    """A deck-options preset cloned from the default one, with changes."""
    conf = col.decks.add_config(name, clone_from=col.decks.get_config(1))
    conf["new"]["perDay"] = new_per_day
    conf["rev"]["perDay"] = rev_per_day
    conf["new"]["delays"] = learn_steps
    conf["lapse"]["delays"] = [10.0]
    conf["maxTaken"] = max_taken
    col.decks.update_config(conf)
    return int(conf["id"])


def _assign_options(col: Collection, deck_id: int, conf_id: int) -> None:
    deck = col.decks.get(DeckId(deck_id))
    deck["conf"] = conf_id
    col.decks.save(deck)


def _note_requests(col: Collection, rng: random.Random, n: int, deck_ids: list[int]) -> list[AddNoteRequest]:
    vocab = ensure_vocab_notetype(col)
    cloze = col.models.by_name("Cloze")
    requests = []
    for i in range(n):
        if i % 2 == 0:
            note = col.new_note(vocab)
            note["Word"] = f"{rng.choice(WORDS)}-{i}"
            note["Meaning"] = f"<b>{_words(rng, 2)}</b> &amp; {i}"
            note["Example"] = _words(rng, 6)
        else:
            note = col.new_note(cloze)
            clozes = " / ".join(f"{{{{c{c}::{rng.choice(WORDS)}}}}}" for c in range(1, 2 + i % 3))
            note["Text"] = f"{i}: {clozes} {_words(rng, 3)}"
            note["Back Extra"] = _words(rng, 2)
        note.tags = sorted(rng.sample(TAGS, rng.randint(0, 3)))
        requests.append(AddNoteRequest(note=note, deck_id=DeckId(rng.choice(deck_ids))))
    return requests


def add_notes(col: Collection, n: int, deck_ids: list[int], *, seed: int = 1, batch: int = 5000) -> int:
    """Add n notes (alternating vocab/cloze) in batches; returns n."""
    requests = _note_requests(col, random.Random(seed), n, deck_ids)
    for start in range(0, len(requests), batch):
        col.add_notes(requests[start : start + batch])
    return n


def review_cards(col: Collection, deck_id: int, n: int, rng: random.Random) -> int:
    """Answer up to n cards of a deck with the real scheduler."""
    col.decks.select(DeckId(deck_id))
    done = 0
    while done < n:
        card = col.sched.getCard()
        if card is None:
            break
        col.sched.answerCard(card, rng.choice((1, 2, 3, 3, 3, 4)))
        done += 1
    return done


def build_rich_collection(col: Collection, notes: int = 400, reviews: int = 90, seed: int = 1) -> ContentSummary:
    """Fill ``col`` with the content described in the module docstring."""
    rng = random.Random(seed)
    summary = ContentSummary()
    summary.notetypes = {VOCAB_NOTETYPE: int(ensure_vocab_notetype(col)["id"]),
                         "Cloze": int(col.models.by_name("Cloze")["id"])}
    summary.decks = {name: int(col.decks.id(name)) for name in DECKS}
    summary.deck_configs = {
        "Languages options": add_deck_options(col, "Languages options", new_per_day=500, rev_per_day=900,
                                              learn_steps=[1.0, 10.0, 60.0]),
        "Science options": add_deck_options(col, "Science options", new_per_day=300, rev_per_day=700,
                                            learn_steps=[2.0, 15.0], max_taken=45),
    }
    for name in ("Languages", "Languages::French", "Languages::French::Verbs", "Languages::German"):
        _assign_options(col, summary.decks[name], summary.deck_configs["Languages options"])
    _assign_options(col, summary.decks["Science::Physics"], summary.deck_configs["Science options"])
    default = col.decks.get_config(1)
    default["new"]["perDay"] = 500
    col.decks.update_config(default)

    summary.note_count = add_notes(col, notes, [summary.decks[d] for d in NOTE_DECKS], seed=seed)

    per_deck = max(1, reviews // 3)
    for deck in ("Languages::French", "Science::Physics", "History"):
        summary.review_count += review_cards(col, summary.decks[deck], per_deck, rng)
    col.decks.select(DeckId(1))

    history = sorted(col.find_cards('deck:"History"'))
    col.set_user_flag_for_cards(3, history[:5])
    col.sched.suspend_cards(history[5:8])

    filtered = col.sched.get_or_create_filtered_deck(deck_id=DeckId(0))
    filtered.name = "Filtered::Hard ones"
    filtered.config.search_terms[0].search = "tag:hard -is:suspended"
    filtered.config.search_terms[0].limit = 40
    summary.filtered_deck = int(col.sched.add_or_update_filtered_deck(filtered).id)
    summary.decks["Filtered::Hard ones"] = summary.filtered_deck

    for key, value in CONFIG_VALUES.items():
        col.set_config(key, value)
    summary.card_count = col.card_count()
    return summary


def build_large_collection(col: Collection, notes: int = 20_000, reviews: int = 300, seed: int = 7) -> ContentSummary:
    """Benchmark content: the rich collection scaled to ``notes`` notes."""
    return build_rich_collection(col, notes=notes, reviews=reviews, seed=seed)
