"""patchctl: a registry and package manager for LoRA patches (PortLLM's θ′ + Δθ, as a workflow)."""

__version__ = "0.1.0"

__all__ = ["__version__"]
