"""Callbacks that run a served script's plugins inside other libraries' training loops.

`liaison_runtime.integrations.lightning.LiaisonCallback` (PyTorch Lightning) and
`liaison_runtime.integrations.hf.LiaisonTrainerCallback` (Hugging Face `Trainer`) call the
moments of a `liaison_runtime.serve(...)` service (before the step, after backward, after
the optimizer step, epoch end, evaluation, fit end) where those loops reach them. Each module
imports its library when it is imported itself; nothing in the runtime imports them, so the
runtime never needs Lightning or transformers (docs/any-loop.md, "Lightning and Hugging Face").
"""
