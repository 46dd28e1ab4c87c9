"""The welcome view: shown in the chat when nothing can answer yet, saying what each
backend needs and how to set it up. Reports and the estimator work meanwhile."""

from __future__ import annotations

from collections.abc import Mapping

from textual.widgets import Markdown

from ds4router.tui.setup import SetupStatus


def welcome_markdown(status: SetupStatus, keys: Mapping[str, str]) -> str:
    def key(binding_id: str) -> str:
        return keys.get(binding_id, "?")

    return f"""\
**Welcome to ds4router.** Nothing can answer yet: set up either side — or both,
and private requests stay local while the rest may go to the cloud.

**Try it now:** press **{key("pull_demo")}** to fetch the demo-size model (SmolLM2-135M,
about 93 MB, runs on any CPU; or `ds4router models pull demo`). Small: fine for trying
ds4router, not for real work.

**Local engine** — private, no per-token bill. Now: *{status.local_detail}*
- put a DeepSeek V4 Flash checkpoint (2-bit experts) in a folder
- in `.ds4router.yaml`: `local: {{engine: {{model_path: ~/models/ds4-flash-q2}}}}`
- or any MLX model: `local: {{engine: {{kind: mlx-lm, model_path: ~/models/qwen3-4b-4bit}}}}`

**Cloud models** — any model LiteLLM reaches. Now: *{status.cloud_detail}*
- export your provider's key: `OPENAI_API_KEY`, `ANTHROPIC_API_KEY`, `DEEPSEEK_API_KEY`, …
- name the model, where its key is, and route to it:
  `cloud: {{models: [{{name: openai/gpt-4.1, api_key_env: OPENAI_API_KEY}}]}}`,
  `default: cloud:openai/gpt-4.1`

**Meanwhile** reports and estimates work: **{key("report")}** report ·
**{key("estimator")}** estimator · **{key("settings")}** settings (edit in `$EDITOR`) ·
**{key("command_palette")}** all commands. Saved changes apply without a restart.
"""


class WelcomeView(Markdown):
    def __init__(self, status: SetupStatus, keys: Mapping[str, str]) -> None:
        self.text = welcome_markdown(status, keys)
        super().__init__(self.text, id="welcome")
