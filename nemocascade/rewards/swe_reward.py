"""The ``swe`` reward (SWE RL, multi-turn): the row's tests run on the repository as the episode left it.

The sample's ``assistant_turns`` (``stages/prompts.decode_samples``) are replayed on the row's ``repo`` exactly
as the environment applied them (``environments.repository.replay``: every ``replace_in_file`` call, in order),
and the row's ``tests`` run on the result in the code sandbox. With ``aggregate="all"`` (default) the reward is 1
when every test passes, else 0 (RECIPE.md: SWE RL is judged by tests); ``"fraction"`` gives the pass fraction.
The final answer's text is not read: only the repository counts. Info: the ``code`` reward's fields and
``files_changed`` (the paths whose text differs from the row's).
"""
from __future__ import annotations

from typing import Sequence

from nemocascade.environments.repository import check_repository_row, replay, repository_submission
from nemocascade.rewards.base import Verification
from nemocascade.rewards.code_reward import CodeReward


class SweReward(CodeReward):
    """Options: those of ``CodeReward`` (``aggregate``, ``sandbox`` / ``limits``, ``isolation``, ``max_workers``)."""
    domain = "swe"
    required_fields = {"repo": dict, "tests": list, "assistant_turns": list}

    def validate_example(self, where: str, sample: dict) -> None:
        check_repository_row(sample, where)
        if "assistant_turns" in sample and not all(isinstance(t, str) for t in sample["assistant_turns"]):
            raise ValueError(f"{where}['assistant_turns'] must be a list of str (the episode's assistant turns)")

    def verify_batch(self, samples: Sequence[dict], answers: Sequence[str]) -> list[Verification]:
        repositories = [replay(sample, sample["assistant_turns"]).files for sample in samples]
        results = self.sandbox.run_many([repository_submission(files, sample["tests"])
                                         for files, sample in zip(repositories, samples)])
        verifications = []
        for sample, files, result in zip(samples, repositories, results):
            verification = self.verification(result)
            changed = sorted(path for path, text in files.items() if text != sample["repo"][path])
            verifications.append(Verification(verification.reward, verification.reason, verification.format_ok,
                                              {**verification.info, "files_changed": changed}))
        return verifications
