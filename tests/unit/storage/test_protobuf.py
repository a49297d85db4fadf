"""Our protobuf definitions against blobs written by the real client and its own descriptors."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest
from anki import deck_config_pb2, decks_pb2, notetypes_pb2
from anki.collection import Collection
from google.protobuf.descriptor import FieldDescriptor

from ankihost.errors import BadRequest
from ankihost.storage import protobuf as pb

# (our class, the client's own generated class for the same message)
PAIRS = [
    (pb.DeckCommon, decks_pb2.Deck.Common),
    (pb.DayLimit, decks_pb2.Deck.Normal.DayLimit),
    (pb.DeckNormal, decks_pb2.Deck.Normal),
    (pb.SearchTerm, decks_pb2.Deck.Filtered.SearchTerm),
    (pb.DeckFiltered, decks_pb2.Deck.Filtered),
    (pb.DeckKindContainer, decks_pb2.Deck.KindContainer),
    (pb.DeckConfigConfig, deck_config_pb2.DeckConfig.Config),
    (pb.CardRequirement, notetypes_pb2.Notetype.Config.CardRequirement),
    (pb.NotetypeConfig, notetypes_pb2.Notetype.Config),
    (pb.FieldConfig, notetypes_pb2.Notetype.Field.Config),
    (pb.TemplateConfig, notetypes_pb2.Notetype.Template.Config),
]

BLOB_COLUMNS = [
    ("decks", "common", pb.DeckCommon),
    ("decks", "kind", pb.DeckKindContainer),
    ("deck_config", "config", pb.DeckConfigConfig),
    ("notetypes", "config", pb.NotetypeConfig),
    ("fields", "config", pb.FieldConfig),
    ("templates", "config", pb.TemplateConfig),
]


def _wire_type(field: FieldDescriptor) -> str:
    if field.type == FieldDescriptor.TYPE_ENUM:
        return "varint-signed"  # proto3 enums are int32 on the wire
    return {
        FieldDescriptor.TYPE_INT32: "varint-signed",
        FieldDescriptor.TYPE_INT64: "varint-signed",
        FieldDescriptor.TYPE_UINT32: "varint",
        FieldDescriptor.TYPE_BOOL: "varint",
        FieldDescriptor.TYPE_FLOAT: "fixed32",
        FieldDescriptor.TYPE_STRING: "bytes",
        FieldDescriptor.TYPE_BYTES: "bytes",
        FieldDescriptor.TYPE_MESSAGE: "bytes",
    }[field.type]


@pytest.mark.parametrize("ours, theirs", PAIRS, ids=lambda c: c.DESCRIPTOR.name)
def test_fields_match_the_clients_message(ours: Any, theirs: Any) -> None:
    mine = {f.number: f for f in ours.DESCRIPTOR.fields}
    reference = {f.number: f for f in theirs.DESCRIPTOR.fields}
    assert sorted(mine) == sorted(reference)
    for number, field in mine.items():
        other = reference[number]
        assert field.name == other.name
        assert _wire_type(field) == _wire_type(other), field.name
        assert field.is_repeated == other.is_repeated, field.name
        assert field.has_presence == other.has_presence, field.name
        assert _real_oneof(field) == _real_oneof(other), field.name


def _real_oneof(field: FieldDescriptor) -> str | None:
    """The oneof a field belongs to, ignoring the synthetic ones of proto3 `optional`."""
    oneof = field.containing_oneof
    return None if oneof is None or oneof.name == f"_{field.name}" else oneof.name


@pytest.fixture(scope="module")
def client_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("pb") / "c.anki2"
    col = Collection(str(path))
    col.add_image_occlusion_notetype()
    col.decks.id("A::B")
    conf = col.decks.get_config(col.decks.add_config_returning_id("X"))
    conf["fsrsParams6"] = [0.1, 2.5, 3.25]
    conf["futureKey"] = 1
    col.decks.update_config(conf)
    col.close()
    return path


@pytest.mark.parametrize("table, column, message", BLOB_COLUMNS, ids=lambda v: str(v))
def test_client_blobs_reserialise_byte_for_byte(
    client_file: Path, table: str, column: str, message: Any
) -> None:
    db = sqlite3.connect(client_file)
    blobs = [b for (b,) in db.execute(f"select {column} from {table}")]
    db.close()
    assert blobs
    for blob in blobs:
        assert pb.serialize(pb.parse(message, blob)) == blob


def test_our_bytes_decode_with_the_clients_classes() -> None:
    ours = pb.DeckKindContainer()
    ours.normal.config_id = -5
    ours.normal.desired_retention = 0.87
    ours.normal.review_limit = 0  # present although zero
    ours.normal.new_limit_today.limit = 9
    theirs = decks_pb2.Deck.KindContainer.FromString(pb.serialize(ours))
    assert theirs.normal.config_id == -5
    assert theirs.normal.HasField("review_limit") and theirs.normal.review_limit == 0
    assert not theirs.normal.HasField("new_limit")
    assert theirs.normal.new_limit_today.limit == 9
    assert theirs.normal.desired_retention == pytest.approx(0.87)


def test_unknown_fields_survive_parse_edit_serialise() -> None:
    known = pb.FieldConfig(font_name="Arial", font_size=20)
    # field 12 varint 5, field 13 length-delimited b"hi": from a future client
    unknown = bytes([12 << 3 | 0, 5, 13 << 3 | 2, 2]) + b"hi"
    message = pb.parse(pb.FieldConfig, pb.serialize(known) + unknown)
    message.sticky = True
    blob = pb.serialize(message)
    assert blob.endswith(unknown)
    assert pb.parse(pb.FieldConfig, blob).font_name == "Arial"


def test_optional_fields_keep_presence() -> None:
    absent = pb.serialize(pb.FieldConfig())
    zero = pb.serialize(pb.FieldConfig(id=0))
    assert absent == b"" and zero == bytes([9 << 3, 0])
    assert pb.parse(pb.FieldConfig, zero).HasField("id")
    assert not pb.parse(pb.FieldConfig, absent).HasField("id")


def test_negative_int64_is_a_ten_byte_varint() -> None:
    blob = pb.serialize(pb.TemplateConfig(target_deck_id=-1))
    assert blob == bytes([5 << 3]) + b"\xff" * 9 + b"\x01"


def test_undecodable_blob_is_bad_request() -> None:
    with pytest.raises(BadRequest):
        pb.parse(pb.DeckCommon, b"\x0a\x05ab")  # length 5, only 2 bytes follow
