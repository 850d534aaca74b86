"""Catalog token strings: each token's UTF-8 *bytes* (held in a str through latin-1).

Byte-level tokenizers split characters: "–" is three tokens, each undecodable alone. A
window is decoded token by token, a character showing on the token that completes it.
"""

from __future__ import annotations

import re

BYTE_TOKEN_RE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table (byte-level BPE token spelling)."""
    keep = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def token_bytes(tokenizer, ids: list[int]) -> list[bytes]:
    """The bytes each token stands for (special tokens: their text)."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    decoder = getattr(backend, "decoder", None)
    byte_level = type(decoder).__name__ == "ByteLevel"
    inverse = {c: b for b, c in _byte_to_unicode().items()} if byte_level else {}
    special = set(getattr(tokenizer, "all_special_ids", [])) | set(
        getattr(tokenizer, "added_tokens_decoder", {})
    )
    out = []
    for i, spelled in zip(ids, tokenizer.convert_ids_to_tokens(list(ids)), strict=True):
        spelled = spelled or ""
        if i in special:
            out.append(spelled.encode())
        elif byte_level and all(c in inverse for c in spelled):
            out.append(bytes(inverse[c] for c in spelled))
        elif (m := BYTE_TOKEN_RE.match(spelled)) is not None:  # SentencePiece byte fallback
            out.append(bytes([int(m.group(1), 16)]))
        elif "\u2581" in spelled:  # SentencePiece word start
            out.append(spelled.replace("\u2581", " ").encode())
        else:
            out.append(tokenizer.decode([i]).encode())
    return out


def decode_pieces(pieces: list[bytes]) -> list[str]:
    """Per-token text of a token window: a split character shows on its last token."""
    out, pending = [], b""
    for piece in pieces:
        pending += piece
        try:
            out.append(pending.decode("utf-8"))
            pending = b""
        except UnicodeDecodeError as err:
            if err.reason == "unexpected end of data" and len(pending) < 4:
                out.append("")  # wait for the rest of the character
            else:  # a window starting mid-character, or bad bytes
                out.append(pending.decode("utf-8", "replace"))
                pending = b""
    return out
