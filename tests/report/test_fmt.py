"""`fmt.visible`: every C0 control, DEL and every C1 control spelled out; everything else as it was."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from normscope.report.fmt import visible
from normscope.report.markdown import md_report
from normscope.report.tables import Table
from normscope.report.terminal import render_tables

CONTROLS = [chr(c) for c in (*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0))]
# the name an attacker gave a tensor: clear the screen, set the window title, then look like the final norm
HOSTILE = "\x1b[2J\x1b]0;owned\x1b\\model.norm.weight"
SHOWN = "\\x1b[2J\\x1b]0;owned\\x1b\\model.norm.weight"


@pytest.mark.parametrize("char", CONTROLS, ids=[f"U+{ord(c):04X}" for c in CONTROLS])
def test_every_control_character_is_spelled_out(char):
    assert visible(f"a{char}b") == f"a{repr(char)[1:-1]}b"  # "\\x1b", "\\n", "\\x9b"
    assert not any(c in visible(char) for c in CONTROLS)


def test_the_hostile_name_and_what_stays():
    assert visible(HOSTILE) == SHOWN
    assert visible("a\nb\tc", keep="\n") == "a\nb\\tc"  # a document keeps its own line breaks
    text = "model.layers.16.post_feedforward_layernorm.weight · |gain| 1657 → 4.69 σ ✅ \\x1b"
    assert visible(text) == text  # printable Unicode and backslashes are data, not controls


@given(st.text())
def test_visible_is_idempotent_and_leaves_no_control(text):
    once = visible(text)
    assert visible(once) == once
    assert not any(c in once for c in CONTROLS)


def test_the_text_sinks_show_a_hostile_name_and_never_emit_it():
    table = Table(f"top {HOSTILE}", (HOSTILE, "value"), ((HOSTILE, "1"),))
    terminal = render_tables([HOSTILE], [table], [("warning", HOSTILE)], width=200)
    markdown = md_report(HOSTILE, [HOSTILE], [table], [("warning", HOSTILE)], sections=[HOSTILE])
    assert "\x1b" not in terminal and "\x1b" not in markdown
    assert terminal.count(SHOWN) == 5  # header line, table title, column, cell, note
    assert markdown.count(SHOWN) == 7  # and the report's title and a section line
