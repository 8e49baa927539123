"""The one mechanism every process-wide patch uses: replace named attributes of py-libp2p modules or classes, and
put back the exact objects that were there (or remove what was not there) on revert.

The stock objects are captured from ``owner.__dict__`` when the patch is defined, i.e. when its module is imported:
a property or a plain function as stored, not a bound method, so a revert restores identity (``is``), not just
behaviour. Applying twice or reverting twice changes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

_MISSING = object()


@dataclass(frozen=True)
class Replacement:
    owner: Any  # a module or a class of py-libp2p
    name: str
    new: Any


class AttributePatch:
    """Replacements applied and reverted together (see the module doc)."""

    def __init__(self, *replacements: Replacement) -> None:
        self.replacements = replacements
        self._stock = tuple(vars(r.owner).get(r.name, _MISSING) for r in replacements)
        for r, stock in zip(replacements, self._stock):
            if stock is r.new:
                raise RuntimeError(f"{_label(r)} was already patched before the stock object was captured")

    def stock(self, owner: Any, name: str) -> Any:
        """The object ``owner.name`` held before any patch (AttributeError if it had none of its own)."""
        for r, stock in zip(self.replacements, self._stock):
            if r.owner is owner and r.name == name:
                if stock is _MISSING:
                    raise AttributeError(f"{_label(r)} had no attribute of its own")
                return stock
        raise KeyError(f"{owner!r}.{name} is not replaced by this patch")

    def apply(self) -> None:
        for r in self.replacements:
            setattr(r.owner, r.name, r.new)

    def revert(self) -> None:
        for r, stock in zip(self.replacements, self._stock):
            if stock is _MISSING:
                if r.name in vars(r.owner):
                    delattr(r.owner, r.name)
            else:
                setattr(r.owner, r.name, stock)

    def is_applied(self) -> bool:
        return all(vars(r.owner).get(r.name, _MISSING) is r.new for r in self.replacements)

    def is_stock(self) -> bool:
        """Every replaced attribute holds its stock object again (what ``revert`` guarantees)."""
        return all(vars(r.owner).get(r.name, _MISSING) is stock for r, stock in zip(self.replacements, self._stock))

    def targets(self) -> list[str]:
        return [_label(r) for r in self.replacements]


def _label(r: Replacement) -> str:
    owner = getattr(r.owner, "__qualname__", None) or getattr(r.owner, "__name__", repr(r.owner))
    module = getattr(r.owner, "__module__", None)
    prefix = f"{module}." if module and isinstance(r.owner, type) else ""
    return f"{prefix}{owner}.{r.name}"
