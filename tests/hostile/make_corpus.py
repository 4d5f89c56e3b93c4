"""Write the checked-in corpus of hostile study files and checkpoints (small; run again to regenerate).

    python tests/hostile/make_corpus.py

Study files are templates: `{sentinel}` becomes a folder of the test's that must stay untouched.
Checkpoints are fmlab payloads with one thing wrong each. tests/test_hostile.py runs every case and
asserts its exit status, its one-line message, that nothing was written outside the scratch folder
and that nothing was deleted; the memory cases run under an address-space limit.
"""

from __future__ import annotations

import io
import math
import zipfile
from pathlib import Path

HERE = Path(__file__).resolve().parent

LOGREG = '[families.lin]\nmodel = "logreg"\n'
STUDIES = {
    # names that would become paths outside the study folder
    "dotdot_family.toml": '[families.".."]\nmodel = "logreg"\n[families."..".variants]\n'
                          '"../../../../escape_variant" = { lr = 1e-2 }\n',
    "absolute_family.toml": '[families."{sentinel}"]\nmodel = "logreg"\n',
    "slash_family.toml": '[families."a/b"]\nmodel = "logreg"\n[[compare]]\na = "a/b"\nb = "a/b"\n',
    "escaping_study_name.toml": 'name = "../../escape_study"\n' + LOGREG,
    "empty_variant_name.toml": LOGREG + '[families.lin.variants]\n"" = { lr = 1e-2 }\n',
    # values that must be refused when the file loads
    "variant_model.toml": LOGREG + '[families.lin.variants]\nother = { model = "cnn" }\n',
    "weight_decay_inf.toml": '[defaults]\nweight_decay = inf\n' + LOGREG,
    "l2_1e308.toml": '[defaults]\nl2 = 1e308\n' + LOGREG,
    "epochs_true.toml": '[defaults]\nepochs = true\n' + LOGREG,
    "epochs_string.toml": "[defaults]\nepochs = '1'\n" + LOGREG,
    "evaluate_unknown.toml": LOGREG + "[evaluate]\nfoo = 1\n",
    "evaluate_negative_timing.toml": LOGREG + "[evaluate]\ntiming_s = -1\n",
    "model_args_number.toml": "[defaults]\nmodel_args = 5\n" + LOGREG,
    "seed_2_64.toml": f"seeds = [{2**64}]\n" + LOGREG,
    "negative_seed.toml": 'seeds = [-1]\n[families.ffnn]\nmodel = "mlp-numpy"\n',
    "huge_channels.toml": '[families.c]\nmodel = "cnn"\n'
                          'baseline = { model_args = { channels = [1000000000, 2, 3] } }\n',
    "tune_bad_grid.toml": LOGREG + '[tune.grid]\nmodels = ["logreg"]\nparams = { lr = [0.1, -1.0] }\n',
    "tune_unknown.toml": LOGREG + "[tune.gird]\nmodels = []\n",
}


def checkpoints() -> dict[str, bytes]:
    import torch

    from fmlab import models
    from fmlab.runs import Predictor, resolve

    def saved(obj: object) -> bytes:
        buf = io.BytesIO()
        torch.save(obj, buf)
        return buf.getvalue()

    resolved = resolve([("corpus", {"model": "logreg", "threads": 1, "precision": "fp32"})])
    spec = resolved.model_dump(mode="json")
    torch.manual_seed(0)
    good = Predictor(models.build("logreg"), resolved, 0.286, 0.353)
    real = good.payload("corpus")
    base = {**real, "state_dict": {}}  # the loader refuses these before it looks at weights
    nan_weights = {**real, "state_dict": {k: torch.full_like(v, math.nan) for k, v in real["state_dict"].items()}}
    wrong_shape = {**real, "state_dict": {**real["state_dict"], "fc.weight": torch.zeros(10, 4)}}
    # an extra 32 MiB tensor of zeros under an unknown key, its record deflated to ~32 KiB: a small file that
    # unpacks ~1000x when loaded
    bomb = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(saved({**real, "extra": torch.zeros(8 << 20)}))) as src, \
            zipfile.ZipFile(bomb, "w") as dst:
        for info in src.infolist():
            dst.writestr(info.filename, src.read(info), compress_type=zipfile.ZIP_DEFLATED)
    return {
        "huge_model_args.pt": saved({**base, "spec": {**spec, "model": "mlp", "model_args":
                                     {"hidden": [200000, 200000], "activation": "relu", "dropout": 0.0}}}),
        "model_args_list.pt": saved({**base, "spec": {**spec, "model_args": [1, 2]}}),
        "model_args_string.pt": saved({**base, "spec": {**spec, "model_args": "big"}}),
        "norm_list.pt": saved({**base, "norm": [0.2, 0.3]}),
        "norm_string.pt": saved({**base, "norm": "standard"}),
        "norm_std_zero.pt": saved({**base, "norm": {"mean": 0.2, "std": 0.0}}),
        "norm_nan.pt": saved({**base, "norm": {"mean": math.nan, "std": 0.3}}),
        "norm_missing.pt": saved({k: v for k, v in base.items() if k != "norm"}),
        "nan_weights.pt": saved(nan_weights),
        "wrong_shape.pt": saved(wrong_shape),
        "unknown_key.pt": saved({**base, "extra": torch.zeros(3)}),
        "deflate_bomb.pt": bomb.getvalue(),
        "png_renamed.pt": b"\x89PNG\r\n\x1a\n" + bytes(100),
        "text_renamed.pt": b"These are my notes, not a model.\n",
        "random_renamed.pt": bytes((i * 97 + 13) % 256 for i in range(512)),
    }


def main() -> None:
    for name, text in STUDIES.items():
        (HERE / name).write_text(text)
    for name, content in checkpoints().items():
        (HERE / name).write_bytes(content)
    total = sum(p.stat().st_size for p in HERE.iterdir() if p.is_file())
    print(f"wrote {HERE} ({total:,} bytes in all)")


if __name__ == "__main__":
    main()
