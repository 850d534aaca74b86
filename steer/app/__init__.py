"""The playground's view-model: state and actions with no Textual in them (the TUI is a view over this)."""
