"""The model card: the ``README.md`` of a checkpoint folder, which the Hub shows as the repo's page.

It says what the checkpoint is, how to load it, how it was trained (dataset, command) and the
figures measured on its test split (from ``metrics.json``). `VAE.save_pretrained` writes it into a
folder that has none; `vae_augment.hub.push` writes a fresh one for the repo it uploads to.
"""

from __future__ import annotations

import json
from typing import Any


def model_card(config: dict[str, Any], metrics: dict[str, Any], repo_id: str | None = None) -> str:
    """A model card (README.md) with the dataset, the training command and the measured figures."""
    lines = [
        "---",
        "library_name: vae-augment",
        "tags:",
        "- vae",
        "- data-augmentation",
        "- image",
        "---",
        "",
        f"# {repo_id or 'vae-augment checkpoint'}",
        "",
        "A convolutional variational autoencoder for data augmentation with "
        "[vae-augment](https://github.com/vae-augment/vae-augment).",
        "",
        "```python",
        "from vae_augment import load_vae",
        f"vae = load_vae({(repo_id or 'path/to/this/folder')!r})",
        "```",
        "",
        "## Training",
        "",
        f"- dataset: {metrics.get('dataset', 'unknown')}",
    ]
    if metrics.get("command"):
        lines += ["- command:", "", "```bash", metrics["command"], "```", ""]
    if metrics.get("prior_command"):  # fit-prior's output: the mixture prior was fitted afterwards, with this command
        lines += ["- prior fitted with:", "", "```bash", metrics["prior_command"], "```", ""]
    lines += ["", "## Config", "", "```json", json.dumps(config, indent=2, sort_keys=True), "```", ""]
    test = metrics.get("test")
    if test:
        lines += ["## Test figures", "", "| metric | value |", "| --- | --- |"]
        for key, value in test.items():
            lines.append(f"| {key} | {value:.4g} |" if isinstance(value, float) else f"| {key} | {value} |")
        lines.append("")
    return "\n".join(lines)
