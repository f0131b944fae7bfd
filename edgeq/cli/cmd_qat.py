"""``edgeq qat finetune``."""
from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from edgeq.cli.main import app
from edgeq.cli.output import emit, emit_json, progress, renamed, warn
from edgeq.modes import IOType

qat_app = typer.Typer(
    name="qat", no_args_is_help=True,
    help="Quantization-aware fine-tuning: win back the accuracy post-training INT8 loses.\n\n"
         "Start with: edgeq qat finetune model.keras --train train.npz --eval val.npz --epochs 1 --out-dir qat/")
app.add_typer(qat_app, name="qat")


@qat_app.command(no_args_is_help=True)
def finetune(
    model: Path = typer.Argument(..., help="Float Keras model (.keras or .h5; Keras 3, Sequential or Functional, "
                                           "nested base models included)."),
    train: Path = typer.Option(..., "--train", help=".npz (or image folder) with training inputs 'x' and, "
                                                    "optionally, integer labels 'y'; without labels the float "
                                                    "model teaches (distillation)."),
    eval_data: Optional[Path] = typer.Option(None, "--eval", "-e", help=(
        "Held-out data (.npz with inputs 'x', labels 'y' optional): agreement with float per epoch, early "
        "stopping, and the report's top-1 of float, post-training INT8 and QAT INT8 (with --holdout, the "
        "report's numbers come from there and this only chooses the epoch).")),
    holdout: Optional[Path] = typer.Option(None, "--holdout", help=(
        "Held-apart data (.npz with inputs 'x', labels 'y' optional) the report's numbers are measured on. "
        "--eval chooses the epoch, so its numbers flatter the model a little; --holdout was used for no "
        "choice, so its numbers are what to expect on new data.")),
    epochs: int = typer.Option(1, "--epochs", min=1, help="At most this many epochs over --train; stops early "
                                                          "when agreement with float on --eval stops improving."),
    patience: int = typer.Option(2, "--patience", min=1, help="Epochs without a better agreement with float "
                                                              "before stopping (the best epoch is kept)."),
    distill_weight: Optional[float] = typer.Option(None, "--distill-weight", min=0.0, max=1.0,
                                                   help="Share of the distillation loss (0 = labels only, 1 = "
                                                        "float model only). Default: 0 with labels, 1 without."),
    out_dir: Optional[Path] = typer.Option(None, "--out-dir", help=(
        "Output folder (created if missing): <stem>_qat_int8.tflite and the fine-tuned float model "
        "<stem>_qat.keras.")),
    lr: float = typer.Option(1e-4, "--lr", min=0.0, help="Adam learning rate (about 1/10 of a from-scratch rate)."),
    batch_size: int = typer.Option(64, "--batch-size", min=1, help="Training batch size."),
    seed: int = typer.Option(0, "--seed", help="Seed for data order, dropout and calibration samples: same "
                                               "seed, same result."),
    keep_better: bool = typer.Option(True, "--keep-better/--always-qat", help=(
        "Write the post-training INT8 model instead when QAT's does not beat it on --eval (agreement with "
        "float, or top-1 when training on labels; the report says which was written). --always-qat writes "
        "QAT's model regardless.")),
    io: IOType = typer.Option(IOType.INT8, "--io", help="Input/output type of the .tflite (int8 by default)."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON (for scripts)."),
    show_progress: Optional[bool] = typer.Option(None, "--progress/--no-progress",
                                                 help="Progress bars on stderr (default: when it is a terminal)."),
    val_old: Optional[Path] = typer.Option(None, "--val", hidden=True),  # before 0.2: --eval
    out_old: Optional[Path] = typer.Option(None, "--out", "-o", hidden=True),  # before 0.2: --out-dir
) -> None:
    """Fine-tune MODEL with simulated INT8, export a real full-INT8 TFLite model and report top-1.

    Simulated INT8 as the converter builds it: per-channel weights, BatchNorm folded, per-tensor activation
    ranges. The report gives top-1 on --eval of the float model, of post-training INT8 (as 'edgeq convert
    --mode int8' makes it) and of the QAT INT8 model.

    Without labels in --train, the float model's outputs are the targets (distillation; --distill-weight mixes
    both). Fine-tuning starts from what post-training INT8 kept (BN folded, equalized weights, calibrated
    ranges). Per-epoch loss and agreement with float on --eval go to stderr; nothing is written until training is done (Ctrl-C is safe).
    With --holdout, the report is measured there instead of on --eval, which then only chooses the epoch.
    When QAT's INT8 model does not beat post-training INT8 on --eval, the post-training model is written
    instead and the report says so (--always-qat turns this off).

    Examples:

      edgeq qat finetune model.keras --train train.npz --eval val.npz --epochs 2 --out-dir qat/

      edgeq qat finetune model.keras --train train.npz --eval val.npz --epochs 1 --lr 5e-5 --seed 1 --out-dir qat/ --json

      edgeq qat finetune emotion.h5 --train unlabelled.npz --eval heldout.npz --epochs 10 --out-dir qat/

      edgeq qat finetune model.keras --train train.npz --eval val.npz --holdout test.npz --epochs 5 --out-dir qat/
    """
    from edgeq.api import finetune as run_finetune
    from edgeq.options import FinetuneOptions

    val = renamed(eval_data, val_old, "--eval", "--val", required=True)
    out = renamed(out_dir, out_old, "--out-dir", "--out", required=True)
    options = FinetuneOptions(epochs=epochs, learning_rate=lr, batch_size=batch_size, seed=seed, io=io,
                              distill_weight=distill_weight, patience=patience, keep_better=keep_better)
    report = run_finetune(model, train, val, out, options, progress=progress(show_progress),
                          on_epoch=lambda s: warn(s.line()), holdout_data=holdout)
    emit_json(report.to_dict()) if as_json else emit(report.render())
