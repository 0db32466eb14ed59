"""The end-of-run summary of a cascade: ``workdir/report.md`` and ``workdir/scores.png``.

``report.md``: per stage (numbered in ledger order) each domain's held-out pass@1 and mean reward, the MOPD
teacher picked per domain, the reward model's held-out pairwise accuracy, RLHF's reward-model scores before and
after, the seed, and (when ``config.compare.branches`` is set) each compared branch's curve on
``compare.domain`` (pass@1 vs cumulative RL steps from ``compare.start``) and its steps to recover
``compare.reference``'s score within ``compare.tolerance``. ``scores.png``: the Cascade at a glance, each
domain's pass@1 (y in [0, 1]) after every stage (x = the stage's number in the report), one coloured line with
square markers per domain and a legend.
"""
from __future__ import annotations

import dataclasses
import os

import ml_collections

from nemocascade.cascade import raster
from nemocascade.cascade.ledger import Ledger

# Distinct line colours (the usual categorical palette), one per domain in order.
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
INK, GRID, WHITE = (0, 0, 0), (225, 225, 225), (255, 255, 255)
Y_TICKS = (0.0, 0.25, 0.5, 0.75, 1.0)


@dataclasses.dataclass(frozen=True)
class ChartLayout:
    """Pixel geometry of ``scores.png``: the plot box ``[left, right] x [top, bottom]`` and the legend at ``legend_x``.

    Stage ``i`` of ``n`` (1-based) sits at the centre of the i-th of n equal slots across the box:
    ``x = left + (i - 0.5) / n * (right - left)``; a score ``v`` in [0, 1] at ``y = bottom - v * (bottom - top)``.
    """
    width: int = 720
    height: int = 420
    left: int = 64
    right: int = 540
    top: int = 40
    bottom: int = 370
    legend_x: int = 560
    line_width: int = 2
    marker_size: int = 7
    swatch: int = 12

    def to_pixel(self, stage_number: int, num_stages: int, value: float) -> tuple[float, float]:
        x = self.left + (stage_number - 0.5) / num_stages * (self.right - self.left)
        return x, self.bottom - value * (self.bottom - self.top)

    def legend_row(self, index: int) -> tuple[int, int]:
        """Top-left pixel of the ``index``-th legend swatch."""
        return self.legend_x, self.top + 4 + index * 2 * self.swatch


def domains_of(entries, preferred=()) -> list[str]:
    """Domains scored in ``entries``: those of ``preferred`` first (in its order), then the rest sorted."""
    scored = {d for e in entries for d in e["scores"]}
    return [d for d in preferred if d in scored] + sorted(scored - set(preferred))


def scores_chart(entries, domains, layout: ChartLayout = ChartLayout()) -> raster.Canvas:
    """The pass@1 chart of ledger ``entries`` (stage i = ``entries[i - 1]``); stages without a score for a
    domain (e.g. the reward model) are skipped by that domain's line."""
    canvas = raster.Canvas(layout.width, layout.height, WHITE)
    n = max(len(entries), 1)
    canvas.text(layout.left, 12, "PASS@1 AFTER EACH STAGE", INK)
    for tick in Y_TICKS:
        _, y = layout.to_pixel(1, n, tick)
        canvas.line(layout.left, y, layout.right, y, GRID)
        label = f"{tick:.2f}"
        canvas.text(layout.left - 8 - raster.text_width(label), int(round(y)) - 5, label, INK)
    canvas.line(layout.left, layout.top, layout.left, layout.bottom, INK)
    canvas.line(layout.left, layout.bottom, layout.right, layout.bottom, INK)
    for number in range(1, len(entries) + 1):
        x, _ = layout.to_pixel(number, n, 0.0)
        canvas.line(x, layout.bottom, x, layout.bottom + 4, INK)
        canvas.text(int(round(x)) - raster.text_width(str(number)) // 2, layout.bottom + 10, str(number), INK)
    for index, domain in enumerate(domains):
        color = PALETTE[index % len(PALETTE)]
        points = [layout.to_pixel(i, n, e["scores"][domain]["pass_at_1"])
                  for i, e in enumerate(entries, start=1) if domain in e["scores"]]
        canvas.polyline(points, color, layout.line_width)
        for x, y in points:
            canvas.marker(x, y, color, layout.marker_size)
        sx, sy = layout.legend_row(index)
        canvas.rect(sx, sy, sx + layout.swatch - 1, sy + layout.swatch - 1, color)
        canvas.text(sx + layout.swatch + 6, sy + 1, domain, INK)
    return canvas


def _number(value) -> str:
    return "–" if value is None else f"{value:.3f}"


def _scores_table(entries, domains) -> list[str]:
    header = ["#", "stage", "kind", "step"] + [f"{d} {m}" for d in domains for m in ("pass@1", "mean reward")]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for number, e in enumerate(entries, start=1):
        cells = [str(number), e["stage"], e["kind"], str(e["step"])]
        for d in domains:
            score = e["scores"].get(d, {})
            cells += [_number(score.get("pass_at_1")), _number(score.get("mean_reward"))]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _teachers(entries) -> list[str]:
    rows = [(e["stage"], d, t["stage"]) for e in entries for d, t in sorted(e.get("teachers", {}).items())]
    if not rows:
        return []
    return (["", "## MOPD teachers", "",
             "Per domain: the stage pinned by `rl.teacher_stages`, else the best earlier stage (pass@1, then mean "
             "reward).", "", "| stage | domain | teacher |", "|---|---|---|"]
            + [f"| {s} | {d} | {t} |" for s, d, t in rows])


def _reward_models(entries) -> list[str]:
    rows = [(e["stage"], e["evaluation"]["pairwise_accuracy"], e["evaluation"]["num_pairs"],
             e["evaluation"]["margin_mean"]) for e in entries
            if e["kind"] == "reward_model" and e.get("evaluation")]
    if not rows:
        return []
    return (["", "## Reward model", "", "| stage | held-out pairwise accuracy | pairs | mean reward gap |",
             "|---|---|---|---|"] + [f"| {s} | {a:.3f} | {n} | {g:.3f} |" for s, a, n, g in rows])


def _before_after(entries, key: str, title: str, what: str, scorer: str, scorer_of) -> list[str]:
    """A table of the stages' own ``evaluation[key]`` (``{domain: {"before", "after", "num_examples"}}``), the
    scorer of each named by ``scorer_of(entry)``; [] when no stage has one."""
    rows = [(e["stage"], d, r, scorer_of(e)) for e in entries
            for d, r in sorted(e.get("evaluation", {}).get(key, {}).items())]
    if not rows:
        return []
    return (["", f"## {title}", "", what, "", f"| stage | domain | before | after | prompts | {scorer} |",
             "|---|---|---|---|---|---|"]
            + [f"| {s} | {d} | {_number(r['before'])} | {_number(r['after'])} | {r['num_examples']} | {m} |"
               for s, d, r, m in rows])


def _judged(entries) -> list[str]:
    return _before_after(entries, "judge_score", "Judged domains",
                         "The answer judge's mean reward of greedy answers to held-out prompts.", "judge",
                         lambda e: e.get("judge", {}).get("stage") or e.get("judge", {}).get("checkpoint_dir", "–"))


def _rlhf(entries) -> list[str]:
    lines = _before_after(entries, "reward_model_score", "RLHF",
                          "The reward model's mean score of greedy answers to held-out prompts.", "reward model",
                          lambda e: e.get("reward_model", {}).get("stage") or "–")
    rows = [(e["stage"], d, r, e.get("judge", {}).get("checkpoint_dir", "–"))
            for e in entries for d, r in sorted(e.get("evaluation", {}).get("judge_win_rate", {}).items())]
    if rows:
        lines += (["", "## RLHF (pairwise judge)", "",
                   "How often the judge prefers the final policy's greedy answer to the starting one's (both orders "
                   "judged; a tie counts one half).", "",
                   "| stage | domain | win rate | prompts | unparsed verdicts | judge |", "|---|---|---|---|---|---|"]
                  + [f"| {s} | {d} | {_number(r['win_rate'])} | {r['num_examples']} | "
                     f"{_number(r['parse_failure_fraction'])} | {j} |" for s, d, r, j in rows])
    return lines


def parse_branches(config: ml_collections.ConfigDict) -> dict[str, list[str]]:
    """``compare.branches`` ``"mopd=mopd_1,mopd_2;grpo=grpo_1"`` -> ``{"mopd": ["mopd_1", "mopd_2"], ...}``,
    checked against ``config.stages`` and ``compare.{domain,reference,start}`` ("" -> {})."""
    compare = config.compare
    branches = {}
    for item in filter(None, (part.strip() for part in compare.branches.split(";"))):
        name, sep, stages = (x.strip() for x in item.partition("="))
        members = [m.strip() for m in stages.split(",") if m.strip()]
        if not sep or not name or not members or name in branches:
            raise ValueError(f"compare.branches={compare.branches!r}: expected 'name=stage,stage;name=...', each "
                             f"name once (bad item {item!r})")
        branches[name] = members
    if not branches:
        return branches
    named = [compare.reference, compare.start] + [m for ms in branches.values() for m in ms]
    unknown = [n for n in named if n not in config.stages]
    if unknown or not compare.domain:
        raise ValueError(f"compare: reference/start/branches must name stages of config.stages and domain must be "
                         f"set; got domain={compare.domain!r}, unknown stages {unknown}")
    return branches


def branch_curve(entries, start: str, members, domain: str) -> list[tuple[int, float]]:
    """(cumulative RL steps, pass@1 on ``domain``) from ``start`` (0 steps) through each finished stage of
    ``members`` in order (a stage's ``step`` = the RL steps it took)."""
    by_stage = {e["stage"]: e for e in entries}
    curve = [(0, by_stage[start]["scores"][domain]["pass_at_1"])]
    for member in members:
        if member not in by_stage:
            break
        curve.append((curve[-1][0] + by_stage[member]["step"], by_stage[member]["scores"][domain]["pass_at_1"]))
    return curve


def _comparison(config, entries) -> list[str]:
    branches = parse_branches(config)
    compare = config.compare
    finished = {e["stage"] for e in entries}
    if not branches or not {compare.reference, compare.start} <= finished:
        return []
    reference = next(e for e in entries if e["stage"] == compare.reference)["scores"][compare.domain]["pass_at_1"]
    target = reference - compare.tolerance
    lines = ["", f"## {' vs '.join(branches)} on {compare.domain}", "",
             f"Each branch starts from `{compare.start}`; target: `{compare.reference}`'s {compare.domain} pass@1 "
             f"{reference:.3f} minus {compare.tolerance} = {target:.3f}. Steps = cumulative RL steps of the branch; "
             "steps to recover = the first point at or above the target.", "",
             f"| branch | {compare.domain} pass@1 after N steps (N: score) | steps to recover |", "|---|---|---|"]
    for name, members in branches.items():
        curve = branch_curve(entries, compare.start, members, compare.domain)
        hit = next((n for n, score in curve if score >= target), None)
        recovered = str(hit) if hit is not None else f"not recovered in {curve[-1][0]} steps"
        lines.append(f"| {name} | " + ", ".join(f"{n}: {score:.3f}" for n, score in curve) + f" | {recovered} |")
    return lines


def report_markdown(config: ml_collections.ConfigDict, entries, domains) -> str:
    ev = config.eval
    lines = [f"# Cascade report: {config.name}", "",
             f"Seed {config.seed} for every stage; held-out prompts per domain: {ev.num_examples} (drawn with the "
             f"same seed), greedy, at most {ev.max_new_tokens} new tokens. pass@1 = share of full-reward answers.",
             "", "## Scores after each stage", ""]
    lines += _scores_table(entries, domains)
    lines += ["", "![pass@1 after each stage](scores.png)", "",
              "`scores.png`: each domain's pass@1 after every stage; x = the stage number (#) in the table, a stage "
              "without scores (a reward model) has no point."]
    lines += (_teachers(entries) + _reward_models(entries) + _rlhf(entries) + _judged(entries)
              + _comparison(config, entries))
    return "\n".join(lines) + "\n"


def write_report(config: ml_collections.ConfigDict, ledger: Ledger, workdir: str) -> None:
    """Writes ``workdir/report.md`` and ``workdir/scores.png`` from the ledger's entries (in ledger order)."""
    entries = ledger.entries
    domains = domains_of(entries, preferred=tuple(config.eval.domains))
    with open(os.path.join(workdir, "scores.png"), "wb") as f:
        f.write(raster.encode_png(scores_chart(entries, domains).pixels))
    with open(os.path.join(workdir, "report.md"), "w") as f:
        f.write(report_markdown(config, entries, domains))
    print(f"report: {os.path.join(workdir, 'report.md')} and scores.png", flush=True)
