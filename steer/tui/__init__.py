"""The terminal playground (`steer chat`): a Textual view over steer.app.engine.PlaygroundEngine.

Import `steer.tui.app.PlaygroundApp`; nothing here is imported by the engine.
"""
