"""The answer judge's prompt format (``rewards/answer_judge.py``), shared with the toy transcripts that teach a
model to be that judge (``data/toy/answer_verdicts.py``).

``ANSWER_JUDGE_TEMPLATE`` is the judge's user turn (``str.format`` placeholders ``{question}``,
``{expected_answer}``, ``{generated_answer}``); the judge answers with ``EQUAL_LABEL`` when the two answers agree,
``NOT_EQUAL_LABEL`` when they do not (NeMo Gym's ``equivalence_llm_judge`` labels).
"""
ANSWER_JUDGE_TEMPLATE = ("Do the two answers to the question agree? Reply [[A=B]] if they do, [[A!=B]] if not.\n"
                         "QUESTION: {question}\nANSWER A: {expected_answer}\nANSWER B: {generated_answer}")
EQUAL_LABEL = "[[A=B]]"
NOT_EQUAL_LABEL = "[[A!=B]]"
