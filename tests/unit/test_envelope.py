import io
import os

import pytest
import zstandard

from ankihost.errors import BadRequest, PayloadTooLarge
from ankihost.protocol.compression import compress, decompress_into, first_frame_length
from ankihost.protocol.header import parse_header


def streamed(data: bytes, **options) -> bytes:
    """A frame as the client sends it: streamed, no content size in the header."""
    out = io.BytesIO()
    writer = zstandard.ZstdCompressor(**options).stream_writer(out, closefd=False)
    writer.write(data)
    writer.flush(zstandard.FLUSH_FRAME)
    return out.getvalue()


def decompress(frame: bytes, limit: int = 10**9) -> bytes:
    out = io.BytesIO()
    decompress_into(io.BytesIO(frame), out, limit)
    return out.getvalue()


def test_header_fields_and_lenient_defaults():
    h = parse_header('{"v":11,"k":"abc","c":"26.09.3,x,linux","s":"Qx81Z"}')
    assert (h.version, h.host_key, h.client_version, h.session_key) == (11, "abc", "26.09.3,x,linux", "Qx81Z")
    assert parse_header('{"v":11}').session_key == ""


@pytest.mark.parametrize("value", ['{"v":7}', '{"v":12}', '{"v":"11"}', '{"k":"x"}', "not json",
                                   "[11]", '{"v":11,"s":5}', '{"v":true}'])
def test_bad_headers_are_400(value):
    with pytest.raises(BadRequest):
        parse_header(value)


@pytest.mark.parametrize("data", [b"", b"{}", b"x" * 5_000_000, os.urandom(300_000)])
def test_streamed_and_one_shot_frames_decompress(data):
    assert decompress(streamed(data)) == data
    assert decompress(compress(data)) == data
    assert decompress(streamed(data, write_checksum=True)) == data


def test_data_after_the_first_frame_is_ignored():
    assert decompress(streamed(b"first") + streamed(b"second")) == b"first"


@pytest.mark.parametrize("cut", [1, 3, 10])
def test_truncated_frames_are_400(cut):
    frame = streamed(b"abc" * 100_000, write_checksum=True)
    with pytest.raises(BadRequest, match="truncated"):
        decompress(frame[:-cut])


@pytest.mark.parametrize("body", [b"", b"{}", b"\x28\xb5\x2f", b"garbage" * 10])
def test_non_zstd_is_400(body):
    with pytest.raises(BadRequest):
        decompress(body)


def test_undecodable_compressed_block_is_400():
    # A well-framed body whose one compressed block holds garbage (the client sends no
    # checksum, so only structurally invalid content is detectable at this layer).
    header = bytes.fromhex("28b52ffd") + bytes([0x00, 0x58])  # magic, descriptor, window
    block = ((8 << 3) | (2 << 1) | 1).to_bytes(3, "little") + b"\xff" * 8
    with pytest.raises(BadRequest):
        decompress(header + block)


def test_decompressed_limit_stops_a_zip_bomb_early():
    bomb = streamed(bytes(200 * 1024 * 1024))  # 200 MiB of zeros in a few KiB
    assert len(bomb) < 100_000
    with pytest.raises(PayloadTooLarge):
        decompress(bomb, limit=5 * 1024 * 1024)


def test_exact_limit_is_allowed():
    assert len(decompress(streamed(b"z" * 1000), limit=1000)) == 1000
    with pytest.raises(PayloadTooLarge):
        decompress(streamed(b"z" * 1001), limit=1000)


def test_frame_length_counts_only_the_first_frame():
    frame = streamed(b"hello" * 1000)
    assert first_frame_length(io.BytesIO(frame + b"tail")) == len(frame)


@pytest.mark.parametrize("size", [10, 1024 * 1024, 1024 * 1024 + 1, 3 * 1024 * 1024])
def test_small_body_decompresses_whole_whatever_its_decompressed_size(size):
    """A small body is tried inline (capped); a bigger output is redone in a worker thread."""
    import anyio

    from ankihost.web.envelope import INLINE_DECOMPRESS_BYTES, decompress_body

    data = os.urandom(64) * (size // 64) + b"x" * (size % 64)
    frame = streamed(data)
    assert len(frame) <= INLINE_DECOMPRESS_BYTES
    out = io.BytesIO()
    assert anyio.run(decompress_body, io.BytesIO(frame), out, 10 * 1024 * 1024) == size
    assert out.getvalue() == data
    with pytest.raises(PayloadTooLarge):
        anyio.run(decompress_body, io.BytesIO(frame), io.BytesIO(), size - 1)


def test_a_body_after_a_refused_one_decompresses_cleanly():
    """Each thread reuses one zstd context: a decompression stopped half-way (limit, or a
    broken frame) must not leak state into the next body on the same thread."""
    bomb = streamed(bytes(50 * 1024 * 1024))
    with pytest.raises(PayloadTooLarge):
        decompress(bomb, limit=1024 * 1024)
    header = bytes.fromhex("28b52ffd") + bytes([0x00, 0x58])
    with pytest.raises(BadRequest):
        decompress(header + ((8 << 3) | (2 << 1) | 1).to_bytes(3, "little") + b"\xff" * 8)
    data = os.urandom(300_000)
    assert decompress(streamed(data)) == data
    assert zstandard.ZstdDecompressor().decompress(compress(data)) == data


def test_compressed_replies_carry_their_size_and_round_trip_on_any_thread():
    import threading

    results: list[bytes] = []
    payloads = [os.urandom(n) for n in (0, 10, 200_000)]

    def work() -> None:
        results.extend(zstandard.ZstdDecompressor().decompress(compress(p)) for p in payloads)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == sorted(payloads * 4)
