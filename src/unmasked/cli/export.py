"""`unmasked export`: a folder timm and the Hugging Face Hub load as it is."""

from __future__ import annotations

import argparse

from unmasked import export
from unmasked.cli.common import TOOL_SOURCE_HELP, Formatter, settings_of
from unmasked.option_rules import add_settings


def add_parser(sub) -> None:
    x = sub.add_parser("export", help="a folder timm and the Hugging Face Hub load as it is",
                       formatter_class=Formatter,
                       description="Writes DIR/config.json (timm's architecture, model_args and pretrained_cfg "
                                   "with mean, std and input size), DIR/model.safetensors and a README.md model "
                                   "card, so that timm.create_model('local-dir:DIR', pretrained=True) builds the "
                                   "encoder with no unmasked code; checked by loading it back through timm.",
                       epilog="example:\n  unmasked export runs/lut-fm --format timm exports/lut-fm\n"
                              "  huggingface-cli upload ORG/NAME exports/lut-fm   # publish it as it is")
    x.add_argument("run", metavar="RUN", help=TOOL_SOURCE_HELP)
    x.add_argument("dir", metavar="DIR", help="folder to write")
    add_settings(x, "export")
    x.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    settings = settings_of(args, export.ExportSettings)
    r = export.export_timm(args.run, args.dir, force=settings.force)
    print(f"exported {args.run} to {r['folder']} ({', '.join(r['files'])}): timm {r['architecture']}, "
          f"loads with timm.create_model('local-dir:{r['folder']}', pretrained=True) "
          f"(checked: features equal to {r['max_difference']:.1e})")
    return 0
