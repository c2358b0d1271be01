"""The `mofa` console script (also `python -m mofa_tk`): `mofa fit ...`, `mofa train ...`, `mofa eval ...`,
`mofa synth ...`, `mofa landmarks ...`.

Each sub-command is the `main(argv)` of a module in `mofa_tk/apps/`, also used by the scripts in `examples/`.
"""
from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "fit": ("mofa_tk.apps.fit_app", "fit a face model to one photo (analysis by synthesis)"),
    "train": ("mofa_tk.apps.train_app", "train the MoFA autoencoder (synthetic faces or a photo folder)"),
    "eval": ("mofa_tk.apps.eval_app", "fit every photo of a folder and write an evaluation report"),
    "synth": ("mofa_tk.apps.synth_app", "write a folder of synthetic face photos with landmark files"),
    "landmarks": ("mofa_tk.apps.landmarks_app", "index a photo folder once (decode, detect landmarks), in parallel"),
}


def _usage() -> str:
    lines = ["usage: mofa <command> [options]", "", "commands:"]
    lines += [f"  {name:<9} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run `mofa <command> --help` for the options of a command."]
    return "\n".join(lines)


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"mofa: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
