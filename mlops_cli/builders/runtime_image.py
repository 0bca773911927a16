"""The runtime image: the stages a Dockerfile's last stage starts FROM, built once as an image of their own.

After a model-only change every layer but the model's is the same, yet buildah's layer cache
still has to find each cached step, and for `COPY --from=deps /opt/venv` it does so by copying and
hashing the whole venv (scikit-learn, scipy, numpy with bytecode: 2.4-3.7 s of every build). So
the builder builds the last stage's base stage (`FROM runtime`) with `--target runtime` once,
tags it with a key of everything that goes into it, and builds only the remaining stages on it.

The key is a sha256 over: this scheme's version, the text of the stages the runtime needs (its
own, and those it copies from or starts from), the image ID of every base image they start from,
and every file (path, mode, content) and symlink that they COPY from the build context. Anything
the key could not see makes the Dockerfile ineligible (`plan` returns None with the reason) and
the build falls back to one plain build of every stage: ADD, ARG, a `$`, RUN --mount, a COPY in
JSON form or with a glob, COPY --from an image, a `.dockerignore`, a stage after the runtime
stages that copies from them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

KEY_VERSION = "mlops-runtime-image/1"
REPOSITORY = "localhost/mlops-runtime"
KEY_LABEL = "io.mlops.runtime.key"
FROM_LINE = re.compile(r"FROM\s", re.IGNORECASE)


@dataclass
class Stage:
    base: str  # what FROM names: an image reference or an earlier stage's name
    name: str | None
    text: str  # the stage's lines as written, from its FROM line on
    instructions: list[str] = field(default_factory=list)  # logical lines (continuations joined)


@dataclass(frozen=True)
class Plan:
    runtime: str  # the stage the last stage starts FROM
    bases: tuple[str, ...]  # image references the runtime stages start FROM
    root_base: str | None  # the image the runtime stage's own layers start with (None: scratch)
    sources: tuple[str, ...]  # context paths the runtime stages COPY
    section: str  # the runtime stages' text, in file order
    rest: tuple[str, ...]  # the other stages' text, the last one's FROM line removed
    rest_bases: tuple[str, ...] = ()  # image references the other stages start FROM

    def runtime_dockerfile(self, key: str) -> str:
        """The runtime stages alone, the runtime last, labelled with its key (buildah 1.28 puts no `--label`
        on a `--target` stage that is not the file's last)."""
        return self.section + ("" if self.section.endswith("\n") else "\n") + f'LABEL "{KEY_LABEL}"="{key}"\n'

    def final_dockerfile(self, runtime_image: str) -> str:
        """The stages after the runtime, the last one starting FROM the runtime image."""
        *others, last = self.rest
        return "".join(others) + f"FROM {runtime_image}\n" + last


def _logical_lines(lines: list[str]) -> list[str]:
    out: list[str] = []
    pending = ""
    for raw in lines:
        stripped = raw.strip()
        if not stripped or stripped.startswith("#"):
            continue  # comments and blank lines end nothing, even inside a continuation
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        out.append(pending + stripped)
        pending = ""
    if pending:
        out.append(pending.strip())
    return out


def parse(text: str) -> tuple[list[str], list[Stage]]:
    """The instructions before the first FROM, and the stages."""
    preamble: list[str] = []
    stages: list[Stage] = []
    chunk: list[str] = []
    continued = False
    for raw in text.splitlines(keepends=True):
        stripped = raw.strip()
        if not continued and FROM_LINE.match(stripped):
            if stages:
                stages[-1].text = "".join(chunk)
            else:
                preamble = _logical_lines(chunk)
            words = stripped.split()
            name = words[3] if len(words) == 4 and words[2].upper() == "AS" else None
            stages.append(Stage(base=words[1] if len(words) > 1 else "", name=name, text=""))
            chunk = []
        chunk.append(raw)
        if stripped and not stripped.startswith("#"):
            continued = stripped.endswith("\\")
    if stages:
        stages[-1].text = "".join(chunk)
    else:
        preamble = _logical_lines(chunk)
    for stage in stages:
        stage.instructions = _logical_lines(stage.text.splitlines(keepends=True))
        stage.instructions = stage.instructions[1:]  # without the FROM line
    return preamble, stages


def _from_flag(words: list[str]) -> str | None:
    for word in words:
        if word.startswith("--from="):
            return word.split("=", 1)[1]
    return None


def plan(dockerfile: Path) -> tuple[Plan | None, str]:
    """The runtime plan of a Dockerfile, or None and why not."""
    context = dockerfile.parent
    if (context / ".dockerignore").exists() or (context / ".containerignore").exists():
        return None, "the context has an ignore file"
    preamble, stages = parse(dockerfile.read_text(encoding="utf-8"))
    if preamble:
        return None, "instructions before the first FROM"
    if len(stages) < 2:
        return None, "a single stage"
    names = {s.name.lower(): i for i, s in enumerate(stages) if s.name}
    if len(names) != sum(1 for s in stages if s.name):
        return None, "two stages of one name"
    last = stages[-1]
    start = names.get(last.base.lower())
    if start is None:
        return None, "the last stage does not start FROM an earlier stage"

    needed: set[int] = set()
    todo = [start]
    while todo:
        index = todo.pop()
        if index in needed:
            continue
        needed.add(index)
        stage = stages[index]
        if stage.base.lower() in names:
            todo.append(names[stage.base.lower()])
        for line in stage.instructions:
            words = line.split()
            if words[0].upper() == "COPY" and (source := _from_flag(words)) is not None:
                if source.lower() not in names or names[source.lower()] >= index:
                    return None, f"COPY --from={source} names no earlier stage"
                todo.append(names[source.lower()])

    bases: list[str] = []
    sources: list[str] = []
    for index in sorted(needed):
        stage = stages[index]
        if "$" in stage.text:
            return None, "a variable in the runtime stages"
        if stage.base.lower() not in names and stage.base.lower() != "scratch" and stage.base not in bases:
            bases.append(stage.base)
        for line in stage.instructions:
            words = line.split()
            keyword = words[0].upper()
            if keyword in ("ADD", "ARG", "ONBUILD"):
                return None, f"{keyword} in the runtime stages"
            if keyword == "RUN" and any(w.startswith("--mount") for w in words[1:]):
                return None, "RUN --mount in the runtime stages"
            if keyword == "COPY" and _from_flag(words) is None:
                args = [w for w in words[1:] if not w.startswith("--")]
                if line[4:].lstrip().startswith("[") or len(args) < 2:
                    return None, "a COPY in JSON form or without a destination"
                for source in args[:-1]:
                    if any(ch in source for ch in "*?[") or ".." in PurePosixPath(source).parts:
                        return None, f"COPY source {source} is a pattern or leaves the context"
                    sources.append(source)
    for index, stage in enumerate(stages):
        if index in needed or index == len(stages) - 1:
            continue
        if stage.base.lower() in names and names[stage.base.lower()] in needed:
            return None, f"stage {stage.name or index} starts FROM a runtime stage"
        for line in stage.instructions:
            source = _from_flag(line.split())
            if source is not None and names.get(source.lower()) in needed:
                return None, f"stage {stage.name or index} copies from a runtime stage"
    for line in last.instructions:
        source = _from_flag(line.split())
        if source is not None and names.get(source.lower()) in needed:
            return None, "the last stage copies from a runtime stage"

    root = stages[start]
    while root.base.lower() in names:
        root = stages[names[root.base.lower()]]
    last_text = last.text.split("\n", 1)[1] if "\n" in last.text else ""
    return (
        Plan(
            runtime=stages[start].name or "",
            bases=tuple(bases),
            root_base=None if root.base.lower() == "scratch" else root.base,
            sources=tuple(sources),
            section="".join(stages[i].text for i in sorted(needed)),
            rest=tuple(s.text for i, s in enumerate(stages[:-1]) if i not in needed) + (last_text,),
            rest_bases=tuple(
                dict.fromkeys(
                    s.base
                    for i, s in enumerate(stages[:-1])
                    if i not in needed and s.base.lower() not in names and s.base.lower() != "scratch"
                )
            ),
        ),
        "",
    )


def _entries(context: Path, source: str):
    """(relative path, kind, mode, content digest or link target) of a COPY source, recursively."""
    path = context / source.lstrip("/")
    rel = path.relative_to(context).as_posix()
    if path.is_symlink():
        yield rel, "l", 0, os.readlink(path)
        return
    if not path.exists():
        yield rel, "missing", 0, ""
        return
    mode = stat.S_IMODE(path.stat().st_mode)
    if path.is_dir():
        yield rel, "d", mode, ""
        for child in sorted(path.iterdir()):
            yield from _entries(context, child.relative_to(context).as_posix())
        return
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    yield rel, "f", mode, digest.hexdigest()


def content_key(runtime_plan: Plan, context: Path, base_ids: dict[str, str]) -> str:
    """sha256 over everything that goes into the runtime image (see the module's docstring)."""
    digest = hashlib.sha256()
    head = {"version": KEY_VERSION, "section": runtime_plan.section, "bases": base_ids}
    digest.update(json.dumps(head, sort_keys=True).encode() + b"\n")
    for source in runtime_plan.sources:
        for entry in _entries(context, source):
            digest.update(json.dumps(entry).encode() + b"\n")
    return digest.hexdigest()
