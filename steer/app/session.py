"""The playground's session on disk: what the user built (levers, prompt, settings) and a
record of every run, saved atomically so that no crash or kill loses it.

A session is one JSON file (default `<state dir>/session.json`):

    {
      "version": 1, "saved": "2026-12-04T19:40:00+00:00",
      "model": "smollm2-135m", "sae": "checkpoints/.../9216-k32",
      "features": [{"latent": 2374, "strength": 2.5, "mode": "clamp", "enabled": true}],
      "prompt": "Tell me about your weekend.",
      "settings": {"max_new_tokens": 64, "temperature": 0.0, ...},
      "auto_regenerate": false,
      "turns": [{"user": "...", "baseline": "...", "steered": "..."}],
      "runs": [Run.to_dict(), ...]
    }

Each run is also a valid steering preset (`Run.to_preset`): `steer generate --preset`
replays it. No Textual here: the TUI and the CLI (`steer history`) share this module.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from sae import atomic_write

SESSION_VERSION = 1


# ---------------------------------------------------------------- where things are kept
def state_dir() -> Path:
    """Where steer keeps what it must not lose (sessions, the error log):
    $STEER_STATE_DIR, else $XDG_STATE_HOME/steer, else ~/.local/state/steer."""
    explicit = os.environ.get("STEER_STATE_DIR")
    if explicit:
        return Path(explicit).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base).expanduser() / "steer"


def default_session_path() -> Path:
    return state_dir() / "session.json"


def errors_log_path() -> Path:
    return state_dir() / "errors.log"


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ---------------------------------------------------------------- one run
@dataclass
class Run:
    """One generation: what made it and what came out."""

    time: str
    model: str
    sae: str | None
    prompt: str
    chat: bool
    interventions: list[dict]  # the enabled levers it ran with (Intervention.to_dict)
    settings: dict  # GenerationSettings.to_dict, `chat` resolved to a bool
    strength_units: str  # "relative" (× max activation) or "raw"
    baseline: str
    steered: str | None  # None: no SAE was loaded (baseline only)
    turns_before: int = 0  # chat turns before this message: >0 cannot be replayed alone
    cancelled: bool = False

    @property
    def seed(self) -> int:
        return int(self.settings.get("seed", 0))

    @property
    def replayable(self) -> bool:
        return self.steered is not None and self.turns_before == 0 and not self.cancelled

    def levers(self) -> str:
        """`2374=2.5 clamp, 17 ablate` (or `no features`)."""
        parts = []
        for iv in self.interventions:
            if iv.get("mode") == "ablate":
                parts.append(f"{iv['latent']} ablate")
            else:
                parts.append(f"{iv['latent']}={iv['strength']:g} {iv.get('mode', 'clamp')}")
        return ", ".join(parts) or "no features"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> Run:
        if not isinstance(data, dict):
            raise ValueError("a run is not a JSON object")
        known = {f.name for f in dataclasses.fields(cls)}
        missing = {"time", "prompt", "baseline"} - set(data)
        if missing:
            raise ValueError(f"a run lacks {sorted(missing)}")
        run = cls(**{k: v for k, v in data.items() if k in known and k != "seed"})
        if not isinstance(run.interventions, list) or not isinstance(run.settings, dict):
            raise ValueError("a run's interventions or settings are malformed")
        return run

    def to_preset(self, name: str = "") -> dict:
        """A steering preset (steer.steering.presets) that replays this run:
        `steer generate --preset FILE` reads the prompt, the SAE and the model from it."""
        return {
            "version": 1,
            "name": name or f"run {self.time}",
            **({"sae": self.sae} if self.sae else {}),
            "model": self.model,
            "prompt": self.prompt,
            "interventions": self.interventions,
            "settings": self.settings,
            "notes": f"recorded {self.time}; steered text: see 'expected'",
            "expected": {"baseline": self.baseline, "steered": self.steered},
        }


# ---------------------------------------------------------------- the session
@dataclass
class Session:
    model: str | None = None
    sae: str | None = None
    features: list[dict] = field(default_factory=list)
    prompt: str = ""
    settings: dict = field(default_factory=dict)
    auto_regenerate: bool = False
    turns: list[dict] = field(default_factory=list)
    runs: list[Run] = field(default_factory=list)

    def to_dict(self) -> dict:
        out = {"version": SESSION_VERSION, "saved": now()}
        out.update(dataclasses.asdict(self))
        return out

    def state(self) -> dict:
        """Everything but the save time: equal states need no new write."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> tuple[Session, list[str]]:
        """Read what can be read; the second value says what was dropped and why."""
        if not isinstance(data, dict):
            return cls(), ["the session is not a JSON object: started fresh"]
        dropped: list[str] = []
        session = cls()
        for name, kind in (("model", str), ("sae", str), ("prompt", str)):
            value = data.get(name)
            if value is None or isinstance(value, kind):
                setattr(session, name, value if value is not None else getattr(session, name))
            else:
                dropped.append(f"{name} ({value!r} is not text)")
        session.auto_regenerate = bool(data.get("auto_regenerate", False))
        settings = data.get("settings", {})
        if isinstance(settings, dict):
            session.settings = settings
        else:
            dropped.append("settings (not an object)")
        for key, target, check in (
            ("features", session.features, _is_feature),
            ("turns", session.turns, _is_turn),
        ):
            items = data.get(key, [])
            if not isinstance(items, list):
                dropped.append(f"{key} (not a list)")
                continue
            for item in items:
                if check(item):
                    target.append(item)
                else:
                    dropped.append(f"{key[:-1]} {_short(item)} (malformed)")
        runs = data.get("runs", [])
        for i, item in enumerate(runs if isinstance(runs, list) else []):
            try:
                session.runs.append(Run.from_dict(item))
            except (TypeError, ValueError) as err:
                dropped.append(f"run {i + 1} ({err})")
        return session, dropped


def _is_feature(item) -> bool:
    if not isinstance(item, dict) or isinstance(item.get("latent"), bool):
        return False
    strength = item.get("strength", 0.0)
    return (
        isinstance(item.get("latent"), (int, str))  # a latent, or a saved vector's name
        and isinstance(strength, (int, float))
        and math.isfinite(strength)
    )


def _is_turn(item) -> bool:
    return isinstance(item, dict) and all(
        isinstance(item.get(k), str) for k in ("user", "baseline", "steered")
    )


def _short(item) -> str:
    text = json.dumps(item, ensure_ascii=False) if not isinstance(item, str) else item
    return text if len(text) <= 40 else text[:37] + "..."


# ---------------------------------------------------------------- files
def save_session(path: str | Path, session: Session) -> Path:
    """Write atomically (a temporary file renamed over the old one, flushed to disk):
    a crash or a kill leaves the old session or the new one, never half of one."""
    path = Path(path).expanduser()
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(session.to_dict(), ensure_ascii=False, indent=1) + "\n"

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

    atomic_write(path, write)
    return path


def load_session(path: str | Path) -> tuple[Session | None, list[str]]:
    """The session at `path` (None if there is none) and what could not be read.

    A file that is not valid JSON is moved aside to `<name>.damaged` (the next save
    would overwrite it) and the session starts fresh, saying so."""
    path = Path(path).expanduser()
    if not path.exists():
        return None, []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        kept = path.with_name(path.name + ".damaged")
        try:
            os.replace(path, kept)
        except OSError:
            kept = path
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        return Session(), [f"the session file was unreadable ({reason}); kept as {kept}"]
    if isinstance(data, dict) and data.get("version", SESSION_VERSION) != SESSION_VERSION:
        return Session(), [f"session format {data.get('version')!r} is unknown: started fresh"]
    return Session.from_dict(data)


def archive_session(path: str | Path) -> Path | None:
    """Move the session at `path` aside (`<stem>-<time>.json` in a `sessions/` folder
    beside it) so that a fresh start loses nothing; returns where it went."""
    path = Path(path).expanduser()
    if not path.exists():
        return None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
    folder = path.parent / "sessions"
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / f"{path.stem}-{stamp}.json"
    n = 1
    while target.exists():
        n += 1
        target = folder / f"{path.stem}-{stamp}-{n}.json"
    os.replace(path, target)
    return target


# ---------------------------------------------------------------- the engine's side
def capture(engine, prompt: str = "", auto_regenerate: bool = False, runs=()) -> Session:
    """The session as the engine (and the prompt box) hold it now."""
    return Session(
        model=engine.lm.name if engine.lm is not None else None,
        sae=str(Path(engine.sae_path).resolve()) if engine.sae_path else None,
        features=[f.to_dict() for f in engine.features],
        prompt=prompt,
        settings=engine.settings.to_dict(),
        auto_regenerate=auto_regenerate,
        turns=[dataclasses.asdict(turn) for turn in engine.history],
        runs=list(runs),
    )


def same_sae(a: str | Path | None, b: str | Path | None) -> bool:
    if a is None or b is None:
        return a is b
    return Path(a).expanduser().resolve() == Path(b).expanduser().resolve()


def restore(engine, session: Session) -> list[str]:
    """Put the session's levers, settings and chat turns into a loaded engine; returns
    what was dropped and why (a feature the SAE lacks, a bad setting, ...)."""
    from steer.steering import Intervention

    from .engine import Turn

    dropped: list[str] = []
    features = session.features
    if features and not engine.has_sae:
        dropped.append(f"{len(features)} features (no SAE is loaded)")
        features = []
    elif features and session.sae and not same_sae(session.sae, engine.sae_path):
        dropped.append(f"{len(features)} features (they were for the SAE {session.sae})")
        features = []
    engine.clear_features()
    for item in features:  # each as saved: strength, mode, muted, positions, gate, vector
        try:
            (lever,) = engine.resolve_levers([Intervention.from_dict(item)])
            if engine.feature(lever.latent) is None:
                engine.features.append(lever)
                engine.set_strength(lever.latent, lever.strength)  # within the slider's range
        except (ValueError, TypeError) as err:
            dropped.append(f"feature {item.get('latent')} ({str(err).splitlines()[0]})")
    settings = dict(session.settings)
    if settings.get("chat") and not engine.is_chat_model:
        settings["chat"] = None
    try:
        engine.update_settings(**settings)
    except ValueError:
        for key, value in settings.items():  # keep every setting that is valid on its own
            try:
                engine.update_settings(**{key: value})
            except ValueError as err:
                dropped.append(f"setting {key}={value!r} ({str(err).splitlines()[0]})")
    engine.history = [Turn(t["user"], t["baseline"], t["steered"]) for t in session.turns]
    return dropped


def record_run(engine, generation, interventions, settings, turns_before: int) -> Run:
    """A Run from the engine's finished (or cancelled) `generation`, made with the given
    levers (the enabled Interventions) and GenerationSettings."""
    texts = list(generation.texts)
    resolved = {**settings.to_dict(), "chat": bool(generation.chat)}
    return Run(
        time=now(),
        model=engine.model_name,
        sae=str(Path(engine.sae_path).resolve()) if engine.sae_path else None,
        prompt=generation.prompt,
        chat=bool(generation.chat),
        interventions=[iv.to_dict() for iv in interventions],
        settings=resolved,
        strength_units="relative" if engine.max_acts is not None else "raw",
        baseline=texts[0],
        steered=texts[1] if len(texts) > 1 else None,
        turns_before=turns_before if generation.chat else 0,
        cancelled=not generation.finished,
    )
