"""The agent: prompt building, model backends and reply assembly (see ``agents.model_io``)."""
