"""Native tool calling: the model's API takes the tool declarations and returns the calls itself.

Each step sends the conversation with the pack's tool declarations (``AgentState.request`` builds it;
nothing is stored for it); the response is either text, which finishes the turn as a model-written
reply (checked: ``agents.finish``), or tool calls, which run for the session's customer
(``agents.tool_calls``) and go back to the model with their results in the next step. The model
itself decides when it has enough to answer, within the step limit.

A backend without tools (the instant stub) runs the same loop with no declarations: one text step.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.finish import finish_with_text
from agents.model_io import ModelResponse
from agents.state import AgentState
from agents.tool_calls import run_tools
from tools.registry import ToolExecutor


@dataclass(frozen=True)
class NativeProtocol:
    """Text or tool calls, as the model's own API returns them."""

    # A text-writing model answers policy questions from the retrieved passages put in its prompt; a
    # backend without tools writes no answer (its acknowledgement is code), so it gets none.
    passages_in_prompt: bool = True

    def writes_from_passages(self, state: AgentState) -> bool:
        return self.passages_in_prompt

    def begin(self, state: AgentState) -> AgentState:
        return state  # the first request is the conversation itself

    def advance(self, state: AgentState, response: ModelResponse, executor: ToolExecutor) -> AgentState:
        if not response.tool_calls:
            return finish_with_text(state, response)
        return run_tools(state, response, executor)
