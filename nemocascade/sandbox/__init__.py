"""Runs untrusted Python (model-written code, a repository the policy edited) against test statements.

Used by the ``code`` and ``swe`` rewards and by the repository environment's ``run_tests`` tool;
``code_sandbox.py`` has the isolation levels, ``SANDBOX.md`` the full account.
"""
from nemocascade.sandbox.code_sandbox import (Sandbox, SandboxError, SandboxLimits, Submission, SubmissionResult,
                                              TestOutcome, shared_sandbox)

__all__ = ["Sandbox", "SandboxError", "SandboxLimits", "Submission", "SubmissionResult", "TestOutcome",
           "shared_sandbox"]
