"""Train the toy model with two CPU processes (DDP over gloo) through ``train_from_args``.

Run by tests/test_ddp.py as ``python tests/ddp_script.py MANIFEST RUN_DIR [key=value ...]``: Lightning
starts the second process by running this file again, which ``python -c`` cannot do.
"""

from __future__ import annotations

import sys


def main(argv: list[str]) -> None:
    from mfclip.engine.train import train_from_args

    manifest, run_dir, *overrides = argv
    overrides += ["trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp"]
    train_from_args("tiny", overrides, manifest=manifest, out=run_dir)


if __name__ == "__main__":
    main(sys.argv[1:])
