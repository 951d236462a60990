#!/usr/bin/env python
"""Export the student of a DeFeat checkpoint as a plain Detectron2 checkpoint.

    python tools/export_student.py output/defeat_run/model_final.pth student_final.pth \
        [--verify-config configs/demo/student_slimR18.yaml]

The output holds ``{"model": ...}`` without adapters (``distiller.*``), teacher, optimizer,
scheduler or iteration; use it as ``MODEL.WEIGHTS`` of the plain student config. With
``--verify-config`` the file is loaded into that config's model, and the command fails if any
key is missing or unexpected.
"""
import argparse
import logging
import sys

from defeat.export import export_student


def verify(config_file: str, state, opts=()) -> None:
    """Load ``state`` strictly into the model of ``config_file``; raise on any key problem."""
    from detectron2.config import get_cfg
    from detectron2.modeling import build_model

    from defeat import add_defeat_config
    from defeat.config import merge_defeat_config_file

    cfg = get_cfg()
    add_defeat_config(cfg)
    merge_defeat_config_file(cfg, config_file, opts)
    cfg.MODEL.DEVICE = "cpu"
    if cfg.MODEL.META_ARCHITECTURE.startswith("DeFeat"):
        raise SystemExit(f"--verify-config wants the plain student config, got {cfg.MODEL.META_ARCHITECTURE}")
    model = build_model(cfg)
    try:
        result = model.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shape mismatches raise even when not strict
        raise SystemExit(f"export does not fit {config_file}: {e}") from e
    if result.missing_keys or result.unexpected_keys:
        raise SystemExit(f"export does not fit {config_file}: missing {result.missing_keys[:10]}, "
                         f"unexpected {result.unexpected_keys[:10]}")
    print(f"verified: all {len(state)} tensors load into {type(model).__name__} of {config_file}")


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("checkpoint", help="DeFeat checkpoint (e.g. model_final.pth of a DeFeat run)")
    p.add_argument("output", help="path of the exported student checkpoint")
    p.add_argument("--verify-config", default="", help="plain student config to load the export into")
    p.add_argument("opts", nargs=argparse.REMAINDER, help="config overrides for --verify-config")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    state = export_student(args.checkpoint, args.output)
    if args.verify_config:
        verify(args.verify_config, state, args.opts)
    return 0


if __name__ == "__main__":
    sys.exit(main())
