"""Hypothesis strategies for well-formed SCPI response messages and their elements."""

from __future__ import annotations

from hypothesis import strategies as st

from aiotmc.protocol import encode_block

__all__ = [
    "any_element",
    "blocks",
    "messages",
    "numbers",
    "quoted_strings",
    "tricky_words",
    "words",
]

# Strategies for well-formed response messages.
words = st.text("abcXYZ019+-.:_ ", min_size=1, max_size=8).map(str.encode)
tricky_words = st.sampled_from([b"#H1F", b"#B101", b"#Q17", b"O'Neil", b'5.0"', b"a#b", b"#"])
numbers = st.floats(allow_nan=False).map(lambda x: repr(x).encode())


@st.composite
def quoted_strings(draw: st.DrawFn) -> bytes:
    quote = draw(st.sampled_from([b'"', b"'"]))
    content = draw(st.binary(max_size=20))
    return quote + content.replace(quote, quote * 2) + quote


blocks = st.binary(max_size=300).map(encode_block)
any_element = st.one_of(words, tricky_words, numbers, quoted_strings(), blocks)


@st.composite
def messages(draw: st.DrawFn, terminator: bytes = b"\n") -> bytes:
    elements = draw(st.lists(any_element, max_size=6))
    body = b""
    for element in elements:
        body += draw(st.sampled_from([b",", b";", b" "])) + element if body else element
    if draw(st.booleans()):  # an indefinite block ends the message
        payload = draw(st.binary(max_size=50)).replace(terminator, b"")
        if terminator == b"\r\n":
            payload = payload.rstrip(b"\r")  # '\r' + '\r\n' would end one byte early
        body += (b"," if body else b"") + b"#0" + payload
    return body + terminator
