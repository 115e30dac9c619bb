"""The Agenix AI gateway: an OpenAI-compatible HTTP front door to the approved releases of every use case."""
