"""Building blocks for the experiment configs in ``experiments/`` (ConfigDicts with every field present).

Every experiment file composes these, so an override such as ``--config.model.d_model=256`` or
``--config.optimizer.learning_rate=1e-5`` always names an existing field, and a misspelt one is rejected.
Real-scale defaults follow ../shared/RECIPE.md (the Nemotron-Cascade 2 paper's appendix tables).
"""
from __future__ import annotations

import dataclasses

import ml_collections

from nemocascade.data.judge_prompts import EQUAL_LABEL, NOT_EQUAL_LABEL
from nemocascade.data.toy.lookup import ANSWER_REGEX as LOOKUP_ANSWER_REGEX
from nemocascade.data.toy.lookup import QUESTION_REGEX as LOOKUP_QUESTION_REGEX
from nemocascade.model import presets


def model_config(preset: str) -> ml_collections.ConfigDict:
    """All ``ModelConfig`` fields of a named preset (``tiny``, ``small_100m``, ``nano30b``)."""
    factory = getattr(presets, preset, None)
    if factory is None or preset.startswith("_"):
        raise ValueError(f"unknown model preset {preset!r}; known: {presets.NAMES}")
    return ml_collections.ConfigDict(dataclasses.asdict(factory()))


def mesh_config(*, data: int = -1, fsdp: int = 1, expert: int = 1, sequence: int = 1,
                tensor: int = 1) -> ml_collections.ConfigDict:
    """Mesh axis sizes (``sharding.MESH_AXES``); one axis may be -1 (all remaining devices)."""
    return ml_collections.ConfigDict(dict(data=data, fsdp=fsdp, expert=expert, sequence=sequence, tensor=tensor))


def optimizer_config(*, learning_rate: float, schedule: str = "constant", warmup_steps: int = 0,
                     init_learning_rate: float = 0.0, end_learning_rate: float = 0.0, total_steps: int = 0,
                     b1: float = 0.9, b2: float = 0.95, eps: float = 1e-8, weight_decay: float = 0.0,
                     grad_clip_norm: float = 1.0, name: str = "adamw") -> ml_collections.ConfigDict:
    """AdamW by default with the recipe's RL moments (0.9/0.95); SFT uses b2=0.98 and weight decay 0.1.

    ``total_steps`` (the cosine's length) 0 = the stage's ``train.steps``, so ``--config.train.steps=N`` alone
    shortens a run with the whole schedule."""
    return ml_collections.ConfigDict(dict(
        name=name, learning_rate=learning_rate, schedule=schedule, warmup_steps=warmup_steps,
        init_learning_rate=init_learning_rate, end_learning_rate=end_learning_rate, total_steps=total_steps,
        b1=b1, b2=b2, eps=eps, weight_decay=weight_decay, grad_clip_norm=grad_clip_norm))


def train_config(*, steps: int, log_every: int = 10, checkpoint_every: int = 50, keep_checkpoints: int = 2,
                 grad_accum_steps: int = 1, freeze_router: bool = False) -> ml_collections.ConfigDict:
    """Loop cadence; ``checkpoint_every`` must be a multiple of ``log_every`` (exact resume)."""
    return ml_collections.ConfigDict(dict(
        steps=steps, log_every=log_every, checkpoint_every=checkpoint_every, keep_checkpoints=keep_checkpoints,
        grad_accum_steps=grad_accum_steps, freeze_router=freeze_router))


def sft_data_config(**overrides) -> ml_collections.ConfigDict:
    """Where SFT examples come from and how they are packed."""
    data = dict(
        tokenizer="",                      # "" = the committed toy sentencepiece model
        toy_mix="math=4000,if=4000,code=4000",  # toy domain=examples drawn (ignored when jsonl is set)
        jsonl="",                          # a JSONL of {"messages": [...]} rows instead of toy domains
        on_bad_row="raise",                # "raise" or "skip" (skips are logged with file:line)
        seq_len=256,                       # packed row length in tokens
        batch_size=16,                     # packed rows per step
        thinking=False,                    # render assistant turns in thinking mode
        too_long="raise",                  # a conversation longer than seq_len: "raise"|"truncate"|"skip"
    )
    data.update(overrides)
    return ml_collections.ConfigDict(data)


def preference_data_config(**overrides) -> ml_collections.ConfigDict:
    """Where reward-model preference pairs come from and how they are laid out."""
    data = dict(
        tokenizer="",                      # "" = the committed toy sentencepiece model
        domain="chat",                     # built-in toy domain with chosen/rejected fields (ignored with jsonl)
        num_pairs=4000,                    # toy train pairs (train split)
        jsonl="",                          # a JSONL of {"prompt" | "messages", "chosen", "rejected"} rows instead
        on_bad_row="raise",                # "raise" or "skip" (skips are logged with file:line)
        seq_len=128,                       # tokens per scored sequence (prompt + answer + <|im_end|>)
        batch_size=8,                      # pairs per step
        too_long="raise",                  # a pair longer than seq_len: "raise"|"truncate" (keep the end)|"skip"
    )
    data.update(overrides)
    return ml_collections.ConfigDict(data)


def reward_model_config(**overrides) -> ml_collections.ConfigDict:
    """Bradley-Terry settings and the held-out pairwise evaluation of a ``reward_model`` stage."""
    rm = dict(
        margin=0.0,                        # required reward gap of the Bradley-Terry loss (0 = plain BT)
        eval_pairs=500,                    # toy held-out pairs (heldout split: no prompt shared with train)
        eval_jsonl="",                     # held-out pairs from a JSONL (with data.jsonl; "" = no evaluation)
        eval_batch_size=64,                # rows per jitted scoring call
    )
    rm.update(overrides)
    return ml_collections.ConfigDict(rm)


def tiny_sft_stage() -> dict:
    """The tiny SFT stage's data/optimizer/train fields (``experiments/sft.py``'s default and the first stage
    of the tiny cascade): about 3.5 minutes on 2 CPU cores (240 steps x 4K tokens); half the examples are math
    (the held-out metric)."""
    return dict(
        data=sft_data_config(toy_mix="math=6000,if=3000,code=3000"),
        optimizer=optimizer_config(learning_rate=3e-3, schedule="cosine", warmup_steps=20,
                                   end_learning_rate=3e-4, b1=0.9, b2=0.98, weight_decay=0.1),
        train=train_config(steps=240, log_every=20, checkpoint_every=60))


def rl_config(*, domains, prompts_per_step: int = 8, num_samples: int = 8, max_new_tokens: int = 64,
              max_prompt_tokens: int = 96, temperature: float = 1.0, top_p: float = 1.0,
              aggregation: str = "token_mean", **overrides) -> ml_collections.ConfigDict:
    """Rollout + loss settings of an RL stage (GRPO, MOPD or RLHF). Recipe defaults: temperature 1.0, top-p 1.0,
    no KL (the recipe's RL stages run with KL coefficient 0 except RLHF's 0.03), GRPO ``token_mean``; MOPD
    ``seq_mean_token_mean`` with an importance-weight gate [0.5, 2.0].

    ``kl_coef > 0`` (GRPO / RLHF only) keeps the stage's initial params as a frozen reference policy: one more
    params set in device memory, and one more forward per rollout batch."""
    rl = dict(
        domains=tuple(domains),
        jsonl="",                        # a JSONL of RL prompts instead of the toy domains
        on_bad_row="raise",
        prompts_per_domain=2000,         # toy prompts generated per domain (train split)
        prompts_per_step=prompts_per_step,
        num_samples=num_samples,         # rollouts per prompt (the GRPO group size)
        max_new_tokens=max_new_tokens,   # the whole answer (with max_turns > 1: all turns + tool results)
        max_prompt_tokens=max_prompt_tokens,
        max_turns=1,                     # > 1: episodes of <= this many turns (domains with an environment)
        max_turn_tokens=0,               # assistant turns of <= this many tokens each (0 = max_new_tokens; then
                                         # also a single-turn domain's answer in the stage)
        temperature=temperature,
        top_p=top_p,
        aggregation=aggregation,
        clip_eps_low=0.2,
        clip_eps_high=0.2,               # > clip_eps_low = DAPO's clip-higher
        kl_coef=0.0,                     # GRPO/RLHF: weight of KL(pi || pi_ref) (k3), pi_ref = the stage's start
        normalize_std=True,
        filter_uniform_groups=True,      # DAPO dynamic filtering: groups with equal rewards do not count
        pack_rollouts=False,             # pack the rollouts into fewer training rows (stages/rollout_batch.py)
        unfinished_reward_zero=True,     # a response that hit max_new_tokens gets reward 0 (IF-RL)
        is_low=0.5,                      # MOPD importance-weight gate
        is_high=2.0,
        teachers=ml_collections.ConfigDict(),  # MOPD: domain -> checkpoint dir (filled from the ledger)
        teacher_stages="",               # MOPD: pinned teachers "math=sft,if=if_rl"; other domains: best in ledger
        reward_model="",                 # RLHF: a reward_model stage's checkpoint dir (a cascade fills it)
        judge=judge_config(),            # an LLM judge: RLHF's pairwise one, or judged domains' (long_context)
    )
    rl.update(overrides)
    return ml_collections.ConfigDict(rl)


def judge_config(**overrides) -> ml_collections.ConfigDict:
    """An LLM judge (``rewards/judge_model.py``). An ``rlhf`` stage with ``checkpoint`` set scores with it as a
    generative pairwise judge (``rewards/pairwise_judge.py``) instead of a Bradley-Terry reward model; any RL stage
    with a judged domain (``rewards.JUDGED_DOMAINS``: ``long_context``) scores that domain's answers against the
    reference answer with it (``rewards/answer_judge.py``). Defaults: greedy verdicts; pairwise: every pair of a
    prompt's rollouts judged once, no length terms (RECIPE.md names a length normalisation and a conciseness bonus,
    not their sizes); answer judge: NeMo Gym's ``equivalence_llm_judge`` labels and per-row regex settings, no swap
    check."""
    judge = dict(
        checkpoint="",                   # a checkpoint dir of this project (e.g. a HF model imported with hf.convert)
        stage="",                        # in a cascade: an earlier stage whose final checkpoint is the judge
        tokenizer="",                    # "" = the one saved with the checkpoint (data.tokenizer), else the stage's
        strategy="all_pairs",            # or "circular": rollout i vs i+1 (G comparisons per prompt)
        swap_positions=False,            # judge every comparison in both orders too
        max_new_tokens=64,               # the judge's budget per verdict
        thinking=False,                  # the judge's prompt opens a reasoning block
        temperature=0.0,                 # 0 = greedy verdicts
        top_p=1.0,
        batch_size=64,                   # comparisons per sampler call
        tiebreak=0.5,                    # equal scores: the ranking's preferred answer +tiebreak, the other -tiebreak
        length_penalty=0.0,              # score -= length_penalty * (n - mean n) / mean n (answer tokens, per group)
        conciseness_bonus=0.0,           # the shortest of the top ``top_fraction`` answers of a group gets this
        top_fraction=0.2,
        # the answer judge of judged domains (rewards/answer_judge.py)
        template="",                     # the judge's user turn: {question} {expected_answer} {generated_answer};
                                         # "" = data.judge_prompts.ANSWER_JUDGE_TEMPLATE
        equal_label=EQUAL_LABEL,         # the verdict labels ("[[A=B]]", "[[A!=B]]"); the first in the answer counts
        not_equal_label=NOT_EQUAL_LABEL,
        question_regex="",               # what of the last user turn the judge sees ("" = all): last match, group 1
        answer_regex="",                 # what of the final answer the judge sees ("" = all)
        check_twice_swap=False,          # an equal verdict is checked again with the two answers swapped
        reward_if_swap_fails=0.0,        # the reward when that second verdict is not equal
        use_per_record_regex=True,       # a row's template_metadata.output_regex replaces answer_regex
        extraction_length_threshold=120,  # such a row with a longer reference: the whole answer judged once (0 = off)
        check_full_generation_on_fail=True,        # such a row judged not equal: judged again on the whole answer
        reward_if_full_generation_succeeds=0.5,    # the reward when that rescue verdict is equal
    )
    judge.update(overrides)
    return ml_collections.ConfigDict(judge)


def eval_config(*, domains=("math", "if", "code"), num_examples: int = 64, max_new_tokens: int = 64,
                max_turns: int = 1, max_turn_tokens: int = 0) -> ml_collections.ConfigDict:
    """Held-out evaluation after every stage: greedy pass@1 and mean reward per domain. ``max_turns`` > 1 plays
    the multi-turn domains (``nemocascade.environments``) in up to that many turns of ``max_turn_tokens``
    (0 = ``max_new_tokens``), ``max_new_tokens`` in all; the others stay single-turn."""
    return ml_collections.ConfigDict(dict(domains=tuple(domains), num_examples=num_examples,
                                          max_new_tokens=max_new_tokens, max_turns=max_turns,
                                          max_turn_tokens=max_turn_tokens))


def shared_data_config(*, tokenizer: str = "", thinking: bool = False) -> ml_collections.ConfigDict:
    """Data fields every stage of a cascade shares (the tokenizer must be the same for MOPD teachers)."""
    return ml_collections.ConfigDict(dict(tokenizer=tokenizer, thinking=thinking))


def stage(kind: str, *, init_from: str = "", **fields) -> ml_collections.ConfigDict:
    """One cascade stage: its kind, the earlier policy stage whose final params it starts from (``init_from``;
    "" = the latest one) plus its own optimizer/train/data/rl fields (and optionally its own ``seed``)."""
    return ml_collections.ConfigDict(dict(kind=kind, init_from=init_from, **fields))


def cascade_config(*, name: str, model: str | ml_collections.ConfigDict, mesh: ml_collections.ConfigDict, order,
                   stages: dict, eval_cfg: ml_collections.ConfigDict, data: ml_collections.ConfigDict,
                   seed: int = 0, compare: ml_collections.ConfigDict | None = None,
                   init_checkpoint: str = "") -> ml_collections.ConfigDict:
    """A pipeline config: shared fields (``model``: a preset name or a ``model_config``), the stage order and each
    stage's own config; ``compare`` (``compare_config``) names branches of stages the report compares (none by
    default); ``init_checkpoint``: the base model's checkpoint directory (``python -m nemocascade.hf.convert
    import``) that the first stage starts from ("" = random init)."""
    missing = [n for n in order if n not in stages]
    if missing:
        raise ValueError(f"cascade {name!r} orders stages {missing} that are not defined")
    config = ml_collections.ConfigDict()
    config.kind = "cascade"
    config.name = name
    config.seed = seed
    config.model = model if isinstance(model, ml_collections.ConfigDict) else model_config(model)
    config.mesh = mesh
    config.data = data
    config.eval = eval_cfg
    config.order = tuple(order)
    config.stages = ml_collections.ConfigDict(stages)
    config.compare = compare if compare is not None else compare_config()
    config.init_checkpoint = init_checkpoint
    return config


def compare_config(*, domain: str = "", reference: str = "", start: str = "", branches: str = "",
                   tolerance: float = 0.02) -> ml_collections.ConfigDict:
    """Branches of a cascade the report compares on one ``domain``: ``branches`` is
    ``"mopd=mopd_1,mopd_2;grpo=grpo_1,grpo_2"`` (each branch's stages in training order, all starting from
    ``start``); a branch has recovered after its first stage scoring at least ``reference``'s score minus
    ``tolerance`` (pass@1). ``branches=""``: no comparison."""
    return ml_collections.ConfigDict(dict(domain=domain, reference=reference, start=start, branches=branches,
                                          tolerance=tolerance))


# ------------------------------------------------------------------------------------------------------
# Stages of the recipe shared by several experiment files (experiments/{grpo,if_rl,rlhf,cascade}.py):
# ``tiny_*`` run on a laptop CPU, ``nano30b_*`` carry RECIPE.md's settings for Nemotron-3-Nano on a TPU pod.
# The nano30b presets are sized for a v5p-64 slice (32 chips, 95 GB each): ``python -m nemocascade.plan`` plans
# every one of their stages to fit there (``tests/test_plan.py``); on another topology it says what to change.
NANO30B_PROMPT_TOKENS = 16384   # prompt budget of the nano30b RL stages (ours; the paper gives response lengths)
NANO30B_TOKENIZER = "REQUIRED: the base model's tokenizer.json (its HF directory)"
# The post-training starts from the base model: Nemotron-3-Nano-30B-A3B imported from Hugging Face.
NANO30B_BASE_CHECKPOINT = "REQUIRED: a checkpoint dir from python -m nemocascade.hf.convert import"
NANO30B_SEQUENCE = 16           # each row's tokens split 16 ways: it divides every nano30b stage's row width
NANO30B_BATCH_SHARDS = 2        # the rows split over fsdp = 32 devices / 16
NANO30B_MICRO_TOKENS = 20480    # at most this many tokens per device in a micro-batch (or one row's share)


def nano30b_mesh() -> ml_collections.ConfigDict:
    """The nano30b presets' mesh on a v5p-64 (32 devices): sequence parallelism 16 ways, the rest over ``fsdp``
    (the parameters and optimizer state are split over both), no expert parallelism: every device runs all
    128 experts on its own tokens (``model/moe.py``) with the experts' weights gathered per layer."""
    return mesh_config(data=1, fsdp=NANO30B_BATCH_SHARDS, expert=1, sequence=NANO30B_SEQUENCE, tensor=1)


def nano30b_model() -> ml_collections.ConfigDict:
    """The nano30b architecture (``model_config("nano30b")``) with what its real-scale runs need to fit: full
    rematerialisation, the Pallas kernels of the running backend (``kernel_impl="auto"``: flash attention
    keeps no [H, L, L] scores), and the LM head and log-softmax in chunks of 2048 positions."""
    model = model_config("nano30b")
    model.update(remat="full", kernel_impl="auto", logits_chunk_size=2048)
    return model


def nano30b_grad_accum(rows: int, row_tokens: int) -> int:
    """Micro-batches per step for ``rows`` rows of ``row_tokens`` tokens on :func:`nano30b_mesh`: each device's
    micro-batch holds the largest power-of-two number of rows whose shares (``row_tokens / NANO30B_SEQUENCE``
    tokens each) stay within ``NANO30B_MICRO_TOKENS``, at least one row."""
    share = row_tokens // NANO30B_SEQUENCE
    micro_rows = 1
    while 2 * micro_rows * share <= NANO30B_MICRO_TOKENS:
        micro_rows *= 2
    rows_per_shard = rows // NANO30B_BATCH_SHARDS
    if rows_per_shard % micro_rows:
        raise ValueError(f"{rows} rows of {row_tokens} tokens do not split into micro-batches of {micro_rows} rows "
                         f"per device on the nano30b mesh")
    return max(1, rows_per_shard // micro_rows)


def nano30b_shared_data() -> ml_collections.ConfigDict:
    """The nano30b cascades' shared data fields: the real tokenizer, thinking mode. The nano30b cascade stages
    leave their ``data.tokenizer`` "" (inherit), so ``--config.data.tokenizer=DIR`` sets it for all of them."""
    return shared_data_config(tokenizer=NANO30B_TOKENIZER, thinking=True)


def tiny_rl_stage(kind: str, *, domains, steps: int = 20, learning_rate: float = 2e-4,
                  **rl_overrides) -> ml_collections.ConfigDict:
    """A tiny RL stage (``grpo``/``mopd``/``rlhf``): a constant lr, a log line every 5 steps, a checkpoint every 10."""
    return stage(kind, rl=rl_config(domains=domains, **rl_overrides),
                 optimizer=optimizer_config(learning_rate=learning_rate),
                 train=train_config(steps=steps, log_every=5, checkpoint_every=10))


def nano30b_rl_stage(kind: str, *, domains, jsonl: str, steps: int, max_new_tokens: int,
                     learning_rate: float = 3e-6, checkpoint_every: int = 10, optimizer=None,
                     **rl_overrides) -> ml_collections.ConfigDict:
    """A nano30b RL stage with the recipe's shared settings: 128 prompts x 16 rollouts, AdamW 0.9/0.95 at 3e-6,
    temperature / top-p 1.0, the router frozen (NeMo-RL's Nano-3 RL config); ``jsonl`` names the released subset.
    Its gradient accumulation fits the rows on :func:`nano30b_mesh` (:func:`nano30b_grad_accum`), and the rollouts
    are packed (responses far shorter than the budget train in fewer rows and micro-batches)."""
    rl = dict(prompts_per_step=128, num_samples=16, max_prompt_tokens=NANO30B_PROMPT_TOKENS, pack_rollouts=True)
    rl.update(rl_overrides)
    grad_accum = nano30b_grad_accum(rl["prompts_per_step"] * rl["num_samples"],
                                    rl["max_prompt_tokens"] + max_new_tokens)
    return stage(kind, rl=rl_config(domains=domains, jsonl=f"REQUIRED: path/to/{jsonl}", max_new_tokens=max_new_tokens,
                                    **rl),
                 optimizer=optimizer or optimizer_config(learning_rate=learning_rate),
                 train=train_config(steps=steps, log_every=1, checkpoint_every=checkpoint_every, freeze_router=True,
                                    grad_accum_steps=grad_accum))


def nano30b_sft_fields() -> dict:
    """RECIPE.md's SFT: packed to 256K tokens, batch 64, lr 5e-5 -> 5e-6 cosine, 200 warmup steps, AdamW
    0.9/0.98, weight decay 0.1; one row per device per micro-batch on :func:`nano30b_mesh`."""
    return dict(data=sft_data_config(tokenizer=NANO30B_TOKENIZER, jsonl="REQUIRED: path/to/sft.jsonl",
                                     seq_len=262144, batch_size=64, thinking=True),
                optimizer=optimizer_config(learning_rate=5e-5, schedule="cosine", warmup_steps=200,
                                           end_learning_rate=5e-6, b2=0.98, weight_decay=0.1),
                train=train_config(steps=20000, log_every=10, checkpoint_every=500,
                                   grad_accum_steps=nano30b_grad_accum(64, 262144)))


def nano30b_sft_stage() -> ml_collections.ConfigDict:
    """:func:`nano30b_sft_fields` as a cascade stage, with the cascade's tokenizer."""
    fields = nano30b_sft_fields()
    fields["data"].tokenizer = ""
    return stage("sft", **fields)


def tiny_chat_sft_stage() -> ml_collections.ConfigDict:
    """The tiny SFT stage with the toy ``chat`` domain added (the prompts of RLHF and the reward model's pairs)."""
    fields = tiny_sft_stage()
    fields["data"].toy_mix += ",chat=3000"
    return stage("sft", **fields)


def tiny_judge_sft_stage(*, init_from: str = "") -> ml_collections.ConfigDict:
    """A tiny generative pairwise judge: SFT from ``init_from``'s final params on 3000 toy ``judge`` transcripts (a
    ``chat`` question, its chosen and rejected answers as ``response_1`` / ``response_2`` in a random order, the
    verdict JSON; ``data/toy/judge.py``)."""
    fields = tiny_sft_stage()
    fields["data"].toy_mix = "judge=3000"
    fields["train"].update(steps=150, log_every=10, checkpoint_every=50)
    return stage("sft", init_from=init_from, **fields)


def tiny_answer_judge_stage(*, init_from: str = "") -> ml_collections.ConfigDict:
    """A tiny answer judge of toy ``long_context`` answers: SFT from ``init_from``'s final params on 20000 toy
    ``answer_judge`` transcripts (``data/toy/answer_verdicts.py``), 600 steps: about 9 CPU minutes, its verdicts
    on the SFT policy's answers 93% right (2026-12-07). Its verdicts only leave chance after ~300 steps (with 3000
    transcripts they did not in 600)."""
    fields = tiny_sft_stage()
    fields["data"].toy_mix = "answer_judge=20000"
    fields["train"].update(steps=600, log_every=50, checkpoint_every=200)
    return stage("sft", init_from=init_from, **fields)


def tiny_rlhf_stage() -> ml_collections.ConfigDict:
    """Tiny RLHF on toy ``chat`` prompts. Reward-model scores are unbounded, so an unfinished answer keeps its
    score (the reward model ranks rambling low) instead of getting 0."""
    return tiny_rl_stage("rlhf", domains=("chat",), max_new_tokens=32, unfinished_reward_zero=False)


def nano30b_rlhf_stage() -> ml_collections.ConfigDict:
    """RECIPE.md's RLHF: 16K-token responses, 25-30 steps (we take 30), 128 prompts x 16 rollouts, lr 3e-6, KL
    coefficient 0.03 against the stage's starting policy (kept frozen: one more params set in device memory)."""
    return nano30b_rl_stage("rlhf", domains=("chat",), jsonl="rlhf_prompts.jsonl", steps=30, max_new_tokens=16384,
                            unfinished_reward_zero=False, kl_coef=0.03)


def nano30b_judge() -> dict:
    """``rl.judge`` fields of a nano30b RLHF stage scored by a generative pairwise judge. RECIPE.md: the GenRM
    compares every pair of a prompt's rollouts (``all_pairs``: 120 comparisons of 16 rollouts). Its sampling
    (a reasoning GenRM: thinking on, 16K tokens, temperature 0.6, top-p 0.95) follows NeMo Gym's genrm_compare
    defaults. The recipe gives no sizes for its length normalisation and conciseness bonus: both stay off."""
    return dict(checkpoint="REQUIRED: path/to/genrm_checkpoint (nemocascade.hf.convert import)",
                strategy="all_pairs", thinking=True, max_new_tokens=16384, temperature=0.6, top_p=0.95,
                batch_size=512)


def nano30b_answer_judge() -> dict:
    """``rl.judge`` fields of a nano30b stage with a judged domain (long-context RL). NeMo Gym's long-context judge
    (``equivalence_llm_judge``'s ``lc_judge``) reads the question after the document (``question_regex``) and
    judges once (no swap check); its judge is the policy server. Here the judge is a checkpoint (e.g. an instruct
    model imported with ``nemocascade.hf.convert``); a verdict without reasoning, greedy, 512 tokens, is ours."""
    return dict(checkpoint="REQUIRED: path/to/judge_checkpoint (nemocascade.hf.convert import)",
                question_regex=r"^QUESTION:\s*(.*)$|</text>\n\n(.*)$", max_new_tokens=512, batch_size=512)


TINY_LOOKUP_PROMPT_TOKENS, TINY_LOOKUP_NEW_TOKENS = 96, 32   # a toy long_context prompt: <= 73 tokens; answer ~10


def tiny_long_context_rl_stage(*, judge_stage: str) -> ml_collections.ConfigDict:
    """Long-context RL at toy scale: GRPO on toy ``long_context`` lookups judged by the stage ``judge_stage`` (an
    answer judge, ``tiny_answer_judge_stage``), which sees the question without the document and the answer's last
    number; its budget holds one verdict (a label and its stop token). An equal verdict is checked again with the
    answers swapped. At lr 2e-4 the policy learned the judge's mistakes (2026-12-07: judge reward 0.22 -> 0.27
    while right answers fell 0.27 -> 0.16; BENCHMARKS.md)."""
    stage = tiny_rl_stage("grpo", domains=("long_context",), learning_rate=5e-5,
                          max_prompt_tokens=TINY_LOOKUP_PROMPT_TOKENS, max_new_tokens=TINY_LOOKUP_NEW_TOKENS)
    stage.rl.judge.update(stage=judge_stage, max_new_tokens=12, question_regex=LOOKUP_QUESTION_REGEX,
                          answer_regex=LOOKUP_ANSWER_REGEX, check_twice_swap=True)
    return stage


def nano30b_long_context_rl_stage() -> ml_collections.ConfigDict:
    """RECIPE.md's long-context RL: 30 steps, 49K-token responses to inputs of up to 32K tokens, an LLM judge
    (:func:`nano30b_answer_judge`) on the released-format rows of ``long_context_rl.jsonl`` (``messages``,
    ``expected_answer``, ``domain: long_context``)."""
    stage = nano30b_rl_stage("grpo", domains=("long_context",), jsonl="long_context_rl.jsonl", steps=30,
                             max_new_tokens=49152, max_prompt_tokens=32768)
    stage.rl.judge.update(nano30b_answer_judge())
    return stage


def tiny_reward_model_stage() -> dict:
    """The tiny Bradley-Terry reward model's fields (``experiments/reward_model.py``'s default): toy ``chat``
    pairs, a few CPU minutes."""
    return dict(data=preference_data_config(), reward_model=reward_model_config(),
                optimizer=optimizer_config(learning_rate=1e-3, schedule="cosine", warmup_steps=10,
                                           end_learning_rate=1e-4, b1=0.9, b2=0.98, weight_decay=0.01),
                train=train_config(steps=80, log_every=10, checkpoint_every=40))


def nano30b_reward_model_stage(*, tokenizer: str = NANO30B_TOKENIZER) -> dict:
    """A nano30b Bradley-Terry reward model's fields. The paper's RLHF uses a generative pairwise judge, so
    these are ours: one epoch at a small lr, 128 pairs per step, sequences up to RLHF's 16K-token responses
    plus their prompts. ``tokenizer=""``: the cascade's (inherited)."""
    return dict(data=preference_data_config(tokenizer=tokenizer,
                                            jsonl="REQUIRED: path/to/preference_pairs.jsonl",
                                            seq_len=20480, batch_size=128, too_long="skip"),
                reward_model=reward_model_config(eval_jsonl="REQUIRED: path/to/heldout_pairs.jsonl",
                                                 eval_batch_size=64),
                optimizer=optimizer_config(learning_rate=2e-6, schedule="cosine", warmup_steps=20,
                                           init_learning_rate=2e-7, end_learning_rate=2e-7, weight_decay=0.0),
                train=train_config(steps=600, log_every=10, checkpoint_every=100,
                                   grad_accum_steps=nano30b_grad_accum(2 * 128, 20480)))   # chosen + rejected rows


def tiny_episodes_experiment(*, name: str, domain: str, sft_conversations: int, sft_steps: int, sft_seq_len: int,
                             prompt_tokens: int, episode_tokens: int, turn_tokens: int, max_turns: int,
                             max_seq_len: int = 0, rl_grad_accum: int = 1) -> ml_collections.ConfigDict:
    """A tiny cascade ``sft`` -> ``name`` for a multi-turn ``domain``: SFT on ``sft_conversations`` toy
    conversations (one per ``sft_seq_len``-token row), then GRPO on episodes of up to ``max_turns`` turns of
    ``turn_tokens``, ``episode_tokens`` in all; the evaluation plays held-out episodes the same way. The model's
    ``max_seq_len``: ``prompt_tokens + episode_tokens`` unless given; ``rl_grad_accum``: the GRPO step's
    micro-batches."""
    sft = tiny_sft_stage()
    sft["data"].update(toy_mix=f"{domain}={sft_conversations}", seq_len=sft_seq_len)
    sft["train"].steps = sft_steps
    rl = tiny_rl_stage("grpo", domains=(domain,), learning_rate=1e-4, max_prompt_tokens=prompt_tokens,
                       max_new_tokens=episode_tokens, max_turns=max_turns, max_turn_tokens=turn_tokens)
    rl.train.grad_accum_steps = rl_grad_accum
    config = cascade_config(name=name, model="tiny", mesh=mesh_config(), order=("sft", name),
                            stages={"sft": stage("sft", **sft), name: rl}, data=shared_data_config(),
                            eval_cfg=eval_config(domains=(domain,), max_new_tokens=episode_tokens,
                                                 max_turns=max_turns, max_turn_tokens=turn_tokens))
    config.model.max_seq_len = max_seq_len or prompt_tokens + episode_tokens
    return config


def nano30b_episodes_experiment(*, name: str, domain: str, jsonl: str, episode_tokens: int, turn_tokens: int,
                                max_turns: int, steps: int = 45) -> ml_collections.ConfigDict:
    """A nano30b cascade ``sft`` -> ``name``: GRPO on ``domain`` episodes (rows of ``jsonl``) with RECIPE.md's SWE RL
    (agentic) settings: 16 prompts x 64 rollouts, temperature 0.8, 40-50 steps; from the base checkpoint."""
    rl = nano30b_rl_stage("grpo", domains=(domain,), jsonl=jsonl, steps=steps, max_new_tokens=episode_tokens,
                          prompts_per_step=16, num_samples=64, temperature=0.8, max_turns=max_turns,
                          max_turn_tokens=turn_tokens)
    return cascade_config(name=name, model=nano30b_model(), mesh=nano30b_mesh(), order=("sft", name),
                          stages={"sft": nano30b_sft_stage(), name: rl},
                          eval_cfg=eval_config(domains=(), num_examples=512, max_new_tokens=episode_tokens),
                          data=nano30b_shared_data(), init_checkpoint=NANO30B_BASE_CHECKPOINT)


def episodes_experiment(preset: str, *, name: str, domain: str, tiny: dict,
                        nano30b: dict) -> ml_collections.ConfigDict:
    """``experiments/<name>.py``'s config for ``preset``: :func:`tiny_episodes_experiment` with ``tiny``'s fields or
    :func:`nano30b_episodes_experiment` with ``nano30b``'s."""
    if preset == "tiny":
        return tiny_episodes_experiment(name=name, domain=domain, **tiny)
    if preset == "nano30b":
        return nano30b_episodes_experiment(name=name, domain=domain, **nano30b)
    raise ValueError(f"unknown preset {preset!r} for experiments/{name}.py; known: tiny, nano30b")
