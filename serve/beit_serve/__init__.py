"""Run the Triton Inference Server binary shipped in the nvidia-pytriton wheel on a model repository."""

from beit_serve.server import EmbeddedServer, ServerStartError

__all__ = ["EmbeddedServer", "ServerStartError"]
