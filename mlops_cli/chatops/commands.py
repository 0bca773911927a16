"""The `/mlops` slash command's words: parsed into a typed Command, or a one-line usage error."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import UsageError
from ..sources import parse_ref
from ..sources.metadata import NAME_RE

TARGETS = ("local", "container", "kubernetes")
ENVS = ("test", "prod")

HELP = "\n".join(
    [
        "*/mlops* commands:",
        "• `deploy MODEL_REF [to test|prod] [local|container|kubernetes]`: run the release pipeline (deployer)",
        "• `status [test|prod]`: what serves where: model, version, digest, since, by whom (viewer)",
        "• `rollback prod`: run production's previous revision again, after a confirmation (deployer)",
        "• `models [NAME]`: the latest validated versions in the model source (viewer)",
        "• `help`: this list",
    ]
)

ROLE = {"help": "viewer", "status": "viewer", "models": "viewer", "deploy": "deployer", "rollback": "deployer"}
WHAT = {
    "help": "see the commands",
    "status": "see what serves",
    "models": "list models",
    "deploy": "deploy a model",
    "rollback": "roll back",
}


@dataclass(frozen=True)
class Command:
    verb: Literal["help", "deploy", "status", "rollback", "models"]
    model: str | None = None
    env: str | None = None
    target: str | None = None
    name: str | None = None

    @property
    def role(self) -> str:
        return ROLE[self.verb]

    @property
    def what(self) -> str:
        return WHAT[self.verb]


def _unlink(word: str) -> str:
    """Slack wraps what looks like a link in <...> (and <url|label>): the plain word back."""
    if word.startswith("<") and word.endswith(">"):
        return word[1:-1].split("|", 1)[0]
    return word


def parse(text: str, default_env: str) -> Command:
    words = [_unlink(w) for w in text.split()]
    if not words or words[0] == "help":
        return Command("help")
    verb, args = words[0].lower(), words[1:]
    if verb == "deploy":
        if not args:
            raise UsageError("usage: deploy MODEL_REF [to test|prod] [local|container|kubernetes]")
        ref = str(parse_ref(args[0]))
        rest, env, target = args[1:], default_env, None
        if rest[:1] == ["to"]:
            if len(rest) < 2 or rest[1] not in ENVS:
                raise UsageError("deploy: after `to` comes test or prod")
            env, rest = rest[1], rest[2:]
        if rest:
            if rest[0] not in TARGETS or len(rest) > 1:
                raise UsageError(f"deploy: unexpected {' '.join(rest)!r}; the target is one of {', '.join(TARGETS)}")
            target = rest[0]
        return Command("deploy", model=ref, env=env, target=target)
    if verb == "status":
        if len(args) > 1 or (args and args[0] not in ENVS):
            raise UsageError("usage: status [test|prod]")
        return Command("status", env=args[0] if args else None)
    if verb == "rollback":
        if len(args) != 1 or args[0] not in ENVS:
            raise UsageError("usage: rollback prod (or test)")
        return Command("rollback", env=args[0])
    if verb == "models":
        if len(args) > 1 or (args and not NAME_RE.match(args[0])):  # a model name, never a path
            raise UsageError("usage: models [NAME] (a model name: letters, digits, '.', '_', '-')")
        return Command("models", name=args[0] if args else None)
    raise UsageError(f"unknown command {verb!r}; try `/mlops help`")
