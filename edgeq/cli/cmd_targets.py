"""``edgeq targets list|show``."""
from __future__ import annotations

import typer

from edgeq.cli.main import app
from edgeq.cli.output import complete_target, emit, emit_json

targets_app = typer.Typer(no_args_is_help=True, help="Device profiles: what each target runs and wants.\n\n"
                                                     "Examples: edgeq targets list; edgeq targets show rpi5; "
                                                     "EDGEQ_TARGETS_DIR=./my-targets edgeq targets list")
app.add_typer(targets_app, name="targets")


@targets_app.command("list")
def list_(as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Known target profiles: the built-in ones, and *.toml files in $EDGEQ_TARGETS_DIR.

    Examples:

      edgeq targets list

      EDGEQ_TARGETS_DIR=./my-targets edgeq targets list --json
    """
    from edgeq.targets import known_targets, load_target

    profiles = [load_target(n) for n in known_targets()]
    if as_json:
        emit_json([p.to_dict() for p in profiles])
        return
    width = max((len(p.name) for p in profiles), default=4)
    lines = [f"{'name'.ljust(width)}  transport  precision  delegate   description"]
    for p in profiles:
        lines.append(f"{p.name.ljust(width)}  {p.transport.value:<9}  {p.precision.value:<9}  "
                     f"{','.join(d.kind.value for d in p.delegates):<9}  {p.description}")
    emit("\n".join(lines))


@targets_app.command("show", no_args_is_help=True)
def show(name: str = typer.Argument(..., help="A target name or a .toml profile path.",
                                    autocompletion=complete_target),
         as_json: bool = typer.Option(False, "--json", help="Print as JSON.")) -> None:
    """Everything one profile says: transport, CPU, threads, delegates, precision, op limits.

    Examples:

      edgeq targets show coral-edgetpu

      edgeq targets show ./my-board.toml --json
    """
    from edgeq.targets import load_target

    p = load_target(name)
    if as_json:
        emit_json(p.to_dict())
        return
    lim = p.op_limits
    lines = [f"{p.name}: {p.description}",
             f"  transport      {p.transport.value}" + (f" ({p.address})" if p.address else ""),
             f"  precision      {p.precision.value}  (what 'edgeq convert --target {p.name}' uses)",
             f"  threads        {p.threads}",
             f"  cpu            {p.cpu.arch}, {p.cpu.cores or 'detected'} cores"
             + (f", big-core mask {p.cpu.big_core_mask}" if p.cpu.big_core_mask else "")]
    for d in p.delegates:
        opts = ";".join(f"{k}:{v}" for k, v in d.options.items())
        lines.append(f"  delegate       {d.kind.value}" + (f" {d.library}" if d.library else "")
                     + (f" [{opts}]" if opts else ""))
    if lim.accelerator:
        lines.append(f"  accelerator    {lim.accelerator}"
                     + ("; runs only fully integer models" if lim.requires_fully_integer else ""))
    if lim.supported_ops:
        lines.append(f"  runs ops       {', '.join(lim.supported_ops)}")
    if lim.unsupported_ops:
        lines.append(f"  not ops        {', '.join(lim.unsupported_ops)}")
    if lim.slow_modes:
        lines.append(f"  slow modes     {', '.join(m.value for m in lim.slow_modes)}")
    if p.benchmark_binary:
        lines.append(f"  benchmark      {p.benchmark_binary}" + (f" (models in {p.work_dir})" if p.work_dir else ""))
    if p.notes:
        lines.append(f"  notes          {p.notes}")
    lines.append(f"  file           {p.source}")
    emit("\n".join(lines))
