"""Every key of the playground, in one table: the help screen shows it, a test checks it."""

from __future__ import annotations

# (section, [(keys, what they do)])
HELP: list[tuple[str, list[tuple[str, str]]]] = [
    (
        "Anywhere",
        [
            ("enter", "generate (in the prompt): baseline and steered side by side"),
            ("ctrl+r / f5", "regenerate the last prompt (after changing features)"),
            ("escape", "cancel the running generation"),
            (
                "ctrl+f",
                "find features: which fire on a text, or search labels; ctrl+t there: "
                "steer toward… a concept",
            ),
            ("ctrl+g", "generation settings: temperature, top-p, max tokens, seed, positions"),
            ("ctrl+o", "presets: load a saved feature set"),
            ("ctrl+s", "save the active features as a preset"),
            ("ctrl+t", "per-token view of the focused (or first) feature"),
            ("ctrl+y", "why this token? the features that caused a token of either completion"),
            (
                "ctrl+b",
                "feature web (branches): a tree from broad features to their splits (steer web)",
            ),
            ("ctrl+l", "new chat: clear the history and the panes"),
            ("ctrl+n", "switch chat mode / plain completion (instruct models)"),
            ("ctrl+p", "command palette: features, presets, checkpoints, actions"),
            ("f6", "run history: show a run, bring back its levers (r), export (e)"),
            ("f7 / f8", "show the previous / next run in the panes"),
            ("ctrl+z", "undo: bring back the last removed feature"),
            ("tab / shift+tab", "move focus: features, prompt, panes"),
            ("f1 / ?", "this help"),
            ("ctrl+q", "quit"),
        ],
    ),
    (
        "Feature panel (a slider focused)",
        [
            ("← / →", "strength down / up (fine step)"),
            ("shift+← / shift+→", "strength down / up (coarse step)"),
            ("0", "reset the strength to 0"),
            ("1-9 . -", "type an exact strength, enter sets it, escape cancels"),
            ("↑ / ↓", "previous / next feature"),
            ("ctrl+d", "mute / unmute the feature"),
            ("ctrl+e", "cycle the mode: clamp → add → ablate"),
            ("enter", "inspect the feature"),
            ("ctrl+t", "per-token view of the feature"),
            ("delete", "remove the feature from the active set (ctrl+z brings it back)"),
            ("letters, space", "go to the prompt: the panel takes no unmodified letters"),
        ],
    ),
    (
        "Find features",
        [
            ("enter (in the box)", "search: features firing on the text and labels matching it"),
            ("↓", "go to the results"),
            ("enter (on a result)", "add the feature and close"),
            ("a", "add the feature and keep searching"),
            ("ctrl+r", "add the feature, close and regenerate the last prompt"),
            ("i", "inspect the feature"),
            (
                "ctrl+t",
                "steer toward…: features that make the model say the text, added with "
                "their recommended mode and strength",
            ),
            ("escape", "close"),
        ],
    ),
    (
        "Feature web (ctrl+b)",
        [
            ("space · enter on a branch", "open / close a feature's splits"),
            ("enter on a leaf / a", "make the feature a lever"),
            ("i", "inspect the feature"),
            ("/", "search: a label word or #id; enter jumps there, again: next match"),
            ("escape", "close"),
        ],
    ),
    (
        "Inspector / per-token view",
        [
            ("a", "add the inspected feature to the active set"),
            ("t", "per-token view of the inspected feature"),
            ("n / p", "per-token view: next / previous active feature"),
            ("escape", "close"),
        ],
    ),
    (
        "Why this token? (ctrl+y)",
        [
            ("← / → · tab · click", "move the cursor over the tokens · other pane · pick one"),
            ("enter / w", "explain the token: features by attribution, exact effect, label"),
            ("↑ / ↓", "select a feature: the context tokens that drive it are highlighted"),
            ("a", "ablate the selected feature and regenerate"),
            ("i", "inspect the selected feature"),
            ("c", "the circuit of the token: input tokens → latents at every depth → output"),
            ("escape", "close"),
        ],
    ),
    (
        "Circuit (c in Why this token?)",
        [
            ("↑ / ↓ · enter", "move through the tree · fold a branch"),
            ("a", "ablate the latent under the cursor and regenerate (any depth)"),
            ("l", "add the latent under the cursor as a lever (another depth: switches SAE)"),
            ("escape", "close"),
        ],
    ),
    (
        "Settings / presets",
        [
            ("enter / ctrl+s", "apply the settings, save or load the preset"),
            ("escape", "close without changes"),
        ],
    ),
]

MODES_HELP = (
    "Modes: clamp sets the latent to strength (keeping the SAE error), add adds "
    "strength × its decoder direction, ablate sets it to 0. Strengths are multiples of the "
    "feature's max activation when the SAE has a catalog (10 ≈ Golden Gate Claude), raw "
    "latent units otherwise."
)
