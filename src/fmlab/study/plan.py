"""Study file -> trials: one per family x variant x seed, each a fully validated TrainConfig."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fmlab
from fmlab import models
from fmlab.config import StudyConfig, TrainConfig, validate
from fmlab.errors import ConfigError

BASELINE = "baseline"


@dataclass(frozen=True)
class Trial:
    family: str
    variant: str
    seed: int
    config: TrainConfig

    @property
    def name(self) -> str:
        return f"{self.family}/{self.variant}/seed{self.seed}"

    def key(self, data_checksums: dict[str, str]) -> str:
        """Content address of the trial's inputs: config, data and code version."""
        blob = json.dumps(
            {"config": self.config.model_dump(), "data": data_checksums, "code": code_version()}, sort_keys=True
        )
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def code_version() -> str:
    """fmlab's version plus a hash of the code a trial's numbers depend on."""
    root = Path(fmlab.__file__).parent
    digest = hashlib.sha256(fmlab.__version__.encode())
    sources = [root / "config.py", *(p for d in ("data", "models", "train") for p in root.glob(f"{d}/*.py"))]
    for path in sorted(sources):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def variant_names(study: StudyConfig, family: str) -> list[str]:
    return [BASELINE, *study.families[family].variants]


def plan(study: StudyConfig) -> list[Trial]:
    """Expand and validate every trial; a bad value names the family and variant it came from."""
    trials = []
    for fam_name, fam in study.families.items():
        models.get(fam.model)
        if BASELINE in fam.variants:
            raise ConfigError(f"families.{fam_name}: a variant may not be called '{BASELINE}'")
        for variant in variant_names(study, fam_name):
            overrides = fam.variants.get(variant, {})
            for seed in study.seeds:
                merged: dict[str, Any] = {**study.defaults, **fam.baseline, **overrides,
                                          "model": fam.model, "seed": seed}
                merged["model_args"] = {
                    **study.defaults.get("model_args", {}), **fam.baseline.get("model_args", {}),
                    **overrides.get("model_args", {}),
                }
                where = f"families.{fam_name}.{variant}"
                config = validate(TrainConfig, merged, where)
                try:
                    models.build(fam.model, **config.model_kwargs())
                except ConfigError as exc:
                    raise ConfigError(f"{where}: {exc}") from None
                trials.append(Trial(fam_name, variant, seed, config))
    for pair in study.compare:
        for ref in (pair.a, pair.b):
            resolve_ref(study, ref)
    return trials


def resolve_ref(study: StudyConfig, ref: str) -> tuple[str, str | None]:
    """'family' -> (family, None: its best variant); 'family/variant' -> (family, variant)."""
    family, _, variant = ref.partition("/")
    if family not in study.families:
        raise ConfigError(f"compare: unknown family '{family}'; families are {', '.join(study.families)}")
    if variant and variant not in variant_names(study, family):
        raise ConfigError(f"compare: family '{family}' has no variant '{variant}'")
    return family, variant or None


def varied_keys(study: StudyConfig, family: str) -> dict[str, dict[str, Any]]:
    """For each variant, the keys (and values) it changes relative to the baseline."""
    fam = study.families[family]
    return {name: {k: v for k, v in over.items() if fam.baseline.get(k) != v} for name, over in fam.variants.items()}
