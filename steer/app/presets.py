"""Presets of the playground: the active levers and the settings saved as JSON (the files
`steer generate --preset` reads) and loaded back. A mixin of PlaygroundEngine
(steer.app.engine)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path


class PresetsMixin:
    """Needs the engine's presets_dir, features, settings, sae_path, is_chat_model,
    resolve_levers and _require_sae."""

    def preset_path(self, name_or_path: str | Path) -> Path:
        """`golden` -> <presets_dir>/golden.json; a path (with / or .json) is used as is."""
        text = str(name_or_path).strip()
        if not text:
            raise ValueError("give the preset a name")
        if os.sep in text or "/" in text or text.endswith(".json"):
            path = Path(text).expanduser()
            return path if path.suffix == ".json" else path.with_suffix(".json")
        return self.presets_dir / f"{text}.json"

    def list_presets(self) -> list[Path]:
        return sorted(self.presets_dir.glob("*.json")) if self.presets_dir.is_dir() else []

    def save_preset(self, name_or_path: str | Path) -> Path:
        """Write the active features and the settings as JSON (`steer generate --preset`)."""
        from steer.steering import presets

        path = self.preset_path(name_or_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        presets.save_preset(
            path,
            [dataclasses.replace(f) for f in self.features],
            self.settings,
            sae=str(self.sae_path) if self.sae_path else None,
        )
        return path

    def load_preset(self, name_or_path: str | Path) -> Path:
        """Replace the active features (and settings) with a preset's."""
        from steer.steering import presets

        path = self.preset_path(name_or_path)
        if not path.is_file():
            raise ValueError(f"no preset at {path}")
        preset = presets.load_preset(path)
        self._require_sae()
        self.features = self.resolve_levers(preset.interventions)
        if preset.settings is not None:
            self.settings = dataclasses.replace(preset.settings)
            if self.settings.chat and not self.is_chat_model:
                self.settings.chat = None
        return path
