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
# Welcome to ds4router

Nothing can answer yet: there is **no local model** and **no cloud key**.
Set up either one (or both: private requests stay local, the rest can go to the cloud).

## Local engine — private, no per-token bill
Now: *{status.local_detail}*

1. Put a DeepSeek V4 Flash checkpoint (2-bit experts, about 81 GB) in a folder.
2. Point the project at it in `.ds4router.yaml`:

```yaml
local:
  engine: {{model_path: ~/models/ds4-flash-q2}}
```

## Cloud models — through LiteLLM
Now: *{status.cloud_detail}*

1. Export your provider's key, e.g. `export OPENAI_API_KEY=...`
   (or `ANTHROPIC_API_KEY`, `DEEPSEEK_API_KEY`).
2. Name the model and where its key is, and route to it:

```yaml
cloud:
  models: [{{name: openai/gpt-4.1, api_key_env: OPENAI_API_KEY}}]
default: cloud:openai/gpt-4.1
```

## Meanwhile
**{key("report")}** month report · **{key("estimator")}** cost estimator ·
**{key("settings")}** settings (opens `.ds4router.yaml` in `$EDITOR`) ·
**{key("command_palette")}** every command. Saved changes apply without a restart.
"""


class WelcomeView(Markdown):
    def __init__(self, status: SetupStatus, keys: Mapping[str, str]) -> None:
        super().__init__(welcome_markdown(status, keys), id="welcome")
