"""The model-facing text view: pure functions over nbformat outputs."""

from __future__ import annotations

import base64
import struct
import zlib

from notebook_agent.kernel import TextViewConfig, text_view
from notebook_agent.kernel.outputs import OutputCollector
from notebook_agent.kernel.textview import collapse_carriage_returns, elide, strip_ansi


def _png(width: int, height: int) -> str:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    raw = b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    return base64.b64encode(raw + b"\0" * 64).decode()


def test_stream_result_and_image_placeholder() -> None:
    outs = [
        {"output_type": "stream", "name": "stdout", "text": "hello\n"},
        {"output_type": "execute_result", "execution_count": 1, "metadata": {},
         "data": {"text/plain": "42", "text/html": "<b>42</b>"}},
        {"output_type": "display_data", "metadata": {},
         "data": {"text/plain": "<Figure size 640x480 with 1 Axes>", "image/png": _png(640, 480)}},
    ]
    assert text_view(outs) == "hello\n42\n[image/png 640x480, kept in notebook]\n"


def test_error_shows_name_value_and_end_of_traceback_without_ansi() -> None:
    frames = [f"\x1b[0;32mFile frame{i}.py:{i}\x1b[0m" for i in range(100)]
    out = {"output_type": "error", "ename": "ValueError", "evalue": "bad value",
           "traceback": ["\x1b[0;31m----------\x1b[0m", *frames, "\x1b[0;31mValueError\x1b[0m: bad value"]}
    text = text_view([out])
    assert "\x1b" not in text
    assert text.rstrip().endswith("ValueError: bad value")
    assert "frame99.py" in text and "frame0.py" not in text  # the end is kept, the start elided
    assert "earlier traceback lines omitted" in text


def test_head_and_tail_kept_under_cap_with_count() -> None:
    body = "".join(f"line {i:05d}\n" for i in range(5000))
    cfg = TextViewConfig(max_chars=1000, head_fraction=0.5)
    text = text_view([{"output_type": "stream", "name": "stdout", "text": body}], cfg)
    assert len(text) <= 1000
    assert text.startswith("line 00000\n") and text.endswith("line 04999\n")
    head, marker_and_tail = text.split("[... ", 1)
    cut = int(marker_and_tail.split(" chars elided")[0])
    tail = marker_and_tail.split("...]\n", 1)[1]
    assert len(head) + cut + len(tail) == len(body)  # the marker counts exactly what was cut


def test_elide_is_identity_under_cap() -> None:
    assert elide("short", TextViewConfig(max_chars=10)) == "short"


def test_carriage_returns_and_ansi() -> None:
    assert collapse_carriage_returns("10%\r50%\r100%\ndone\n") == "100%\ndone\n"
    assert strip_ansi("\x1b[1;31mred\x1b[0m") == "red"


def test_collector_merges_streams_caps_bytes_and_clears() -> None:
    c = OutputCollector(max_bytes=100)
    for _ in range(10):
        c.add_message("stream", {"name": "stdout", "text": "x" * 30})
    c.add_message("error", {"ename": "E", "evalue": "v", "traceback": []})
    outs = c.finish()
    assert outs[0]["text"] == "x" * 100 and c.truncated
    assert outs[1]["output_type"] == "error"  # errors are kept past the cap
    assert "output truncated" in outs[-1]["text"]
    assert c.wants_interrupt  # 300 bytes seen > 2 x 100

    c = OutputCollector(max_bytes=1000)
    c.add_message("stream", {"name": "stdout", "text": "old"})
    c.add_message("clear_output", {"wait": True})
    c.add_message("stream", {"name": "stdout", "text": "new"})
    assert c.finish() == [{"output_type": "stream", "name": "stdout", "text": "new"}]

    c = OutputCollector(max_bytes=1000)
    c.add_message("display_data", {"data": {"text/plain": "v1"}, "metadata": {}, "transient": {"display_id": "d"}})
    c.add_message("update_display_data", {"data": {"text/plain": "v2"}, "metadata": {}, "transient": {"display_id": "d"}})
    assert c.finish()[0]["data"] == {"text/plain": "v2"}


def test_the_dropped_output_note_stays_visible_after_a_long_interrupt_traceback() -> None:
    """Capped output, then an interrupt that landed deep in a call: the error that replaces the
    KeyboardInterrupt goes before the collector's note, so the elided view (head and tail) shows
    the note and the error line however long the traceback (seen in CI under load)."""
    from notebook_agent.kernel.cell import _replace_interrupt

    c = OutputCollector(max_bytes=10_000)
    for _ in range(30):
        c.add_message("stream", {"name": "stdout", "text": "x" * 999 + "\n"})
    frames = [f"File /usr/lib/python3/signal.py:{i}, in handler(signum, frame)\n    " + "y" * 150 for i in range(30)]
    c.add_message("error", {"ename": "KeyboardInterrupt", "evalue": "",
                            "traceback": ["Traceback (most recent call last)", *frames, "KeyboardInterrupt"]})
    outs = _replace_interrupt(c.finish(), c.truncated, "OutputLimitExceeded", "The cell kept printing.")
    assert [o["output_type"] for o in outs] == ["stream", "error", "stream"]
    text = text_view(outs, TextViewConfig(max_chars=4000))
    assert len(text) <= 4000 and "chars elided" in text
    assert "output truncated" in text and "OutputLimitExceeded: The cell kept printing." in text
