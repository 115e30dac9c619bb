"""The model servers an evaluation needs, running for as long as the step needs them.

An evaluation calls the models of the model registry over HTTP exactly as the gateway does (the registry's
``base_url``). Where such a server already answers (``agenix up`` runs the packaged Gemma on :8090; production
runs vLLM), it is used as it is. Where a model's URL points at this machine and nothing answers, and the model is
the packaged Gemma, the resource starts it on that port for the step and stops it afterwards, so materializing
an eval report works on a bare machine and from the UI. Any other unreachable model is left alone: the gateway's
own fallback chain applies, and the report shows which tier answered.
"""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from urllib.parse import urlparse

import dagster as dg

LOCAL_HOSTS = ("127.0.0.1", "localhost", "::1")


def _answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def local_model_servers(registry, log=None, start_timeout_s: float = 120.0) -> Iterator[list[str]]:
    """Start the packaged Gemma for every enabled registry model served by a local llama.cpp server that is not
    running; yield the names of the models started; stop them on exit."""
    from serving.model_server import DEFAULT_MODEL_ALIAS, LlamaCppServer

    started: list[tuple[str, LlamaCppServer]] = []
    try:
        for spec in registry.generators():
            if spec.kind != "openai" or spec.tokenize != "llama-cpp-python":
                continue
            url = urlparse(spec.url())
            host, port = url.hostname or "", url.port or 80
            if host not in LOCAL_HOSTS or _answers(host, port):
                continue
            if (spec.backend_model or spec.name) != DEFAULT_MODEL_ALIAS:
                continue
            if log:
                log.info(f"starting the packaged Gemma for model {spec.name} on {host}:{port} for this step")
            server = LlamaCppServer(host="127.0.0.1" if host == "localhost" else host, port=port)
            server.start(timeout=start_timeout_s)
            started.append((spec.name, server))
        yield [name for name, _ in started]
    finally:
        for _, server in started:
            server.stop()


class ModelServerResource(dg.ConfigurableResource):
    """Model servers for evaluation steps (see module docstring; ``local_model_servers``). ``autostart: false``
    never starts one."""

    autostart: bool = True
