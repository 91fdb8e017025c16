"""Liaison runtime: serves named tensor ops to the TypeScript SDK over ZeroMQ."""
__version__ = "0.1.0"
