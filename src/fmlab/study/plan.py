"""Study file -> trials: one per family x variant x seed, each with its resolved spec; every table of the
study (searches included) is checked here, before any trial trains."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from fmlab.config import GridSection, StudyConfig, TrainConfig, TuneConfig
from fmlab.errors import ConfigError
from fmlab.runs import resolve, run_key
from fmlab.tune.params import split_params

BASELINE = "baseline"
TUNED = {"grid": "tuned", "optuna": "tuned-optuna"}  # the variant each [tune] search adds to its families
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


def plan(study: StudyConfig, tune_summary: dict[str, Any] | None = None) -> list[Trial]:
    """Expand and resolve every trial (with the tuned variants of the finished searches in `tune_summary`); a bad
    value names the table it came from."""
    if study.tune is not None:
        check_tune(study)
    study = with_tuned(study, tune_summary)
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
    return trials


def searched_split(study: StudyConfig) -> TuneConfig:
    """The [tune] table with each search's validation split set to the study's (`val_size` and split seed, shared
    by every searched family), so a search scores on the images the study validates on, never on the test set."""
    tune = study.tune
    assert tune is not None
    sections = {}
    for name, section in (("grid", tune.grid), ("optuna", tune.optuna)):
        if section is None:
            continue
        searched = section.models if isinstance(section, GridSection) else [section.model]
        splits = {(spec.val_size, spec.split_seed) for family, fam in study.families.items() if fam.model in searched
                  for spec in [resolve([*_layers(study, family, BASELINE), (family, {"model": fam.model})])]}
        if len(splits) > 1:
            raise ConfigError(f"tune.{name}: the searched families validate on different splits {sorted(splits)}; "
                              "give them one val_size and split_seed")
        if splits:
            val_size, split_seed = splits.pop()
            for key, value in (("val_size", val_size), ("seed", split_seed)):
                if key in section.model_fields_set and getattr(section, key) != value:
                    raise ConfigError(f"tune.{name}: {key} = {getattr(section, key)} differs from the study's split "
                                      f"({value}); leave it out, the search uses the study's")
            section = section.model_copy(update={"val_size": val_size, "seed": split_seed})
        sections[name] = section
    return tune.model_copy(update=sections)


def _tuned_layer(params: dict[str, Any]) -> dict[str, Any]:
    settings, model_args = split_params({k: v for k, v in params.items() if k != "epochs"})
    return {**settings, **({"model_args": model_args} if model_args else {})}


def with_tuned(study: StudyConfig, tune_summary: dict[str, Any] | None) -> StudyConfig:
    """The study with the variants its finished searches add: `tuned` (the grid's best setting for the family's
    model) and `tuned-optuna` (Optuna's best), each layered over the baseline and trained at the study's budget
    (a searched epoch count is not taken)."""
    found: dict[str, dict[str, dict[str, Any]]] = {}
    grid, optuna = (tune_summary or {}).get("grid"), (tune_summary or {}).get("optuna")
    for model, best in (grid or {}).get("best_by_model", {}).items():
        found.setdefault(model, {})[TUNED["grid"]] = _tuned_layer(best["params"])
    if optuna and optuna.get("best"):
        config = optuna["best"]["user_attrs"]["config"]  # the trial's layer: settings and model_args
        found.setdefault(optuna["settings"]["model"], {})[TUNED["optuna"]] = {
            k: v for k, v in config.items() if k != "epochs" and v != {}}
    families = {name: fam.model_copy(update={"variants": {**fam.variants, **found[fam.model]}})
                if fam.model in found else fam for name, fam in study.families.items()}
    return study.model_copy(update={"families": families})


def check_tune(study: StudyConfig) -> None:
    """The [tune] table's searches, checked the way they will run (models, grid values, search space)."""
    from fmlab.tune import check_grid, check_optuna

    tune = study.tune
    if tune is None or (tune.grid is None and tune.optuna is None):
        raise ConfigError("tune: the [tune] table is empty; add a 'grid' or an 'optuna' table")
    if tune.grid is not None:
        try:
            check_grid(tune.grid)
        except ConfigError as exc:
            raise ConfigError(f"tune.grid: {exc}") from None
    if tune.optuna is not None:
        check_optuna(tune.optuna)
    searched = {*(tune.grid.models if tune.grid else []), *([tune.optuna.model] if tune.optuna else [])}
    for family, fam in study.families.items():
        taken = sorted(set(TUNED.values()) & set(fam.variants))
        if fam.model in searched and taken:
            raise ConfigError(f"families.{family}: the variant name '{taken[0]}' is the searched one's; rename it")
    searched_split(study)


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
