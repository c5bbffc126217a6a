import pytest

from benchmarks.readme_tables import markdown_table, markers, read_block, render_table, replace_block

TEXT = "# Title\n\nbefore\n<!-- t:begin -->\nold\n<!-- t:end -->\nafter\n"


def test_markdown_table_lines_and_escaped_pipes():
    table = markdown_table(("a", "b"), [[1, "x|y"], [2.5, ""]])
    assert table == "| a | b |\n|---|---|\n| 1 | x\\|y |\n| 2.5 |  |"


def test_a_row_of_the_wrong_length_is_named():
    with pytest.raises(ValueError, match=r"rows\[1\] has 1 cells, the header 2"):
        markdown_table(("a", "b"), [[1, 2], [3]])


def test_replace_block_keeps_everything_outside_the_markers():
    assert markers("t") == ("<!-- t:begin -->", "<!-- t:end -->")
    new = replace_block(TEXT, "t", "\nnew\nlines\n")
    assert new == "# Title\n\nbefore\n<!-- t:begin -->\nnew\nlines\n<!-- t:end -->\nafter\n"
    assert read_block(new, "t") == "new\nlines"
    assert replace_block(new, "t", "old") == TEXT


def test_render_table_puts_the_note_before_the_table():
    new = render_table(TEXT, "t", ("k", "v"), [["a", 1]], note="Measured today.")
    assert read_block(new, "t") == "Measured today.\n\n| k | v |\n|---|---|\n| a | 1 |"


@pytest.mark.parametrize(
    "text, message",
    [
        ("no markers", "exactly one <!-- t:begin -->"),
        (TEXT + "<!-- t:end -->", "found 1 and 2"),
        ("<!-- t:end -->\n<!-- t:begin -->", "comes before"),
    ],
)
def test_bad_markers_are_refused(text, message):
    with pytest.raises(ValueError, match=message):
        replace_block(text, "t", "x")
