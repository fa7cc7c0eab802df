"""The search of an Experiment, pure and stateless (docs/experiments.md).

Every decision is a function of the spec and the trials recorded so far: a fresh
in-memory Optuna study is told the trials back, asked, and dropped. The operator keeps
no study between reconciles, so a restart continues where the records say.
"""
