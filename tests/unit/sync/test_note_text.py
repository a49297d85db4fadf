"""Note field, tag, sort-field and checksum rules (spec 02 §5.3.5, §5.5.2)."""

from __future__ import annotations

import pytest

from ankihost.storage import note_text as t


def test_checksum_of_the_spec_example() -> None:
    assert t.field_checksum("Héllo world") == 2382156618
    assert t.field_checksum("<b>Héllo</b> world") == 2382156618


@pytest.mark.parametrize(
    ("html", "text"),
    [
        ('<img src="cat dog.jpg">', " cat dog.jpg "),
        ("<IMG class=x SRC='a.png' alt=b>x", " a.png x"),
        ("<audio src=s.mp3>", " s.mp3 "),
        ('<object data="f.swf"></object>', " f.swf "),
        ("a<!-- note -->b<style>p{}</style>c<SCRIPT>x()</script>d", "abcd"),
        ("one&nbsp;two &amp; three", "one two & three"),
        ("kept\u00a0nbsp", "kept\u00a0nbsp"),
        ("<div>multi\nline</div>", "multi\nline"),
        # no "<": neither pattern can match, entities are still decoded
        ("plain text > kept", "plain text > kept"),
        ("x &lt;b&gt; y", "x <b> y"),
        ("a & b&nbsp;c", "a & b&nbsp;c"),
        ("", ""),
    ],
)
def test_strip_media_html(html: str, text: str) -> None:
    assert t.strip_media_html(html) == text


def test_fields_lose_control_characters_but_keep_tab_and_newline() -> None:
    assert t.split_fields("a\tb\nc\rd\x7f\x00e\x1fz") == ["a\tb\ncde", "z"]
    assert t.split_fields("") == [""]


def test_sort_field_out_of_range_is_empty() -> None:
    assert t.sort_field(["<i>x</i>", "y"], 0) == "x"
    assert t.sort_field(["x"], 3) == ""


def test_tag_strings() -> None:
    assert t.canonical_tag_string("  b\u3000a  a ") == " b a a "
    assert t.canonical_tag_string("   ") == ""


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("foo bar::Baz", "foobar::Baz"),
        (" ::x", "blank::x"),
        ("a\x07::b\x7f", "a::b"),
        ("e\u0301", "\u00e9"),
        ("", "blank"),
    ],
)
def test_tag_names(raw: str, normalised: str) -> None:
    assert t.normalize_tag_name(raw) == normalised


# --- the real client as the oracle ----------------------------------------------------------

ORACLE_CASES = [
    "Tom & Jerry&nbsp;x",
    "a &amp b",
    "x &foo; y",
    "&#65;&#x42;",
    "a&b",
    "&lt;&nbsp",
    "caf&eacute;",
    "&",
    "a & b\u00a0c",
    "A&B&amp;c",
    "&notit;",
    "&amp;amp;",
    "&AMP;",
    "&#65",
    "&#0;",
    "&#xD800;",
    "&#x110000;",
    "&#;",
    "&#x;",
    "&a1;",
    "&apos;",
    "&quot;&#39;",
    "&#x41;&#X41;",
    "&frac12;&hellip;&lang;&rang;",
    "&#00000000000065;",
    "&#1234567890123;",
    "&#128;",
    "&nbsp;\u00a0&amp;",
    "kept\u00a0nbsp",
    '<img src="a b.jpg"> <IMG SRC=c.png>',
    "<audio src='d.mp3' x>",
    "<video data=e.webm>",
    '<object data="f">g</object>',
    "<img alt='x' src=\"h.gif\" /> end",
    "<img>no src",
    "<!-- c -->t<style>s</style>",
    "<script>alert(1)</script>v",
    "<b\n>multi\nline</b>",
    "<br>x<br/>y",
    "12345",
    "  spaced  ",
    # Inputs that make a backtracking engine explode; small here so they can be compared.
    '<img ' + '"a"' * 6,
    "<img " + "'a'" * 6 + " src=z.png>",
    "<style>" * 20 + "x",
    "<script>" * 20 + "</script>y",
    "<img " * 30 + "src=q.jpg>",
    '<img alt="a>b" src="in quotes.jpg">',
    "<source data='x'><img src=\"y\">",
    "<!-->not a comment-->",
    "<STYLE type=x>a</StYlE>b",
]


@pytest.fixture(scope="module")
def client_rows(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, int]]:
    from anki.collection import Collection

    col = Collection(str(tmp_path_factory.mktemp("oracle") / "c.anki2"))
    try:
        out = {}
        for text in ORACLE_CASES:
            note = col.new_note(col.models.by_name("Basic"))
            note["Front"] = text
            col.add_note(note, 1)
            sfld, csum = col.db.first("select sfld, csum from notes where id = ?", note.id)
            out[text] = (str(sfld), csum)
        return out
    finally:
        col.close()


@pytest.mark.parametrize("text", ORACLE_CASES)
def test_sort_field_and_checksum_match_the_real_client(
    client_rows: dict[str, tuple[str, int]], text: str
) -> None:
    assert (t.sort_field([text], 0), t.field_checksum(text)) == client_rows[text]


PATHOLOGICAL = [
    "'<img ' + '\"a\"' * 60",
    "'<style>' * 4000",
    "'<script>' * 4000",
    "'<img ' * 20000",
    "\"<img \" + \"'a'\" * 60",
]


def test_crafted_notes_are_processed_in_linear_time() -> None:
    """A backtracking regex needs hours or more for these; each must finish well within the
    generous bound (it takes milliseconds). Run in a subprocess so a regression cannot hang
    the suite."""
    import subprocess
    import sys

    code = "from ankihost.storage import note_text as t\n" + "".join(
        f"t.field_checksum({expr}); t.sort_field([{expr}], 0)\n" for expr in PATHOLOGICAL
    )
    result = subprocess.run([sys.executable, "-c", code], timeout=60, capture_output=True)
    assert result.returncode == 0, result.stderr
