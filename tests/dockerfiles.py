"""Read Dockerfiles and .dockerignore files the way Docker does, for tests/test_images.py.

Just enough of the Dockerfile grammar for the files in docker/: comments, line continuations,
stages (``FROM image AS name``, ``FROM stage``), and the instruction forms they use. The
.dockerignore matcher follows moby/patternmatcher (the rules both docker build and BuildKit use):
the last matching pattern wins, a pattern matches a path or any of its parent directories,
``!`` re-includes, ``**`` crosses directories, ``*`` and ``?`` do not.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

__all__ = [
    "DockerIgnore",
    "Dockerfile",
    "ImageRef",
    "Instruction",
    "Stage",
    "copy_sources",
    "env_values",
    "exec_form",
    "parse_dockerfile",
    "parse_image",
    "pip_installs",
    "shell_commands",
]


@dataclass(frozen=True)
class Instruction:
    keyword: str  # upper case: RUN, COPY, ENV, ...
    value: str  # the arguments, continuation lines joined
    line: int  # where the instruction starts (1-based)


@dataclass(frozen=True)
class ImageRef:
    repository: str  # e.g. "python" or "pytorch/pytorch"
    tag: str  # "" when absent
    digest: str  # "sha256:<64 hex>" or ""


@dataclass(frozen=True)
class Stage:
    index: int
    base: str  # the FROM argument: an image reference or an earlier stage's name
    name: str  # "" when the stage has no AS name
    instructions: tuple[Instruction, ...]  # after its FROM

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]


@dataclass(frozen=True)
class Dockerfile:
    path: Path
    stages: tuple[Stage, ...]

    @property
    def final(self) -> Stage:
        return self.stages[-1]

    def stage(self, name: str) -> Stage | None:
        return next((s for s in self.stages if s.name and s.name == name), None)

    def lineage(self, stage: Stage) -> list[Stage]:
        """``stage`` and the stages it is built ``FROM``, root (external image) first."""
        chain = [stage]
        while (parent := self.stage(chain[-1].base)) is not None:
            if parent.index >= chain[-1].index:
                raise ValueError(f"{self.path}: stage {parent.name} is used before it is defined")
            chain.append(parent)
        return chain[::-1]

    def external_base(self, stage: Stage) -> str:
        return self.lineage(stage)[0].base

    def image_instructions(self, stage: Stage, keyword: str) -> list[Instruction]:
        """Every ``keyword`` instruction that ends up in the image ``stage`` produces."""
        return [i for s in self.lineage(stage) for i in s.all(keyword)]


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """Instructions with their continuation lines joined; comment lines dropped."""
    lines: list[tuple[int, str]] = []
    pending: list[str] = []
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or not stripped:
            continue  # comments (and parser directives) vanish, even inside a continuation
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending.append(stripped[:-1].strip())
            continue
        pending.append(stripped)
        lines.append((start, " ".join(p for p in pending if p)))
        pending = []
    if pending:
        raise ValueError(f"line {start}: the last instruction ends with a line continuation")
    return lines


def parse_dockerfile(path: Path) -> Dockerfile:
    stages: list[Stage] = []
    current: tuple[int, str, str, list[Instruction]] | None = None
    for number, line in _logical_lines(path.read_text(encoding="utf-8")):
        keyword, _, value = line.partition(" ")
        keyword = keyword.upper()
        value = value.strip()
        if keyword in ("RUN", "COPY") and "<<" in value:
            raise ValueError(f"{path}:{number}: heredocs are not supported by this parser")
        if keyword == "FROM":
            if current is not None:
                stages.append(Stage(current[0], current[1], current[2], tuple(current[3])))
            words = [w for w in value.split() if not w.startswith("--")]
            if len(words) == 1:
                base, name = words[0], ""
            elif len(words) == 3 and words[1].upper() == "AS":
                base, name = words[0], words[2]
            else:
                raise ValueError(f"{path}:{number}: cannot read FROM {value!r}")
            current = (len(stages), base, name, [])
        elif current is None:
            if keyword != "ARG":
                raise ValueError(f"{path}:{number}: {keyword} before the first FROM")
        else:
            current[3].append(Instruction(keyword, value, number))
    if current is not None:
        stages.append(Stage(current[0], current[1], current[2], tuple(current[3])))
    return Dockerfile(path, tuple(stages))


_IMAGE = re.compile(
    r"(?P<repository>[^:@]+(?::[0-9]+/[^:@]+)?)(?::(?P<tag>[\w][\w.-]*))?(?:@(?P<digest>[^@]+))?"
)


def parse_image(reference: str) -> ImageRef:
    match = _IMAGE.fullmatch(reference)
    if match is None:
        raise ValueError(f"not an image reference: {reference!r}")
    return ImageRef(match["repository"], match["tag"] or "", match["digest"] or "")


def _words(value: str) -> tuple[list[str], list[str]]:
    """``(flags, arguments)`` of an instruction in shell or JSON (exec) form."""
    words = shlex.split(value)
    flags = [w for w in words if w.startswith("--")]
    rest = value
    for flag in flags:
        rest = rest.replace(flag, "", 1)
    rest = rest.strip()
    if rest.startswith("["):
        parsed = json.loads(rest)
        if not isinstance(parsed, list) or not all(isinstance(w, str) for w in parsed):
            raise ValueError(f"bad exec form: {value!r}")
        return flags, [str(w) for w in parsed]
    return flags, [w for w in words if not w.startswith("--")]


def exec_form(instruction: Instruction) -> list[str] | None:
    """The JSON-array form of ENTRYPOINT/CMD, or None for the shell form."""
    if not instruction.value.startswith("["):
        return None
    return _words(instruction.value)[1]


def copy_sources(instruction: Instruction) -> list[str]:
    """Build-context paths a COPY/ADD reads; ``[]`` for ``COPY --from=<stage>``."""
    flags, words = _words(instruction.value)
    if any(f.startswith("--from=") for f in flags):
        return []
    return words[:-1]


def env_values(instruction: Instruction) -> dict[str, str]:
    """``ENV a=1 b=2`` (or the legacy ``ENV a 1``) as a dict; values unexpanded."""
    words = shlex.split(instruction.value)
    if words and "=" not in words[0]:
        return {words[0]: " ".join(words[1:])}
    return dict(w.split("=", 1) for w in words)


def shell_commands(run: str) -> list[list[str]]:
    """The simple commands of a shell command line, split at ``&&``, ``||``, ``;`` and ``|``."""
    lexer = shlex.shlex(run, posix=True, punctuation_chars=";&|")
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for token in lexer:
        if token and set(token) <= set(";&|"):
            commands.append([])
        else:
            commands[-1].append(token)
    return [c for c in commands if c]


def pip_installs(run: str) -> list[list[str]]:
    """The arguments after ``pip install`` of each pip call in a RUN command line."""
    calls: list[list[str]] = []
    for words in shell_commands(run):
        for i in range(len(words) - 1):
            is_pip = words[i] in ("pip", "pip3") or words[i].endswith(("/pip", "/pip3"))
            if is_pip and words[i + 1] == "install":
                calls.append(words[i + 2 :])
                break
    return calls


def _translate(pattern: str) -> str:
    """A cleaned .dockerignore pattern as a regular expression (moby/patternmatcher)."""
    out = "^"
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "*":
            if pattern[i + 1 : i + 2] == "*":
                i += 1
                if pattern[i + 1 : i + 2] == "/":
                    i += 1
                out += ".*" if i + 1 >= len(pattern) else "(.*/)?"
            else:
                out += "[^/]*"
        elif ch == "?":
            out += "[^/]"
        elif ch == "[":
            end = pattern.find("]", i + 1)
            if end == -1:
                raise ValueError(f"unclosed [ in {pattern!r}")
            body = pattern[i + 1 : end]
            out += "[" + ("^" + body[1:] if body.startswith("!") else body) + "]"
            i = end
        elif ch == "\\" and i + 1 < len(pattern):
            i += 1
            out += re.escape(pattern[i])
        else:
            out += re.escape(ch)
        i += 1
    return out + "$"


def _clean(pattern: str) -> str:
    """filepath.Clean, without a leading slash (patterns are relative to the context)."""
    parts: list[str] = []
    for part in pattern.split("/"):
        if part in ("", "."):
            continue
        if part == ".." and parts:
            parts.pop()
        else:
            parts.append(part)
    return "/".join(parts) or "."


class DockerIgnore:
    def __init__(self, text: str) -> None:
        self.patterns: list[tuple[re.Pattern[str], bool, str]] = []
        for raw in text.splitlines():
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            exclusion = line.startswith("!")
            cleaned = _clean(line[1:].strip() if exclusion else line)
            self.patterns.append((re.compile(_translate(cleaned)), exclusion, line))

    @classmethod
    def from_file(cls, path: Path) -> DockerIgnore:
        return cls(path.read_text(encoding="utf-8") if path.exists() else "")

    def excludes(self, path: str) -> bool:
        """Whether ``path`` (relative to the context, ``/``-separated) stays out of it."""
        path = _clean(path)
        parents = path.split("/")[:-1]
        candidates = [path] + ["/".join(parents[: i + 1]) for i in range(len(parents))]
        matched = False
        for regex, exclusion, _ in self.patterns:
            if exclusion != matched:
                continue  # an exception can only re-include, a pattern only exclude
            if any(regex.match(c) for c in candidates):
                matched = not exclusion
        return matched
