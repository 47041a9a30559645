"""The model catalog (configuration, not code): `vgen_app/models.toml`."""

from __future__ import annotations

import math
import tomllib
from functools import lru_cache
from pathlib import Path

from pydantic import BaseModel, Field, model_validator

CATALOG_FILE = Path(__file__).resolve().parent / "models.toml"


class Slot(BaseModel):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{0,31}$")
    kind: str = Field(pattern=r"^(video|audio|image)$")
    label: str
    formats: list[str]  # file extensions accepted, lower case, no dot
    max_mb: int = Field(gt=0)
    max_seconds: int | None = Field(default=None, gt=0)

    @property
    def max_bytes(self) -> int:
        return self.max_mb * 1024 * 1024

    @property
    def accept(self) -> str:
        return ",".join(f".{ext}" for ext in self.formats)


class ModelSpec(BaseModel):
    id: str = Field(pattern=r"^[a-z][a-z0-9-]{0,31}$")
    title: str
    description: str
    output_from: str
    price_per_second: int = Field(gt=0)
    min_price: int = Field(ge=0)
    slot: list[Slot]

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        names = [s.name for s in self.slot]
        if len(set(names)) != len(names):
            raise ValueError(f"{self.id}: duplicate slot names")
        if self.output_from not in names:
            raise ValueError(f"{self.id}: output_from must name a slot")
        return self

    @property
    def slots(self) -> list[Slot]:
        return self.slot

    def get_slot(self, name: str) -> Slot | None:
        return next((s for s in self.slot if s.name == name), None)

    def billed_seconds(self, output_seconds: float) -> int:
        """Started seconds of output (at least one)."""
        return max(1, math.ceil(output_seconds - 1e-6))

    def price_for(self, output_seconds: float) -> int:
        """Tokens for one run: per started second of output, never below the minimum."""
        return max(self.min_price, self.billed_seconds(output_seconds) * self.price_per_second)

    def price_note(self, output_seconds: float) -> str:
        """How `price_for` came about, in words for the page."""
        seconds = self.billed_seconds(output_seconds)
        if seconds * self.price_per_second < self.min_price:
            return f"the minimum price ({seconds} s × {self.price_per_second:,} is less)"
        return f"{seconds} s × {self.price_per_second:,} tokens per second"


class Catalog(BaseModel):
    model: list[ModelSpec]


@lru_cache(maxsize=4)
def load(path: Path = CATALOG_FILE) -> dict[str, ModelSpec]:
    with open(path, "rb") as f:
        catalog = Catalog.model_validate(tomllib.load(f))
    return {m.id: m for m in catalog.model}


def models() -> list[ModelSpec]:
    return list(load().values())


def get(model_id: str) -> ModelSpec | None:
    return load().get(model_id)
