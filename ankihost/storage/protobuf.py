"""The protobuf messages that schema 18 stores in the BLOB columns of decks, notetypes and configs.

Our own definitions, written as a compact table and built into a private descriptor pool at import
time (no .proto files, no generated code). Field numbers and wire types follow spec 04 Appendix A;
every enum is declared as int32, which is wire-identical. Unknown fields survive parse/serialise.
"""

from __future__ import annotations

from typing import Any, TypeVar, cast

from google.protobuf import descriptor_pb2, descriptor_pool, message_factory
from google.protobuf.message import DecodeError, Message

from ankihost.errors import BadRequest

_PACKAGE = "ankihost.blobs"

# label: "" = proto3 implicit presence, "optional" = explicit presence, "repeated" (packed),
# "oneof:<name>" = member of that oneof. A type that is not a scalar names another message here.
_FieldSpec = tuple[int, str, str, str]

_MESSAGES: dict[str, list[_FieldSpec]] = {
    "DeckCommon": [
        (1, "study_collapsed", "bool", ""),
        (2, "browser_collapsed", "bool", ""),
        (3, "last_day_studied", "uint32", ""),
        (4, "new_studied", "int32", ""),
        (5, "review_studied", "int32", ""),
        (6, "learning_studied", "int32", ""),
        (7, "milliseconds_studied", "int32", ""),
        (255, "other", "bytes", ""),
    ],
    "DayLimit": [
        (1, "limit", "uint32", ""),
        (2, "today", "uint32", ""),
    ],
    "DeckNormal": [
        (1, "config_id", "int64", ""),
        (2, "extend_new", "uint32", ""),
        (3, "extend_review", "uint32", ""),
        (4, "description", "string", ""),
        (5, "markdown_description", "bool", ""),
        (6, "review_limit", "uint32", "optional"),
        (7, "new_limit", "uint32", "optional"),
        (8, "review_limit_today", "DayLimit", ""),
        (9, "new_limit_today", "DayLimit", ""),
        (10, "desired_retention", "float", "optional"),
    ],
    "SearchTerm": [
        (1, "search", "string", ""),
        (2, "limit", "uint32", ""),
        (3, "order", "int32", ""),
    ],
    "DeckFiltered": [
        (1, "reschedule", "bool", ""),
        (2, "search_terms", "SearchTerm", "repeated"),
        (3, "delays", "float", "repeated"),
        (4, "preview_delay", "uint32", ""),
        (5, "preview_hard_secs", "uint32", ""),
        (6, "preview_good_secs", "uint32", ""),
        (7, "preview_again_secs", "uint32", ""),
    ],
    "DeckKindContainer": [
        (1, "normal", "DeckNormal", "oneof:kind"),
        (2, "filtered", "DeckFiltered", "oneof:kind"),
    ],
    "DeckConfigConfig": [
        (1, "learn_steps", "float", "repeated"),
        (2, "relearn_steps", "float", "repeated"),
        (3, "fsrs_params_4", "float", "repeated"),
        (4, "easy_days_percentages", "float", "repeated"),
        (5, "fsrs_params_5", "float", "repeated"),
        (6, "fsrs_params_6", "float", "repeated"),
        (9, "new_per_day", "uint32", ""),
        (10, "reviews_per_day", "uint32", ""),
        (11, "initial_ease", "float", ""),
        (12, "easy_multiplier", "float", ""),
        (13, "hard_multiplier", "float", ""),
        (14, "lapse_multiplier", "float", ""),
        (15, "interval_multiplier", "float", ""),
        (16, "maximum_review_interval", "uint32", ""),
        (17, "minimum_lapse_interval", "uint32", ""),
        (18, "graduating_interval_good", "uint32", ""),
        (19, "graduating_interval_easy", "uint32", ""),
        (20, "new_card_insert_order", "int32", ""),
        (21, "leech_action", "int32", ""),
        (22, "leech_threshold", "uint32", ""),
        (23, "disable_autoplay", "bool", ""),
        (24, "cap_answer_time_to_secs", "uint32", ""),
        (25, "show_timer", "bool", ""),
        (26, "skip_question_when_replaying_answer", "bool", ""),
        (27, "bury_new", "bool", ""),
        (28, "bury_reviews", "bool", ""),
        (29, "bury_interday_learning", "bool", ""),
        (30, "new_mix", "int32", ""),
        (31, "interday_learning_mix", "int32", ""),
        (32, "new_card_sort_order", "int32", ""),
        (33, "review_order", "int32", ""),
        (34, "new_card_gather_priority", "int32", ""),
        (35, "new_per_day_minimum", "uint32", ""),
        (36, "question_action", "int32", ""),
        (37, "desired_retention", "float", ""),
        (38, "stop_timer_on_answer", "bool", ""),
        (40, "historical_retention", "float", ""),
        (41, "seconds_to_show_question", "float", ""),
        (42, "seconds_to_show_answer", "float", ""),
        (43, "answer_action", "int32", ""),
        (44, "wait_for_audio", "bool", ""),
        (45, "param_search", "string", ""),
        (46, "ignore_revlogs_before_date", "string", ""),
        (255, "other", "bytes", ""),
    ],
    "CardRequirement": [
        (1, "card_ord", "uint32", ""),
        (2, "kind", "int32", ""),
        (3, "field_ords", "uint32", "repeated"),
    ],
    "NotetypeConfig": [
        (1, "kind", "int32", ""),
        (2, "sort_field_idx", "uint32", ""),
        (3, "css", "string", ""),
        (4, "target_deck_id_unused", "int64", ""),
        (5, "latex_pre", "string", ""),
        (6, "latex_post", "string", ""),
        (7, "latex_svg", "bool", ""),
        (8, "reqs", "CardRequirement", "repeated"),
        (9, "original_stock_kind", "int32", ""),
        (10, "original_id", "int64", "optional"),
        (255, "other", "bytes", ""),
    ],
    "FieldConfig": [
        (1, "sticky", "bool", ""),
        (2, "rtl", "bool", ""),
        (3, "font_name", "string", ""),
        (4, "font_size", "uint32", ""),
        (5, "description", "string", ""),
        (6, "plain_text", "bool", ""),
        (7, "collapsed", "bool", ""),
        (8, "exclude_from_search", "bool", ""),
        (9, "id", "int64", "optional"),
        (10, "tag", "uint32", "optional"),
        (11, "prevent_deletion", "bool", ""),
        (255, "other", "bytes", ""),
    ],
    "TemplateConfig": [
        (1, "q_format", "string", ""),
        (2, "a_format", "string", ""),
        (3, "q_format_browser", "string", ""),
        (4, "a_format_browser", "string", ""),
        (5, "target_deck_id", "int64", ""),
        (6, "browser_font_name", "string", ""),
        (7, "browser_font_size", "uint32", ""),
        (8, "id", "int64", "optional"),
        (255, "other", "bytes", ""),
    ],
}

_FDP = descriptor_pb2.FieldDescriptorProto
_SCALARS = {
    "bool": _FDP.TYPE_BOOL,
    "int32": _FDP.TYPE_INT32,
    "int64": _FDP.TYPE_INT64,
    "uint32": _FDP.TYPE_UINT32,
    "float": _FDP.TYPE_FLOAT,
    "string": _FDP.TYPE_STRING,
    "bytes": _FDP.TYPE_BYTES,
}


def _add_field(
    msg: descriptor_pb2.DescriptorProto, spec: _FieldSpec, oneofs: dict[str, int]
) -> None:
    number, name, type_name, label = spec
    field = msg.field.add(name=name, number=number, json_name=name)
    if type_name in _SCALARS:
        field.type = _SCALARS[type_name]
    else:
        field.type = _FDP.TYPE_MESSAGE
        field.type_name = f".{_PACKAGE}.{type_name}"
    field.label = _FDP.LABEL_REPEATED if label == "repeated" else _FDP.LABEL_OPTIONAL
    if label == "optional":  # proto3 explicit presence = a synthetic one-member oneof
        field.proto3_optional = True
        label = f"oneof:_{name}"
    if label.startswith("oneof:"):
        oneof_name = label.removeprefix("oneof:")
        if oneof_name not in oneofs:
            oneofs[oneof_name] = len(msg.oneof_decl)
            msg.oneof_decl.add(name=oneof_name)
        field.oneof_index = oneofs[oneof_name]


def _file_descriptor() -> descriptor_pb2.FileDescriptorProto:
    file = descriptor_pb2.FileDescriptorProto(
        name="ankihost/blobs.proto", package=_PACKAGE, syntax="proto3"
    )
    for message_name, specs in _MESSAGES.items():
        msg = file.message_type.add(name=message_name)
        oneofs: dict[str, int] = {}
        # synthetic oneofs must come after real ones in the declaration list
        for spec in sorted(specs, key=lambda s: s[3] == "optional"):
            _add_field(msg, spec, oneofs)
    return file


_POOL = descriptor_pool.DescriptorPool()
_POOL.Add(_file_descriptor())


def _message_class(name: str) -> Any:
    return message_factory.GetMessageClass(_POOL.FindMessageTypeByName(f"{_PACKAGE}.{name}"))


DeckCommon = _message_class("DeckCommon")
DayLimit = _message_class("DayLimit")
DeckNormal = _message_class("DeckNormal")
SearchTerm = _message_class("SearchTerm")
DeckFiltered = _message_class("DeckFiltered")
DeckKindContainer = _message_class("DeckKindContainer")
DeckConfigConfig = _message_class("DeckConfigConfig")
CardRequirement = _message_class("CardRequirement")
NotetypeConfig = _message_class("NotetypeConfig")
FieldConfig = _message_class("FieldConfig")
TemplateConfig = _message_class("TemplateConfig")

M = TypeVar("M", bound=Message)


def parse(message_class: type[M], blob: bytes) -> M:
    """Decode a stored blob; unknown fields are kept and written back by `serialize()`."""
    message = message_class()
    try:
        message.ParseFromString(bytes(blob))
    except DecodeError as exc:
        raise BadRequest(f"undecodable {message_class.__name__} blob") from exc
    return cast(M, message)


def serialize(message: Message) -> bytes:
    """The blob to store: fields in number order, proto3 defaults omitted, as prost writes them."""
    return bytes(message.SerializeToString(deterministic=True))
