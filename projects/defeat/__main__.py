"""``python -m defeat COMMAND ...``: the package's commands.

python -m defeat run ...    your data, one command: checks, teacher, students, table, export (defeat.demo.pipeline)
python -m defeat demo ...   run on the embedded data with a demo preset (defeat.demo.runner; = python -m defeat.demo)
"""

import sys

COMMANDS = {"run": "defeat.demo.pipeline", "demo": "defeat.demo.runner"}


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        if argv and argv[0] not in ("-h", "--help"):
            print(
                f"python -m defeat: error: unknown command {argv[0]!r}; one of {', '.join(COMMANDS)}", file=sys.stderr
            )
            return 2
        print(__doc__.strip())
        return 0 if argv else 2
    import importlib

    from .engine.entry import run_entry_point

    command = importlib.import_module(COMMANDS[argv[0]])
    return 0 if run_entry_point(command.main, argv[1:], script=f"python -m defeat {argv[0]}") else 1


if __name__ == "__main__":
    from defeat.engine.entry import run_entry_point

    sys.exit(run_entry_point(main, script="python -m defeat"))
