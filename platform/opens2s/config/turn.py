"""The ``turn`` section: the pipeline's spoken test of the model it trained."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TurnSection(BaseModel):
    """Corpus questions asked by speech through the served endpoint, answers scored by ASR.

    Each question is the first user turn of a corpus dialogue (emotions spread over the picks);
    its answer's transcript is compared with the answer the model was trained on. The held-out
    question is the first question's words spoken by another voice with another emotion: reported,
    with no goal (the tiny model memorises its corpus; it is not expected to generalise).
    """

    model_config = ConfigDict(extra="forbid")

    questions: int = Field(4, ge=1, le=64)
    """Distinct corpus dialogues asked (fewer when the corpus holds fewer)."""
    held_out: bool = True
    """Also ask one training question re-rendered with another speaker and emotion."""
    max_text_tokens: int = Field(128, gt=0, le=512)
    """Text budget of each answer (the server's own default is shorter, for the web page)."""
    max_units: int = Field(600, gt=0, le=2000)
    """Speech-unit budget of each answer (600 = 24 s at 25 units/s)."""
    goal_median_wer: float = Field(0.25, ge=0)
    """The closed-loop goal the summary checks: median WER of the answers' transcripts."""
    goal_max_wer: float = Field(0.40, ge=0)
    """... and their largest WER."""

    @model_validator(mode="after")
    def _goals_ordered(self) -> TurnSection:
        if self.goal_median_wer > self.goal_max_wer:
            raise ValueError(
                f"turn.goal_median_wer ({self.goal_median_wer}) must be <= turn.goal_max_wer "
                f"({self.goal_max_wer})"
            )
        return self
