"""An interpreter for the subset of U-Boot hush and GRUB script that ``config/boot/`` uses.

Enough of both languages to run the shipped boot scripts on a simulated board
whose environment lives in a real U-Boot env image (read and written with the
real ``fw_printenv``/``fw_setenv``) or a real grubenv block (``grub-editenv``).
Anything outside the subset is a :class:`ScriptError`, so a script that grows
past what is checked here fails its test instead of passing untested.

Semantics followed (from the U-Boot and GRUB sources and manuals):

* words: ``'...'`` literal, ``"..."`` and bare text expand ``${name}``/``$name``
  when the command runs (U-Boot's hush substitutes at execution, per command);
  ``;`` and newlines separate commands; ``#`` starts a comment.
* ``if``/``elif``/``else``/``fi``, ``for NAME in WORDS; do ...; done``, GRUB's
  ``menuentry TITLE { ... }``.
* ``test``/``[``: ``!``, ``-z``, ``-n``, ``=``, ``!=``, ``-eq -ne -lt -le -gt -ge``
  (integers as C ``simple_strtol``/``grub_strtol`` read them: leading digits, else 0).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Callable, Iterator, Sequence

Segment = tuple[str, bool]  # text, expands ${...}
VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")
KEYWORDS = frozenset({"if", "then", "elif", "else", "fi", "for", "in", "do", "done", "{", "}"})


class ScriptError(Exception):
    """The script uses something outside the interpreted subset, or is malformed."""


@dataclasses.dataclass(frozen=True)
class Word:
    segments: tuple[Segment, ...]

    @property
    def literal(self) -> str | None:
        """The word's text if it is one bare, unexpanded token (a keyword candidate)."""
        if len(self.segments) == 1 and self.segments[0][1] and "$" not in self.segments[0][0]:
            return self.segments[0][0]
        return None

    @property
    def raw(self) -> str:
        """The word's text as written, quotes removed and nothing expanded."""
        return "".join(text for text, _ in self.segments)

    def variables(self) -> set[str]:
        return {a or b for text, expand in self.segments if expand for a, b in VAR.findall(text)}


SEP = Word((("\n", False),))  # a separator token (never a real word: not expandable)


def lex(text: str) -> list[Word]:
    tokens: list[Word] = []
    segments: list[Segment] = []
    i = 0

    def flush() -> None:
        if segments:
            tokens.append(Word(tuple(segments)))
            segments.clear()

    while i < len(text):
        c = text[i]
        if c in " \t":
            flush()
        elif c in ";\n":
            flush()
            tokens.append(SEP)
        elif c == "#" and not segments:
            while i < len(text) and text[i] != "\n":
                i += 1
            continue
        elif c == "'":
            end = text.find("'", i + 1)
            if end < 0:
                raise ScriptError("unterminated '")
            segments.append((text[i + 1 : end], False))
            i = end
        elif c == '"':
            out = []
            i += 1
            while i < len(text) and text[i] != '"':
                if text[i] == "\\" and i + 1 < len(text) and text[i + 1] in '"\\$':
                    i += 1
                out.append(text[i])
                i += 1
            if i >= len(text):
                raise ScriptError('unterminated "')
            segments.append(("".join(out), True))
        elif c in "&|<>()`":
            raise ScriptError(f"{c!r} is outside the interpreted subset")
        elif c == "\\":
            if i + 1 >= len(text):
                raise ScriptError("trailing backslash")
            segments.append((text[i + 1], False))
            i += 1
        else:
            start = i
            while i < len(text) and text[i] not in " \t;\n'\"&|<>()`\\":
                i += 1
            segments.append((text[start:i], True))
            continue
        i += 1
    flush()
    return tokens


@dataclasses.dataclass(frozen=True)
class Command:
    words: tuple[Word, ...]


@dataclasses.dataclass(frozen=True)
class If:
    branches: tuple[tuple[tuple[Node, ...], tuple[Node, ...]], ...]
    otherwise: tuple[Node, ...]


@dataclasses.dataclass(frozen=True)
class For:
    name: str
    words: tuple[Word, ...]
    body: tuple[Node, ...]


@dataclasses.dataclass(frozen=True)
class MenuEntry:
    title: tuple[Word, ...]
    body: tuple[Node, ...]


Node = Command | If | For | MenuEntry


class _Parser:
    def __init__(self, tokens: list[Word]) -> None:
        self.tokens = tokens
        self.pos = 0

    def _peek(self) -> Word | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def _skip_seps(self) -> None:
        while self._peek() is SEP:
            self.pos += 1

    def _expect(self, keyword: str) -> None:
        self._skip_seps()
        token = self._peek()
        if token is None or token.literal != keyword:
            raise ScriptError(f"expected {keyword!r}")
        self.pos += 1

    def parse(self, until: frozenset[str] = frozenset()) -> tuple[Node, ...]:
        nodes: list[Node] = []
        while True:
            self._skip_seps()
            token = self._peek()
            if token is None:
                if until:
                    raise ScriptError(f"missing {'/'.join(sorted(until))}")
                return tuple(nodes)
            if token.literal in until:
                return tuple(nodes)
            nodes.append(self._statement())

    def _statement(self) -> Node:
        token = self._peek()
        assert token is not None
        if token.literal == "if":
            return self._if()
        if token.literal == "for":
            return self._for()
        if token.literal in KEYWORDS:
            raise ScriptError(f"unexpected {token.literal!r}")
        words: list[Word] = []
        while (token := self._peek()) is not None and token is not SEP:
            if token.literal == "{" and words and words[0].literal == "menuentry":
                self.pos += 1
                body = self.parse(frozenset({"}"}))
                self.pos += 1
                return MenuEntry(tuple(words[1:]), body)
            words.append(token)
            self.pos += 1
        return Command(tuple(words))

    def _if(self) -> If:
        branches = []
        keyword = "if"
        otherwise: tuple[Node, ...] = ()
        while keyword in ("if", "elif"):
            self.pos += 1
            condition = self.parse(frozenset({"then"}))
            self._expect("then")
            body = self.parse(frozenset({"elif", "else", "fi"}))
            branches.append((condition, body))
            token = self._peek()
            assert token is not None and token.literal is not None
            keyword = token.literal
        if keyword == "else":
            self.pos += 1
            otherwise = self.parse(frozenset({"fi"}))
        self._expect("fi")
        return If(tuple(branches), otherwise)

    def _for(self) -> For:
        self.pos += 1
        name = self._peek()
        if name is None or name.literal is None:
            raise ScriptError("for needs a variable name")
        self.pos += 1
        self._expect("in")
        words: list[Word] = []
        while (token := self._peek()) is not None and token is not SEP:
            words.append(token)
            self.pos += 1
        self._expect("do")
        body = self.parse(frozenset({"done"}))
        self._expect("done")
        return For(name.literal, tuple(words), body)


def parse(text: str) -> tuple[Node, ...]:
    return _Parser(lex(text)).parse()


def walk(nodes: Sequence[Node]) -> Iterator[Node]:
    for node in nodes:
        yield node
        if isinstance(node, If):
            for condition, body in node.branches:
                yield from walk(condition)
                yield from walk(body)
            yield from walk(node.otherwise)
        elif isinstance(node, For | MenuEntry):
            yield from walk(node.body)


def words_of(node: Node) -> tuple[Word, ...]:
    if isinstance(node, Command):
        return node.words
    if isinstance(node, For):
        return node.words
    if isinstance(node, MenuEntry):
        return node.title
    return ()


def strtol(text: str) -> int:
    match = re.match(r"\s*(-?\d+)", text)
    return int(match.group(1)) if match else 0


def evaluate_test(args: Sequence[str]) -> bool:
    if args and args[0] == "!":
        return not evaluate_test(args[1:])
    if len(args) == 1:
        return args[0] != ""
    if len(args) == 2 and args[0] in ("-z", "-n"):
        return (args[1] == "") == (args[0] == "-z")
    if len(args) == 3:
        a, op, b = args
        if op == "=":
            return a == b
        if op == "!=":
            return a != b
        numeric = {
            "-eq": lambda x, y: x == y,
            "-ne": lambda x, y: x != y,
            "-lt": lambda x, y: x < y,
            "-le": lambda x, y: x <= y,
            "-gt": lambda x, y: x > y,
            "-ge": lambda x, y: x >= y,
        }
        if op in numeric:
            return bool(numeric[op](strtol(a), strtol(b)))
    raise ScriptError(f"test {' '.join(args)!r} is outside the interpreted subset")


Builtin = Callable[["Shell", list[str]], int]


class Shell:
    """Runs parsed nodes over ``variables`` with the dialect's ``builtins``."""

    def __init__(self, variables: dict[str, str], builtins: dict[str, Builtin]) -> None:
        self.variables = variables
        self.builtins = builtins
        self.entries: list[MenuEntry] = []

    def expand(self, word: Word) -> str:
        return "".join(
            VAR.sub(lambda m: self.variables.get(m.group(1) or m.group(2), ""), text)
            if expand
            else text
            for text, expand in word.segments
        )

    def run(self, nodes: Sequence[Node]) -> int:
        status = 0
        for node in nodes:
            status = self._one(node)
        return status

    def _one(self, node: Node) -> int:
        if isinstance(node, Command):
            argv = [self.expand(w) for w in node.words]
            builtin = self.builtins.get(argv[0])
            if builtin is None:
                raise ScriptError(f"command {argv[0]!r} is outside the interpreted subset")
            return builtin(self, argv)
        if isinstance(node, If):
            for condition, body in node.branches:
                if self.run(condition) == 0:
                    return self.run(body)
            return self.run(node.otherwise)
        if isinstance(node, For):
            status = 0
            for value in [self.expand(w) for w in node.words]:
                self.variables[node.name] = value
                status = self.run(node.body)
            return status
        self.entries.append(node)
        return 0


def cmd_test(shell: Shell, argv: list[str]) -> int:
    args = argv[1:]
    if argv[0] == "[":
        if not args or args[-1] != "]":
            raise ScriptError("[ without ]")
        args = args[:-1]
    return 0 if evaluate_test(args) else 1
