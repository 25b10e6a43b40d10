"""The side-output tag every stage emits its ``DeadLetter``s under.

One name, defined once: the graph flattens each stage's dead letters into one
``PublishDeadLetters`` by this tag, so a stage that spelled it differently would
drop its dead letters silently. The dead letter's shape is ``contract.messages.DeadLetter``.
"""

from __future__ import annotations

DEAD_LETTER_TAG = "dead_letter"
