"""The model card `depscreen train --dataset` writes beside its checkpoint, from the study's results."""

from __future__ import annotations

from pathlib import Path

from depscreen.engine.train.datasets import DatasetSpec
from depscreen.engine.train.metrics import REPORT_METRICS

ROW_METRICS = ("auroc", *(m for m in REPORT_METRICS if m not in ("auroc", "accuracy")))
"""The card's columns: the report's metrics, AUROC first, without plain accuracy (misleading on imbalanced
data; balanced accuracy is there)."""


def _cell(row: dict, name: str) -> str:
    ci = row["ci95"][name]
    return f"{ci['value']:.2f} [{ci['low']:.2f}, {ci['high']:.2f}]"


def results_table(results: dict) -> str:
    """Markdown table of every cross-validated variant and baseline, metrics with 95% bootstrap intervals."""
    header = "| variant | " + " | ".join(ROW_METRICS) + " |\n|" + " --- |" * (len(ROW_METRICS) + 1)
    lines = [header]
    for row in results["cross_validation"]:
        lines.append(f"| {row['name']} | " + " | ".join(_cell(row, m) for m in ROW_METRICS) + " |")
    base = results["cross_validation"][0]["baselines"]
    for name, values in base.items():
        cells = [f"{values.get(m, float('nan')):.2f}" if m in values else "–" for m in ROW_METRICS]
        lines.append(f"| trivial: {name.replace('_', '-')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def repeated_table(repeated: dict) -> str:
    """Markdown table of the repeated comparison: mean ± sd over fold assignments, and paired AUROC gains of the
    model over each baseline and ablation."""
    summary = repeated["summary"]
    lines = [
        "| method | AUROC mean ± sd [min, max] | F1 mean ± sd | ECE mean | model AUROC minus this "
        "| repeats model higher | repeats with its CI > 0 |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    methods = [("model", summary["model"])]
    methods += [(f"baseline: {name}", values) for name, values in summary["baselines"].items()]
    methods += [(f"ablation: {name}", values) for name, values in summary["ablations"].items()]
    for label, values in methods:
        auroc, f1 = values["auroc"], values["f1"]
        gain, higher, better = "–", "–", "–"
        if "auroc_difference" in values:
            difference = values["auroc_difference"]
            gain = f"{difference['mean']:+.3f} ± {difference['sd']:.3f}"
            higher = f"{values['repeats_model_higher']} of {values['repeats']}"
            better = f"{values['repeats_model_clearly_better']} of {values['repeats']}"
        lines.append(
            f"| {label} | {auroc['mean']:.2f} ± {auroc['sd']:.2f} [{auroc['min']:.2f}, {auroc['max']:.2f}] "
            f"| {f1['mean']:.2f} ± {f1['sd']:.2f} | {values['ece']['mean']:.3f} | {gain} | {higher} | {better} |"
        )
    return "\n".join(lines)


def heads_line(repeated: dict) -> str:
    """The model's fused and per-modality-head AUROCs (mean ± sd over repeats), and its score head's error."""
    model = repeated["summary"]["model"]
    heads = ", ".join(f"{name} {v['mean']:.3f} ± {v['sd']:.3f}" for name, v in model["heads"].items())
    line = f"Per head (AUROC mean ± sd over repeats): {heads}."
    if "score_error" in model:
        e = model["score_error"]
        line += (
            f" Score head, out of fold: MAE {e['mae']['mean']:.2f} ± {e['mae']['sd']:.2f}, RMSE "
            f"{e['rmse']['mean']:.2f} ± {e['rmse']['sd']:.2f} (predicting the training folds' mean score: MAE "
            f"{e['training_mean_mae']['mean']:.2f}, RMSE {e['training_mean_rmse']['mean']:.2f})."
        )
    return line


def _repeated_section(results: dict) -> str:
    if "repeated" not in results:
        return ""
    count = len(results["repeated"]["repeats"])
    return f"""
### The model against the baselines over {count} fold assignments
Seeds {results["seed"]} to {results["seed"] + count - 1}; each repeat scores the model and the baselines on the same
folds, and the AUROC gain gets a paired bootstrap 95% interval. Ablations (the model with one part taken out) run
on the same folds of the first repeats, as many as the table says; their ECE and F1 are theirs, the AUROC gain
is the model's over them on those folds.

{repeated_table(results["repeated"])}

{heads_line(results["repeated"])}
"""


def share(value: float | None) -> str:
    """A coverage as a percentage, or a dash where nothing was measured."""
    return "–" if value is None else f"{value:.1%}"


def interval_section(report: dict) -> str:
    """What the estimate's interval is, and its coverage in cross-validation (`interval_fit.held_out_interval`)."""
    if not report["fitted"]:
        return f"No interval calibration was fitted ({report['reason']}): every interval is [0, 1]."
    coverage = report["cross_validated"]
    if "coverage" not in coverage:
        return f"Interval calibration fitted on the out-of-fold estimates; {coverage['reason']}."
    widths = ", ".join(
        f"{row['evidence_low']:.2f}-{row['evidence_high']:.2f}: {row['mean_width']:.2f}"
        for row in coverage["mean_width_by_evidence_quartile"]
    )
    by_label, last = coverage["coverage_by_label"], coverage["coverage_last_by_label"]
    return (
        f"Label-conditional split-conformal interval at {coverage['level']:.0%} nominal, per evidence bin, fitted "
        f"on the out-of-fold estimate after every sentence (`runtime.interval`); none before "
        f"{coverage['enough_speech_s']:g} s of usable speech. Coverage in CV (each fold checked with an interval "
        f"fitted on the other folds): {share(coverage['coverage'])} of {coverage['prefixes']} estimates (label 0: "
        f"{share(by_label['0'])}, label 1: {share(by_label['1'])}); at each session's last sentence "
        f"{share(coverage['coverage_last'])} (label 0: {share(last['0'])}, label 1: {share(last['1'])}). Mean "
        f"width by evidence quartile: {widths}."
    )


def pitch_section(checks: dict[str, dict]) -> str:
    """Does the estimate follow the speaker's median pitch? (`pitch.py`): a table per cross-validated run."""
    if not checks:
        return "No cross-validated run heard audio with an audio head: nothing to check.\n"
    first = next(iter(checks.values()))
    lines = [
        f"Median pitch (F0) alone, as a score: AUROC {first['median_f0_auroc']} over {first['sessions']} sessions "
        f"({first['without_voiced_frames']} without voiced frames left out). Pitch groups split at the median F0 of "
        f"each fold's training sessions: low {first['groups']['low']} sessions ({first['positives']['low']} "
        f"positive), high {first['groups']['high']} ({first['positives']['high']} positive). Out-of-fold AUROC "
        "within each group and Pearson correlation with median F0 (an estimate that is mostly the speaker's pitch "
        "does not transfer to new patients):",
        "",
        "| run | estimate | AUROC low pitch | AUROC high pitch | corr with median F0 |",
        "| --- | --- | ---: | ---: | ---: |",
    ]
    for run, check in checks.items():
        for estimate in ("fused", "audio_head"):
            row = check[estimate]
            lines.append(
                f"| {run} | {estimate.replace('_', ' ')} | {row['auroc_low_pitch']} | {row['auroc_high_pitch']} | "
                f"{row['corr_with_median_f0']} |"
            )
    return "\n".join(lines) + "\n"


def write_model_card(path: Path, spec: DatasetSpec, results: dict) -> None:
    """Write the card: what the model is, data and terms, intended use, metrics with CIs, limits."""
    facts = results["facts"]
    attribution = results["attribution"]
    items = sorted(attribution["items"].items(), key=lambda x: -abs(x[1]))
    descriptors = sorted(attribution["descriptors"].items(), key=lambda x: -abs(x[1]))[:6]
    words = ", ".join(f"{w} ({v:+.2f}, n={n})" for w, v, n in attribution["words"][:10]) or "none ranked"
    skipped = "\n".join(f"- {s['item']}: {s['reason']}" for s in results["skipped"]) or "- nothing"
    text = f"""# Model card: `{facts["model_id"]}`

**What it is.** The screening model trained by `depscreen train --dataset {spec.name}` on {results["sessions"]}
sessions ({results["positives"]} positive) of {spec.description}. It scores a live interview sentence by
sentence and reports a calibrated probability that the speaker would screen positive on that dataset's
questionnaire cut-off. **It is a screening aid for clinicians, never a diagnosis.**

## Intended use
{facts["intended_use"]} Research and evaluation on populations like the training data. Not for unsupervised
decisions, not for people outside that population (language, age, setting) without re-validation.

## Data and its terms
{spec.description}. Terms: {spec.terms}. The checkpoint is derived from this data; use it under the same
research-only terms. Skipped while loading:
{skipped}

## Training
Text encoder `{facts["text_encoder"]}`; model config {results["config"]}; settings {results["settings"]}. The final
model was trained on all sessions but a stratified 20% held out for early stopping (stopped after
{results["final"]["epochs"]} epochs), temperature scaling (T = {results["final"]["temperature"]:.3f}) and the
decision threshold ({results["final"]["threshold"]:.3f}, best F1 on the held-out part). Continuous score:
{results["score_head"]["reason"]}.

## Metrics ({results["folds"]}-fold cross-validation, seed {results["seed"]}, out-of-fold, 95% bootstrap CIs)
Thresholds chosen on each fold's training folds only; intervals resample whole sessions, stratified by label.

{results_table(results)}
{_repeated_section(results)}
## The interval
{interval_section(results["interval"])}

## Pitch check
{pitch_section(results["pitch_check"])}

## What moves the estimate
PHQ-8 item similarities (gradient x input on the final logit, + raises the estimate):
{", ".join(f"{k} {v:+.3f}" for k, v in items)}.
Acoustic descriptors (same measure, strongest six): {", ".join(f"{k} {v:+.3f}" for k, v in descriptors)}.
Words (character bigrams for Mandarin; mean change of the final logit when their sentences' text is hidden,
+ = the text raised the estimate): {words}.

## Known limits
- Small sample ({results["sessions"]} sessions): the intervals above are wide; treat point estimates with care.
- One language and population (the dataset's); self-report questionnaire labels, not clinical diagnoses.
- Video was never seen with a real label: the video pathway is untrained on real data.
"""
    path.write_text(text)
