"""The study's results table for papers and course reports: LaTeX (booktabs), Markdown or CSV, from summary.json.

Each row is a family's variant: test accuracy mean ± std over seeds with its 95% CI, macro F1, macro AUC, ECE,
parameters and training time. A variant that differs from its family's baseline after the study's Holm correction
is marked; the best value of each quality column is in bold.
"""

from __future__ import annotations

import csv
import io
import re
from typing import Any

from fmlab.io import csv_cell
from fmlab.study.findings import clipped_ci

FORMATS = ("latex", "markdown", "csv")
HEADER = ("Model", "Variant", "Accuracy (%)", "95% CI", "Macro F1", "Macro AUC", "ECE", "Parameters", "Train s")
# the quality columns and which end is best
BEST = {"accuracy": max, "macro_f1": max, "macro_auc": max, "ece": min}
DASH = "\u2013"  # between the ends of an interval
LATEX_SPECIAL = re.compile(r"([\\&%$#_{}~^])")
LATEX_REPLACE = {"\\": r"\textbackslash{}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}


def latex_escape(text: str) -> str:
    return LATEX_SPECIAL.sub(lambda m: LATEX_REPLACE.get(m.group(1), "\\" + m.group(1)), text)


def _cells(summary: dict[str, Any]) -> tuple[list[dict[str, Any]], str]:
    """Rows of formatted values (bold and mark flags alongside) and the footnote on the marks."""
    vs_baseline = {c["a"]: c for c in summary["comparisons"] if c["kind"] == "variant_vs_baseline"}
    rows = summary["rows"]
    best = {m: pick(r[m]["mean"] for r in rows if r[m]["mean"] is not None) for m, pick in BEST.items()}
    out = []
    for r in rows:
        test = vs_baseline.get(f"{r['family']}/{r['variant']}")
        acc = r["accuracy"]
        std = "" if acc["std"] is None else f" ± {100 * acc['std']:.2f}"
        low, high = (None, None) if acc["ci_low"] is None else clipped_ci(acc)
        ci = "" if low is None else f"{100 * low:.2f}{DASH}{100 * high:.2f}"
        out.append({
            "values": [r["title"], r["variant"], f"{100 * acc['mean']:.2f}{std}", ci, _num(r["macro_f1"], 4),
                       _num(r["macro_auc"], 4), _num(r["ece"], 3), f"{r['params']['mean']:,.0f}",
                       _num(r["train_time_s"], 1)],
            "bold": {2: acc["mean"] == best["accuracy"], 4: r["macro_f1"]["mean"] == best["macro_f1"],
                     5: r["macro_auc"]["mean"] == best["macro_auc"], 6: r["ece"]["mean"] == best["ece"]},
            "mark": bool(test and test["significant"]),
            "row": r, "test": test,
        })
    n = len(summary["comparisons"])
    note = (f"* differs from its family's baseline (Holm-corrected p < 0.05 over the study's {n} tests; two-level "
            f"bootstrap over {len(summary['seeds'])} seeds and the test images). Bold: best in its column.")
    return out, note


def _num(metric: dict[str, Any], digits: int) -> str:
    return "" if metric["mean"] is None else f"{metric['mean']:.{digits}f}"


def render(summary: dict[str, Any], fmt: str) -> str:
    """The table in `fmt` (one of FORMATS)."""
    rows, note = _cells(summary)
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["family", "model", "variant", "seeds", "accuracy_mean", "accuracy_std", "accuracy_ci_low",
                         "accuracy_ci_high", "macro_f1", "macro_auc", "ece", "params", "train_time_s",
                         "p_holm_vs_baseline", "significant_vs_baseline"])
        for c in rows:
            r, test = c["row"], c["test"]
            acc = r["accuracy"]
            numbers = (acc["mean"], acc["std"], acc["ci_low"], acc["ci_high"], r["macro_f1"]["mean"],
                       r["macro_auc"]["mean"], r["ece"]["mean"], r["params"]["mean"], r["train_time_s"]["mean"],
                       test and test["p_holm"])
            writer.writerow([csv_cell(r["family"]), csv_cell(r["model"]), csv_cell(r["variant"]), r["seeds"],
                             *("" if v is None else f"{v:.6g}" for v in numbers),
                             "" if test is None else test["significant"]])
        return buf.getvalue()
    if fmt == "markdown":
        def cell(c: dict[str, Any], i: int, value: str) -> str:
            value = value.replace("|", r"\|")
            value = f"**{value}**" if c["bold"].get(i) else value
            return f"{value} \\*" if i == 2 and c["mark"] else value

        lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
        lines += ["| " + " | ".join(cell(c, i, v) for i, v in enumerate(c["values"])) + " |" for c in rows]
        return "\n".join(lines) + f"\n\n{note.replace('*', chr(92) + '*', 1)}\n"
    if fmt == "latex":
        def tex(c: dict[str, Any], i: int, value: str) -> str:
            value = latex_escape(value).replace("±", r"$\pm$").replace(DASH, "--")
            value = rf"\textbf{{{value}}}" if c["bold"].get(i) else value
            return value + r"$^{*}$" if i == 2 and c["mark"] else value

        lines = [r"\begin{table}[t]", r"\centering", r"\small",
                 r"\begin{tabular}{ll" + "r" * (len(HEADER) - 2) + "}", r"\toprule",
                 " & ".join(latex_escape(h) for h in HEADER) + r" \\", r"\midrule"]
        family = None
        for c in rows:
            if family is not None and c["row"]["family"] != family:
                lines.append(r"\addlinespace")
            family = c["row"]["family"]
            lines.append(" & ".join(tex(c, i, v) for i, v in enumerate(c["values"])) + r" \\")
        lines += [r"\bottomrule", r"\end{tabular}",
                  r"\caption{" + latex_escape(note) + "}",
                  r"\end{table}"]
        return "\n".join(lines) + "\n"
    raise ValueError(f"unknown table format '{fmt}'; choose one of {', '.join(FORMATS)}")
