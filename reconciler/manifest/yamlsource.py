"""YAML text -> plain Python data plus a way to find any field's line and column.

ruamel.yaml's round-trip loader keeps positions; it is safe (it never builds arbitrary Python
objects from tags). We add the limits a daemon reading untrusted pushes needs: a size cap read
before parsing, a nesting cap, and a cap on nodes after alias expansion (the "billion laughs"
bomb is cheap to parse because aliases are shared, and only explodes when expanded).
"""

from __future__ import annotations

import datetime as _dt
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from reconciler.manifest.errors import FieldPath

MAX_FILE_BYTES = 8 * 1024 * 1024
MAX_DEPTH = 64
YAML11_BOOLEANS = frozenset({"yes", "no", "on", "off", "y", "n"})
MAX_NODES = 1_000_000  # per file, all its documents together (aliases expanded)


class YamlProblem(Exception):
    """A problem in the YAML text itself, with a 1-based position."""

    def __init__(self, message: str, line: int = 1, column: int = 1) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column


@dataclass
class Document:
    data: Any  # plain dict/list/str/int/float/bool/None
    node: Any  # the ruamel node, kept for positions
    line: int  # where the document starts, 1-based
    nodes: int = 0  # its size with aliases expanded

    def unquoted_yaml11_booleans(self) -> list[tuple[FieldPath, str]]:
        """Unquoted scalars that YAML 1.1, which kubectl and Helm read, takes as booleans
        (yes, no, on, off, y, n) and YAML 1.2 as strings: the same file means one thing to
        Kubernetes tools and another here, unless quoted."""
        found: list[tuple[FieldPath, str]] = []

        def walk(node: Any, path: FieldPath) -> None:
            if isinstance(node, CommentedMap):
                for key, value in node.items():
                    walk(value, (*path, key))
            elif isinstance(node, CommentedSeq):
                for i, value in enumerate(node):
                    walk(value, (*path, i))
            elif type(node) is str and node.lower() in YAML11_BOOLEANS:  # quoted: a subclass
                found.append((path, node))

        walk(self.node, ())
        return found

    def locate(self, path: FieldPath) -> tuple[int, int]:
        """Best (line, column) for a field path: the deepest part of it that exists."""
        node = self.node
        line, col = self.line, 1
        if isinstance(node, (CommentedMap, CommentedSeq)):
            line, col = node.lc.line + 1, node.lc.col + 1
        for part in path:
            if isinstance(node, CommentedMap) and part in node:
                kl, kc = node.lc.key(part)
                line, col = kl + 1, kc + 1
                node = node[part]
            elif isinstance(node, CommentedSeq) and isinstance(part, int) and part < len(node):
                il, ic = node.lc.item(part)
                line, col = il + 1, ic + 1
                node = node[part]
            else:
                break
        return line, col


def read_text(raw: bytes) -> str:
    if len(raw) > MAX_FILE_BYTES:
        raise YamlProblem(f"file is larger than the {MAX_FILE_BYTES // (1024 * 1024)} MiB limit")
    if b"\x00" in raw:
        raise YamlProblem("file is binary (contains NUL bytes), not YAML")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        line_start = raw.rfind(b"\n", 0, err.start) + 1
        line = raw.count(b"\n", 0, err.start) + 1
        column = len(raw[line_start : err.start].decode("utf-8", errors="replace")) + 1
        raise YamlProblem(
            f"file is not valid UTF-8 (byte {err.start}, 0x{raw[err.start]:02x}): save it as"
            " UTF-8",
            line,
            column,
        ) from None


def parse_documents(text: str) -> Iterator[Document]:
    """Yield each non-empty document; raise YamlProblem with the position of a syntax error."""
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    yaml.preserve_quotes = True  # a quoted "yes" is a string everywhere; a plain one is not
    try:
        if _might_nest_deeper_than_limit(text):
            _check_depth_iteratively(yaml, text)
        total = 0  # the limit is per file: 32 documents of a million nodes each are a bomb too
        for node in yaml.load_all(text):
            if node is None:
                continue
            line = node.lc.line + 1 if isinstance(node, (CommentedMap, CommentedSeq)) else 1
            nodes = _check_size(node, MAX_NODES - total)
            total += nodes
            yield Document(data=_to_plain(node, 0), node=node, line=line, nodes=nodes)
    except MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        parts = [p for p in (err.context, err.problem) if p]
        message = "; ".join(str(p).strip() for p in parts) or "invalid YAML"
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        raise YamlProblem(f"YAML syntax: {message}", line, col) from None
    except RecursionError:
        raise YamlProblem(f"nesting is deeper than {MAX_DEPTH} levels") from None
    except YAMLError as err:
        raise YamlProblem(f"YAML: {str(err).strip().splitlines()[0]}") from None
    except (IndexError, ValueError, TypeError) as err:
        # ruamel.yaml's own constructors crash on a few scalars it resolves as numbers
        # (`+_` is an int to its resolver, and an empty one to its constructor)
        raise YamlProblem(
            f"YAML: a value the parser cannot read ({type(err).__name__}); quote unusual"
            " scalars such as `+_`"
        ) from None


_LINE_PREFIX = re.compile(r"^[ \t]*(?:[-?:][ \t]+)*", re.MULTILINE)
_FLOW = re.compile(r"[\[\]{}]")


def _might_nest_deeper_than_limit(text: str) -> bool:
    """Cheap upper bound: block nesting needs indentation or `- ` prefixes, flow nesting needs
    brackets. Only texts that fail it pay for the exact (event-based) check below, which in
    turn keeps ruamel's recursive composer from ever hitting Python's recursion limit."""
    prefix = max((len(m.group(0)) for m in _LINE_PREFIX.finditer(text)), default=0)
    depth = deepest = 0
    for m in _FLOW.finditer(text):
        depth += 1 if m.group(0) in "[{" else -1
        deepest = max(deepest, depth)
    return prefix + deepest > MAX_DEPTH


def _check_depth_iteratively(yaml: YAML, text: str) -> None:
    depth = 0
    for event in yaml.parse(text):
        name = type(event).__name__
        if name in ("MappingStartEvent", "SequenceStartEvent"):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                raise YamlProblem(
                    f"nesting is deeper than {MAX_DEPTH} levels", mark.line + 1, mark.column + 1
                )
        elif name in ("MappingEndEvent", "SequenceEndEvent"):
            depth -= 1


def _check_size(root: Any, budget: int) -> int:
    """The document's size with aliases expanded, rejected over `budget` before anything is
    expanded: sizes are memoised per shared node, so this costs one visit per distinct node
    however large the expansion would be."""
    sizes: dict[int, int] = {}

    def size(node: Any, depth: int) -> int:
        if depth > MAX_DEPTH:
            line = node.lc.line + 1 if isinstance(node, (CommentedMap, CommentedSeq)) else 1
            raise YamlProblem(f"nesting is deeper than {MAX_DEPTH} levels", line)
        if not isinstance(node, (dict, list)):
            return 1
        known = sizes.get(id(node))
        if known is None:
            children = node.values() if isinstance(node, dict) else node
            known = 1 + sum(size(child, depth + 1) for child in children)
            sizes[id(node)] = known
        return known

    total = size(root, 0)
    if total > budget:
        raise YamlProblem(
            f"the file expands to over {MAX_NODES:,} nodes, the limit per file (a YAML alias bomb?)"
        )
    return total


def _to_plain(node: Any, depth: int) -> Any:
    if depth > MAX_DEPTH:
        line = node.lc.line + 1 if isinstance(node, (CommentedMap, CommentedSeq)) else 1
        raise YamlProblem(f"nesting is deeper than {MAX_DEPTH} levels", line)
    if isinstance(node, dict):
        out: dict[Any, Any] = {}
        for key, value in node.items():
            plain_key = _to_plain(key, depth + 1)
            if isinstance(plain_key, (dict, list)):
                raise YamlProblem("mapping keys must be scalars", *_pos(node, key))
            out[plain_key] = _to_plain(value, depth + 1)
        return out
    if isinstance(node, list):
        return [_to_plain(item, depth + 1) for item in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, (_dt.date, _dt.datetime)):
        return node.isoformat()
    if isinstance(node, str):
        return str(node)
    if isinstance(node, bytes):
        raise YamlProblem("binary (!!binary) values are not supported")
    # Tagged scalars and other exotic nodes: keep their text, the schema decides.
    return str(getattr(node, "value", node))


def _pos(node: CommentedMap, key: Any) -> tuple[int, int]:
    try:
        line, col = node.lc.key(key)
        return line + 1, col + 1
    except (KeyError, TypeError):
        return node.lc.line + 1, node.lc.col + 1
