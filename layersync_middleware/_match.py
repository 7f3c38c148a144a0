"""Path matching: every pattern compiled once into one anchored regex.

Rules (see the README's table):

* a pattern is an absolute path; ``*`` is exactly one non-empty segment,
  ``**`` is any number of segments (zero included);
* inside a segment ``*`` is any run of characters but ``/`` (``/api/*cart*``);
* Next.js-style parameters: ``:name`` one segment, ``:name?`` zero or one,
  ``:name*`` zero or more, ``:name+`` one or more segments;
* a trailing ``/`` on the request path is ignored; matching is case-sensitive.

Each pattern may name the event names the pairing headers may carry on it; without
names, the name the browser SDK itself would stamp on that URL is the only one
allowed (``/api/cart/add`` -> ``add_to_cart``), so a forged ``purchase`` header on a
cart route is refused.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import NamedTuple, Union

from ._wire import browser_event_name_for

ANY_NAME = "*"
NAME_RE = re.compile(r"[a-z][a-z0-9_]{0,63}")
_PARAM_RE = re.compile(r":([A-Za-z_][A-Za-z0-9_]*)([?*+]?)")
_LITERAL_RE = re.compile(r"[A-Za-z0-9._~!$&'@=;%,*-]+")

NamesSpec = Union[str, Iterable[str], None]
MatcherSpec = Union[str, Iterable[Union[str, "Rule"]], Mapping[str, NamesSpec]]


class Rule(NamedTuple):
    pattern: str
    # None: the name the browser SDK derives from the URL; {"*"}: any valid name.
    names: frozenset[str] | None

    def allows(self, event_name: str, path: str, query: str = "") -> bool:
        if self.names is None:
            url = f"{path}?{query}" if query else path
            return browser_event_name_for(url) == event_name
        return ANY_NAME in self.names or event_name in self.names


def _segment_regex(segment: str, pattern: str) -> str:
    """Regex for one segment, its leading slash included."""
    if segment == "**":
        return r"(?:/[^/]+)*"
    if segment == "*":
        return r"/[^/]+"
    param = _PARAM_RE.fullmatch(segment)
    if param:
        modifier = param.group(2)
        return {
            "": r"/[^/]+",
            "?": r"(?:/[^/]+)?",
            "*": r"(?:/[^/]+)*",
            "+": r"(?:/[^/]+)+",
        }[modifier]
    if not _LITERAL_RE.fullmatch(segment) or "**" in segment:
        raise ValueError(
            f"pattern {pattern!r}: segment {segment!r} is not a literal, '*', '**' or ':name' "
            "(regex groups and '?' are not supported)"
        )
    return "/" + "[^/]*".join(re.escape(part) for part in segment.split("*"))


def compile_pattern(pattern: str) -> str:
    if not isinstance(pattern, str) or not pattern.startswith("/"):
        raise ValueError(f"pattern {pattern!r} must be a path starting with '/'")
    if len(pattern) > 512:
        raise ValueError(f"pattern {pattern[:40]!r}... is longer than 512 characters")
    body = pattern.rstrip("/")
    if not body:
        return ""
    segments = body[1:].split("/")
    if any(not s for s in segments):
        raise ValueError(f"pattern {pattern!r} has an empty segment ('//')")
    return "".join(_segment_regex(s, pattern) for s in segments)


def _names(pattern: str, spec: NamesSpec) -> frozenset[str] | None:
    if spec is None:
        return None
    names = [spec] if isinstance(spec, str) else list(spec)
    for name in names:
        if name != ANY_NAME and not (isinstance(name, str) and NAME_RE.fullmatch(name)):
            raise ValueError(f"pattern {pattern!r}: event name {name!r} must be snake_case or '*'")
    if not names:
        raise ValueError(f"pattern {pattern!r}: give at least one event name, or None for the browser's")
    return frozenset(names)


def _rules(spec: MatcherSpec) -> tuple[Rule, ...]:
    if isinstance(spec, str):
        return (Rule(spec, None),)
    if isinstance(spec, Mapping):
        return tuple(Rule(p, _names(p, n)) for p, n in spec.items())
    rules: list[Rule] = []
    for item in spec:
        if isinstance(item, Rule):
            rules.append(item)
        elif isinstance(item, str):
            rules.append(Rule(item, None))
        else:
            raise ValueError(f"matcher entries must be path patterns (strings), got {type(item).__name__}")
    return tuple(rules)


class Matcher:
    """All patterns in one regex; ``match(path)`` costs one ``fullmatch``."""

    __slots__ = ("_regex", "rules")

    def __init__(self, spec: MatcherSpec = ()) -> None:
        self.rules = _rules(spec)
        parts = []
        for i, rule in enumerate(self.rules):
            if not isinstance(rule.pattern, str):
                raise ValueError(f"matcher entries must be path patterns (strings), got {rule.pattern!r}")
            parts.append(f"(?P<p{i}>{compile_pattern(rule.pattern)})")
        # A trailing slash on the request path is ignored; an empty alternation never matches.
        self._regex = re.compile(f"(?:{'|'.join(parts)})/?" if parts else r"(?!)")

    def match(self, path: str) -> Rule | None:
        m = self._regex.fullmatch(path)
        if m is None or m.lastgroup is None:
            return None
        return self.rules[int(m.lastgroup[1:])]

    def __bool__(self) -> bool:
        return bool(self.rules)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Matcher) and other.rules == self.rules

    def __hash__(self) -> int:
        return hash(self.rules)

    def __repr__(self) -> str:
        shown = [r.pattern if r.names is None else f"{r.pattern}={'|'.join(sorted(r.names))}" for r in self.rules]
        return f"Matcher({shown!r})"


def parse_matcher_env(value: str) -> dict[str, NamesSpec]:
    """``"/api/cart/*, /api/orders/*=purchase|refund"`` -> a matcher mapping."""
    spec: dict[str, NamesSpec] = {}
    for raw in value.split(","):
        entry = raw.strip()
        if not entry:
            continue
        pattern, sep, names = entry.partition("=")
        spec[pattern.strip()] = [n.strip() for n in names.split("|") if n.strip()] if sep else None
    return spec
