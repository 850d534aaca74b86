"""Steering presets: a set of interventions plus generation settings, as a JSON file.

    {
      "version": 1,
      "name": "golden-gate",
      "sae": "checkpoints/smollm2-l16-18k",          # optional: the SAE it was made for
      "steer": "10 #1234",                             # the levers as an expression (expr.py)
      "interventions": [{"latent": 1234, "strength": 10.0, "mode": "clamp", "enabled": true}],
      "settings": {"max_new_tokens": 64, "temperature": 0.0, "positions": "all", ...},
      "notes": "",
      "prompt": "...", "model": "..."                 # optional: what to replay
    }

Shared by `steer generate --preset FILE` and the playground (steer chat). A preset names its
levers with "steer" (the expression), "interventions" (the list older steers wrote and
read) or both; written presets carry both, and a file whose two disagree is refused.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from sae import atomic_write

from .expr import Recipe, format_steering, parse_steering
from .generate import GenerationSettings
from .intervention import Intervention

PRESET_VERSION = 1


@dataclass
class Preset:
    interventions: list[Intervention] = field(default_factory=list)
    settings: GenerationSettings | None = None
    """None: the preset does not change the settings."""
    sae: str | None = None
    name: str = ""
    notes: str = ""
    prompt: str | None = None
    """A recorded run (steer chat's history) carries its prompt and model, so that
    `steer generate --preset run.json` replays it with no other flag."""
    model: str | None = None

    def to_dict(self) -> dict:
        out: dict = {"version": PRESET_VERSION, "name": self.name}
        if self.sae:
            out["sae"] = self.sae
        out["steer"] = format_steering(self.interventions)
        out["interventions"] = [iv.to_dict() for iv in self.interventions]
        if self.settings is not None:
            out["settings"] = self.settings.to_dict()
        if self.notes:
            out["notes"] = self.notes
        for key in ("prompt", "model"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        return out

    @classmethod
    def from_dict(cls, data: dict, source: str = "preset") -> Preset:
        if not isinstance(data, dict):
            raise ValueError(f"{source} is not a JSON object")
        version = data.get("version", PRESET_VERSION)
        if version != PRESET_VERSION:
            raise ValueError(
                f"{source} has preset format {version}, this steer reads {PRESET_VERSION}"
            )
        items = data.get("interventions", [])
        if not isinstance(items, list):
            raise ValueError(f"{source}: 'interventions' must be a list")
        try:
            interventions = _levers(data, items, source)
            settings = data.get("settings")
            settings = GenerationSettings.from_dict(settings) if settings is not None else None
        except (TypeError, ValueError) as err:
            raise ValueError(f"{source}: {str(err).splitlines()[0]}") from None
        return cls(
            interventions,
            settings,
            data.get("sae") or None,
            str(data.get("name", "")),
            str(data.get("notes", "")),
            _text_or_none(data.get("prompt"), "prompt", source),
            _text_or_none(data.get("model"), "model", source),
        )


def _levers(data: dict, items: list, source: str) -> list[Intervention]:
    """The preset's levers: its expression, its list, or both when they agree."""
    listed = [Intervention.from_dict(d) for d in items]
    if "steer" not in data:
        return listed
    if not isinstance(data["steer"], str):
        raise ValueError("'steer' must be a steering expression (text)")
    said = parse_steering(data["steer"]).interventions()
    if "interventions" in data and Recipe(tuple(listed)) != Recipe(tuple(said)):
        raise ValueError("'steer' and 'interventions' name different levers: keep one of them")
    return said


def _text_or_none(value, key: str, source: str) -> str | None:
    if value is None or isinstance(value, str):
        return value
    raise ValueError(f"{source}: {key!r} must be text")


def save_preset(
    path: str | Path,
    interventions: list[Intervention],
    settings: GenerationSettings | None = None,
    *,
    sae: str | None = None,
    name: str = "",
    notes: str = "",
) -> Path:
    """Write a preset atomically; the name defaults to the file's stem."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    preset = Preset(list(interventions), settings, sae, name or path.stem, notes)
    text = json.dumps(preset.to_dict(), indent=2) + "\n"
    atomic_write(path, lambda tmp: Path(tmp).write_text(text))
    return path


def load_preset(path: str | Path) -> Preset:
    """Read a preset; ValueError with a one-line reason when it is missing or malformed."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ValueError(f"no preset file at {path}")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f"cannot read preset {path}: {err}") from None
    return Preset.from_dict(data, source=f"preset {path}")
