"""Models the runtime builds from a spec (MLP, CNN, a GPT-style decoder with KV-cache and
MoE-router hook points) or from a factory reference; see build.py for the specs."""

from .base import Described, describe_module
from .build import KINDS, build
from .gpt import GPT
from .moe import MoE

__all__ = ["GPT", "KINDS", "Described", "MoE", "build", "describe_module"]
