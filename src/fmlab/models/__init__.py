"""Models registered by name (timm-like); importing this package registers every family."""

from fmlab.models import cnn, lenet, linear, mlp, mlp_numpy  # noqa: F401  (each registers its models)
from fmlab.models.registry import (
    ModelSpec,
    build,
    count_parameters,
    full_args,
    get,
    names,
    recipe,
    register,
)

__all__ = ["ModelSpec", "build", "count_parameters", "full_args", "get", "names", "recipe", "register"]
