"""The parts of liaison_runtime.serve (serve.py)."""
