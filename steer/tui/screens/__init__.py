"""Screens of the playground: loading, help, find, inspector, per-token view, why this token
and the circuit behind it, settings, presets, the feature web.

Screens that need the model (find, inspect, per-token view) fetch their data in a thread
worker, so the UI stays live while a generation holds the model.
"""

from .circuit import CircuitScreen
from .common import deliver, error_text, first_line
from .find import FindScreen
from .help import HelpScreen
from .inspector import InspectorScreen, render_feature
from .loading import LoadingScreen
from .presets import PresetsScreen
from .settings import SettingsScreen
from .tokens import TokenViewScreen
from .web import WebScreen
from .why import WhyScreen

__all__ = [
    "CircuitScreen",
    "FindScreen",
    "HelpScreen",
    "InspectorScreen",
    "LoadingScreen",
    "PresetsScreen",
    "SettingsScreen",
    "TokenViewScreen",
    "WebScreen",
    "WhyScreen",
    "deliver",
    "error_text",
    "first_line",
    "render_feature",
]
