"""The `bgmrec` commands, one module per part of the flow; each module's `register(app)` adds its commands.

Adapters outside the domain package (the Kubeflow pipelines) add theirs through the `bgmrec.commands` entry-point
group, so the domain package never imports them.
"""

COMMAND_MODULES = (
    "bgmrec.commands.data",
    "bgmrec.commands.training",
    "bgmrec.commands.serving",
    "bgmrec.commands.registry",
    "bgmrec.commands.report",
)
