"""The checkpoint registry: named stateful parts, each with `state_dict`/`load_state_dict`
(torchtitan's `states`, EDM2's CheckpointIO). A checkpoint's state.pt is
`{name: part.state_dict()}` over the registry the trainer builds in one place
(`Trainer.registry`), and resuming loads every part back by the same name, so what a
checkpoint holds is readable there and adding a stateful part is one line."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol


class Stateful(Protocol):
    def state_dict(self) -> Any: ...

    def load_state_dict(self, state: Any) -> None: ...


class MissingPart(KeyError):
    """A registry part the checkpoint does not hold."""


class Group:
    """Several stateful parts under one name (the models, the optimisers)."""

    def __init__(self, parts: Mapping[str, Stateful]):
        self.parts = dict(parts)

    def state_dict(self) -> dict:
        return {k: p.state_dict() for k, p in self.parts.items()}

    def load_state_dict(self, state: dict) -> None:
        for k, p in self.parts.items():
            if k not in state:
                raise MissingPart(k)
            p.load_state_dict(state[k])


def state_of(registry: Mapping[str, Stateful]) -> dict:
    return {name: part.state_dict() for name, part in registry.items()}


def load_into(registry: Mapping[str, Stateful], state: Mapping) -> None:
    """Load every part; a part the checkpoint lacks raises MissingPart with its name."""
    for name, part in registry.items():
        if name not in state:
            raise MissingPart(name)
        try:
            part.load_state_dict(state[name])
        except MissingPart as e:
            raise MissingPart(f"{name}.{e.args[0]}") from None
