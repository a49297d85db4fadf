"""protocol/multipart: the legacy form parser and its gzip payloads, fed as the network does."""

import gzip
import io
import os
import zlib

import pytest

from ankihost.errors import BadRequest, PayloadTooLarge
from ankihost.protocol.multipart import (
    GUNZIP_PIECE_BYTES,
    MAX_FIELD_BYTES,
    MAX_PARTS,
    FormParser,
    LegacyForm,
    boundary_of,
    gunzip_pieces,
)
from tests.support.legacy_wire import legacy_request, multipart_body

# What Anki 2.1.54 sends (recorded, /work/notes/legacy-protocol.md §1.1): field order data, c, k, s.
BOUNDARY = "0baf2ec0d8a77dcc-a10b880457394866-13f1964e52a90826-dbe8d598dcd75fdd"


def gunzip_into(source: io.BytesIO, target: io.BytesIO, limit: int) -> int:
    """`gunzip_pieces` written to `target`, as the legacy envelope writes a payload."""
    return sum(target.write(piece) for piece in gunzip_pieces(source, limit))


def parse(content_type: str, body: bytes, piece: int = 1 << 16) -> LegacyForm:
    parser = FormParser(boundary_of(content_type), io.BytesIO)
    for i in range(0, len(body), piece):
        parser.feed(body[i : i + piece])
    return parser.finish()


def payload(form: LegacyForm, limit: int = 10**9) -> bytes:
    out = io.BytesIO()
    assert form.write_payload(out, limit) == len(out.getvalue())
    return out.getvalue()


@pytest.mark.parametrize("piece", [1, 7, 100, 1 << 16])
def test_an_old_clients_request_whatever_the_network_pieces(piece):
    content_type, body = legacy_request(b'{"v":10,"cv":"anki,2.1.54"}', host_key="hk", session="C]w7|ht4>5")
    form = parse(content_type, body, piece)
    assert (form.host_key, form.session_key, form.compressed) == ("hk", "C]w7|ht4>5", True)
    assert payload(form) == b'{"v":10,"cv":"anki,2.1.54"}'


def test_ankidroid_style_parts_in_any_order_with_content_types():
    """AnkiDroid's Java sync: fixed boundary, fields from a HashMap, a typed `data` part."""
    b = "Anki-sync-boundary"
    body = (
        f'--{b}\r\nContent-Disposition: form-data; name="s"\r\n\r\nabc\r\n'
        f'--{b}\r\nContent-Disposition: form-data; name="data"; filename="data"\r\n'
        f"Content-Type: application/octet-stream\r\n\r\n"
    ).encode() + gzip.compress(b'{"minUsn":0}') + (
        f'\r\n--{b}\r\nContent-Disposition: form-data; name="k"\r\n\r\nkey\r\n'
        f'--{b}\r\nContent-Disposition: form-data; name="c"\r\n\r\n1\r\n--{b}--\r\n'
    ).encode()
    form = parse(f"multipart/form-data; boundary={b}", body)
    assert (form.host_key, form.session_key) == ("key", "abc")
    assert payload(form) == b'{"minUsn":0}'


@pytest.mark.parametrize(("c", "compressed"), [(None, False), (b"0", False), (b"1", True), (b"", True)])
def test_c_decides_compression_as_upstream(c, compressed):
    data = gzip.compress(b"{}") if compressed else b'{"x":1}'
    fields = [("data", data)] + ([("c", c)] if c is not None else [])
    form = parse(*multipart_body(fields))
    assert form.compressed is compressed
    assert payload(form) == (b"{}" if compressed else b'{"x":1}')


def test_missing_or_empty_data_is_an_empty_object():
    assert payload(parse(*multipart_body([("c", b"1"), ("k", b"x")]))) == b"{}"
    assert payload(parse(*multipart_body([("data", b""), ("c", b"1")]))) == b"{}"


def test_sk_and_k_are_the_host_key_the_later_wins_and_unknown_fields_are_ignored():
    form = parse(*multipart_body([("k", b"first"), ("other", b"x" * 50_000), ("sk", b"second")]))
    assert form.host_key == "second" and "other" not in form.fields
    assert parse(*multipart_body([("sk", b"media")])).host_key == "media"


def test_v_is_the_media_client_version():
    form = parse(*multipart_body([("k", b"x"), ("v", b"ankidroid,2.15.6,Android")]))
    assert form.client_version == "ankidroid,2.15.6,Android"


def test_a_repeated_data_part_replaces_the_first():
    form = parse(*multipart_body([("data", b"one"), ("data", b"second")]))
    assert payload(form) == b"second"


@pytest.mark.parametrize(
    "content_type",
    ["", "application/json", "multipart/form-data", "multipart/mixed; boundary=x",
     "text/plain; boundary=x", f"multipart/form-data; boundary={'x' * 201}"],
)
def test_content_types_that_are_no_form_are_400(content_type):
    with pytest.raises(BadRequest):
        boundary_of(content_type)


def test_the_boundary_is_read_quoted_or_not():
    assert boundary_of(f"multipart/form-data; boundary={BOUNDARY}") == BOUNDARY.encode()
    assert boundary_of('multipart/form-data; boundary="a b"') == b"a b"


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"garbage", id="no-boundary"),
        pytest.param(multipart_body([("c", b"1")], boundary="other")[1], id="other-boundary"),
        pytest.param(multipart_body([("data", b"x" * 100)], boundary="bnd")[1][:60], id="truncated"),
        pytest.param(b"", id="empty"),
    ],
)
def test_bodies_that_do_not_parse_are_400(body):
    with pytest.raises(BadRequest):
        parse("multipart/form-data; boundary=bnd", body)


def test_limits_on_fields_parts_and_headers():
    with pytest.raises(BadRequest, match="exceeds"):
        parse(*multipart_body([("s", b"x" * (MAX_FIELD_BYTES + 1))]))
    with pytest.raises(BadRequest, match="parts"):
        parse(*multipart_body([("x", b"1")] * (MAX_PARTS + 1)))
    long_header = f'--b\r\nContent-Disposition: form-data; name="c"; x="{"y" * 5000}"\r\n\r\n1\r\n--b--\r\n'
    with pytest.raises(BadRequest, match="header"):
        parse("multipart/form-data; boundary=b", long_header.encode())
    with pytest.raises(BadRequest, match="UTF-8"):
        parse(*multipart_body([("k", b"\xff\xfe")]))


def test_a_large_data_part_goes_to_the_callers_file_not_to_memory():
    files: list[io.BytesIO] = []

    def new_file() -> io.BytesIO:
        files.append(io.BytesIO())
        return files[-1]

    data = os.urandom(3 << 20)
    content_type, body = multipart_body([("data", data), ("c", b"0")])
    parser = FormParser(boundary_of(content_type), new_file)
    for i in range(0, len(body), 1 << 16):
        parser.feed(body[i : i + (1 << 16)])
    form = parser.finish()
    assert len(files) == 1 and files[0].getvalue() == data and form.data_size == len(data)
    assert payload(form) == data


# --- gzip --------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [0, 1, GUNZIP_PIECE_BYTES, 3 * GUNZIP_PIECE_BYTES, 3 * GUNZIP_PIECE_BYTES + 7])
def test_gunzip_whatever_the_size(size):
    data = (os.urandom(1000) + b"a" * 3000) * (size // 4000) + b"z" * (size % 4000)
    out = io.BytesIO()
    assert gunzip_into(io.BytesIO(gzip.compress(data)), out, 10**9) == size
    assert out.getvalue() == data


def test_gunzip_stops_at_its_limit():
    bomb = gzip.compress(b"\0" * (20 << 20))
    with pytest.raises(PayloadTooLarge):
        gunzip_into(io.BytesIO(bomb), io.BytesIO(), 10 << 20)
    out = io.BytesIO()
    assert gunzip_into(io.BytesIO(bomb), out, 20 << 20) == 20 << 20


@pytest.mark.parametrize(
    "data",
    [
        pytest.param(b"not gzip at all", id="not-gzip"),
        pytest.param(gzip.compress(b"x" * 10_000)[:-12], id="truncated"),
        pytest.param(zlib.compress(b"{}"), id="zlib-not-gzip"),
        pytest.param(gzip.compress(b"{}")[:5], id="header-only"),
    ],
)
def test_gzip_that_does_not_decompress_is_400(data):
    with pytest.raises(BadRequest):
        gunzip_into(io.BytesIO(data), io.BytesIO(), 10**6)


def test_bytes_after_the_gzip_member_are_ignored():
    out = io.BytesIO()
    gunzip_into(io.BytesIO(gzip.compress(b'{"a":1}') + b"trailing"), out, 100)
    assert out.getvalue() == b'{"a":1}'


def test_an_uncompressed_payload_over_the_limit():
    form = parse(*multipart_body([("data", b"x" * 100), ("c", b"0")]))
    with pytest.raises(PayloadTooLarge):
        form.write_payload(io.BytesIO(), 99)
