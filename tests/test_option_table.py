"""The option table, the typed Settings and the backend registry: each fact declared once, everything else derived."""

from __future__ import annotations

import argparse
from typing import Any

import pydantic
import pytest
from apache_beam.options.pipeline_options import PipelineOptions

from agents.backends import registry
from agents.backends.gemini import GeminiHandler
from pipeline.graph import agent_plan, model_handler
from pipeline.options import (
    BY_NAME,
    OPTIONS,
    SupportflowOptions,
    argv_with_env,
    default,
)
from pipeline.settings import Settings, SettingsError
from pipeline.validation import HTTP_URL_PATTERN, PATTERN_NAMES, PUBSUB_ID_PATTERN, is_pubsub_option, is_url_option


def supportflow_actions() -> list[Any]:
    """The argparse actions SupportflowOptions declares, in table order."""
    parser = argparse.ArgumentParser(add_help=False)
    SupportflowOptions._add_argparse_args(parser)
    return [a for a in parser._actions if a.option_strings]


def test_the_beam_options_are_generated_from_the_table() -> None:
    actions = {a.dest: a for a in supportflow_actions()}
    assert list(actions) == [o.name for o in OPTIONS]
    for o in OPTIONS:
        a = actions[o.name]
        assert (a.default, a.help, tuple(a.choices) if a.choices else None) == (o.default, o.help, o.choices), o.name
        assert a.type is (o.type if o.type in (int, float) else None), o.name
    parsed = PipelineOptions(["--max_history=7", "--gemini_deadline_s=2.5"]).view_as(SupportflowOptions)
    assert (parsed.max_history, parsed.gemini_deadline_s, parsed.model_backend) == (7, 2.5, registry.DEFAULT)


def test_every_option_is_a_typed_attribute_of_the_settings() -> None:
    s = Settings.local()
    for o in OPTIONS:
        value = getattr(s, o.name)
        assert value is None or isinstance(value, o.type), (o.name, value)
    assert default("max_agent_steps") == s.max_agent_steps == 4


def test_settings_are_frozen_and_keep_the_validated_session_config() -> None:
    s = Settings.local("--max_history=30", "--quiet_window_s=0.5")
    assert (s.session.max_history, s.session.quiet_window_s) == (30, 0.5) == (s.max_history, s.quiet_window_s)
    with pytest.raises(pydantic.ValidationError):
        s.max_history = 3  # type: ignore[misc]


def test_a_value_of_the_wrong_type_given_programmatically_is_reported() -> None:
    with pytest.raises(SettingsError) as err:
        Settings.from_options(PipelineOptions([], streaming=True, max_agent_steps="many"), environ={})
    assert len(err.value.problems) == 1 and err.value.problems[0].startswith("--max_agent_steps='many'")


def test_every_pubsub_and_url_option_names_its_pattern() -> None:
    for o in OPTIONS:
        if is_pubsub_option(o.name):
            assert o.pattern == PUBSUB_ID_PATTERN, o.name
        if is_url_option(o.name):
            assert o.pattern == HTTP_URL_PATTERN, o.name
        assert o.pattern is None or o.pattern in PATTERN_NAMES, o.name


def test_environment_variables_come_from_the_table() -> None:
    env = {o.env: str(o.default) for o in OPTIONS if o.default is not None}
    argv, applied = argv_with_env([], env)
    assert applied == [o.name for o in OPTIONS if o.default is not None]
    assert Settings.from_options(PipelineOptions(["--streaming", *argv]), environ={}).model_backend == registry.DEFAULT


def test_every_option_a_backend_reads_is_in_the_table() -> None:
    names = set([o.name for o in OPTIONS])
    for backend in registry.REGISTRY.values():
        assert "model_max_tokens" in backend.options, backend.name
        assert set(backend.options) <= names, (backend.name, set(backend.options) - names)
    assert BY_NAME["model_backend"].choices == registry.NAMES


def test_gemini_options_reach_the_handler_by_name() -> None:
    s = Settings.local(
        "--model_backend=gemini",
        "--gemini_model=gemini-2.5-pro",
        "--gemini_deadline_s=7",
        "--gemini_attempt_timeout_s=30",  # above the deadline: one attempt is capped at it
        "--gemini_max_attempts=2",
        "--gemini_backoff_s=3",
        "--gemini_max_backoff_s=1",  # below the first wait: the longest wait is the first one
        "--gemini_max_concurrency=5",
    )
    assert set(s.backend_options()) == set(registry.get("gemini").options)
    handler = model_handler(s)
    assert isinstance(handler, GeminiHandler) and handler.model_name == "gemini-2.5-pro"
    policy = handler.policy
    assert (policy.deadline_s, policy.attempt_timeout_s, policy.max_attempts) == (7, 7, 2)
    assert (policy.initial_backoff_s, policy.jitter_s, policy.max_backoff_s) == (3, 3, 3)


@pytest.mark.parametrize("name", registry.NAMES)
def test_the_step_plan_follows_the_registry_entry(name: str) -> None:
    entry = registry.get(name)
    version, config = agent_plan(name, max_steps=3, max_tokens=50)
    assert version == entry.prompt_version and config.max_tokens == 50
    assert bool(config.tools) is entry.calls_tools
    assert config.max_steps == (3 if entry.calls_tools else 1)


def test_the_configuration_page_lists_every_option_and_backend_as_declared() -> None:
    from deploy import option_docs

    page = option_docs.DOC_PATH.read_text()
    assert page == option_docs.render(page), "docs/configuration.md is stale: python -m deploy.option_docs --write"
    for o in OPTIONS:
        assert f"| `--{o.name}` |" in page and o.env in page, o.name
    for name in registry.NAMES:
        assert f"| `{name}` |" in page, name
