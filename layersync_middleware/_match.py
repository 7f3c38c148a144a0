"""Path matching, in time linear in the path: no regex backtracking on request input.

Rules (see the README's table):

* a pattern is an absolute path; ``*`` is exactly one non-empty segment,
  ``**`` is any number of segments (zero included);
* inside a segment ``*`` is any run of characters but ``/`` (``/api/*cart*``);
* Next.js-style parameters: ``:name`` one segment, ``:name?`` zero or one,
  ``:name*`` zero or more, ``:name+`` one or more segments;
* a trailing ``/`` on the request path is ignored; matching is case-sensitive;
* the first pattern that matches wins; a path longer than ``MAX_PATH`` characters
  matches nothing (no real route is that long, and it bounds the work per request).

Each pattern may name the event names the pairing headers may carry on it; without
names, the name the browser SDK itself stamps on that URL is the only one allowed
(``/api/cart/add`` -> ``add_to_cart``), so a forged ``purchase`` header on a cart route
is refused. That name is the SDK's, judged as the SDK judges it: on the URL as the
browser sent it, mount prefix and query included (the SDK stamps
``/cart/add?next=/orders`` as ``purchase``). Names written out never look at the query.

Paths no pattern matches fall to the browser SDK's own rules (:class:`EndpointRules`,
on by default): a matcher adds patterns in front of them, it does not replace them,
unless the ``sdk_rules`` setting is off. See :meth:`Matcher.verdict`.

How a path is matched: it is split on ``/`` and walked segment by segment through the
pattern's steps, keeping the set of steps reachable so far (a Thompson NFA, so several
``**`` never backtrack), and an in-segment glob places each literal piece at its first
occurrence after the previous one (greedy, optimal for ``*``-only globs). The work is
O(path length x pattern length) for every pattern, whatever the input.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import NamedTuple, Union

from ._wire import DEFAULT_RULES, EVENT_NAME_HEADER_RE, MAX_URL, EndpointRules

ANY_NAME = "*"
MAX_PATH = 2048
MAX_PATTERN = 512
_PARAM_RE = re.compile(r":([A-Za-z_][A-Za-z0-9_]*)([?*+]?)")
_LITERAL_RE = re.compile(r"[A-Za-z0-9._~!$&'@=;%,*-]+")

NamesSpec = Union[str, Iterable[str], None]
MatcherSpec = Union[str, Iterable[Union[str, "Rule"]], Mapping[str, NamesSpec]]

# A segment test: None is any non-empty segment, a str that exact segment, a tuple
# the literal pieces of a glob around its ``*``s (``*cart*`` -> ("", "cart", "")).
_Test = Union[None, str, tuple[str, ...]]
# How many path segments a step consumes.
_ONE, _OPTIONAL, _MANY = 0, 1, 2
_Step = tuple[int, _Test]


class Rule(NamedTuple):
    pattern: str
    # None: the name the browser SDK derives from the URL; {"*"}: any valid name.
    names: frozenset[str] | None


def _glob_matches(pieces: tuple[str, ...], segment: str) -> bool:
    first, last = pieces[0], pieces[-1]
    if len(segment) < len(first) + len(last) or not (segment.startswith(first) and segment.endswith(last)):
        return False
    pos, end = len(first), len(segment) - len(last)
    for piece in pieces[1:-1]:  # the leftmost placement of each piece never loses a match
        found = segment.find(piece, pos, end)
        if found < 0:
            return False
        pos = found + len(piece)
    return True


def _test_passes(test: _Test, segment: str) -> bool:
    if test is None:
        return True
    if isinstance(test, str):
        return segment == test
    return _glob_matches(test, segment)


def _segment_steps(segment: str, pattern: str) -> tuple[_Step, ...]:
    if segment == "**":
        return ((_MANY, None),)
    if segment == "*":
        return ((_ONE, None),)
    param = _PARAM_RE.fullmatch(segment)
    if param:
        return {
            "": ((_ONE, None),),
            "?": ((_OPTIONAL, None),),
            "*": ((_MANY, None),),
            "+": ((_ONE, None), (_MANY, None)),  # one or more: one, then any number
        }[param.group(2)]
    if not _LITERAL_RE.fullmatch(segment) or "**" in segment:
        raise ValueError(
            f"pattern {pattern!r}: segment {segment!r} is not a literal, '*', '**' or ':name' "
            "(regex groups and '?' are not supported)"
        )
    return ((_ONE, tuple(segment.split("*")) if "*" in segment else segment),)


def _steps(pattern: str) -> tuple[_Step, ...]:
    if not isinstance(pattern, str) or not pattern.startswith("/"):
        raise ValueError(f"pattern {pattern!r} must be a path starting with '/'")
    if len(pattern) > MAX_PATTERN:
        raise ValueError(f"pattern {pattern[:40]!r}... is longer than {MAX_PATTERN} characters")
    body = pattern.rstrip("/")
    if not body:
        return ()
    steps: list[_Step] = []
    for segment in body[1:].split("/"):
        if not segment:
            raise ValueError(f"pattern {pattern!r} has an empty segment ('//')")
        steps += _segment_steps(segment, pattern)
    # ``**/**`` is ``**``; merging keeps the reachable-step sets small.
    merged = [s for i, s in enumerate(steps) if not (s == (_MANY, None) and i and steps[i - 1] == s)]
    return tuple(merged)


class _Compiled:
    """One pattern's steps, with the shortcuts most patterns allow."""

    __slots__ = ("closure", "fixed", "literal", "min_segments", "open_end", "prefix", "steps")

    def __init__(self, pattern: str) -> None:
        self.steps = steps = _steps(pattern)
        # A pattern of plain literals is one string comparison.
        plain = all(kind == _ONE and isinstance(test, str) for kind, test in steps)
        self.literal = "".join(f"/{test}" for _, test in steps) if plain else None
        # Any other pattern first checks its leading literal segments with one
        # startswith, which turns most paths away before they are split.
        lead = 0
        while lead < len(steps) and steps[lead][0] == _ONE and isinstance(steps[lead][1], str):
            lead += 1
        prefix = "".join(f"/{test}" for _, test in steps[:lead])
        self.prefix = prefix + "/" if lead < len(steps) and steps[lead][0] == _ONE else prefix
        # Only one-segment steps, perhaps then one ``**``: each step takes its segment in
        # turn (and ``**`` the rest), no set of reachable steps needed.
        head = steps[:-1] if steps and steps[-1] == (_MANY, None) else steps
        self.fixed = all(kind == _ONE for kind, _ in head)
        self.open_end = len(head) < len(steps)
        self.min_segments = sum(kind == _ONE for kind, _ in steps)
        # closure[i]: the steps reachable from step i without consuming a segment.
        closure: list[frozenset[int]] = []
        for i in range(len(steps) + 1):
            j = i
            while j < len(steps) and steps[j][0] != _ONE:
                j += 1
            closure.append(frozenset(range(i, j + 1)))
        self.closure = tuple(closure)

    def matches(self, segments: list[str]) -> bool:
        steps = self.steps
        if len(segments) < self.min_segments:
            return False
        if self.fixed:
            if len(segments) != self.min_segments and not self.open_end:
                return False
            # A trailing ``**`` passes any segment. A plain loop: all() over a generator
            # doubles the cost of the most common patterns.
            for (_, test), seg in zip(steps, segments):  # noqa: SIM110
                if not _test_passes(test, seg):
                    return False
            return True
        closure = self.closure
        current = closure[0]
        for seg in segments:
            reached: set[int] = set()
            for i in current:
                if i == len(steps):
                    continue
                kind, test = steps[i]
                if _test_passes(test, seg):
                    reached |= closure[i] if kind == _MANY else closure[i + 1]
            if not reached:
                return False
            current = frozenset(reached)
        return len(steps) in current


def _segments(path: str) -> list[str] | None:
    """``/a/b`` -> ["a", "b"] (trailing slash already gone); None when no pattern can match."""
    if not path:
        return []
    if not path.startswith("/"):
        return None
    segments = path[1:].split("/")
    return None if "" in segments else segments  # every pattern step needs a non-empty segment


def _names(pattern: str, spec: NamesSpec) -> frozenset[str] | None:
    if spec is None:
        return None
    names = [spec] if isinstance(spec, str) else list(spec)
    for name in names:
        if name != ANY_NAME and not (isinstance(name, str) and EVENT_NAME_HEADER_RE.fullmatch(name)):
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


SDK_RULES = "the browser SDK's rules"
_VERDICTS = 1024  # (path, url) answers remembered; a shop's cart and order URLs are few
_VERDICT_URL_MAX = 512


class Verdict(NamedTuple):
    """What may pair on a request: ``decided_by`` a pattern, :data:`SDK_RULES`, or None
    when nothing matches; ``names`` the names allowed (None: any valid name)."""

    decided_by: str | None
    names: frozenset[str] | None

    def allows(self, event_name: str) -> bool:
        return self.names is None or event_name in self.names


class Matcher:
    """The patterns in order, then the browser SDK's rules (``sdk=False``: the patterns
    only). ``match(path)`` returns the first rule whose pattern matches the path;
    :meth:`verdict` says which names may pair on a request."""

    __slots__ = ("_compiled", "_verdicts", "endpoints", "rules", "sdk")

    def __init__(self, spec: MatcherSpec = (), *, endpoints: EndpointRules = DEFAULT_RULES, sdk: bool = True) -> None:
        self.rules = _rules(spec)
        for rule in self.rules:
            if not isinstance(rule.pattern, str):
                raise ValueError(f"matcher entries must be path patterns (strings), got {rule.pattern!r}")
        self._compiled = tuple((_Compiled(rule.pattern), rule) for rule in self.rules)
        self.endpoints = endpoints
        self.sdk = sdk
        self._verdicts: dict[tuple[str, str], Verdict] = {}

    def match(self, path: str) -> Rule | None:
        if len(path) > MAX_PATH:
            return None
        if path.endswith("/"):
            path = path[:-1]
        segments: list[str] | None = None
        split = False
        for compiled, rule in self._compiled:
            if compiled.literal is not None:
                if path == compiled.literal:
                    return rule
                continue
            if not path.startswith(compiled.prefix):
                continue
            if not split:  # split once, and only when a pattern needs it
                segments, split = _segments(path), True
            if segments is not None and compiled.matches(segments):
                return rule
        return None

    def verdict(self, path: str, url: str) -> Verdict:
        """Which names may pair on a request routed on ``path`` (without the mount
        prefix) to ``url`` (as the browser sent it: prefix and query included).

        The first pattern matching ``path`` decides; a pattern without names allows the
        name the browser SDK stamps on ``url``. No pattern: the SDK's rules decide on
        ``url``, unless ``sdk`` is off. Remembered per request line (bounded)."""
        key = (path, url)
        try:
            return self._verdicts[key]
        except KeyError:
            pass
        verdict = self._verdict(path, url)
        if len(url) <= _VERDICT_URL_MAX:
            if len(self._verdicts) >= _VERDICTS:
                self._verdicts.clear()
            self._verdicts[key] = verdict
        return verdict

    def _verdict(self, path: str, url: str) -> Verdict:
        rule = self.match(path) if self.rules else None
        if rule is not None:
            if rule.names is None:
                return Verdict(rule.pattern, self._stamped(url))
            return Verdict(rule.pattern, None if ANY_NAME in rule.names else rule.names)
        if self.sdk:
            stamped = self._stamped(url)
            if stamped:
                return Verdict(SDK_RULES, stamped)
        return Verdict(None, frozenset())

    def _stamped(self, url: str) -> frozenset[str]:
        name = self.endpoints.name_for(url) if len(url) <= MAX_URL else None
        return frozenset((name,)) if name else frozenset()

    def with_endpoints(self, endpoints: EndpointRules, *, sdk: bool) -> Matcher:
        """The same patterns over other browser rules."""
        return Matcher(self.rules, endpoints=endpoints, sdk=sdk)

    def __bool__(self) -> bool:
        """Whether anything can pair at all."""
        return bool(self.rules) or self.sdk

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Matcher) and (other.rules, other.sdk, other.endpoints.key) == (
            self.rules,
            self.sdk,
            self.endpoints.key,
        )

    def __hash__(self) -> int:
        return hash((self.rules, self.sdk, self.endpoints.key))

    def __repr__(self) -> str:
        shown = [r.pattern if r.names is None else f"{r.pattern}={'|'.join(sorted(r.names))}" for r in self.rules]
        if self.sdk:
            shown.append("<browser SDK rules>")
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
