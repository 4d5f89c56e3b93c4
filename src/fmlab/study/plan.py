"""Study file -> trials: one per family x variant x seed, each with its resolved spec; every table of the
study (searches included) is checked here, before any trial trains."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fmlab.config import StudyConfig, TrainConfig
from fmlab.errors import ConfigError
from fmlab.runs import resolve, run_key

BASELINE = "baseline"
FIXED = ("model", "seed")  # a family fixes the model, the study's seeds the seed


@dataclass(frozen=True)
class Trial:
    family: str
    variant: str
    seed: int
    spec: TrainConfig

    @property
    def name(self) -> str:
        return f"{self.family}/{self.variant}/seed{self.seed}"

    def key(self, data_checksums: dict[str, str]) -> str:
        return run_key(self.spec, data_checksums)


def variant_names(study: StudyConfig, family: str) -> list[str]:
    return [BASELINE, *study.families[family].variants]


def _layers(study: StudyConfig, family: str, variant: str) -> list[tuple[str, dict[str, Any]]]:
    fam = study.families[family]
    layers = [("defaults", study.defaults), (f"families.{family}.baseline", fam.baseline)]
    if variant != BASELINE:
        layers.append((f"families.{family}.variants.{variant}", fam.variants[variant]))
    for source, layer in layers:
        fixed = [k for k in FIXED if k in layer]
        if fixed:
            raise ConfigError(f"{source}: '{fixed[0]}' cannot be set here; a family fixes the model "
                              "(add a family for another model) and `seeds` lists the seeds")
    return layers


def plan(study: StudyConfig) -> list[Trial]:
    """Expand and resolve every trial; a bad value names the table it came from."""
    trials = []
    for family, fam in study.families.items():
        if BASELINE in fam.variants:
            raise ConfigError(f"families.{family}: a variant may not be called '{BASELINE}'")
        for variant in variant_names(study, family):
            layers = _layers(study, family, variant)
            for seed in study.seeds:
                spec = resolve([*layers, (f"families.{family}", {"model": fam.model, "seed": seed})])
                trials.append(Trial(family, variant, seed, spec))
    for pair in study.compare:
        for ref in (pair.a, pair.b):
            resolve_ref(study, ref)
    if study.tune is not None:
        check_tune(study)
    return trials


def check_tune(study: StudyConfig) -> None:
    """The [tune] table's searches, checked the way they will run (models, grid values, search space)."""
    from fmlab.tune.grid import check_options
    from fmlab.tune.optuna_search import load_space, parse_space

    tune = study.tune
    if tune is None or (tune.grid is None and tune.optuna is None):
        raise ConfigError("tune: the [tune] table is empty; add a 'grid' or an 'optuna' table")
    if tune.grid is not None:
        g = tune.grid
        try:
            check_options(g.models, g.params, cv=g.cv, halving=g.halving, executor=g.executor, scheduler=g.scheduler)
        except ConfigError as exc:
            raise ConfigError(f"tune.grid: {exc}") from None
    if tune.optuna is not None:
        parse_space(*load_space(tune.optuna.space), tune.optuna.model)


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
