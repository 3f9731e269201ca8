"""git's pkt-line framing (gitprotocol-common(5)) and protocol v2's command requests
(gitprotocol-v2(5)): the one owner of that wire format. No I/O of its own: a reader is
given a function that reads exactly n bytes."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from enum import Enum

MAX_PKT = 65520  # the largest pkt-line, its 4-byte length included


class Marker(Enum):
    """The special packets: end of a message, end of a section, end of a response."""

    FLUSH = b"0000"
    DELIM = b"0001"
    RESPONSE_END = b"0002"


class ProtocolError(Exception):
    """The other side sent something that is not the protocol."""


def pkt(payload: str | bytes) -> bytes:
    data = payload.encode() if isinstance(payload, str) else payload
    if len(data) + 4 > MAX_PKT:
        raise ValueError(f"pkt-line payload of {len(data)} bytes is over the limit")
    return b"%04x" % (len(data) + 4) + data


def command_request(command: str, capabilities: Iterable[str], args: Iterable[str]) -> bytes:
    """`command=<command>`, the capabilities, a delimiter, the arguments, a flush."""
    parts = [pkt(f"command={command}\n"), *(pkt(f"{c}\n") for c in capabilities)]
    parts += [Marker.DELIM.value, *(pkt(f"{a}\n") for a in args), Marker.FLUSH.value]
    return b"".join(parts)


def packets(read_exact: Callable[[int], bytes]) -> Iterator[bytes | Marker]:
    """Each packet's payload, or the marker; ends at the end of the stream."""
    while True:
        head = read_exact(4)
        if not head:
            return
        try:
            length = int(head, 16)
        except ValueError:
            raise ProtocolError(f"not a pkt-line length: {head!r}") from None
        if length < 4:
            for marker in Marker:
                if marker.value == head:
                    yield marker
                    break
            else:
                raise ProtocolError(f"unknown special packet {head!r}")
            continue
        payload = read_exact(length - 4)
        if len(payload) != length - 4:
            raise ProtocolError("the stream ended inside a pkt-line")
        yield payload


def text(payload: bytes | Marker) -> str | None:
    """A packet's line without its newline; None for a marker."""
    if isinstance(payload, Marker):
        return None
    return payload.decode("utf-8", "replace").removesuffix("\n")
